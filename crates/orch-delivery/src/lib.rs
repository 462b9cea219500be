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
//! orch_delivery::register(&mut registry).unwrap();
//! assert_eq!(registry.kind("discover").unwrap().agent_type, "local");
//! ```
//!
//! Outputs are strings: counts are decimal text and lists are JSON arrays
//! (`["a","b"]`). Each kind's work is also a plain function: [`discover::discover`],
//! [`parity::check`], [`scaffold::plan`] and [`scaffold::write()`],
//! [`package::create_archive`], [`verify_archive`].
//!
//! Running a kind outside the engine, through its registered factory:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use orch_core::{PhaseContext, PhaseId, PhaseSpec, Registry, WithTable};
//!
//! let project = tempfile::tempdir().unwrap();
//! std::fs::create_dir(project.path().join("api")).unwrap();
//! std::fs::write(project.path().join("api/Dockerfile"), "FROM scratch\nEXPOSE 8080\n").unwrap();
//!
//! let mut registry = Registry::with_builtins();
//! orch_delivery::register(&mut registry).unwrap();
//! let mut spec = PhaseSpec::new(PhaseId::new("discover").unwrap(), "discover");
//! spec.with = WithTable::new(toml::from_str("ignore = [\"tmp/\"]").unwrap());
//! let phase = registry.build_phase(&spec).unwrap();
//!
//! let ctx = PhaseContext::builder(PhaseId::new("discover").unwrap(), project.path())
//!     .run_dir(project.path().join(".orch/runs/r1"))
//!     .build();
//! let outcome = phase.run(&ctx).await.unwrap();
//! assert_eq!(outcome.outputs["services"], "1");
//! assert!(outcome.outputs["report"].ends_with("discovery.json"));
//! # });
//! ```
#![doc = include_str!("../README.md")]

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
pub fn register(
    registry: &mut orch_core::Registry,
) -> Result<(), orch_core::errors::RegistryError> {
    discover::register(registry)?;
    parity::register(registry)?;
    scaffold::register(registry)?;
    package::register(registry)?;
    verify::register(registry)
}
