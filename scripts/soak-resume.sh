#!/usr/bin/env bash
# Crash-resume soak: the torture test of crates/orch-cli/tests/durable/torture.rs (SIGKILL at
# seeded random moments, resume until done, check every invariant) over TRIALS trials
# (default 2000) with seeds from SEED (default 1000000, apart from CI's 0..200).
#
#   scripts/soak-resume.sh                 # 2,000 trials, about 20 minutes on 2 cores
#   TRIALS=500 SEED=7 scripts/soak-resume.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS=${TRIALS:-2000}
SEED=${SEED:-1000000}

ORCH_TORTURE_TRIALS=$TRIALS ORCH_TORTURE_SEED=$SEED \
    cargo test -p orch-cli --test cli -- --exact durable::torture::crash_resume_torture --nocapture
