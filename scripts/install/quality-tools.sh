#!/usr/bin/env bash
# Installs the quality tools the orch-quality tests and the delivery example run, pinned:
#   PyPI (into the python3 on PATH): ruff, bandit[sarif], coverage, pytest
#   npm (into .tools/node, beside the repository's sources, not global):
#     eslint, @microsoft/eslint-formatter-sarif, c8
# Idempotent: nothing is installed when the pinned versions are already there.
# Tests and the example find the npm tools in .tools/node/node_modules/.bin (or ORCH_NODE_TOOLS).
set -euo pipefail
cd "$(dirname "$0")/../.."

RUFF=0.17.6
BANDIT=1.9.4
COVERAGE=7.18.0
PYTEST=9.2.0
ESLINT=8.57.1
ESLINT_SARIF=3.1.0
C8=10.1.3

bash scripts/install/scaffold-deps.sh >/dev/null # python3, pip, node, npm

have_py() {
  python3 - "$@" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
import sarif_om, jschema_to_python  # bandit's SARIF formatter
PY
}

py_pkgs=("ruff==$RUFF" "bandit==$BANDIT" "coverage==$COVERAGE" "pytest==$PYTEST")
if have_py "${py_pkgs[@]}"; then
  echo "quality-tools: ${py_pkgs[*]} already installed for $(command -v python3)"
else
  echo "quality-tools: installing ${py_pkgs[*]} (bandit with sarif) for $(command -v python3)"
  pip_args=(-q --disable-pip-version-check --root-user-action=ignore "ruff==$RUFF" "bandit[sarif]==$BANDIT" "coverage==$COVERAGE" "pytest==$PYTEST")
  # Debian's own python3 is "externally managed" (PEP 668); a pyenv or venv python is not.
  python3 -m pip install "${pip_args[@]}" || python3 -m pip install --break-system-packages "${pip_args[@]}"
fi

node_dir=.tools/node
want="eslint@$ESLINT @microsoft/eslint-formatter-sarif@$ESLINT_SARIF c8@$C8"
if [[ -f $node_dir/.installed && $(<"$node_dir/.installed") == "$want" && -x $node_dir/node_modules/.bin/eslint ]]; then
  echo "quality-tools: $want already in $node_dir"
else
  echo "quality-tools: installing $want into $node_dir"
  mkdir -p "$node_dir"
  [[ -f $node_dir/package.json ]] || echo '{"name":"orch-quality-tools","private":true}' >"$node_dir/package.json"
  # shellcheck disable=SC2086
  npm install --prefix "$node_dir" --no-audit --no-fund --no-save --loglevel=error $want
  echo "$want" >"$node_dir/.installed"
fi
"$node_dir/node_modules/.bin/eslint" --version
"$node_dir/node_modules/.bin/c8" --version
ruff --version || python3 -m ruff --version
