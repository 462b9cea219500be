//! The [`Phase`] trait: *what* runs. A phase gets a [`PhaseContext`] and returns outputs and
//! artifacts, or a [`PhaseError`].

mod builder;
mod log;

use std::any::Any;
use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::errors::InterpolationError;
use crate::events::Stream;
use crate::ids::{PhaseId, RunId};
use crate::interpolate::{self, Reference, Scope, ShellScript};
use crate::record::{Artifact, Outputs};
use crate::redact::Redactor;

pub use builder::ContextBuilder;
pub(crate) use log::{LogPath, PhaseLog};

/// What a phase produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseOutcome {
    /// Outputs later phases can read as `${{ phases.ID.outputs.KEY }}`.
    pub outputs: Outputs,
    /// Images, archives, files it made.
    pub artifacts: Vec<Artifact>,
    /// Exit code, for process phases.
    pub exit_code: Option<i32>,
}

impl PhaseOutcome {
    /// An outcome with these outputs.
    pub fn with_outputs<K: Into<String>, V: Into<String>>(
        outputs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            outputs: outputs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..Self::default()
        }
    }
}

/// Why an attempt did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PhaseError {
    /// The attempt failed; the phase may be retried.
    #[error("{message}")]
    Failed {
        /// What went wrong, one line.
        message: String,
        /// Exit code, for processes.
        exit_code: Option<i32>,
    },
    /// The attempt failed and still has outputs to publish (a deployment that rolled back
    /// says so in `status`); retried like [`PhaseError::Failed`].
    #[error("{message}")]
    FailedWithOutputs {
        /// What went wrong, one line.
        message: String,
        /// Outputs later phases and the record see.
        outputs: Outputs,
    },
    /// The phase noticed cancellation and stopped.
    #[error("cancelled")]
    Cancelled,
    /// The phase decided not to run (for example, no engine to run it on); not a failure.
    #[error("skipped: {reason}")]
    Skip {
        /// Why.
        reason: String,
    },
}

impl PhaseError {
    /// A failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            exit_code: None,
        }
    }

    /// A failure from an error, with its whole `source()` chain in one line.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::failed(crate::errors::chain(error))
    }
}

/// What a phase would do, for `orch plan`. Describing has no side effects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Description {
    /// One line: what it does (`sh -c 'cargo test'`, `build image app:1.2`).
    pub summary: String,
    /// Settings worth showing, as name and value.
    pub details: Vec<(String, String)>,
    /// What it would change outside the state directory (files, refs, registries).
    pub changes: Vec<String>,
}

impl Description {
    /// A description with a summary.
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
            ..Self::default()
        }
    }

    /// Adds a detail (builder style).
    pub fn detail(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.push((name.into(), value.into()));
        self
    }

    /// Adds a change it would make (builder style).
    pub fn change(mut self, change: impl Into<String>) -> Self {
        self.changes.push(change.into());
        self
    }
}

/// A node of the pipeline: *what* runs.
///
/// Implementations hold their settings (with `${{ }}` templates unrendered) and render them
/// with [`PhaseContext::render`] when they run, and with [`PlanContext::render`] when they
/// describe themselves.
#[async_trait]
pub trait Phase: Send + Sync + 'static {
    /// What a run would do, with no side effects.
    fn describe(&self, ctx: &PlanContext<'_>) -> Description;

    /// Runs one attempt. The engine applies the timeout (dropping this future) and retries;
    /// a phase that starts processes must kill them when the future is dropped and stop
    /// them gracefully when [`PhaseContext::cancelled`] fires.
    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError>;

    /// Whether an attempt only waits for work done elsewhere (another thread, another
    /// process) and does next to nothing when polled. The engine then polls such an
    /// attempt in its own loop instead of spawning a task for it, which saves a task and
    /// a wake-up per attempt; a phase that computes or blocks while polled must say no
    /// (the default), or it would hold up the engine.
    fn is_light(&self) -> bool {
        false
    }

    /// Whether the phase reads the run as it stands ([`PhaseContext::run_snapshot`]), as
    /// a report of the run it is part of does. The engine builds the snapshot function
    /// only for phases that say so.
    fn wants_run_snapshot(&self) -> bool {
        false
    }
}

