#!/usr/bin/env bash
# Installs what the orch-delivery scaffold tests need to run a scaffolded service's own
# tests out of the box:
#   python3 with fastapi, httpx and pytest   (the python-fastapi template: pytest + TestClient)
#   node and npm                             (the node-express template: npm install, node --test)
# Idempotent: nothing is installed when it is already there, and `apt-get update` runs at
# most once per machine boot (marker /tmp/.orch-apt-updated).
set -euo pipefail

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "scaffold-deps: need root to install: $*" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [[ ! -e /tmp/.orch-apt-updated ]]; then
    apt-get -o DPkg::Lock::Timeout=600 update -q
    touch /tmp/.orch-apt-updated
  fi
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@"
}

if ! command -v python3 >/dev/null 2>&1; then
  apt_install python3 python3-pip
fi
if python3 -c 'import fastapi, httpx, pytest' >/dev/null 2>&1; then
  echo "scaffold-deps: fastapi, httpx and pytest already importable by $(command -v python3)"
else
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
  fi
  echo "scaffold-deps: installing fastapi, httpx, pytest for $(command -v python3)"
  # Debian's own python3 is "externally managed" (PEP 668); a pyenv or venv python is not.
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore fastapi httpx pytest \
    || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --break-system-packages fastapi httpx pytest
fi

if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  echo "scaffold-deps: node $(node --version) and npm $(npm --version) already installed"
else
  apt_install nodejs npm
fi
