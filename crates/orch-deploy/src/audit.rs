//! The deployment audit: what runs on the engine and in the proxy, compared with what was
//! deployed (containers, image ids, published ports, health, weights). Every difference is
//! one line of drift.

use async_trait::async_trait;
use bollard::Docker;
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
};

use crate::deploy::{endpoint_of, state_dir_of};
use crate::engine;
use crate::proxy::{Runtime, backend, server_weight};
use crate::settings::{AuditSettings, check_service_name};
use crate::state::{ServiceDir, ServiceState};

/// Compares a proxy-fronted service with its state; returns the drift, one line each.
pub async fn audit(docker: &Docker, api: &Runtime, state: &ServiceState) -> Vec<String> {
    let mut drift = Vec::new();
    let servers = match api.servers(&backend(&state.service)).await {
        Ok(s) => s,
        Err(e) => {
            drift.push(format!("the proxy does not answer: {e}"));
            Vec::new()
        }
    };
    let mut known: Vec<String> = Vec::new();
    for (role, release) in [("current", &state.current), ("previous", &state.previous)] {
        let Some(release) = release else { continue };
        let want_weight = if role == "current" {
            server_weight(100, release.containers.len())
        } else {
            0
        };
        for c in &release.containers {
            known.push(c.name.clone());
            match engine::status(docker, &c.name, release.port_or(state.port)).await {
                Ok(None) => drift.push(format!(
                    "{role} container {} ({}) is gone from the engine",
                    c.name, release.version
                )),
                Ok(Some(s)) => {
                    if !s.running {
                        drift.push(format!(
                            "{role} container {} is {} (exit code {})",
                            c.name,
                            s.status,
                            s.exit_code.map_or("none".into(), |c| c.to_string())
                        ));
                    }
                    if s.image_id != release.image_id {
                        drift.push(format!(
                            "{role} container {} runs image {}, but {} was deployed",
                            c.name, s.image_id, release.image_id
                        ));
                    }
                    if s.running && s.host_port != Some(c.host_port) {
                        drift.push(format!(
                            "{role} container {} publishes port {} on {}, but the proxy sends to 127.0.0.1:{}",
                            c.name,
                            release.port_or(state.port),
                            s.host_port.map_or("nothing".into(), |p| format!("127.0.0.1:{p}")),
                            c.host_port
                        ));
                    }
                }
                Err(e) => drift.push(e),
            }
            if servers.is_empty() {
                continue;
            }
            match servers.iter().find(|s| s.server == c.name) {
                None => drift.push(format!(
                    "{role} container {} is not a server of the proxy",
                    c.name
                )),
                Some(s) => {
                    if !s.is_up() {
                        drift.push(format!(
                            "the proxy sees {} {} (check {} {})",
                            c.name, s.status, s.check_status, s.check_code
                        ));
                    }
                    if s.weight != want_weight {
                        drift.push(format!(
                            "{role} server {} has weight {}, expected {want_weight}",
                            c.name, s.weight
                        ));
                    }
                    if s.addr != format!("127.0.0.1:{}", c.host_port) {
                        drift.push(format!(
                            "server {} points at {}, expected 127.0.0.1:{}",
                            c.name, s.addr, c.host_port
                        ));
                    }
                }
            }
        }
    }
    for s in &servers {
        if !known.contains(&s.server) {
            drift.push(format!(
                "the proxy has server {} ({}, weight {}) that no deployment made",
                s.server, s.addr, s.weight
            ));
        }
    }
    if let Ok(names) = engine::service_containers(docker, &state.service).await {
        for n in names {
            if !known.contains(&n) {
                drift.push(format!(
                    "container {n} carries the service's label but is not part of its deployment"
                ));
            }
        }
    }
    drift
}

/// The `deploy.audit` kind: compares a deployed service with its state and fails on drift.
#[derive(Clone, Debug)]
pub struct AuditPhase {
    service: String,
    fail_on_drift: bool,
}

impl AuditPhase {
    /// Checks the settings of a declaration; an error points at its `with` table.
    pub fn from_settings(spec: &PhaseSpec, s: AuditSettings) -> Result<Self, KindError> {
        check_service_name(&s.service).map_err(|message| spec.with.error(message))?;
        Ok(Self {
            service: s.service,
            fail_on_drift: s.fail_on_drift.unwrap_or(true),
        })
    }
}

#[async_trait]
impl Phase for AuditPhase {
    fn describe(&self, _ctx: &PlanContext<'_>) -> Description {
        Description::new(format!(
            "compare what runs for `{}` (containers, images, ports, health) with what was deployed",
            self.service
        ))
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let sd = ServiceDir::new(&state_dir_of(ctx), &self.service);
        let state = sd
            .load()
            .map_err(|e| PhaseError::failed(e.to_string()))?
            .ok_or_else(|| {
                PhaseError::failed(format!(
                    "service `{}` was never deployed from {}",
                    self.service,
                    sd.dir.display()
                ))
            })?;
        let endpoint = if state.engine.is_empty() {
            endpoint_of(ctx)
        } else {
            state.engine.clone()
        };
        let docker = engine::connect(&endpoint)
            .await
            .map_err(PhaseError::failed)?;
        let drift = if state.swarm.is_some() {
            crate::rolling::audit(&docker, &state).await
        } else {
            let api = Runtime::new(sd.socket());
            let mut d = Vec::new();
            if crate::proxy::running_pid(&sd).is_none() {
                d.push(format!(
                    "the proxy of `{}` is not running (the next deploy or `orch rollback` restarts it from the state)",
                    self.service
                ));
            }
            d.extend(audit(&docker, &api, &state).await);
            d
        };
        for line in &drift {
            ctx.log(format!("drift: {line}"));
        }
        let path = ctx
            .run_dir()
            .join("deploy")
            .join(format!("{}-audit.json", ctx.phase_id()));
        let report = serde_json::json!({
            "format_version": 1,
            "service": self.service,
            "image": state.current.as_ref().map(|r| r.image.clone()),
            "image_id": state.current.as_ref().map(|r| r.image_id.clone()),
            "drift": drift,
        });
        if let Err(e) = ctx.write_json(&path, &report) {
            ctx.log(format!("cannot write the audit: {e}"));
        }
        let outputs = orch_core::record::Outputs::from([
            ("drift".to_owned(), drift.len().to_string()),
            ("report".to_owned(), path.display().to_string()),
            (
                "version".to_owned(),
                state
                    .current
                    .as_ref()
                    .map(|r| r.image.clone())
                    .unwrap_or_default(),
            ),
        ]);
        if !drift.is_empty() && self.fail_on_drift {
            return Err(PhaseError::FailedWithOutputs {
                message: format!(
                    "`{}` drifted from its deployment ({} finding{}): {}",
                    self.service,
                    drift.len(),
                    if drift.len() == 1 { "" } else { "s" },
                    drift.join("; ")
                ),
                outputs,
            });
        }
        if drift.is_empty() {
            ctx.log(format!("`{}` runs as deployed", self.service));
        }
        Ok(PhaseOutcome {
            outputs,
            ..PhaseOutcome::default()
        })
    }
}

/// Registers `deploy.audit`.
pub(crate) fn register(
    registry: &mut orch_core::Registry,
) -> Result<(), orch_core::errors::RegistryError> {
    registry.add_kind(
        orch_core::registry::Kind::new(
            "deploy.audit",
            "compare a deployed service with what runs (containers, images, ports, health)",
        )
        .agent_type("docker"),
        AuditPhase::from_settings,
    )
}
