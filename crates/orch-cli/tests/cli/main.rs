//! Integration tests of the `orch` binary: real pipelines in temp dirs.

mod engine;
mod errors;
mod output;
mod schema;
mod support;