/// The values a plan can know: vars, the run id placeholder, and placeholders for outputs.
pub struct PlanContext<'a> {
    pub(crate) phase_id: &'a PhaseId,
    pub(crate) base_dir: &'a Path,
    pub(crate) workdir: PathBuf,
    pub(crate) scope: &'a dyn Scope,
}

impl<'a> PlanContext<'a> {
    /// A plan context over a scope (for tests and embedding).
    pub fn new(phase_id: &'a PhaseId, base_dir: &'a Path, scope: &'a dyn Scope) -> Self {
        Self {
            phase_id,
            base_dir,
            workdir: base_dir.to_owned(),
            scope,
        }
    }

    /// The phase being described.
    pub fn phase_id(&self) -> &PhaseId {
        self.phase_id
    }

    /// The pipeline's directory.
    pub fn base_dir(&self) -> &Path {
        self.base_dir
    }

    /// The phase's working directory.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Renders a template; outputs not known yet show as `<phases.ID.outputs.KEY>`.
    pub fn render(&self, template: &str) -> String {
        interpolate::render(template, self.scope).unwrap_or_else(|_| template.to_owned())
    }

    /// Resolves a path setting against the pipeline's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(self.render(path))
    }
}

/// Everything one attempt of a phase may use.
pub struct PhaseContext {
    /// What every attempt of the run shares.
    pub(crate) run: Arc<RunShared>,
    pub(crate) phase_id: PhaseId,
    pub(crate) attempt: u32,
    /// The phase's working directory, when it is not the pipeline's directory.
    pub(crate) workdir: Option<PathBuf>,
    /// The environment, built when first read (see [`PhaseContext::env`]).
    pub(crate) env: OnceLock<Vec<(String, String)>>,
    /// What `env` is built from: the phase's rendered `env` and secrets and, after them,
    /// the `ORCH_*` values. In-process phases mostly never read it.
    pub(crate) env_parts: Mutex<Option<EnvParts>>,
    /// The agent running this phase: its index in [`RunShared::agents`].
    pub(crate) agent: usize,
    pub(crate) log: AttemptLog,
    pub(crate) snapshot: Option<SnapshotFn>,
}

/// What every attempt of a run shares, behind one pointer: an attempt's context takes one
/// reference instead of one per field.
pub(crate) struct RunShared {
    pub(crate) run_id: RunId,
    pub(crate) base_dir: Arc<Path>,
    pub(crate) run_dir: Arc<Path>,
    /// The run's private directory, where `ORCH_OUTPUT` files are.
    pub(crate) private: crate::orch_output::PrivateDir,
    pub(crate) env_remove: Arc<[String]>,
    pub(crate) scope: Arc<dyn Scope + Send + Sync>,
    /// Fires when the run stops (see [`PhaseContext::cancelled`]).
    pub(crate) cancel: Arc<CancellationToken>,
    /// Fires when the run aborts: the engine drops the attempt.
    pub(crate) abort: Arc<CancellationToken>,
    pub(crate) grace: Duration,
    /// The run's agents.
    pub(crate) agents: Box<[Arc<dyn Agent>]>,
    pub(crate) redactor: Redactor,
    /// Makes the logs of phases when they first write.
    pub(crate) log_book: Arc<LogBook>,
    /// The run's cgroup, where cgroups are used.
    pub(crate) cgroup: Option<Arc<crate::cgroup::RunCgroup>>,
    /// The pipeline the attempts run in (none for contexts built outside a run).
    pub(crate) pipeline: Option<Arc<crate::pipeline::Pipeline>>,
}

