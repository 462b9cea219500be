#!/bin/sh
# ci/unit.sh SERVICE_DIR: runs one service's own tests with the host's python3 or node,
# measuring coverage, and writes under STATE_DIR/runs/$ORCH_RUN_ID (STATE_DIR:
# $ORCH_STATE_DIR or .orch):
#   junit/$ORCH_PHASE_ID.xml                  JUnit XML
#   coverage/SERVICE.xml or coverage/SERVICE/lcov.info
# then publishes `junit`, `tests`, `failures` and `coverage` as phase outputs.
#   node:   package.json  -> c8 (LCOV) over node --test (spec to the log, JUnit through
#                            ci/junit-reporter.mjs)
#   python: anything else -> coverage.py (Cobertura, with branches) over pytest
# Python writes no bytecode into the tree (PYTHONDONTWRITEBYTECODE) and pytest no cache, so
# the tested working copy stays clean for the release tag. The tools come from
# scripts/install/quality-tools.sh.
set -eu

service=${1:?usage: ci/unit.sh SERVICE_DIR}
ci=$(cd "$(dirname "$0")" && pwd)
. "$ci/tools.sh"
name=$(basename "$service")
run_dir=${ORCH_STATE_DIR:-.orch}/runs/${ORCH_RUN_ID:?run me from orch}
mkdir -p "$run_dir/junit" "$run_dir/coverage"
run_dir=$(cd "$run_dir" && pwd)
junit=$run_dir/junit/${ORCH_PHASE_ID:-unit}.xml
rm -f "$junit"

status=0
if [ -f "$service/package.json" ]; then
  bin=$(node_tools)
  coverage=$run_dir/coverage/$name/lcov.info
  echo "node $(node --version): c8 node --test in $service"
  (cd "$service" && "$bin/c8" --reporter=lcovonly --report-dir "$run_dir/coverage/$name" \
    node --test \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter="$ci/junit-reporter.mjs" --test-reporter-destination="$junit") || status=$?
else
  need_python_module coverage
  need_python_module pytest
  coverage=$run_dir/coverage/$name.xml
  data=$run_dir/coverage/.coverage-$name
  echo "$(python3 --version): coverage.py over pytest in $service"
  (cd "$service" && PYTHONDONTWRITEBYTECODE=1 python3 -m coverage run --data-file="$data" \
    --branch --source=. -m pytest -q -p no:cacheprovider --junitxml="$junit" \
    -o junit_suite_name="$name") 2>&1 || status=$?
  (cd "$service" && python3 -m coverage xml -q --data-file="$data" -o "$coverage")
fi

if [ -s "$junit" ]; then
  tests=$(grep -o '<testcase ' "$junit" | wc -l)
  failures=$(grep -o '<failure \|<error ' "$junit" | wc -l)
  echo "$tests tests, $failures failed; JUnit: $junit; coverage: $coverage"
  if [ -n "${ORCH_OUTPUT:-}" ]; then
    {
      echo "junit=$junit"
      echo "tests=$tests"
      echo "failures=$failures"
      echo "coverage=$coverage"
    } >>"$ORCH_OUTPUT"
  fi
fi
exit "$status"
