//! `orch-quality`: quality gates over the results real tools write.
//!
//! Kinds (served by the built-in `local` agent type):
//! - `quality` ([`quality`]): reads SARIF 2.1.0 ([`sarif`]), coverage as Cobertura XML or
//!   LCOV ([`coverage`]) and JUnit XML ([`junit`]); computes measures (findings by level and
//!   rule, line and branch coverage, tests passed, failed and skipped), a 0-100 score
//!   ([`measure`], formula in its docs), checks CEL `conditions` over the measures and the
//!   `threshold`, and writes `quality.json` ([`QualityReport`], versioned) and a merged SARIF
//!   log for code scanning into `RUN_DIR/quality/PHASE/`;
//! - `secrets.scan` ([`secrets`]): finds committed credentials in a tree, offline, and writes
//!   SARIF without ever recording a found value.
//!
//! SARIF is read with `serde-sarif` (the typed model of the sarif-rs project, generated
//! from the OASIS 2.1.0 schema; the same project ships clippy-sarif and hadolint-sarif).
//!
//! ```
//! let mut registry = orch_core::Registry::with_builtins();
//! orch_quality::register(&mut registry).unwrap();
//! assert_eq!(registry.kind("quality").unwrap().agent_type, "local");
//! assert_eq!(registry.kind("secrets.scan").unwrap().agent_type, "local");
//! ```
//!
//! Evaluating inputs without the engine:
//!
//! ```
//! use orch_quality::quality::{Inputs, evaluate};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("lcov.info"), "SF:a.js\nDA:1,1\nDA:2,0\nend_of_record\n")?;
//! let inputs = Inputs {
//!     coverage: vec!["lcov.info".into()],
//!     conditions: vec!["coverage >= 80".into()],
//!     ..Inputs::default()
//! };
//! let report = evaluate(&inputs, dir.path(), "quality")?.report;
//! assert!(!report.passed);
//! assert_eq!(report.failures, ["`coverage >= 80` is false (coverage = 50.0)"]);
//! assert_eq!(report.score.value, 85.0); // 100 - 0.3 × 50 line points
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc = include_str!("../README.md")]

pub mod coverage;
pub mod errors;
pub mod inputs;
pub mod junit;
pub mod measure;
pub mod quality;
pub mod sarif;
pub mod secrets;
mod util;

pub use errors::{InputError, QualityError, SecretsError};
pub use measure::{QUALITY_FORMAT_VERSION, QualityReport};

/// Registers `quality` and `secrets.scan`, both served by agents of type `local`.
pub fn register(
    registry: &mut orch_core::Registry,
) -> Result<(), orch_core::errors::RegistryError> {
    quality::register(registry)?;
    secrets::register(registry)
}
