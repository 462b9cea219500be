#!/bin/sh
# ci/unit.sh SERVICE_DIR: runs one service's own tests with the host's python3 or node and
# writes JUnit XML to STATE_DIR/runs/$ORCH_RUN_ID/junit/$ORCH_PHASE_ID.xml (STATE_DIR:
# $ORCH_STATE_DIR or .orch), then publishes `junit`, `tests`, `failures` as phase outputs.
#   node:   package.json  -> node --test (spec to the log, JUnit through ci/junit-reporter.mjs)
#   python: anything else -> unittest under tests/ (ci/pyunit.py)
# Python writes no bytecode into the tree (PYTHONDONTWRITEBYTECODE), so the tested working
# copy stays clean for the release tag.
set -eu

service=${1:?usage: ci/unit.sh SERVICE_DIR}
ci=$(cd "$(dirname "$0")" && pwd)
junit_dir=${ORCH_STATE_DIR:-.orch}/runs/${ORCH_RUN_ID:?run me from orch}/junit
mkdir -p "$junit_dir"
junit=$(cd "$junit_dir" && pwd)/${ORCH_PHASE_ID:-unit}.xml
rm -f "$junit"

status=0
if [ -f "$service/package.json" ]; then
  echo "node $(node --version): node --test in $service"
  (cd "$service" && node --test \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter="$ci/junit-reporter.mjs" --test-reporter-destination="$junit") || status=$?
else
  echo "$(python3 --version): unittest in $service/tests"
  PYTHONDONTWRITEBYTECODE=1 python3 "$ci/pyunit.py" "$service" "$junit" 2>&1 || status=$?
fi

if [ -s "$junit" ]; then
  tests=$(grep -o '<testcase ' "$junit" | wc -l)
  failures=$(grep -o '<failure \|<error ' "$junit" | wc -l)
  echo "$tests tests, $failures failed; JUnit: $junit"
  if [ -n "${ORCH_OUTPUT:-}" ]; then
    {
      echo "junit=$junit"
      echo "tests=$tests"
      echo "failures=$failures"
    } >>"$ORCH_OUTPUT"
  fi
fi
exit "$status"
