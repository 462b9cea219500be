#!/usr/bin/env bash
# A real three-node Docker Swarm on this machine, for the `swarm` agent's tests.
#
#   scripts/services/swarm.sh start   start what is not running yet, wait until every
#                                     node is ready (idempotent; restarts a node whose
#                                     engine died, and it rejoins the swarm)
#   scripts/services/swarm.sh env     print `export` lines (see below)
#   scripts/services/swarm.sh stop    stop everything `start` made and remove it all:
#                                     engines, network namespaces, bridge, veths, the
#                                     iptables rule, the bridge registry, the state dir
#
# Layout: three `dockerd` (Debian's docker.io), each in its own network namespace
# (`orch-swarm-1..3`, entered with `nsenter --net=`: `ip netns exec` remounts /sys and
# dockerd then fails) and its own UTS namespace (hostnames orch-swarm-1..3), with its own
# data root, exec root, pidfile and socket under $ORCH_SWARM_STATE (default
# /tmp/orch-swarm). A veth per node joins the bridge `orchsw0` (10.231.77.1/24; nodes .11,
# .12, .13). Node 1 is the manager, nodes 2 and 3 are workers; node labels zone=a, b, c.
# The dispatcher heartbeat is 1s, so a node whose engine dies is seen down in seconds.
#
# Registry: the project's test registry (scripts/services/docker.sh, started here when it
# is not running) listens on loopback; a second `docker-registry` process serves the same
# storage and the same htpasswd on the bridge address (10.231.77.1:PORT), which every node
# trusts as an insecure registry. An image pushed to 127.0.0.1:PORT/x is pullable by every
# node as 10.231.77.1:PORT/x (same digest).
#
# This kernel has no IPVS: the routing mesh and service VIPs do not work. Use
# `--publish mode=host` and `--endpoint-mode dnsrr` where ports or DNS are needed.
#
# `env` prints:
#   ORCH_SWARM_HOST       unix socket of the manager (a Docker API, as DOCKER_HOST)
#   ORCH_SWARM_NODES      the three node sockets, space-separated (node 1 first)
#   ORCH_SWARM_REGISTRY   the registry as the nodes reach it (10.231.77.1:PORT)
#   ORCH_SWARM_DOCKER_CONFIG  a Docker config directory with that registry's credentials
#   ORCH_SWARM_SCRIPT     this script (tests restart a killed node with `start`)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${ORCH_SWARM_STATE:-/tmp/orch-swarm}
NET=${ORCH_SWARM_NET:-10.231.77} # a /24; the bridge is .1, node N is .(10+N)
BRIDGE=orchsw0
NODES=(1 2 3)
ZONES=(x a b c) # zone of node N is ZONES[N]
DOCKER_STATE=${ORCH_DOCKER_STATE:-/tmp/orch-docker}
DEADLINE_SECS=${ORCH_SWARM_DEADLINE:-60}
RULE=(FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment orch-swarm -j ACCEPT)

log() { echo "swarm service: $*" >&2; }
die() {
  log "$*"
  exit 1
}

node_dir() { echo "$STATE/node$1"; }
node_ns() { echo "orch-swarm-$1"; }
node_ip() { echo "$NET.$((10 + $1))"; }
node_sock() { echo "$(node_dir "$1")/docker.sock"; }
ndocker() {
  local n=$1
  shift
  docker -H "unix://$(node_sock "$n")" "$@"
}

# Whether a pid names a live process (a zombie is not).
running() {
  local state
  [[ -r /proc/$1/status ]] || return 1
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status")
  [[ -n $state && $state != Z && $state != X ]]
}

# The pid in a pidfile when it is alive and runs `program`.
pid_of() {
  local pidfile=$1 program=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$program" || return 1
  echo "$pid"
}

