#!/usr/bin/env bash
# Renders the HTML dashboard of a 2,000-phase run and measures how long headless Chromium
# takes to load it (the `load` event, from the page's own performance clock), against a
# blank page's process time. Needs chromium (scripts/install/chromium.sh).
#
#   crates/orch-report/benches/report_2000.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
ORCH_REPORT_BENCH=1 ORCH_REQUIRE_SERVICES=1 cargo test -p orch-report \
    --test integration -- --exact browser::bench_dashboard_of_2000_phases --nocapture 2>&1 |
    grep -E "^2000 phases|test result|panicked"
