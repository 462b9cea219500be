#!/usr/bin/env bash
# Installs `promtool` (Prometheus's checker: `promtool check metrics` lints the text that
# `orch stats --format prometheus` prints). Debian ships it inside the `prometheus` package,
# whose maintainer scripts would set up and start a Prometheus server: only the `promtool`
# binary (static) is taken out of the downloaded package, into /usr/local/bin. Idempotent.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    echo "promtool.sh: promtool is installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

marker=/tmp/.orch-apt-updated
if [ ! -e "$marker" ]; then
    $SUDO apt-get update
    touch "$marker"
fi

work=$(mktemp -d)
# apt downloads as `_apt`: let it write there.
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download prometheus)
deb=("$work"/prometheus_*.deb)
dpkg-deb --fsys-tarfile "${deb[0]}" | tar -x -C "$work" ./usr/bin/promtool
$SUDO install -m 0755 "$work/usr/bin/promtool" /usr/local/bin/promtool
echo "promtool.sh: installed $(promtool --version 2>&1 | head -1)"