/// A phase's log as one attempt sees it. In a run it is made when the phase first writes
/// (most phases never do) and then kept by the engine, for the phase's later attempts and
/// its record.
pub(crate) enum AttemptLog {
    /// Made already.
    Ready(Arc<PhaseLog>),
    /// Made by the run's [`LogBook`] on the first write, for phase `i`.
    Lazy {
        log: OnceLock<Arc<PhaseLog>>,
        i: usize,
    },
}

impl AttemptLog {
    /// The log, made now by `book` if need be.
    fn get(&self, phase: &PhaseId, book: &LogBook) -> &PhaseLog {
        match self {
            Self::Ready(log) => log,
            Self::Lazy { log, i } => log.get_or_init(|| {
                let log = Arc::new(book.make(phase.clone()));
                book.made
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((*i, log.clone()));
                book.any_made
                    .store(true, std::sync::atomic::Ordering::Release);
                log
            }),
        }
    }

    /// The log, if it was made.
    fn made(&self) -> Option<&PhaseLog> {
        match self {
            Self::Ready(log) => Some(log),
            Self::Lazy { log, .. } => log.get().map(|l| &**l),
        }
    }
}

/// What a run's phase logs are made with, and the logs its attempts made until the engine
/// takes them ([`LogBook::take_made`]).
pub(crate) struct LogBook {
    bus: crate::events::EventBus,
    /// The run directory, when logs are written to files.
    run_dir: Option<Arc<Path>>,
    redactor: Redactor,
    made: Mutex<Vec<(usize, Arc<PhaseLog>)>>,
    any_made: std::sync::atomic::AtomicBool,
}

impl LogBook {
    /// Logs that send events to `bus` and, with `run_dir`, go to `RUN_DIR/logs/PHASE.log`.
    pub(crate) fn new(
        bus: crate::events::EventBus,
        run_dir: Option<Arc<Path>>,
        redactor: Redactor,
    ) -> Self {
        Self {
            bus,
            run_dir,
            redactor,
            made: Mutex::new(Vec::new()),
            any_made: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A log for `phase`.
    pub(crate) fn make(&self, phase: PhaseId) -> PhaseLog {
        PhaseLog::new(
            phase,
            self.bus.clone(),
            self.run_dir.clone().map(LogPath::RunDir),
            &self.redactor,
        )
    }

    /// The logs attempts made since the last call, with their phases' indices.
    pub(crate) fn take_made(&self) -> Vec<(usize, Arc<PhaseLog>)> {
        // Read before it is swapped: most phases make no log, and a read is cheaper.
        if !self.any_made.load(std::sync::atomic::Ordering::Relaxed)
            || !self
                .any_made
                .swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return Vec::new();
        }
        std::mem::take(&mut *self.made.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The parts of a phase's environment beyond the `ORCH_*` variables.
pub(crate) struct EnvParts {
    /// The phase's rendered `env`, then its secrets.
    pub(crate) extra: Vec<(String, String)>,
}

impl EnvParts {
    fn build(self, run_id: &RunId, phase_id: &PhaseId, attempt: u32) -> Vec<(String, String)> {
        let mut digits = [0u8; 10];
        let mut env = self.extra;
        env.extend(
            marks(run_id, phase_id, decimal(attempt, &mut digits))
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        env
    }
}

/// The `ORCH_*` variables of an attempt. They come last in its environment so nothing
/// declared in code can override the marks the run's sweeps find processes by (the
/// pipeline file refuses such names).
fn marks<'a>(
    run_id: &'a RunId,
    phase_id: &'a PhaseId,
    attempt: &'a str,
) -> [(&'a str, &'a str); 3] {
    [
        ("ORCH_RUN_ID", run_id.as_str()),
        ("ORCH_PHASE_ID", phase_id.as_str()),
        ("ORCH_ATTEMPT", attempt),
    ]
}

/// `n` in decimal, written into `buf`.
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits only.
    std::str::from_utf8(&buf[at..]).unwrap_or_default()
}

/// Produces the run record as it stands (finished phases only).
pub type SnapshotFn = Arc<dyn Fn() -> crate::record::RunRecord + Send + Sync>;

impl std::fmt::Debug for PhaseContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseContext")
            .field("run_id", &self.run.run_id)
            .field("phase_id", &self.phase_id)
            .field("attempt", &self.attempt)
            .field("workdir", &self.workdir())
            .finish_non_exhaustive()
    }
}

impl PhaseContext {
    /// A builder, for running a phase outside the engine (tests, embedding).
    pub fn builder(phase_id: PhaseId, base_dir: impl Into<PathBuf>) -> ContextBuilder {
        ContextBuilder::new(phase_id, base_dir.into())
    }