wait_until() {
  local deadline=$((SECONDS + DEADLINE_SECS))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# --- network -------------------------------------------------------------------------

setup_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET.1/24" dev "$BRIDGE"
  fi
  ip link set "$BRIDGE" up
  # Bridged traffic goes through the host's FORWARD chain (br_netfilter), whose policy
  # dockerd sets to DROP: let the nodes talk to each other.
  if ! iptables -C "${RULE[@]}" 2>/dev/null; then
    iptables -I "${RULE[@]}"
  fi
  local n ns veth
  for n in "${NODES[@]}"; do
    ns=$(node_ns "$n")
    veth=orchsw-v$n
    [[ -e /run/netns/$ns ]] || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$ns"
      ip link set "$veth" master "$BRIDGE" up
    fi
    nsenter --net="/run/netns/$ns" sh -c "
      ip link set lo up
      ip addr show dev eth0 | grep -q ' $(node_ip "$n")/' || ip addr add $(node_ip "$n")/24 dev eth0
      ip link set eth0 up
      ip route show default | grep -q . || ip route add default via $NET.1"
  done
}

teardown_network() {
  local n ns
  for n in "${NODES[@]}"; do
    ip link del "orchsw-v$n" 2>/dev/null || true
    ns=$(node_ns "$n")
    if [[ -e /run/netns/$ns ]]; then
      ip netns del "$ns" || log "cannot remove network namespace $ns"
    fi
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  while iptables -C "${RULE[@]}" 2>/dev/null; do
    iptables -D "${RULE[@]}"
  done
}

# --- registry on the bridge ----------------------------------------------------------

registry_port() {
  sed -n 's/^ORCH_TEST_REGISTRY=127\.0\.0\.1:\([0-9]*\)$/\1/p' "$DOCKER_STATE/env" 2>/dev/null
}

v2_status() { # HOST PORT
  (
    exec 2>/dev/null
    exec 3<>"/dev/tcp/$1/$2" || exit 0
    printf 'GET /v2/ HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$1" "$2" >&3
    IFS= read -r -t 5 line <&3 || true
    line=${line%$'\r'}
    if [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]]; then echo "${BASH_REMATCH[1]}"; fi
  )
}

bridge_registry_ready() { [[ $(v2_status "$NET.1" "$1") == 401 ]]; }

start_registry() {
  local port config
  port=$(registry_port || true)
  if [[ -z $port ]] || [[ $(v2_status 127.0.0.1 "$port") != 401 ]]; then
    log "the test registry is not running: starting it (scripts/services/docker.sh start)"
    bash "$HERE/docker.sh" start
    port=$(registry_port) || true
    [[ -n $port ]] || die "scripts/services/docker.sh start wrote no registry address"
  fi
  if pid_of "$STATE/registry.pid" docker-registry >/dev/null &&
    [[ $(<"$STATE/registry.port") == "$port" ]] && bridge_registry_ready "$port"; then
    return
  fi
  stop_pidfile "$STATE/registry.pid" docker-registry "the bridge registry"
  config=$STATE/registry.yml
  # The same storage and users as the loopback registry, on the bridge address.
  sed "s|^  addr: .*|  addr: $NET.1:$port|" "$DOCKER_STATE/registry/config.yml" >"$config"
  grep -q "addr: $NET.1:$port" "$config" || die "cannot derive the bridge registry's config from $DOCKER_STATE/registry/config.yml"
  setsid docker-registry serve "$config" >>"$STATE/registry.log" 2>&1 </dev/null &
  echo $! >"$STATE/registry.pid"
  echo "$port" >"$STATE/registry.port"
  wait_until bridge_registry_ready "$port" ||
    die "the bridge registry did not answer on http://$NET.1:$port/v2/ (log $STATE/registry.log)"
  log "registry reachable from the nodes at $NET.1:$port"
}

# --- engines -------------------------------------------------------------------------

