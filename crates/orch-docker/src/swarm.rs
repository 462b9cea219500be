//! The `swarm` agent: a Docker Swarm, reached through one of its managers.
//!
//! orch hands a `docker.run` phase on this agent to Swarm as a one-shot service (see
//! [`crate::job`]); Swarm places it on a node, pulls the image there and runs it. orch keeps
//! the DAG, retries, timeouts, outputs, the journal and the reports.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{LocalNodeState, NodeState};
use bollard::query_parameters::{
    ListNodesOptions, ListSecretsOptionsBuilder, ListServicesOptionsBuilder,
};
use orch_core::{Agent, AgentError, AgentSpec, KindError, PhaseContext};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::agent::{Endpoint, describe};
use crate::cleanup::{PHASE_LABEL, RUN_LABEL};
use crate::common::server_message;
use crate::errors::ConnectError;

/// Tasks a `swarm` agent runs at once when its `capacity` is not set.
pub const DEFAULT_SWARM_CAPACITY: usize = 8;

/// Label on every service and secret orch makes on a swarm: the orch process that made it.
/// A later run on the same state directory removes what an earlier process left (its
/// run is in the state directory, its session is not the current one).
pub const SESSION_LABEL: &str = "org.orch.session";

/// Limit for the health check's calls.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// This process's session (random, made once).
pub(crate) fn session() -> &'static str {
    static SESSION: OnceLock<String> = OnceLock::new();
    SESSION.get_or_init(|| {
        let mut bytes = [0u8; 8];
        for b in &mut bytes {
            *b = fastrand::u8(..);
        }
        crate::context::hex(&bytes)
    })
}

/// The `with` table of a `swarm` agent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwarmSettings {
    /// A manager's API: `unix:///path` or `tcp://host:port`.
    host: Option<String>,
    /// The Docker config directory whose credentials the nodes pull images with
    /// (relative to the pipeline file); default `$DOCKER_CONFIG`, else `~/.docker`.
    docker_config: Option<String>,
}

/// A Docker Swarm that runs `docker.run` phases as one-shot services.
///
/// Building one does no I/O; the connection to the manager is made on first use.
pub struct SwarmAgent {
    name: String,
    capacity: usize,
    endpoint: Endpoint,
    docker_config: Option<String>,
    client: OnceCell<Docker>,
    /// Set once what earlier runs of the state directory left on the swarm is removed.
    swept: OnceCell<()>,
    /// Digest references already resolved in their registry (immutable, so kept).
    pinned: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for SwarmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmAgent")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SwarmAgent {
    /// An agent for a manager's endpoint.
    pub fn new(name: impl Into<String>, endpoint: Endpoint, capacity: usize) -> Self {
        Self {
            name: name.into(),
            capacity: capacity.max(1),
            endpoint,
            docker_config: None,
            client: OnceCell::new(),
            swept: OnceCell::new(),
            pinned: Mutex::new(HashMap::new()),
        }
    }

    /// An agent from its declaration: `with = { host = "unix:///..." | "tcp://...",
    /// docker_config = "DIR" }`; the host defaults to `DOCKER_HOST`, else the default
    /// socket; `capacity` (tasks at once) defaults to [`DEFAULT_SWARM_CAPACITY`].
    pub fn from_spec(spec: &AgentSpec) -> Result<Self, KindError> {
        let settings: SwarmSettings = spec.with.parse()?;
        let endpoint = match settings.host {
            Some(h) => Endpoint::parse(&h).map_err(|message| KindError {
                message: format!("agent `{}`: {message}", spec.name),
                span: spec.with.span(),
            })?,
            None => Endpoint::from_env()
                .map_err(|e| KindError::new(format!("agent `{}`: {e}", spec.name)))?,
        };
        let mut agent = Self::new(
            spec.name.clone(),
            endpoint,
            spec.capacity.unwrap_or(DEFAULT_SWARM_CAPACITY),
        );
        agent.docker_config = settings.docker_config.filter(|d| !d.trim().is_empty());
        Ok(agent)
    }

