//! Every phase kind and agent type the CLI knows.

use orch_core::Registry;

/// The registry of the `orch` binary: the core kinds and every adapter's.
pub fn full() -> Registry {
    let mut r = Registry::with_builtins();
    orch_delivery::register(&mut r);
    orch_docker::register(&mut r);
    orch_git::register(&mut r);
    orch_quality::register(&mut r);
    orch_report::register(&mut r);
    orch_system::register(&mut r);
    r
}
