//! `orch-delivery`: project-tree phases for orch.
//!
//! Kinds (all served by the built-in `local` agent type):
//! - `discover`: inventory a tree (services, Compose files, env var names, problems) into
//!   `discovery.json` ([`discover`]);
//! - `parity`: check the discovery against a spec of required modules
//!   (`discrepancy.json`, [`parity`]);
//! - `scaffold`: render services for missing modules from a template ([`scaffold`]);
//! - `package`: a deterministic `tar.gz` with a `MANIFEST.sha256` ([`package`]);
//! - `package.verify`: check such an archive without extracting it ([`verify_archive`]).
//!
//! Register them with [`register`]:
//!
//! ```
//! let mut registry = orch_core::Registry::with_builtins();
//! orch_delivery::register(&mut registry);
//! assert_eq!(registry.kind("discover").unwrap().agent_type, "local");
//! ```
//!
//! Outputs are strings: counts are decimal text and lists are JSON arrays
//! (`["a","b"]`). See the crate's README for every setting, output and file format.

pub mod discover;
pub mod errors;
pub mod package;
pub mod parity;
pub mod scaffold;
mod util;
pub mod verify;
mod yaml;

pub use errors::{DiscoverError, PackageError, ParityError, ScaffoldError, VerifyError};
pub use verify::{VerifyReport, verify_archive};

/// Registers `discover`, `parity`, `scaffold`, `package` and `package.verify`, all served
/// by agents of type `local`.
pub fn register(registry: &mut orch_core::Registry) {
    discover::register(registry);
    parity::register(registry);
    scaffold::register(registry);
    package::register(registry);
    verify::register(registry);
}
