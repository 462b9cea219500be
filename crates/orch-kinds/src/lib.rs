//! Every phase kind and agent type orch ships, in one [`Registry`]: the one list both
//! front-ends (the `orch` binary and the Python module) load, so they always offer the
//! same kinds. An adapter crate's kinds reach users by being added here.
//!
//! ```
//! let r = orch_kinds::registry();
//! for kind in ["command", "gate", "discover", "docker.build", "git.tag", "quality", "report", "system.check", "deploy", "http.check"] {
//!     assert!(r.kind(kind).is_some(), "{kind}");
//! }
//! ```

use orch_core::Registry;
use orch_core::errors::RegistryError;

/// The core kinds (`command`, `gate`) and every adapter's kinds and agent types.
pub fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    // Kind names are written in the adapters' code: a clash is a bug that the first test
    // (or run) finds, not a condition of any input.
    if let Err(e) = register(&mut r) {
        panic!("the adapters' kinds clash: {e}");
    }
    r
}

/// Adds every adapter's kinds and agent types to `r`: delivery, deploy, docker, git,
/// quality, report and system. A name `r` already has is refused.
pub fn register(r: &mut Registry) -> Result<(), RegistryError> {
    orch_delivery::register(r)?;
    orch_deploy::register(r)?;
    orch_docker::register(r)?;
    orch_git::register(r)?;
    orch_quality::register(r)?;
    orch_report::register(r)?;
    orch_system::register(r)
}
