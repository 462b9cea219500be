#!/usr/bin/env bash
# Builds the Python module `orch` (crates/orch-py) into a venv and tests it:
# pytest on crates/orch-py/tests, then `mypy --strict` on the package and on
# examples/python. Idempotent; works on a fresh machine (needs python3 with venv
# and PyPI). Set ORCH_PY_DEBUG=1 for a debug build (faster to compile).
#
#   scripts/test-python.sh [PYTEST ARGS...]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export CARGO_TARGET_DIR="$root/target-py"
venv="$CARGO_TARGET_DIR/venv"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "test-python: $python not found" >&2
    exit 1
fi
if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian splits venv/ensurepip out of python3.
    if command -v apt-get >/dev/null 2>&1; then
        if [ ! -e /tmp/.orch-apt-updated ]; then
            apt-get update && touch /tmp/.orch-apt-updated
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$CARGO_TARGET_DIR"
    "$python" -m venv "$venv"
fi
vpy="$venv/bin/python"
stamp="$venv/.orch-tools"
if [ ! -e "$stamp" ]; then
    "$vpy" -m pip install --quiet --upgrade pip
    "$vpy" -m pip install --quiet "maturin>=1.9.4,<2" "pytest>=7" "mypy>=1.8"
    touch "$stamp"
fi

profile=(--release)
if [ "${ORCH_PY_DEBUG:-0}" = 1 ]; then
    profile=()
fi
# `maturin develop` installs the extension into the venv (editable: python/orch is used
# in place, the built .so lands beside it and is ignored by git).
(cd crates/orch-py && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
    "$venv/bin/maturin" develop --quiet "${profile[@]}")

status=0
"$vpy" -m pytest crates/orch-py/tests "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test-python: pytest collected no tests: that is a failure here" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    exit "$status"
fi

"$vpy" -m mypy --strict --no-incremental crates/orch-py/python/orch examples/python
echo "test-python: ok"