    /// The run.
    pub fn run_id(&self) -> &RunId {
        &self.run.run_id
    }

    /// This phase.
    pub fn phase_id(&self) -> &PhaseId {
        &self.phase_id
    }

    /// 1-based attempt number.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The pipeline's directory: relative paths in settings resolve against it.
    pub fn base_dir(&self) -> &Path {
        &self.run.base_dir
    }

    /// The phase's working directory (its `cwd`, resolved).
    pub fn workdir(&self) -> &Path {
        self.workdir.as_deref().unwrap_or(&self.run.base_dir)
    }

    /// The run's directory in the state dir (`STATE_DIR/runs/RUN_ID`).
    pub fn run_dir(&self) -> &Path {
        &self.run.run_dir
    }

    /// Environment for processes the phase starts: the phase's rendered `env`, the secrets
    /// it declared, and the `ORCH_*` variables (last, so they win). Apply it on top of the inherited
    /// environment after removing [`PhaseContext::env_remove`].
    pub fn env(&self) -> &[(String, String)] {
        self.env.get_or_init(|| {
            let parts = self
                .env_parts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            match parts {
                Some(p) => p.build(&self.run.run_id, &self.phase_id, self.attempt),
                None => Vec::new(),
            }
        })
    }

    /// Calls `f` with the variables of [`PhaseContext::env`], in its order, borrowed from
    /// the context: a process phase passes them on without building that list.
    pub(crate) fn with_env<R>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = (&str, &str)>) -> R,
    ) -> R {
        if let Some(env) = self.env.get() {
            return f(&mut env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let parts = self.env_parts.lock().unwrap_or_else(|p| p.into_inner());
        match &*parts {
            Some(p) => {
                let mut digits = [0u8; 10];
                let attempt = decimal(self.attempt, &mut digits);
                f(&mut p
                    .extra
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .chain(marks(&self.run.run_id, &self.phase_id, attempt)))
            }
            None => {
                // Built meanwhile.
                drop(parts);
                f(&mut self.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
            }
        }
    }

    /// A new cgroup for processes this attempt starts (see [`crate::cgroup`]), when the run
    /// has one: start them in it with [`crate::cgroup::enter`] in a `pre_exec` hook, and
    /// guard it with the engine's process-tree guard (`TreeGuard::with_cgroup`). `None` where cgroups are
    /// not available (processes are then found by their marks).
    pub fn process_cgroup(&self) -> Option<crate::cgroup::PhaseCgroup> {
        self.run
            .cgroup
            .as_ref()?
            .attempt(self.phase_id.as_str(), self.attempt)
    }

    /// Variables to remove from the inherited environment: secrets this phase did not
    /// declare.
    pub fn env_remove(&self) -> &[String] {
        &self.run.env_remove
    }

    /// The value of an environment variable the phase gets (from [`PhaseContext::env`]).
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env()
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Renders a `${{ }}` template by text substitution (for settings no shell reads).
    pub fn render(&self, template: &str) -> Result<String, InterpolationError> {
        interpolate::render(template, &*self.run.scope)
    }

    /// Renders a `sh -c` script so interpolated values cannot inject shell syntax.
    pub fn render_shell(&self, script: &str) -> Result<ShellScript, InterpolationError> {
        interpolate::render_shell(script, &*self.run.scope)
    }

    /// Resolves a path setting (rendered) against the pipeline's directory.
    pub fn resolve(&self, path: &str) -> Result<PathBuf, InterpolationError> {
        Ok(self.run.base_dir.join(self.render(path)?))
    }

    /// Every output phase `id` published, once it has finished: in this run, or, in a
    /// resumed run, in the run that did it (restored from its journal). `None` while it has
    /// not finished or when it published nothing. Phases that read outputs by key use
    /// templates (`${{ phases.ID.outputs.KEY }}`); this is for code that lists them.
    pub fn outputs_of(&self, id: &str) -> Option<Outputs> {
        self.run.scope.phase_outputs(id)
    }

    /// Looks up one reference (`vars.X`, an output).
    pub fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError> {
        self.run.scope.lookup(r)
    }

    /// Fires when the run is cancelled: stop gracefully within [`PhaseContext::grace`].
    pub fn cancelled(&self) -> &CancellationToken {
        &self.run.cancel
    }

    /// How long a cancelled phase may take to stop before it is killed.
    pub fn grace(&self) -> Duration {
        self.run.grace
    }

    /// The agent running this phase.
    pub fn agent(&self) -> &Arc<dyn Agent> {
        &self.run.agents[self.agent]
    }

    /// The agent as its concrete type.
    pub fn agent_as<T: Any>(&self) -> Option<&T> {
        let agent: &dyn Any = &**self.agent();
        agent.downcast_ref::<T>()
    }

    /// The run record as it stands: the phases finished so far, with their outputs and
    /// artifacts (for phases such as `report` that summarise the run they are part of).
    pub fn run_snapshot(&self) -> Option<crate::record::RunRecord> {
        self.snapshot.as_ref().map(|f| f())
    }

    /// The declaration of phase `id` of the pipeline this attempt runs in: its kind and
    /// its needs, for a phase that looks past its own needs (`docker.push` finds the build
    /// it pushes through the phases it needs). `None` for an unknown id, or outside a run.
    pub fn declared(&self, id: &str) -> Option<&crate::spec::PhaseSpec> {
        let p = self.run.pipeline.as_ref()?;
        p.index_of(id).map(|i| &p.nodes()[i].spec)
    }

    /// Masks secrets in a string (for messages built from external data).
    pub fn redact<'s>(&self, text: &'s str) -> Cow<'s, str> {
        self.run.redactor.redact(text)
    }

    /// The run's redactor, which masks every secret of the run.
    pub fn redactor(&self) -> &Redactor {
        &self.run.redactor
    }

    /// Writes a file the phase produces (a report, a manifest, any artifact) with every
    /// secret of the run masked, atomically (a temporary file beside it, then a rename),
    /// creating its directory. Returns what was written: its size and digest are those of
    /// the redacted bytes. It does blocking I/O.
    ///
    /// Every file a kind writes goes through here (or [`PhaseContext::write_json`]), so
    /// no secret reaches a file on disk even when a kind's input held one.
    pub fn write_file(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<WrittenFile, crate::errors::WriteFileError> {
        let bytes = if self.run.redactor.is_empty() {
            Cow::Borrowed(bytes)
        } else {
            Cow::Owned(self.run.redactor.redact_bytes(bytes))
        };
        write_atomic(path, &bytes).map_err(|source| crate::errors::WriteFileError {
            path: path.to_owned(),
            source,
        })?;
        Ok(WrittenFile::of(&bytes))
    }

    /// Writes a value as pretty JSON with a final newline through
    /// [`PhaseContext::write_file`]; secrets are masked in every string and object key
    /// first, so the file stays valid JSON.
    pub fn write_json<T: serde::Serialize + ?Sized>(
        &self,
        path: &Path,
        value: &T,
    ) -> Result<WrittenFile, crate::errors::WriteFileError> {
        let fail = |e: serde_json::Error| crate::errors::WriteFileError {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        };
        let mut value = serde_json::to_value(value).map_err(fail)?;
        self.run.redactor.redact_json(&mut value);
        let mut bytes = serde_json::to_vec_pretty(&value).map_err(fail)?;
        bytes.push(b'\n');
        self.write_file(path, &bytes)
    }

    /// Writes a chunk of process output; it is redacted, split into lines, written to the
    /// phase log and sent as events.
    pub fn output(&self, stream: Stream, chunk: &[u8]) {
        self.log
            .get(&self.phase_id, &self.run.log_book)
            .push(stream, chunk);
    }

    /// Logs one line of the phase's own (redacted).
    pub fn log(&self, line: impl AsRef<str>) {
        let mut text = line.as_ref().to_owned();
        text.push('\n');
        self.log
            .get(&self.phase_id, &self.run.log_book)
            .push(Stream::Log, text.as_bytes());
    }

    /// Flushes partial lines and the log file (the engine calls this after each attempt).
    pub fn flush_output(&self) {
        if let Some(log) = self.log.made() {
            log.finish();
        }
    }
}

/// A file written by [`PhaseContext::write_file`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its size in bytes.
    pub size: u64,
    /// `sha256:HEX` of its content.
    pub digest: String,
}

