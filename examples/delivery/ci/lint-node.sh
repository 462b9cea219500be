#!/bin/sh
# ci/lint-node.sh SERVICES_DIR: every JavaScript file parses (node --check), then ESLint
# (ci/eslint.config.js) writes SARIF to STATE_DIR/runs/$ORCH_RUN_ID/reports/eslint.sarif
# for the quality gate, and publishes `checked` and `sarif`. Findings do not fail this
# phase: the `quality` phase gates on them.
set -eu

dir=${1:?usage: ci/lint-node.sh SERVICES_DIR}
ci=$(cd "$(dirname "$0")" && pwd)
. "$ci/tools.sh"
bin=$(node_tools)
reports=${ORCH_STATE_DIR:-.orch}/runs/${ORCH_RUN_ID:?run me from orch}/reports
mkdir -p "$reports"
sarif=$(cd "$reports" && pwd)/eslint.sarif

files=$(find "$dir" -name '*.js' -not -path '*/node_modules/*' | sort)
for f in $files; do node --check "$f"; done
echo "$(echo "$files" | wc -l) JavaScript files parse"

status=0
ESLINT_USE_FLAT_CONFIG=true "$bin/eslint" -c "$ci/eslint.config.js" \
  -f "$bin/../@microsoft/eslint-formatter-sarif/sarif.js" -o "$sarif" "$dir" || status=$?
# 1: findings (the gate decides); 2: ESLint itself failed.
if [ "$status" -gt 1 ]; then
  echo "eslint failed (exit $status)" >&2
  exit "$status"
fi
ESLINT_USE_FLAT_CONFIG=true "$bin/eslint" -c "$ci/eslint.config.js" "$dir" || true
{
  echo "checked=$(echo "$files" | wc -l)"
  echo "sarif=$sarif"
} >>"$ORCH_OUTPUT"
echo "ESLint SARIF: $sarif"
