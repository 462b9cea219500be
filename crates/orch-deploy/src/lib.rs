//! `orch-deploy`: deployments for orch.
//!
//! - `deploy` ([`DeployPhase`]): puts an image in front of users and takes it back when it
//!   is bad. `blue-green` and `canary` run containers on a Docker engine behind HAProxy,
//!   which orch starts and drives (one per service: a frontend on `listen`, a server per
//!   container, active HTTP health checks, weights changed live over the runtime socket);
//!   `rolling` updates a Swarm service on a `swarm` agent. Outputs `status` (`deployed` or
//!   `rolled_back`), `version`, `previous`, `url`, and `steps`, `switch_ms`,
//!   `rollback_ms`, `drift`, `reason` where they apply.
//! - `deploy.rollback` ([`RollbackPhase`], what `orch rollback` runs), `deploy.audit`
//!   ([`AuditPhase`]: drift between what runs and what was deployed), `http.check`
//!   ([`CheckPhase`]: smoke tests).
//! - [`ops`]: `orch deploy status` and `orch deploy stop`.
//!
//! A service's state lives in `STATE_DIR/deploy/SERVICE/` ([`state`]): what serves, what
//! stands by for an instant rollback, the proxy's config, socket and pid file. The proxy
//! and the containers outlive the run on purpose: they serve users.
//!
//! # Example
//!
//! Settings are checked when the pipeline loads, before anything runs:
//!
//! ```
//! use orch_core::{PhaseId, PhaseSpec, Registry, WithTable};
//!
//! let mut registry = Registry::with_builtins();
//! orch_deploy::register(&mut registry).unwrap();
//!
//! let mut spec = PhaseSpec::new(PhaseId::new("deploy")?, "deploy");
//! spec.with = WithTable::new(toml::toml! {
//!     service = "shop-web"
//!     image = "127.0.0.1:5000/shop:1.2"
//!     strategy = "canary"
//!     listen = "127.0.0.1:8080"
//!     port = 8080
//!     steps = [10, 50, 30]
//! });
//! let err = registry.build_phase(&spec).err().expect("steps must increase");
//! assert!(err.message.contains("`steps` must increase"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod audit;
mod canary;
pub mod check;
pub mod deploy;
mod deployment;
pub mod engine;
pub mod errors;
pub mod health;
pub mod ops;
pub mod proxy;
pub mod rolling;
pub mod settings;
pub mod state;
pub mod traffic;

use orch_core::{PhaseSpec, Registry};

pub use audit::AuditPhase;
pub use check::CheckPhase;
pub use deploy::{DeployPhase, DeploymentReport, StepResult};
pub use errors::{ProxyError, StateError};
pub use ops::RollbackPhase;
pub use settings::{DeployPlan, Strategy};
pub use state::{ServiceDir, ServiceState};

/// Registers `deploy`, `deploy.rollback`, `deploy.audit` and `http.check`.
pub fn register(registry: &mut Registry) -> Result<(), orch_core::errors::RegistryError> {
    registry.add_kind(
        orch_core::registry::Kind::new(
            "deploy",
            "deploy an image: blue-green or canary behind a proxy, or a rolling Swarm update",
        )
        .agent_type("docker"),
        // `from_spec` reads the `with` table into its settings type itself.
        |spec: &PhaseSpec, _: serde::de::IgnoredAny| {
            Ok(DeployPhase::new(DeployPlan::from_spec(spec)?))
        },
    )?;
    ops::register(registry)?;
    audit::register(registry)?;
    check::register(registry)?;
    // `rolling` runs on a `swarm` agent; a rollback or audit of such a service may name it.
    for kind in ["deploy", "deploy.rollback", "deploy.audit"] {
        registry.allow_agent_type(kind, "swarm");
    }
    Ok(())
}
