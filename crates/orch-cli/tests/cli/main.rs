//! Integration tests of the `orch` binary: real pipelines in temp dirs.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod commands;
mod delivery;
mod deploy;
mod doctor;
mod durable;
mod engine;
mod errors;
mod governance;
mod inputs;
mod notify;
mod output;
mod progress;
mod quality;
mod schema;
mod secrets;
mod serve;
mod stats;
mod support;
mod swarm;
mod terminal;
