#!/usr/bin/env bash
# Wall time of building N small images (default 8):
#   orch      orch-docker's docker.build, JOBS at once (default 4)   (examples/build_many.rs)
#   loop      a sequential `docker build` loop (classic builder, like orch)
#   compose   `docker-compose build` (Debian's docker-compose 1.29), and with --parallel
# Each is measured cold (no cache: every step really runs) and warm (a rebuild of unchanged
# contexts: the layer cache for docker and compose, the content-hash check for orch).
#
#   benches/docker_build.sh            # N=8 JOBS=4
#   N=16 JOBS=4 benches/docker_build.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-8}
JOBS=${JOBS:-4}
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

bash "$ROOT/scripts/install/docker.sh" >/dev/null
if ! command -v docker-compose >/dev/null; then
  echo "installing docker-compose (Debian's package)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [[ ! -e /tmp/.orch-apt-updated ]]; then
    apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
    touch /tmp/.orch-apt-updated
  fi
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends docker-compose >/dev/null
fi
bash "$ROOT/scripts/services/docker.sh" start 2>/dev/null

(cd "$ROOT" && cargo build -q --release -p orch-docker --example build_many)
BUILD_MANY="$ROOT/target/release/examples/build_many"

WORK=$(mktemp -d /tmp/orch-bench-docker.XXXXXX)
cleanup() {
  docker images --format '{{.Repository}}:{{.Tag}}' | grep '^orch-bench/' | xargs -r docker rmi -f >/dev/null 2>&1 || true
  docker image prune -f --filter label=org.orch.bench=1 >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# N contexts: static busybox FROM scratch, a RUN step with a little CPU work, a small file.
stamp=$(date +%s%N)
{
  echo "version: '2.4'"
  echo "services:"
} >"$WORK/compose.yml"
for i in $(seq 1 "$N"); do
  ctx="$WORK/ctx$i"
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  echo "service $i $stamp" >"$ctx/app.txt"
  cat >"$ctx/Dockerfile" <<EOF
FROM scratch
LABEL org.orch.bench=1
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN i=0; while [ \$i -lt 30000 ]; do i=\$((i+1)); done; echo \$i > /work.txt
COPY app.txt /app.txt
CMD ["cat", "/app.txt"]
EOF
  printf '  svc%s:\n    build: ./ctx%s\n    image: orch-bench/compose-%s:latest\n' "$i" "$i" "$i" >>"$WORK/compose.yml"
done

now() { date +%s.%N; }
# Runs a command quietly and prints its wall time in seconds.
timed() {
  local log=$1
  shift
  local t0 t1
  t0=$(now)
  if ! "$@" >"$log" 2>&1; then
    echo "failed: $* (log $log)" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

orch_run() {
  local mode=$1 args=()
  for i in $(seq 1 "$N"); do args+=("$WORK/ctx$i=orch-bench/orch-$i:latest"); done
  if [[ $mode == cold ]]; then
    "$BUILD_MANY" --jobs "$JOBS" --no-cache "${args[@]}"
  else
    "$BUILD_MANY" --jobs "$JOBS" "${args[@]}"
  fi
}
loop_run() {
  local mode=$1 flags=(-q)
  [[ $mode == cold ]] && flags+=(--no-cache)
  for i in $(seq 1 "$N"); do
    docker build "${flags[@]}" -t "orch-bench/loop-$i:latest" "$WORK/ctx$i"
  done
}
compose_run() {
  local mode=$1 flags=()
  [[ $mode == cold ]] && flags+=(--no-cache)
  docker-compose -f "$WORK/compose.yml" -p orchbench build "${flags[@]}"
}
compose_parallel_run() {
  local mode=$1 flags=(--parallel)
  [[ $mode == cold ]] && flags+=(--no-cache)
  docker-compose -f "$WORK/compose.yml" -p orchbench build "${flags[@]}"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

echo "docker build benchmark: $N images, orch jobs=$JOBS, $(docker version --format 'dockerd {{.Server.Version}} (API {{.Server.APIVersion}})'), $(nproc) cores"
declare -A T
for mode in cold warm; do
  T[orch,$mode]=$(timed "$WORK/orch-$mode.log" orch_run "$mode")
  T[loop,$mode]=$(timed "$WORK/loop-$mode.log" loop_run "$mode")
  T[compose,$mode]=$(timed "$WORK/compose-$mode.log" compose_run "$mode")
  T[composep,$mode]=$(timed "$WORK/composep-$mode.log" compose_parallel_run "$mode")
done
cached=$(grep -c 'cached=true' "$WORK/orch-warm.log" || true)

printf '\n%-34s %10s %10s\n' "" "cold (s)" "warm (s)"
printf '%-34s %10.2f %10.2f\n' "orch-docker, jobs=$JOBS" "${T[orch,cold]}" "${T[orch,warm]}"
printf '%-34s %10.2f %10.2f\n' "docker build, sequential loop" "${T[loop,cold]}" "${T[loop,warm]}"
printf '%-34s %10.2f %10.2f\n' "docker-compose build" "${T[compose,cold]}" "${T[compose,warm]}"
printf '%-34s %10.2f %10.2f\n' "docker-compose build --parallel" "${T[composep,cold]}" "${T[composep,warm]}"
echo
for mode in cold warm; do
  printf '%s: loop/orch %.2fx, compose/orch %.2fx, compose --parallel/orch %.2fx\n' "$mode" \
    "$(ratio "${T[loop,$mode]}" "${T[orch,$mode]}")" \
    "$(ratio "${T[compose,$mode]}" "${T[orch,$mode]}")" \
    "$(ratio "${T[composep,$mode]}" "${T[orch,$mode]}")"
done
echo "warm orch builds skipped by the content-hash check: $cached of $N"
