//! Process-wide pieces: the tokio runtime the engine runs on and the registry of kinds.

use std::sync::{Mutex, OnceLock};

use orch_core::Registry;

use crate::errors::Error;

/// The tokio runtime every run of this process uses. It is made on first use (not at
/// import, so a process that forks before its first run gets a working runtime) and lives
/// as long as the process.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, Error> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(1)
        .thread_name("orch-engine")
        .on_thread_park(crate::pool::engine_parking)
        .build()
        .map_err(|e| Error::Engine(format!("cannot start the tokio runtime: {e}")))?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Every phase kind and agent type: the same set as the `orch` binary (the core kinds and
/// each adapter crate's).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(full_registry)
}

/// Builds the full registry: every kind and agent type orch ships ([`orch_kinds`], the
/// list the `orch` binary loads too).
///
/// ```
/// let r = orch_py::runtime::full_registry();
/// for kind in ["command", "gate", "discover", "docker.build", "git.tag", "report", "system.check"] {
///     assert!(r.kind(kind).is_some(), "{kind}");
/// }
/// ```
pub fn full_registry() -> Registry {
    orch_kinds::registry()
}