impl WrittenFile {
    fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        use std::fmt::Write as _;
        let mut digest = String::with_capacity(7 + 64);
        digest.push_str("sha256:");
        for b in sha2::Sha256::digest(bytes) {
            let _ = write!(digest, "{b:02x}");
        }
        Self {
            size: bytes.len() as u64,
            digest,
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{:016x}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        fastrand::u64(..)
    ));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_env_cannot_override_the_run_marks() {
        let run = RunId::generate();
        let ctx = PhaseContext::builder(PhaseId::new("p").expect("id"), "/")
            .run_id(run.clone())
            .env("ORCH_RUN_ID", "somebody-else")
            .env("ORCH_PHASE_ID", "q")
            .build();
        assert_eq!(ctx.env_var("ORCH_RUN_ID"), Some(run.as_str()));
        assert_eq!(ctx.env_var("ORCH_PHASE_ID"), Some("p"));
        // Applied in order, the last value of a name is the one a process sees.
        let last = ctx.env().iter().rev().find(|(k, _)| k == "ORCH_RUN_ID");
        assert_eq!(last.map(|(_, v)| v.as_str()), Some(run.as_str()));
    }

    #[test]
    fn a_process_gets_the_variables_env_gives_in_the_same_order() {
        let unbuilt = || {
            let mut ctx = PhaseContext::builder(PhaseId::new("p").expect("id"), "/").build();
            ctx.attempt = 1207;
            ctx.env = OnceLock::new();
            ctx.env_parts = Mutex::new(Some(EnvParts {
                extra: vec![("A".into(), "1".into()), ("ORCH_RUN_ID".into(), "x".into())],
            }));
            ctx
        };
        let borrowed = |ctx: &PhaseContext| {
            ctx.with_env(|vars| {
                vars.map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
        };
        let ctx = unbuilt();
        let before = borrowed(&ctx);
        assert_eq!(before, ctx.env());
        assert_eq!(borrowed(&ctx), ctx.env(), "once built, the same");
        let run = ctx.run.run_id.to_string();
        let expected: Vec<(&str, &str)> = vec![
            ("A", "1"),
            ("ORCH_RUN_ID", "x"),
            ("ORCH_RUN_ID", &run),
            ("ORCH_PHASE_ID", "p"),
            ("ORCH_ATTEMPT", "1207"),
        ];
        let got: Vec<(&str, &str)> = before
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(got, expected);
        let mut digits = [0u8; 10];
        assert_eq!(decimal(0, &mut digits), "0");
        assert_eq!(decimal(u32::MAX, &mut digits), "4294967295");
    }
}
