#!/usr/bin/env bash
# A Docker engine and a private registry for the orch-docker tests.
#
#   scripts/services/docker.sh start   start what is not running yet, wait until ready
#   scripts/services/docker.sh env     print ORCH_TEST_REGISTRY, ORCH_TEST_REGISTRY_USER,
#                                      ORCH_TEST_REGISTRY_PASSWORD_FILE (KEY=VALUE lines)
#   scripts/services/docker.sh stop    stop what `start` started, and nothing else
#
# The engine: when one already answers (DOCKER_HOST or the default socket), it is used as
# it is. Otherwise `dockerd` is started by hand on the default socket (log
# /tmp/orch-dockerd.log, pidfile /tmp/orch-dockerd.pid).
# The registry: Debian's `docker-registry` (Distribution 2.8) on 127.0.0.1:5000, or the
# next free port, with htpasswd auth (user `orch`, a generated password kept in a file),
# its own config and storage under /tmp/orch-docker. Loopback registries need no TLS: the
# engine treats 127.0.0.0/8 as insecure by default.
set -euo pipefail

STATE=${ORCH_DOCKER_STATE:-/tmp/orch-docker}
DOCKERD_LOG=/tmp/orch-dockerd.log
DOCKERD_PID=/tmp/orch-dockerd.pid
DOCKERD_OURS=$STATE/dockerd.started # holds the pid of a dockerd this script started
REG_DIR=$STATE/registry
REG_PID=$STATE/registry.pid
REG_LOG=$STATE/registry.log
REG_CONFIG=$REG_DIR/config.yml
REG_USER=orch
REG_PASSWORD_FILE=$STATE/registry-password
ENV_FILE=$STATE/env
DEADLINE_SECS=${ORCH_DOCKER_DEADLINE:-90}

log() { echo "docker service: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# Whether the process in a pidfile is alive and runs the expected program.
alive() {
  local pidfile=$1 program=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$program"
}

# Whether a pid names a live process (a zombie is not).
running() {
  local state
  [[ -r /proc/$1/status ]] || return 1
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status")
  [[ -n $state && $state != Z && $state != X ]]
}

# A dockerd killed hard leaves containerd's pidfile behind; if it names a process that is
# gone (or a zombie), the next dockerd waits for that containerd until it times out.
clear_stale_containerd() {
  local pidfile=/var/run/docker/containerd/containerd.pid pid
  [[ -s $pidfile ]] || return 0
  pid=$(<"$pidfile")
  if [[ $pid =~ ^[0-9]+$ ]] && running "$pid" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q containerd; then
    return 0
  fi
  log "removing stale $pidfile (pid $pid is gone)"
  rm -f "$pidfile" /var/run/docker/containerd/containerd.sock
}

engine_answers() {
  docker version --format '{{.Server.APIVersion}}' >/dev/null 2>&1
}

# For the wait after starting dockerd: true when it answers; exits when it died.
engine_answers_or_died() {
  engine_answers && return 0
  if [[ -s $DOCKERD_OURS ]] && ! running "$(<"$DOCKERD_OURS")"; then
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    die "dockerd exited while starting (log: $DOCKERD_LOG)"
  fi
  return 1
}

# Prints the HTTP status of GET /v2/ on 127.0.0.1:PORT, or nothing.
v2_status() {
  (
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
    printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$1" >&3
    IFS= read -r -t 5 line <&3 || true
    line=${line%$'\r'}
    if [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]]; then echo "${BASH_REMATCH[1]}"; fi
  )
}

