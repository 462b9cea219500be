//! [`ContextBuilder`]: a [`PhaseContext`] made outside the engine (tests, embedding).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::AttemptLog;
use super::log::{LogPath, PhaseLog};
use super::{EnvParts, LogBook, PhaseContext, RunShared, SnapshotFn};
use crate::agent::{Agent, LocalAgent};
use crate::errors::InterpolationError;
use crate::events::{EventBus, EventSink};
use crate::ids::{PhaseId, RunId};
use crate::interpolate::{Reference, Scope};
use crate::record::Outputs;
use crate::redact::Redactor;

/// Builds a [`PhaseContext`] outside the engine.
pub struct ContextBuilder {
    phase_id: PhaseId,
    base_dir: PathBuf,
    run_id: RunId,
    attempt: u32,
    workdir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    vars: Vec<(String, String)>,
    outputs: Vec<(String, String, String)>,
    env: Vec<(String, String)>,
    secrets: Vec<(String, String)>,
    bus: EventBus,
    agent: Option<Arc<dyn Agent>>,
    cancel: CancellationToken,
    grace: Duration,
    log_path: Option<PathBuf>,
    snapshot: Option<SnapshotFn>,
    pipeline: Option<Arc<crate::pipeline::Pipeline>>,
}

impl ContextBuilder {
    pub(super) fn new(phase_id: PhaseId, base_dir: PathBuf) -> Self {
        Self {
            phase_id,
            base_dir,
            run_id: RunId::generate(),
            attempt: 1,
            workdir: None,
            run_dir: None,
            vars: Vec::new(),
            outputs: Vec::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            bus: EventBus::default(),
            agent: None,
            cancel: CancellationToken::new(),
            grace: Duration::from_secs(5),
            log_path: None,
            snapshot: None,
            pipeline: None,
        }
    }

    /// Makes [`PhaseContext::declared`] answer from this pipeline.
    pub fn pipeline(mut self, pipeline: Arc<crate::pipeline::Pipeline>) -> Self {
        self.pipeline = Some(pipeline);
        self
    }

    /// Makes [`PhaseContext::run_snapshot`] return this record.
    pub fn snapshot(mut self, record: crate::record::RunRecord) -> Self {
        self.snapshot = Some(Arc::new(move || record.clone()));
        self
    }

    /// Sets the run id.
    pub fn run_id(mut self, id: RunId) -> Self {
        self.run_id = id;
        self
    }
    /// Sets the attempt number.
    pub fn attempt(mut self, n: u32) -> Self {
        self.attempt = n;
        self
    }
    /// Sets the working directory (default: the base dir).
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }
    /// Sets the run directory (default: `BASE/.orch/runs/RUN_ID`).
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }
    /// Adds a var.
    pub fn var(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.vars.push((k.into(), v.into()));
        self
    }
    /// Adds an output of another phase.
    pub fn output(
        mut self,
        phase: impl Into<String>,
        k: impl Into<String>,
        v: impl Into<String>,
    ) -> Self {
        self.outputs.push((phase.into(), k.into(), v.into()));
        self
    }
    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Adds a secret (given as env and redacted everywhere).
    pub fn secret(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.secrets.push((k.into(), v.into()));
        self
    }
    /// Sends output events to a sink.
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.bus.subscribe(sink);
        self
    }
    /// Sets the agent (default: a local agent).
    pub fn agent(mut self, agent: Arc<dyn Agent>) -> Self {
        self.agent = Some(agent);
        self
    }
    /// Uses this cancellation token.
    pub fn cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }
    /// Sets the grace period for cancellation.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
    /// Writes the log to this file.
    pub fn log_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    /// Builds the context. Its events' `elapsed` counts from now.
    pub fn build(mut self) -> PhaseContext {
        self.bus.start(std::time::SystemTime::now());
        let redactor = Redactor::new(self.secrets.iter().map(|(_, v)| v.as_str()));
        let mut extra = self.env;
        extra.extend(self.secrets);
        let env = EnvParts { extra }.build(&self.run_id, &self.phase_id, self.attempt);
        let run_dir = self.run_dir.unwrap_or_else(|| {
            self.base_dir
                .join(".orch")
                .join("runs")
                .join(self.run_id.as_str())
        });
        let scope = MapScope {
            run_id: self.run_id.to_string(),
            vars: self.vars,
            outputs: self.outputs,
        };
        let log = AttemptLog::Ready(Arc::new(PhaseLog::new(
            self.phase_id.clone(),
            self.bus.clone(),
            self.log_path.map(LogPath::File),
            &redactor,
        )));
        PhaseContext {
            run: Arc::new(RunShared {
                private: crate::orch_output::PrivateDir::new(&run_dir),
                run_dir: Arc::from(run_dir.as_path()),
                base_dir: Arc::from(self.base_dir.as_path()),
                env_remove: Arc::from(Vec::new()),
                scope: Arc::new(scope),
                cancel: Arc::new(self.cancel),
                abort: Arc::new(CancellationToken::new()),
                grace: self.grace,
                agents: Box::new([self
                    .agent
                    .unwrap_or_else(|| Arc::new(LocalAgent::new("local", 1)))]),
                log_book: Arc::new(LogBook::new(self.bus, None, redactor.clone())),
                redactor,
                cgroup: None,
                pipeline: self.pipeline,
                run_id: self.run_id,
            }),
            log,
            phase_id: self.phase_id,
            attempt: self.attempt,
            workdir: self.workdir,
            env: OnceLock::from(env),
            env_parts: Mutex::new(None),
            agent: 0,
            snapshot: self.snapshot,
        }
    }
}

struct MapScope {
    run_id: String,
    vars: Vec<(String, String)>,
    outputs: Vec<(String, String, String)>,
}

impl Scope for MapScope {
    fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError> {
        match r {
            Reference::RunId => Ok(Cow::Borrowed(&self.run_id)),
            Reference::Var(k) => self
                .vars
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| Cow::Borrowed(v.as_str()))
                .ok_or_else(|| InterpolationError::UnknownVar { name: k.clone() }),
            Reference::Output { phase, key } => self
                .outputs
                .iter()
                .find(|(p, k, _)| p == phase && k == key)
                .map(|(_, _, v)| Cow::Borrowed(v.as_str()))
                .ok_or_else(|| InterpolationError::MissingOutput {
                    phase: phase.clone(),
                    key: key.clone(),
                }),
        }
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.vars.clone()
    }

    fn phase_outputs(&self, phase: &str) -> Option<Outputs> {
        let o: Outputs = self
            .outputs
            .iter()
            .filter(|(p, _, _)| p == phase)
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        (!o.is_empty()).then_some(o)
    }
}
