//! Operations on a deployed service outside a deployment: `orch rollback` (the
//! `deploy.rollback` kind, so a rollback is recorded like a run), `orch deploy status` and
//! `orch deploy stop`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use orch_core::record::Outputs;
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
};

use crate::deploy::{endpoint_of, state_dir_of};
use crate::engine;
use crate::errors::StateError;
use crate::proxy::{self, Runtime, backend};
use crate::settings::{RollbackSettings, check_service_name};
use crate::state::{ServiceDir, ServiceState, services};
use crate::traffic::{ensure_proxy, split};

/// Loads a service's state, or says which services exist.
pub fn load_service(state_dir: &Path, service: &str) -> Result<(ServiceDir, ServiceState), String> {
    let sd = ServiceDir::new(state_dir, service);
    match sd.load().map_err(|e| e.to_string())? {
        Some(s) => Ok((sd, s)),
        None => {
            let known = services(state_dir);
            Err(StateError::Unknown {
                service: service.to_owned(),
                dir: crate::state::deploy_root(state_dir),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            }
            .to_string())
        }
    }
}

/// Switches a service back to its previous version: the standby containers get all the
/// traffic at once (the proxy's weights), or Swarm's rollback for a `rolling` service.
/// Returns the outputs of the rollback (`status`, `version`, `previous`, `url`).
pub async fn rollback(ctx: &PhaseContext, service: &str) -> Result<Outputs, String> {
    let (sd, mut state) = load_service(&state_dir_of(ctx), service)?;
    if state.swarm.is_some() {
        return crate::rolling::rollback(ctx, &sd, &mut state).await;
    }
    let (Some(cur), Some(prev)) = (state.current.clone(), state.previous.clone()) else {
        return Err(format!(
            "service `{service}` has no previous version to roll back to (it serves {})",
            state
                .current
                .as_ref()
                .map_or("nothing".into(), |r| r.image.clone())
        ));
    };
    let endpoint = if state.engine.is_empty() {
        endpoint_of(ctx)
    } else {
        state.engine.clone()
    };
    let docker = engine::connect(&endpoint).await?;
    for c in &prev.containers {
        match engine::status(&docker, &c.name, prev.port_or(state.port)).await? {
            Some(s) if s.running => {}
            other => {
                return Err(format!(
                    "the previous version {} cannot take traffic: its container {} is {}; nothing was switched (deploy {} again instead)",
                    prev.image,
                    c.name,
                    other.map_or("gone".into(), |s| s.status),
                    prev.image
                ));
            }
        }
    }
    let api = ensure_proxy(Some(ctx), &sd, &mut state).await?;
    // The standby servers must be up in the proxy's own checks before they get traffic.
    let be = backend(service);
    let names: Vec<String> = prev.containers.iter().map(|c| c.name.clone()).collect();
    let deadline = tokio::time::Instant::now() + state.health.within.min(Duration::from_secs(30));
    loop {
        let servers = api.servers(&be).await.map_err(|e| e.to_string())?;
        let down: Vec<String> = names
            .iter()
            .filter(|n| !servers.iter().any(|s| &&s.server == n && s.is_up()))
            .map(|n| {
                servers
                    .iter()
                    .find(|s| &s.server == n)
                    .map_or(format!("{n} is not in the proxy"), |s| {
                        format!("{n} is {} ({} {})", s.status, s.check_status, s.check_code)
                    })
            })
            .collect();
        if down.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the previous version {} is not healthy in the proxy: {}; nothing was switched",
                prev.image,
                down.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = std::time::Instant::now();
    let current: Vec<String> = cur.containers.iter().map(|c| c.name.clone()).collect();
    split(&api, service, &current, &names, 100).await?;
    let took = started.elapsed();
    ctx.log(format!(
        "`{service}`: all traffic on {} again ({} ms), {} stands by",
        prev.image,
        took.as_millis(),
        cur.image
    ));
    state.previous = Some(cur.clone());
    state.current = Some(prev.clone());
    state.record("rollback", &prev.image, "orch rollback");
    ServiceDir::save(&sd, &state).map_err(|e| e.to_string())?;
    Ok(Outputs::from([
        ("status".to_owned(), "rolled_back".to_owned()),
        ("version".to_owned(), prev.image.clone()),
        ("previous".to_owned(), cur.image.clone()),
        ("url".to_owned(), format!("http://{}/", state.listen)),
        ("switch_ms".to_owned(), took.as_millis().to_string()),
    ]))
}

/// The `deploy.rollback` kind (what `orch rollback SERVICE` runs).
#[derive(Clone, Debug)]
pub struct RollbackPhase {
    service: String,
}

impl RollbackPhase {
    /// A rollback of `service`.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
        }
    }

    /// Checks the settings of a declaration; an error points at its `with` table.
    pub fn from_settings(spec: &PhaseSpec, s: RollbackSettings) -> Result<Self, KindError> {
        check_service_name(&s.service).map_err(|message| spec.with.error(message))?;
        Ok(Self::new(s.service))
    }
}

