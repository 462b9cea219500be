#!/usr/bin/env bash
# Installs HAProxy (Debian's haproxy 2.6), the proxy that `deploy` phases run in front of
# blue-green and canary deployments, when absent. Idempotent: nothing happens when haproxy
# is installed, and `apt-get update` runs at most once per machine boot (marker
# /tmp/.orch-apt-updated, shared with the other installers). The package's own service is
# kept from starting: orch starts one proxy per deployed service itself.
set -euo pipefail

if command -v haproxy >/dev/null 2>&1; then
  echo "haproxy: already installed ($(haproxy -v 2>/dev/null | head -n 1))"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "haproxy: need root to install haproxy" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [[ ! -e /tmp/.orch-apt-updated ]]; then
  apt-get -o DPkg::Lock::Timeout=600 update -q
  touch /tmp/.orch-apt-updated
fi
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
cleanup() { if ((created_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT
echo "haproxy: installing haproxy"
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends haproxy
haproxy -v | head -n 1
