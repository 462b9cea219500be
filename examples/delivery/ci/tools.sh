# Sourced by the ci/ scripts: finds the quality tools scripts/install/quality-tools.sh
# installs. Python tools run as `python3 -m ruff`, `python3 -m coverage`; the npm tools
# (eslint, its SARIF formatter, c8) live in a project-local node_modules: $ORCH_NODE_TOOLS,
# else the nearest .tools/node/node_modules/.bin above this directory.

node_tools() {
  if [ -n "${ORCH_NODE_TOOLS:-}" ]; then
    printf '%s\n' "$ORCH_NODE_TOOLS"
    return
  fi
  d=$(cd "$(dirname "$0")" && pwd)
  while [ "$d" != / ]; do
    if [ -x "$d/.tools/node/node_modules/.bin/eslint" ]; then
      printf '%s\n' "$d/.tools/node/node_modules/.bin"
      return
    fi
    d=$(dirname "$d")
  done
  echo "eslint and c8 not found: run scripts/install/quality-tools.sh (or set ORCH_NODE_TOOLS)" >&2
  return 1
}

need_python_module() {
  if ! python3 -m "$1" --version >/dev/null 2>&1; then
    echo "python3 -m $1 does not run: run scripts/install/quality-tools.sh" >&2
    exit 1
  fi
}
