//! Every phase kind and agent type the CLI knows.

use orch_core::Registry;

/// The registry of the `orch` binary: the core kinds and every adapter's.
pub fn full() -> Registry {
    Registry::with_builtins()
}
