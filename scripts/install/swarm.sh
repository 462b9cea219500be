#!/usr/bin/env bash
# Installs what scripts/services/swarm.sh needs beyond scripts/install/docker.sh, when absent:
#   iproute2     `ip` (network namespaces, the bridge, veths)
#   iptables     the FORWARD rule that lets the nodes talk across the bridge
#   util-linux   `nsenter` and `unshare`
# Idempotent; `apt-get update` runs at most once per machine boot (marker /tmp/.orch-apt-updated).
set -euo pipefail

declare -A probes=([iproute2]=ip [iptables]=iptables [util-linux]=nsenter)
missing=()
for pkg in iproute2 iptables util-linux; do
  command -v "${probes[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
  echo "swarm: iproute2, iptables, util-linux already installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "swarm: need root to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [[ ! -e /tmp/.orch-apt-updated ]]; then
  apt-get -o DPkg::Lock::Timeout=600 update -q
  touch /tmp/.orch-apt-updated
fi
echo "swarm: installing ${missing[*]}"
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
