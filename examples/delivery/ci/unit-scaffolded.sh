#!/bin/sh
# ci/unit-scaffolded.sh SERVICES_DIR: runs the own tests of the services the `scaffold`
# phase wrote (their names: a JSON array in $SERVICES) with pytest, one JUnit file each
# under STATE_DIR/runs/$ORCH_RUN_ID/junit/, and publishes `junit` (a JSON array of the
# files), `tests`, `failures` and `services`. The python-fastapi template needs fastapi,
# httpx and pytest (scripts/install/scaffold-deps.sh).
set -eu

dir=${1:?usage: ci/unit-scaffolded.sh SERVICES_DIR}
junit_dir=${ORCH_STATE_DIR:-.orch}/runs/${ORCH_RUN_ID:?run me from orch}/junit
mkdir -p "$junit_dir"
junit_dir=$(cd "$junit_dir" && pwd)
names=$(printf '%s' "${SERVICES:-[]}" | python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)))')

if [ -z "$names" ]; then
  echo "nothing was scaffolded"
  echo "services=0" >>"$ORCH_OUTPUT"
  exit 0
fi
if ! python3 -c 'import fastapi, httpx, pytest' 2>/dev/null; then
  echo "the scaffolded services need fastapi, httpx and pytest for $(command -v python3): run scripts/install/scaffold-deps.sh" >&2
  exit 1
fi

status=0
files=""
count=0
for name in $names; do
  junit="$junit_dir/${ORCH_PHASE_ID:-unit-scaffolded}-$name.xml"
  echo "== $name"
  (cd "$dir/$name" && PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q -p no:cacheprovider \
    --junitxml="$junit" -o junit_suite_name="$name") || status=1
  files="$files${files:+,}\"$junit\""
  count=$((count + 1))
done

tests=$(cat "$junit_dir/${ORCH_PHASE_ID:-unit-scaffolded}"-*.xml | grep -o '<testcase ' | wc -l)
failures=$(cat "$junit_dir/${ORCH_PHASE_ID:-unit-scaffolded}"-*.xml | grep -o '<failure \|<error ' | wc -l)
{
  echo "junit=[$files]"
  echo "services=$count"
  echo "tests=$tests"
  echo "failures=$failures"
} >>"$ORCH_OUTPUT"
echo "$count services, $tests tests, $failures failed"
exit "$status"
