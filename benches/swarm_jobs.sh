#!/usr/bin/env bash
# N short jobs (exit 0) on the three-node swarm of scripts/services/swarm.sh, CAPACITY at once:
#   orch    one pipeline of N `docker.run` phases on a `swarm` agent with capacity CAPACITY
#           (each a one-shot service: created, followed, removed)
#   shell   `docker service create --mode replicated-job --detach=false ...` then
#           `docker service rm`, for each job, through `xargs -P CAPACITY`
# Then Swarm's own create-to-complete time of a job (task CreatedAt to its completion, from
# `docker inspect` of SAMPLE jobs run one after the other), and orch's overhead per job
# over it (mean phase duration in run.json minus that).
#
#   benches/swarm_jobs.sh                 # N=60 CAPACITY=6
#   N=6 benches/swarm_jobs.sh             # a smoke run
#   ORCH=target/debug/orch N=6 benches/swarm_jobs.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-60}
CAPACITY=${CAPACITY:-6}
SAMPLE=${SAMPLE:-6}

bash "$ROOT/scripts/install/docker.sh" >/dev/null
bash "$ROOT/scripts/services/docker.sh" start 2>/dev/null
bash "$ROOT/scripts/services/swarm.sh" start 2>/dev/null
eval "$(bash "$ROOT/scripts/services/swarm.sh" env)"
M=$ORCH_SWARM_HOST

if [[ -z ${ORCH:-} ]]; then
  (cd "$ROOT" && cargo build -q --release -p orch-cli)
  ORCH=$ROOT/target/release/orch
fi

WORK=$(mktemp -d /tmp/orch-bench-swarm.XXXXXX)
stamp=$(date +%s%N)
cleanup() {
  docker -H "$M" service ls -q --filter "label=orch-bench=$stamp" | xargs -r docker -H "$M" service rm >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The job image: scratch + static busybox, built on the manager, pushed where nodes pull.
mkdir -p "$WORK/image"
cp /bin/busybox "$WORK/image/"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox", "true"]\n' >"$WORK/image/Dockerfile"
tag=$ORCH_SWARM_REGISTRY/orch-bench/swarm-job:1
docker -H "$M" build -q -t "$tag" "$WORK/image" >/dev/null
docker -H "$M" --config "$ORCH_SWARM_DOCKER_CONFIG" push -q "$tag" >/dev/null
image=$(docker -H "$M" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$tag" | grep "^$ORCH_SWARM_REGISTRY/" | head -n 1)
[[ -n $image ]] || { echo "no digest for $tag" >&2; exit 1; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# --- orch ------------------------------------------------------------------------------
{
  printf '[pipeline]\nname = "swarm-bench"\njobs = %s\n\n' "$CAPACITY"
  printf '[agents.cluster]\ntype = "swarm"\ncapacity = %s\n' "$CAPACITY"
  printf 'with = { host = "%s", docker_config = "%s" }\n' "$M" "$ORCH_SWARM_DOCKER_CONFIG"
  for i in $(seq 1 "$N"); do
    printf '\n[phases.job-%s]\nkind = "docker.run"\nagent = "cluster"\n' "$i"
    printf 'with = { image = "%s", command = ["/bin/busybox", "true"] }\n' "$image"
  done
} >"$WORK/orch.toml"
t0=$(now)
if ! (cd "$WORK" && "$ORCH" run --quiet >"$WORK/orch.log" 2>&1); then
  tail -n 30 "$WORK/orch.log" >&2
  exit 1
fi
t1=$(now)
orch_s=$(elapsed "$t0" "$t1")
orch_mean=$(python3 - "$WORK/.orch/runs/latest/run.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
d = [p["duration_ms"] for p in r["phases"].values() if p.get("duration_ms") is not None]
print(f"{sum(d) / len(d) / 1000:.3f}")
EOF
)

# --- shell loop ------------------------------------------------------------------------
job() {
  local name=bench-$stamp-$1
  docker -H "$M" --config "$ORCH_SWARM_DOCKER_CONFIG" service create -q --detach=false \
    --with-registry-auth --mode replicated-job --restart-condition none \
    --label "orch-bench=$stamp" --name "$name" "$image" /bin/busybox true >/dev/null &&
    docker -H "$M" service rm "$name" >/dev/null
}
export -f job
export M ORCH_SWARM_DOCKER_CONFIG image stamp
t0=$(now)
seq 1 "$N" | xargs -P "$CAPACITY" -I{} bash -c 'job {}'
t1=$(now)
shell_s=$(elapsed "$t0" "$t1")

# --- Swarm's own create-to-complete ------------------------------------------------------
total=0
for i in $(seq 1 "$SAMPLE"); do
  name=bench-$stamp-sample-$i
  docker -H "$M" --config "$ORCH_SWARM_DOCKER_CONFIG" service create -q --detach=false \
    --with-registry-auth --mode replicated-job --restart-condition none \
    --label "orch-bench=$stamp" --name "$name" "$image" /bin/busybox true >/dev/null
  task=$(docker -H "$M" service ps -q "$name" | head -n 1)
  times=$(docker -H "$M" inspect --format '{{.CreatedAt.Format "2006-01-02T15:04:05.000000Z07:00"}} {{.Status.Timestamp.Format "2006-01-02T15:04:05.000000Z07:00"}}' "$task")
  docker -H "$M" service rm "$name" >/dev/null
  s=$(python3 -c 'import sys, datetime as d
a, b = sys.argv[1:3]
p = d.datetime.fromisoformat
print((p(b) - p(a)).total_seconds())' $times)
  total=$(awk -v a="$total" -v b="$s" 'BEGIN { print a + b }')
done
swarm_mean=$(awk -v t="$total" -v n="$SAMPLE" 'BEGIN { printf "%.3f", t / n }')

echo "swarm jobs: N=$N capacity=$CAPACITY (load: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '  orch         %8.3f s  (%.3f s per job wall; mean phase %.3f s)\n' "$orch_s" "$(awk -v a="$orch_s" -v n="$N" 'BEGIN { print a / n }')" "$orch_mean"
printf '  shell loop   %8.3f s  (%.3f s per job wall)\n' "$shell_s" "$(awk -v a="$shell_s" -v n="$N" 'BEGIN { print a / n }')"
printf '  ratio orch / shell = %.2f\n' "$(awk -v a="$orch_s" -v b="$shell_s" 'BEGIN { print a / b }')"
printf '  Swarm create-to-complete (mean of %s): %.3f s; orch overhead per job: %.3f s\n' \
  "$SAMPLE" "$swarm_mean" "$(awk -v a="$orch_mean" -v b="$swarm_mean" 'BEGIN { print a - b }')"
