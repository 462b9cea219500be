//! Integration tests of orch-quality: SARIF, coverage and JUnit files written by real runs
//! of ruff, bandit, eslint, coverage.py, c8 and pytest on fixtures made here; the gate, the
//! score and bad inputs; the secrets scan on a planted tree, through the engine.
//!
//! The tools come from `scripts/install/quality-tools.sh`. With `ORCH_REQUIRE_SERVICES=1`
//! (as `scripts/test` sets) a missing tool fails the test; otherwise the test says why and
//! skips.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod gate;
mod secrets;
mod support;
mod tools;
