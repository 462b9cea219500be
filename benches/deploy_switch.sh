#!/usr/bin/env bash
# How fast traffic moves, behind orch's HAProxy, on a real Docker engine:
#   switch     blue-green: from "the new version is healthy" (orch's health checks passed
#              and the proxy's own checks see every new server up) to "all traffic on it"
#              (every weight set through the runtime socket)       -> output `switch_ms`
#   rollback   canary of a version that answers 500 to every fifth request, with a client
#              loop sending traffic: from "bad step detected" to "all traffic back on the
#              previous version"                                     -> output `rollback_ms`
# Medians (and min/max) over N deployments each (default 10). Each deployment also counts
# the client's failed requests (none expected for blue-green). The times are measured by
# orch around the runtime-API calls; the client loop checks that traffic really moved.
#
#   benches/deploy_switch.sh           # N=10
#   FORCE=1 benches/deploy_switch.sh   # a smoke run: N=2
#   ORCH=target/debug/orch ...         # use that binary instead of building a release one
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-10}
if [[ -n ${FORCE:-} ]]; then N=2; fi

bash "$ROOT/scripts/install/docker.sh" >/dev/null
bash "$ROOT/scripts/install/haproxy.sh" >/dev/null
bash "$ROOT/scripts/services/docker.sh" start 2>/dev/null
if [[ -z ${ORCH:-} ]]; then
  (cd "$ROOT" && cargo build -q --release -p orch-cli)
  ORCH="$ROOT/target/release/orch"
fi
ORCH=$(cd "$(dirname "$ORCH")" && pwd)/$(basename "$ORCH")

WORK=$(mktemp -d /tmp/orch-bench-deploy.XXXXXX)
CLIENT_PID=
cleanup() {
  [[ -n $CLIENT_PID ]] && kill "$CLIENT_PID" 2>/dev/null || true
  (cd "$WORK" && "$ORCH" deploy stop bench >/dev/null 2>&1) || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Test images: busybox httpd FROM scratch; a CGI answers the version (or 500 every 5th).
ctx="$WORK/image"
mkdir -p "$ctx/www/cgi-bin"
cp /bin/busybox "$ctx/busybox"
echo ok >"$ctx/www/health"
cat >"$ctx/www/cgi-bin/app" <<'CGI'
#!/bin/sh
if [ -n "$FAIL_EVERY" ]; then
  n=$(( $(cat /tmp/count 2>/dev/null || echo 0) + 1 ))
  echo "$n" > /tmp/count
  if [ $(( n % FAIL_EVERY )) -eq 0 ]; then
    printf 'Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nfail\n'
    exit 0
  fi
fi
printf 'Content-Type: text/plain\r\n\r\n%s\n' "$VERSION"
CGI
chmod 755 "$ctx/www/cgi-bin/app"
cat >"$ctx/Dockerfile" <<'EOF2'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY www /www
RUN mkdir -p /tmp && chmod 1777 /tmp
ARG VERSION
ARG FAIL_EVERY=
ENV VERSION=$VERSION FAIL_EVERY=$FAIL_EVERY
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
EOF2
for v in a b; do
  docker build -q -t "orch-bench-deploy:$v" --build-arg "VERSION=$v" "$ctx" >/dev/null
done
docker build -q -t orch-bench-deploy:flaky --build-arg VERSION=flaky --build-arg FAIL_EVERY=5 "$ctx" >/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LISTEN=127.0.0.1:$PORT
pipeline() { # TAG STRATEGY EXTRA
  cat >"$WORK/orch.toml" <<EOF2
[pipeline]
name = "bench-deploy"
[phases.deploy]
kind = "deploy"
timeout = "60s"
with = { service = "bench", image = "orch-bench-deploy:$1", strategy = "$2", listen = "$LISTEN", port = 8080, health = { interval = "100ms", healthy = 2, within = "10s" }, drain = "0s"$3 }
EOF2
}
output() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["phases"]["deploy"]["outputs"].get(sys.argv[2],""))' "$WORK/.orch/runs/latest/run.json" "$1"; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median %s ms (min %s, max %s, n=%d)\n", m, a[1], a[NR], NR}'; }

client() { # a bounded client loop: at most 10 minutes; counts non-200 answers in $WORK/failed
  : >"$WORK/failed"
  (
    end=$((SECONDS + 600))
    while ((SECONDS < end)); do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$LISTEN/cgi-bin/app" || echo 000)
      [[ $code == 200 ]] || echo "$code" >>"$WORK/failed"
      sleep 0.005
    done
  ) &
  CLIENT_PID=$!
}

cd "$WORK"
pipeline a blue-green ""
"$ORCH" run -q >/dev/null 2>&1 || { echo "first deployment failed" >&2; "$ORCH" logs deploy >&2; exit 1; }
client

switches=()
tag=a
for i in $(seq 1 "$N"); do
  if [[ $tag == a ]]; then tag=b; else tag=a; fi
  pipeline "$tag" blue-green ""
  "$ORCH" run -q >/dev/null 2>&1 || { echo "blue-green $i failed" >&2; exit 1; }
  switches+=("$(output switch_ms)")
done
bg_failed=$(wc -l <"$WORK/failed")

rollbacks=()
for i in $(seq 1 "$N"); do
  pipeline flaky canary ', steps = [20, 100], analysis = { interval = "5s", max_error_rate = 0.05, min_requests = 10 }'
  if "$ORCH" run -q >/dev/null 2>&1; then
    echo "canary $i of the flaky version was not rolled back" >&2
    exit 1
  fi
  [[ $(output status) == rolled_back ]] || { echo "canary $i: status $(output status)" >&2; exit 1; }
  rollbacks+=("$(output rollback_ms)")
done
kill "$CLIENT_PID" 2>/dev/null || true
CLIENT_PID=

echo "deploy_switch (N=$N, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '  blue-green, healthy -> all traffic:    %s\n' "$(printf '%s\n' "${switches[@]}" | median)"
echo "  client requests that failed during the blue-green deployments: $bg_failed"
printf '  canary, bad step -> all traffic back:  %s\n' "$(printf '%s\n' "${rollbacks[@]}" | median)"
