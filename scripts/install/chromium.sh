#!/usr/bin/env bash
# Installs headless Chromium (HTML dashboard and PDF compliance report tests of orch-report)
# and poppler-utils (pdftoppm, pdftotext: the PDF tests). Idempotent.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v pdftoppm >/dev/null 2>&1 && command -v pdftotext >/dev/null 2>&1 || need+=(poppler-utils)
# Fonts so text renders in screenshots and PDFs.
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)

if [ ${#need[@]} -eq 0 ]; then
    echo "chromium.sh: chromium and poppler-utils are installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

marker=/tmp/.orch-apt-updated
if [ ! -e "$marker" ]; then
    $SUDO apt-get update
    touch "$marker"
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
echo "chromium.sh: installed ${need[*]}"