port_free() {
  ! (exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1")
}

# Polls a command every 0.2 s until it succeeds or the deadline passes.
wait_until() {
  local deadline=$((SECONDS + DEADLINE_SECS))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.2
  done
}

start_engine() {
  if engine_answers; then
    log "engine already running ($(docker version --format 'dockerd {{.Server.Version}}, API {{.Server.APIVersion}}'))"
    return
  fi
  if alive "$DOCKERD_PID" dockerd; then
    log "dockerd (pid $(<"$DOCKERD_PID")) is starting; waiting"
  else
    command -v dockerd >/dev/null || die "dockerd is not installed: run scripts/install/docker.sh"
    if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != unix:///var/run/docker.sock ]]; then
      die "DOCKER_HOST=$DOCKER_HOST does not answer, and this script only starts an engine on the default socket"
    fi
    [[ $(id -u) -eq 0 ]] || die "no engine answers and starting dockerd needs root"
    mkdir -p "$STATE"
    rm -f "$DOCKERD_PID"
    clear_stale_containerd
    log "starting dockerd (log $DOCKERD_LOG)"
    # setsid: the engine outlives this script and its terminal. Its own containerd is
    # started and stopped by dockerd.
    setsid dockerd --host unix:///var/run/docker.sock --pidfile "$DOCKERD_PID" \
      >>"$DOCKERD_LOG" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$DOCKERD_OURS"
  fi
  if ! wait_until engine_answers_or_died; then
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    die "dockerd did not answer within ${DEADLINE_SECS}s (log: $DOCKERD_LOG)"
  fi
  if [[ -s $DOCKERD_OURS && -s $DOCKERD_PID ]]; then
    cp "$DOCKERD_PID" "$DOCKERD_OURS" # dockerd's own word for its pid
  fi
  log "engine ready ($(docker version --format 'dockerd {{.Server.Version}}, API {{.Server.APIVersion}}'))"
}

registry_ready() { [[ $(v2_status "$1") == 401 ]]; }

write_env() {
  local port=$1
  {
    echo "ORCH_TEST_REGISTRY=127.0.0.1:$port"
    echo "ORCH_TEST_REGISTRY_USER=$REG_USER"
    echo "ORCH_TEST_REGISTRY_PASSWORD_FILE=$REG_PASSWORD_FILE"
  } >"$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

current_port() {
  [[ -s $ENV_FILE ]] || return 1
  sed -n 's/^ORCH_TEST_REGISTRY=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$ENV_FILE"
}

start_registry() {
  local port
  if alive "$REG_PID" docker-registry && port=$(current_port) && [[ -n $port ]]; then
    if wait_until registry_ready "$port"; then
      log "registry already running on 127.0.0.1:$port"
      return
    fi
    die "registry (pid $(<"$REG_PID")) does not answer on 127.0.0.1:$port (log: $REG_LOG)"
  fi
  command -v docker-registry >/dev/null || die "docker-registry is not installed: run scripts/install/docker.sh"
  command -v htpasswd >/dev/null || die "htpasswd is not installed: run scripts/install/docker.sh"
  mkdir -p "$REG_DIR/data"
  chmod 700 "$STATE"
  if [[ ! -s $REG_PASSWORD_FILE ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$REG_PASSWORD_FILE")
  fi
  htpasswd -Bbc "$REG_DIR/htpasswd" "$REG_USER" "$(<"$REG_PASSWORD_FILE")" 2>/dev/null
  port=""
  for candidate in 5000 $(seq 5001 5099); do
    if port_free "$candidate"; then
      port=$candidate
      break
    fi
  done
  [[ -n $port ]] || die "no free port in 5000-5099 for the registry"
  cat >"$REG_CONFIG" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: orch-test-registry
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: orch-test-registry
    path: $REG_DIR/htpasswd
EOF
  log "starting docker-registry on 127.0.0.1:$port (log $REG_LOG)"
  setsid docker-registry serve "$REG_CONFIG" >>"$REG_LOG" 2>&1 </dev/null &
  echo $! >"$REG_PID"
  if ! wait_until registry_ready "$port"; then
    tail -n 20 "$REG_LOG" >&2 || true
    die "the registry did not answer 401 on http://127.0.0.1:$port/v2/ within ${DEADLINE_SECS}s"
  fi
  write_env "$port"
  log "registry ready on 127.0.0.1:$port (user $REG_USER, password in $REG_PASSWORD_FILE)"
}

# Stops the process in a pidfile (TERM, then KILL after a deadline) if it runs `program`.
stop_pid() {
  local pidfile=$1 program=$2 name=$3 pid deadline
  if ! alive "$pidfile" "$program"; then
    rm -f "$pidfile"
    return
  fi
  pid=$(<"$pidfile")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "$name did not stop within 30s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
}

cmd_start() {
  start_engine
  start_registry
}

cmd_env() {
  local port
  if ! port=$(current_port) || [[ -z $port ]] || ! registry_ready "$port"; then
    die "the test registry is not running: run scripts/services/docker.sh start"
  fi
  cat "$ENV_FILE"
}

cmd_stop() {
  stop_pid "$REG_PID" docker-registry "the registry"
  rm -f "$ENV_FILE"
  if [[ -s $DOCKERD_OURS ]]; then
    # Only the dockerd this script started: its pid was recorded when it was started.
    cp "$DOCKERD_OURS" "$STATE/dockerd.stop.pid"
    stop_pid "$STATE/dockerd.stop.pid" dockerd dockerd
    rm -f "$DOCKERD_OURS"
  else
    log "leaving the engine alone: this script did not start it"
  fi
}

case ${1:-} in
start) cmd_start ;;
env) cmd_env ;;
stop) cmd_stop ;;
*)
  echo "usage: $0 start|stop|env" >&2
  exit 2
  ;;
esac
