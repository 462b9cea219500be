#!/usr/bin/env bash
# Installs what the Docker tests need, from Debian's packages, when absent:
#   docker.io        dockerd (20.10, API 1.41) and the docker client
#   docker-registry  Distribution 2.8, a real registry served on loopback
#   busybox-static   a static /bin/busybox that test images copy in (FROM scratch)
#   apache2-utils    htpasswd, for the registry's basic auth
# Idempotent: packages already installed are not touched, and `apt-get update` runs at most
# once per machine boot (marker /tmp/.orch-apt-updated).
set -euo pipefail

# package -> a file or command that proves it is there
declare -A probes=(
  [docker.io]=dockerd
  [docker-registry]=docker-registry
  [busybox-static]=/bin/busybox
  [apache2-utils]=htpasswd
)

missing=()
for pkg in docker.io docker-registry busybox-static apache2-utils; do
  probe=${probes[$pkg]}
  if dpkg -s "$pkg" >/dev/null 2>&1; then
    continue
  fi
  # busybox (dynamic) also provides /bin/busybox; only the static one works FROM scratch.
  if [[ $pkg != busybox-static ]] && { [[ $probe == /* && -x $probe ]] || command -v "$probe" >/dev/null 2>&1; }; then
    continue
  fi
  missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
  echo "docker: docker.io, docker-registry, busybox-static, apache2-utils already installed"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "docker: need root to install: ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if [[ ! -e /tmp/.orch-apt-updated ]]; then
  apt-get -o DPkg::Lock::Timeout=600 update -q
  touch /tmp/.orch-apt-updated
fi
echo "docker: installing ${missing[*]}"
# policy-rc.d keeps the packages' maintainer scripts from starting services: the service
# script starts dockerd and the registry itself, with its own settings.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
cleanup() { if ((created_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT
# Several installers may run at once on a shared machine: wait for the dpkg lock.
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