#[async_trait]
impl Phase for RollbackPhase {
    fn describe(&self, _ctx: &PlanContext<'_>) -> Description {
        Description::new(format!(
            "switch `{}` back to its previous version",
            self.service
        ))
        .change(format!(
            "service `{}` serves its previous version",
            self.service
        ))
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let outputs = rollback(ctx, &self.service)
            .await
            .map_err(PhaseError::failed)?;
        Ok(PhaseOutcome {
            outputs,
            ..PhaseOutcome::default()
        })
    }
}

/// One service as `orch deploy status` shows it.
pub async fn status_text(state_dir: &Path, service: Option<&str>) -> Result<String, String> {
    let names = match service {
        Some(s) => vec![s.to_owned()],
        None => services(state_dir),
    };
    if names.is_empty() {
        return Ok(format!(
            "no service is deployed from {}\n",
            crate::state::deploy_root(state_dir).display()
        ));
    }
    let mut out = String::new();
    for name in names {
        let (sd, state) = load_service(state_dir, &name)?;
        let docker = if state.engine.is_empty() {
            None
        } else {
            engine::connect(&state.engine).await.ok()
        };
        let _ = writeln!(out, "{name}");
        if let Some(sw) = &state.swarm {
            let _ = writeln!(
                out,
                "  swarm service  {} ({}) on {}",
                sw.name, sw.id, sw.endpoint
            );
        } else {
            let proxy = match proxy::running_pid(&sd) {
                Some(pid) => format!("haproxy pid {pid}"),
                None => {
                    "not running (restarted from the state by the next deploy or rollback)".into()
                }
            };
            let _ = writeln!(out, "  url            http://{}/", state.listen);
            let _ = writeln!(out, "  proxy          {proxy}");
        }
        let _ = writeln!(out, "  strategy       {}", state.strategy);
        let weights = if state.swarm.is_none() && proxy::running_pid(&sd).is_some() {
            Runtime::new(sd.socket())
                .servers(&backend(&name))
                .await
                .ok()
        } else {
            None
        };
        for (role, release) in [("serving", &state.current), ("standby", &state.previous)] {
            let Some(r) = release else {
                let _ = writeln!(out, "  {role:<14} -");
                continue;
            };
            let _ = writeln!(
                out,
                "  {role:<14} {} ({}) since {}",
                r.image,
                crate::deploy::short_id(&r.image_id),
                r.deployed_at
            );
            for c in &r.containers {
                let engine_state = match &docker {
                    Some(d) => match engine::status(d, &c.name, r.port_or(state.port)).await {
                        Ok(Some(s)) => s.status,
                        Ok(None) => "gone".into(),
                        Err(_) => "unknown".into(),
                    },
                    None => "unknown".into(),
                };
                let proxy_state = weights
                    .as_ref()
                    .and_then(|w| w.iter().find(|s| s.server == c.name))
                    .map(|s| format!(", proxy {} weight {}", s.status, s.weight))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "    {} 127.0.0.1:{} {engine_state}{proxy_state}",
                    c.name, c.host_port
                );
            }
        }
        if let Some(last) = state.history.last() {
            let reason = if last.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", last.reason)
            };
            let _ = writeln!(
                out,
                "  last           {} {} at {}{reason}",
                last.event, last.image, last.at
            );
        }
    }
    Ok(out)
}

/// Ends a service: its containers (every container carrying its label), its proxy (or its
/// Swarm service) and its state. Returns what was done, one line each.
pub async fn stop(state_dir: &Path, service: &str) -> Result<Vec<String>, String> {
    let (sd, state) = load_service(state_dir, service)?;
    let mut done = Vec::new();
    let endpoint = if state.engine.is_empty() {
        engine::default_endpoint()
    } else {
        state.engine.clone()
    };
    let docker = engine::connect(&endpoint).await;
    if let Some(sw) = &state.swarm {
        let d = docker.as_ref().map_err(Clone::clone)?;
        crate::rolling::remove_service(d, &sw.name).await?;
        done.push(format!("removed Swarm service {}", sw.name));
    }
    if let Some(pid) = proxy::running_pid(&sd) {
        proxy::stop(pid).await;
        done.push(format!("stopped the proxy (haproxy pid {pid})"));
    }
    match &docker {
        Ok(d) => {
            for name in engine::service_containers(d, service).await? {
                engine::remove(d, &name).await?;
                done.push(format!("removed container {name}"));
            }
        }
        Err(e) => {
            if state.swarm.is_none() && (state.current.is_some() || state.previous.is_some()) {
                return Err(format!(
                    "{e}: the containers of `{service}` cannot be removed"
                ));
            }
        }
    }
    std::fs::remove_dir_all(&sd.dir)
        .map_err(|e| format!("cannot remove {}: {e}", sd.dir.display()))?;
    done.push(format!("removed {}", sd.dir.display()));
    Ok(done)
}

/// Registers `deploy.rollback`.
pub(crate) fn register(
    registry: &mut orch_core::Registry,
) -> Result<(), orch_core::errors::RegistryError> {
    registry.add_kind(
        orch_core::registry::Kind::new(
            "deploy.rollback",
            "switch a deployed service back to its previous version",
        )
        .agent_type("docker"),
        RollbackPhase::from_settings,
    )
}