node_answers() { ndocker "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

node_answers_or_died() {
  node_answers "$1" && return 0
  if ! pid_of "$(node_dir "$1")/launch.pid" "" >/dev/null && ! pid_of "$(node_dir "$1")/docker.pid" dockerd >/dev/null; then
    tail -n 20 "$(node_dir "$1")/dockerd.log" >&2 || true
    die "the engine of node $1 exited while starting (log $(node_dir "$1")/dockerd.log)"
  fi
  return 1
}

# A dockerd killed hard leaves its containerd behind, with a pidfile. The next dockerd
# reuses a live one, but waits for a dead one until it times out: remove a stale pidfile.
# With `kill`, a live one is stopped too (for `stop`).
clear_containerd() {
  local dir=$1 mode=${2:-} pidfile pid
  pidfile=$dir/exec/containerd/containerd.pid
  if pid=$(pid_of "$pidfile" containerd); then
    [[ $mode == kill ]] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    wait_until bash -c "! kill -0 $pid 2>/dev/null" || true
  fi
  rm -f "$pidfile" "$dir/exec/containerd/containerd.sock"
}

# After a dockerd killed hard: the containers' processes and their shims, by the pids
# containerd recorded under the node's exec root.
kill_leftovers() {
  local dir=$1 f pid
  [[ -d $dir/exec ]] || return 0
  for f in $(find "$dir/exec" -name init.pid 2>/dev/null) $(find "$dir/exec" -name shim.pid 2>/dev/null); do
    pid=$(<"$f") || continue
    [[ $pid =~ ^[0-9]+$ ]] && running "$pid" && kill -KILL "$pid" 2>/dev/null || true
  done
}

start_node() {
  local n=$1 dir port
  dir=$(node_dir "$n")
  port=$(<"$STATE/registry.port")
  if node_answers "$n"; then
    return
  fi
  mkdir -p "$dir"
  if ! pid_of "$dir/docker.pid" dockerd >/dev/null; then
    clear_containerd "$dir"
    rm -f "$dir/docker.pid" "$(node_sock "$n")"
    # setsid: the engine outlives this script. `unshare --uts` gives the node its own
    # hostname, so Swarm's node list tells the nodes apart.
    setsid nsenter --net="/run/netns/$(node_ns "$n")" unshare --uts sh -c "
      hostname orch-swarm-$n
      exec dockerd --host unix://$(node_sock "$n") --data-root $dir/data --exec-root $dir/exec \
        --pidfile $dir/docker.pid --insecure-registry $NET.1:$port --log-level warn" \
      >>"$dir/dockerd.log" 2>&1 </dev/null &
    echo $! >"$dir/launch.pid"
  fi
  wait_until node_answers_or_died "$n" || die "the engine of node $n did not answer within ${DEADLINE_SECS}s (log $dir/dockerd.log)"
}

swarm_state() { ndocker "$1" info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }

form_swarm() {
  local n token state
  if [[ $(swarm_state 1) != active ]]; then
    log "initialising the swarm on node 1 ($(node_ip 1))"
    ndocker 1 swarm init --advertise-addr "$(node_ip 1)" --listen-addr "$(node_ip 1):2377" \
      --default-addr-pool 10.232.0.0/16 --dispatcher-heartbeat 1s >/dev/null
  fi
  token=$(ndocker 1 swarm join-token -q worker)
  for n in 2 3; do
    state=$(swarm_state "$n")
    if [[ $state == active || $state == pending ]]; then
      continue
    fi
    log "node $n joins the swarm"
    ndocker "$n" swarm join --token "$token" --advertise-addr "$(node_ip "$n")" \
      --listen-addr "$(node_ip "$n"):2377" "$(node_ip 1):2377" >/dev/null
  done
}

# Node ids by hostname, from the manager; a hostname seen twice (a node that left and
# joined again) keeps only the ready one.
node_id() {
  ndocker 1 node ls --format '{{.ID}} {{.Hostname}} {{.Status}}' |
    awk -v h="orch-swarm-$1" '$2 == h && $3 == "Ready" {print $1; exit}'
}

all_ready() {
  local n
  for n in "${NODES[@]}"; do
    [[ -n $(node_id "$n") ]] || return 1
  done
}

label_nodes() {
  local n id zone
  for n in "${NODES[@]}"; do
    id=$(node_id "$n")
    zone=${ZONES[$n]}
    if [[ $(ndocker 1 node inspect --format '{{index .Spec.Labels "zone"}}' "$id") != "$zone" ]]; then
      ndocker 1 node update --label-add "zone=$zone" "$id" >/dev/null
    fi
  done
  # Nodes that left (a data root removed by hand) stay listed as down: drop them.
  ndocker 1 node ls --format '{{.ID}} {{.Status}}' | awk '$2 == "Down" {print $1}' |
    while read -r id; do ndocker 1 node rm --force "$id" >/dev/null 2>&1 || true; done
}

# A Docker config directory with the registry's credentials under its bridge address:
# what `docker_config` of a `swarm` agent points at, so the nodes can pull.
write_docker_config() {
  local user password
  user=$(sed -n 's/^ORCH_TEST_REGISTRY_USER=//p' "$DOCKER_STATE/env")
  password=$(<"$DOCKER_STATE/registry-password")
  mkdir -p "$STATE/docker-config"
  (
    umask 077
    printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$NET.1:$(<"$STATE/registry.port")" \
      "$(printf '%s:%s' "$user" "$password" | base64 -w0)" >"$STATE/docker-config/config.json"
  )
}

write_env() {
  {
    echo "export ORCH_SWARM_HOST=unix://$(node_sock 1)"
    echo "export ORCH_SWARM_NODES='unix://$(node_sock 1) unix://$(node_sock 2) unix://$(node_sock 3)'"
    echo "export ORCH_SWARM_REGISTRY=$NET.1:$(<"$STATE/registry.port")"
    echo "export ORCH_SWARM_DOCKER_CONFIG=$STATE/docker-config"
    echo "export ORCH_SWARM_SCRIPT=$HERE/swarm.sh"
  } >"$STATE/env.tmp"
  mv "$STATE/env.tmp" "$STATE/env"
}

# --- commands ------------------------------------------------------------------------

stop_pidfile() { # PIDFILE PROGRAM NAME
  local pid
  if pid=$(pid_of "$1" "$2"); then
    log "stopping $3 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while running "$pid"; do
      if ((SECONDS >= deadline)); then
        kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.1
    done
  fi
  rm -f "$1"
}

cmd_start() {
  [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, a bridge, dockerd)"
  local tool
  for tool in dockerd docker docker-registry nsenter unshare ip iptables; do
    command -v "$tool" >/dev/null || die "$tool is not installed: run scripts/install/docker.sh"
  done
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  setup_network
  start_registry
  local n
  for n in "${NODES[@]}"; do
    start_node "$n" &
  done
  for n in "${NODES[@]}"; do
    wait -n || die "a node's engine did not start"
  done
  form_swarm
  wait_until all_ready || die "not every node is ready within ${DEADLINE_SECS}s: $(ndocker 1 node ls 2>&1)"
  label_nodes
  write_docker_config
  write_env
  log "ready: 3 nodes (manager $(node_sock 1)), registry $NET.1:$(<"$STATE/registry.port")"
}

cmd_env() {
  [[ -s $STATE/env ]] && node_answers 1 || die "the swarm is not running: run scripts/services/swarm.sh start"
  cat "$STATE/env"
}

cmd_stop() {
  local n dir
  for n in "${NODES[@]}"; do
    dir=$(node_dir "$n")
    stop_pidfile "$dir/docker.pid" dockerd "the engine of node $n" &
  done
  wait
  for n in "${NODES[@]}"; do
    dir=$(node_dir "$n")
    # What dockerd leaves when it was killed: its containerd and the containers' shims
    # (all started with paths under the node's directory).
    clear_containerd "$dir" kill
    kill_leftovers "$dir"
    # Mounts under the data root (overlay layers, shm, netns bind mounts).
    if [[ -d $dir ]]; then
      { grep -o " $dir/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
      done
    fi
  done
  stop_pidfile "$STATE/registry.pid" docker-registry "the bridge registry"
  teardown_network
  if ! rm -rf "$STATE"; then
    grep -o " $STATE/[^ ]*" /proc/self/mounts >&2 || true
    die "cannot remove $STATE entirely (mounts above are still busy)"
  fi
  log "stopped and removed"
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
