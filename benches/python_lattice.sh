#!/usr/bin/env bash
# 10,000 no-op Python phases in a layered lattice (100 layers x 100, two needs each):
# orch against a hand-written executor (graphlib.TopologicalSorter +
# concurrent.futures.ThreadPoolExecutor) with the same number of threads, in one script.
# Builds the module in release mode into target-py/venv (as scripts/test-python.sh does),
# then runs the comparison with orch's defaults (durable journal) and with
# ORCH_JOURNAL=off (no durability, like the hand-written executor).
#
#   benches/python_lattice.sh [--jobs 4] [--repeat 5] [--layers 100] [--width 100]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export CARGO_TARGET_DIR="$root/target-py"
venv="$CARGO_TARGET_DIR/venv"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet "maturin>=1.9.4,<2"
(cd crates/orch-py && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" "$venv/bin/maturin" develop --quiet --release)

echo "== orch defaults (journal synced to disk)"
status=0
"$venv/bin/python" benches/python_lattice.py "$@" || status=$?
echo
echo "== ORCH_JOURNAL=off"
ORCH_JOURNAL=off "$venv/bin/python" benches/python_lattice.py "$@" || status=$?
exit "$status"
