//! Integration tests of orch-docker against a real Docker engine and registry.
//!
//! Start them with `scripts/install/docker.sh && scripts/services/docker.sh start` (and
//! `scripts/services/swarm.sh start` for the swarm tests). With
//! `ORCH_REQUIRE_SERVICES=1` a missing engine or registry fails the tests; without it they
//! print why they skip.

// Test helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod support;

mod agent;
mod build;
mod engine_stop;
mod pipeline;
mod push;
mod run;
mod swarm;