    /// The manager's endpoint.
    pub fn docker_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A client of the manager (connected on first call, the API version negotiated).
    pub async fn client(&self) -> Result<Docker, ConnectError> {
        self.client
            .get_or_try_init(|| self.endpoint.connect())
            .await
            .cloned()
    }

    /// The pinned form of a digest reference resolved earlier in this run.
    pub(crate) fn pinned(&self, image: &str) -> Option<String> {
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(image)
            .cloned()
    }

    /// Keeps the pinned form of a digest reference.
    pub(crate) fn remember_pinned(&self, image: &str, pinned: &str) {
        self.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.to_owned(), pinned.to_owned());
    }

    /// The Docker config file whose credentials go with each service (so nodes can pull
    /// from private registries), resolved against the pipeline's directory.
    pub(crate) fn docker_config_file(&self, base_dir: &Path) -> Option<PathBuf> {
        match &self.docker_config {
            Some(d) => Some(base_dir.join(d).join("config.json")),
            None => crate::credentials::config_dir().map(|d| d.join("config.json")),
        }
    }

    /// Removes, once per run, the services and secrets that earlier orch processes made
    /// for runs of this state directory and left behind (a run killed with SIGKILL, a
    /// machine that went down). Such work is orphaned: one run at a time holds the state
    /// directory, so nothing else can be using it. Phases that the journal says succeeded
    /// are not run again; the others run again after this.
    pub(crate) async fn sweep_once(&self, docker: &Docker, ctx: &PhaseContext) {
        self.swept
            .get_or_init(|| async {
                let Some(runs_dir) = ctx.run_dir().parent() else {
                    return;
                };
                if let Err(e) = sweep(docker, runs_dir, ctx).await {
                    ctx.log(format!(
                        "cannot look for work earlier runs left on the swarm at {}: {e}",
                        self.endpoint
                    ));
                }
            })
            .await;
    }
}

/// Whether labels name a run of `runs_dir` made by another orch process.
fn orphaned(labels: Option<&HashMap<String, String>>, runs_dir: &Path) -> Option<String> {
    let labels = labels?;
    let run = labels.get(RUN_LABEL)?;
    if labels.get(SESSION_LABEL).map(String::as_str) == Some(session()) {
        return None;
    }
    let valid = !run.is_empty() && !run.contains(['/', '\\']) && run != "." && run != "..";
    (valid && runs_dir.join(run).is_dir()).then(|| run.clone())
}

