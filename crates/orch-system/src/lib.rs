//! `orch-system`: what a pipeline needs from the machine, checked.
//!
//! One set of probes ([`probe`]: CPUs, memory and cgroup limits, free disk, commands on
//! `PATH` and their versions, Docker engines and Swarm managers over the Engine API, GPUs)
//! serves both:
//! - [`doctor`], behind `orch doctor`: what orch and a pipeline file need (the agents'
//!   engines, git, Chromium for PDF reports, HAProxy for deployments, the state directory),
//!   each item `ok`, `warn` or `missing` with how to get it;
//! - the `system.check` kind ([`check`]), served by the built-in `local` agent type: a
//!   pipeline's own requirements (`commands`, `min_memory`, `min_disk`, `docker`, `gpu`),
//!   with outputs saying what was found.
//!
//! ```
//! let mut registry = orch_core::Registry::with_builtins();
//! orch_system::register(&mut registry).unwrap();
//! assert_eq!(registry.kind("system.check").unwrap().agent_type, "local");
//! ```
//!
//! Checking without the engine:
//!
//! ```
//! use orch_system::check::{CheckSettings, evaluate};
//! use orch_system::probe::ProbeEnv;
//! use orch_system::size::ByteSize;
//!
//! let settings = CheckSettings {
//!     commands: vec!["sh".into(), "no-such-tool".into()],
//!     min_memory: Some(ByteSize(1)),
//!     ..CheckSettings::default()
//! };
//! let result = evaluate(&settings, std::path::Path::new("."), &ProbeEnv::from_env());
//! assert_eq!(result.missing.len(), 1);
//! assert_eq!(result.missing[0].what, "command `no-such-tool` is not on PATH");
//! ```
#![doc = include_str!("../README.md")]

pub mod check;
pub mod doctor;
pub mod errors;
pub mod probe;
pub mod size;

pub use errors::{DoctorError, SizeError};

/// Registers `system.check`, served by agents of type `local`.
pub fn register(
    registry: &mut orch_core::Registry,
) -> Result<(), orch_core::errors::RegistryError> {
    check::register(registry)
}
