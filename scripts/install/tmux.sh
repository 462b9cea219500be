#!/usr/bin/env bash
# Installs tmux: the orch-cli terminal test runs `orch run` in a tmux pane and reads the
# live view from it (crates/orch-cli/tests/cli/terminal.rs). Idempotent.
set -euo pipefail

if command -v tmux >/dev/null 2>&1; then
    echo "tmux.sh: tmux is installed ($(tmux -V))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

marker=/tmp/.orch-apt-updated
if [ ! -e "$marker" ]; then
    $SUDO apt-get update
    touch "$marker"
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends tmux
echo "tmux.sh: installed $(tmux -V)"
