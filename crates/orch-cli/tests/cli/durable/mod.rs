//! Durable runs through the real `orch` binary: crash-resume torture, failpoints, process
//! cleanup on timeout and signals, the workspace lock, and run history.

mod cleanup;
mod full;
mod history;
mod lifetime;
mod lock;
mod support;
mod torture;
