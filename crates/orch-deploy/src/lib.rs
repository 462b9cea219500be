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
        |spec: &PhaseSpec, settings| {
            DeployPlan::from_settings(spec, settings).map(DeployPhase::new)
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

#[cfg(test)]
mod tests {
    use orch_core::{PhaseId, PhaseSpec, Registry, WithTable};

    /// The error a declaration of `kind` with `with` gets when the pipeline loads.
    fn error_of(kind: &str, with: toml::Table) -> String {
        let mut registry = Registry::with_builtins();
        super::register(&mut registry).unwrap();
        let mut spec = PhaseSpec::new(PhaseId::new("p").unwrap(), kind);
        spec.with = WithTable::new(with);
        match registry.build_phase(&spec) {
            Ok(_) => panic!("{kind} with {:?} was accepted", spec.with),
            Err(e) => e.message,
        }
    }

    #[test]
    fn each_kind_parses_its_own_settings_and_names_the_key_at_fault() {
        let deploy = |extra: toml::Table| {
            let mut t = toml::toml! {
                service = "web"
                image = "web:1"
                strategy = "blue-green"
                listen = "127.0.0.1:8080"
                port = 8080
            };
            t.extend(extra);
            t
        };
        for (kind, with, expected) in [
            (
                "deploy",
                deploy(toml::toml! { colour = "blue" }),
                "unknown field `colour`, expected one of `service`, `image`, `strategy`, `listen`, `port`, `replicas`, `health`, `steps`, `analysis`, `drain`, `env`, `parallelism`, `monitor`, `published_port`",
            ),
            (
                "deploy",
                deploy(toml::toml! { port = "8080" }),
                "invalid type: string \"8080\", expected u16",
            ),
            (
                "deploy",
                deploy(toml::toml! { health = { path = "/h", intervall = "1s" } }),
                "unknown field `intervall`, expected one of `path`, `interval`, `timeout`, `healthy`, `unhealthy`, `within`",
            ),
            (
                "deploy",
                deploy(toml::toml! { drain = "soon" }),
                "`soon` is not a duration like \"500ms\", \"2s\" or \"1m\": expected number at 0",
            ),
            (
                "deploy",
                deploy(toml::toml! { strategy = "big-bang" }),
                "unknown variant `big-bang`, expected one of `blue-green`, `canary`, `rolling`",
            ),
            (
                "deploy",
                deploy(toml::toml! { steps = [10, 100] }),
                "`steps` is for strategy `canary`, not `blue-green`",
            ),
            (
                "deploy.rollback",
                toml::toml! { service = "web"
                fail_on_drift = true },
                "unknown field `fail_on_drift`, expected `service`",
            ),
            (
                "deploy.rollback",
                toml::toml! { service = "Web" },
                "service `Web` must be 1 to 48 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit",
            ),
            (
                "deploy.audit",
                toml::toml! { service = "web"
                fail_on_drift = "yes" },
                "invalid type: string \"yes\", expected a boolean",
            ),
            (
                "deploy.audit",
                toml::Table::new(),
                "missing field `service`",
            ),
            (
                "http.check",
                toml::toml! { urls = "http://127.0.0.1/"
                retries = "3" },
                "invalid type: string \"3\", expected u32",
            ),
            (
                "http.check",
                toml::toml! { urls = "http://127.0.0.1/"
                status = 700 },
                "`status` = 700 is not an HTTP status",
            ),
        ] {
            assert_eq!(error_of(kind, with.clone()), expected, "{kind} with {with}");
        }
    }
}