async fn sweep(docker: &Docker, runs_dir: &Path, ctx: &PhaseContext) -> Result<(), String> {
    let filters = HashMap::from([("label", vec![RUN_LABEL])]);
    let services = docker
        .list_services(Some(
            ListServicesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| server_message(&e))?;
    for s in services {
        let labels = s.spec.as_ref().and_then(|sp| sp.labels.as_ref());
        let Some(run) = orphaned(labels, runs_dir) else {
            continue;
        };
        let id = s.id.clone().unwrap_or_default();
        let name = s
            .spec
            .as_ref()
            .and_then(|sp| sp.name.clone())
            .unwrap_or_else(|| id.clone());
        let phase = labels
            .and_then(|l| l.get(PHASE_LABEL))
            .cloned()
            .unwrap_or_default();
        match docker.delete_service(&id).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => ctx.log(format!(
                "removed swarm service {name}, left by run {run} (phase {phase})"
            )),
            Err(e) => ctx.log(format!(
                "cannot remove swarm service {name}, left by run {run}: {}",
                server_message(&e)
            )),
        }
    }
    let secrets = docker
        .list_secrets(Some(
            ListSecretsOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| server_message(&e))?;
    for s in secrets {
        let labels = s.spec.as_ref().and_then(|sp| sp.labels.as_ref());
        let Some(run) = orphaned(labels, runs_dir) else {
            continue;
        };
        let id = s.id.clone().unwrap_or_default();
        if let Err(e) = docker.delete_secret(&id).await {
            ctx.log(format!(
                "cannot remove swarm secret {id}, left by run {run}: {}",
                server_message(&e)
            ));
        } else {
            ctx.log(format!("removed swarm secret {id}, left by run {run}"));
        }
    }
    Ok(())
}

/// What the health check found: ready nodes by hostname.
pub(crate) async fn check_manager(docker: &Docker) -> Result<BTreeMap<String, usize>, String> {
    let info = docker.info().await.map_err(|e| server_message(&e))?;
    let swarm = info.swarm.unwrap_or_default();
    let state = swarm.local_node_state.unwrap_or(LocalNodeState::INACTIVE);
    if state != LocalNodeState::ACTIVE {
        return Err(format!(
            "the engine is not part of a swarm (its swarm state is `{state}`): run `docker swarm init` on it, or point `with.host` at a manager of an existing swarm"
        ));
    }
    if swarm.control_available != Some(true) {
        return Err(
            "the engine is a swarm worker, not a manager: point `with.host` at a manager (`docker node ls` on a manager lists them)".into(),
        );
    }
    let nodes = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .map_err(|e| server_message(&e))?;
    let mut ready = BTreeMap::new();
    for n in &nodes {
        let up = n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY);
        if up {
            let host = n
                .description
                .as_ref()
                .and_then(|d| d.hostname.clone())
                .unwrap_or_default();
            *ready.entry(host).or_insert(0) += 1;
        }
    }
    if ready.is_empty() {
        return Err(format!(
            "no node of the swarm is ready ({} known, none in state `ready`)",
            nodes.len()
        ));
    }
    Ok(ready)
}

#[async_trait]
impl Agent for SwarmAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn agent_type(&self) -> &str {
        "swarm"
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn endpoint(&self) -> String {
        self.endpoint.to_string()
    }

    /// The engine must be an active swarm manager with at least one ready node.
    async fn health(&self) -> Result<(), AgentError> {
        let unavailable = |message: String| AgentError {
            agent: self.name.clone(),
            endpoint: self.endpoint.to_string(),
            message,
        };
        let client = self.client().await.map_err(|e| unavailable(e.message))?;
        match tokio::time::timeout(HEALTH_TIMEOUT, check_manager(&client)).await {
            Ok(Ok(ready)) => {
                tracing::debug!(
                    "swarm at {}: {} ready node(s)",
                    self.endpoint,
                    ready.values().sum::<usize>()
                );
                Ok(())
            }
            Ok(Err(message)) => Err(unavailable(message)),
            Err(_) => Err(unavailable(format!(
                "the manager did not answer within {}s",
                HEALTH_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// One line for an error of a swarm call.
pub(crate) fn call_error(what: &str, e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { .. } => {
            format!("cannot {what}: {}", server_message(e))
        }
        other => format!("cannot {what}: {}", describe(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_runs_of_this_state_dir_from_other_processes_are_orphans() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("20261205T100000Z-0001")).unwrap();
        let labels = |run: &str, session: &str| {
            HashMap::from([
                (RUN_LABEL.to_owned(), run.to_owned()),
                (SESSION_LABEL.to_owned(), session.to_owned()),
            ])
        };
        let earlier = labels("20261205T100000Z-0001", "dead");
        assert_eq!(
            orphaned(Some(&earlier), dir.path()).as_deref(),
            Some("20261205T100000Z-0001")
        );
        // This process's own work, another state dir's runs, odd labels: left alone.
        let own = labels("20261205T100000Z-0001", session());
        assert_eq!(orphaned(Some(&own), dir.path()), None);
        assert_eq!(
            orphaned(Some(&labels("20261205T100000Z-0002", "x")), dir.path()),
            None
        );
        assert_eq!(orphaned(Some(&labels("..", "x")), dir.path()), None);
        assert_eq!(orphaned(Some(&labels("", "x")), dir.path()), None);
        assert_eq!(orphaned(None, dir.path()), None);
    }
}
