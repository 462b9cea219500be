//! Integration tests of orch-delivery: every kind driven through its registered factory.

// Helpers outside `#[test]` functions panic on setup failures too.
#![allow(clippy::unwrap_used)]

mod common;
mod discover;
mod package;
mod parity;
mod scaffold;
