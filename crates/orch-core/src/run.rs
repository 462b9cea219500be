//! The scheduler: runs a pipeline's phases on tokio, bounded by the job limit and each
//! agent's capacity, with timeouts, retries, circuit breakers and cancellation.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::CatchUnwind;
use futures_util::stream::FuturesUnordered;
use indexmap::IndexMap;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::audit::{AUDIT_FILE, AuditSettings, AuditWriter, Event as AuditEvent};
use crate::errors::{AgentError, RunError};
use crate::events::{EventBus, EventSink, RunEvent};
use crate::expr;
use crate::failpoint;
use crate::ids::RunId;
use crate::journal::{
    Done, Entry, FileStorage, FinishedRef, JOURNAL_FILE, JournalMode, JournalWriter, StartedRef,
    StorageFactory,
};
use crate::lock::WorkspaceLock;
use crate::phase::{
    EnvParts, LogPath, PhaseContext, PhaseError, PhaseLog, PhaseOutcome, SnapshotFn,
};
use crate::pipeline::Pipeline;
use crate::policy::{Evaluator, GitInput, PhaseInput, RunInput};
use crate::record::{
    Artifact, AuditHead, Outputs, PhaseRecord, PhaseStatus, PolicyVerdict, RECORD_FORMAT_VERSION,
    RecordError, RunRecord, RunStatus, Stamp, rfc3339,
};
use crate::redact::Redactor;
use crate::resume::ResumeState;
use crate::scope::{OutputStore, RunScope};
use crate::select::Selection;
use crate::spec::Unavailable;

/// Shorter secret values cannot be masked without mangling ordinary output (a one-letter
/// secret would turn every such letter into `***`): phases declaring one fail instead.
pub const MIN_SECRET_LEN: usize = 4;

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Job limit (default: the pipeline's `jobs`, else the number of CPUs).
    pub jobs: Option<usize>,
    /// Which phases.
    pub selection: Selection,
    /// Run everything that does not depend on a failure.
    pub keep_going: bool,
    /// How long cancelled phases get to stop before they are killed.
    pub grace: Duration,
    /// State directory (default: the pipeline's).
    pub state_dir: Option<PathBuf>,
    /// Run id (default: a fresh one).
    pub run_id: Option<RunId>,
    /// Write run.json, logs, the journal and `runs/latest`, and take the workspace lock
    /// (off for in-process benchmarks).
    pub write_files: bool,
    /// Continue an earlier run of the same state directory (see [`crate::resume`]).
    pub resume: Option<ResumeFrom>,
    /// How to keep the journal; `None` reads `ORCH_JOURNAL` (`off`, `nosync`, default on).
    pub journal: Option<JournalMode>,
    /// Where the journal's bytes go (default: the file `RUN_DIR/journal`); for tests that
    /// simulate losing unsynced writes.
    pub journal_storage: Option<StorageFactory>,
    /// Whether and how to write `STATE_DIR/audit.log`; `None` reads `ORCH_AUDIT` and
    /// `ORCH_AUDIT_KEY` (see [`crate::audit`]).
    pub audit: Option<AuditSettings>,
}

/// Which run `--resume` continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeFrom {
    /// The run `runs/latest` points at.
    Latest,
    /// A named run.
    Run(RunId),
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            jobs: None,
            selection: Selection::default(),
            keep_going: false,
            grace: Duration::from_secs(10),
            state_dir: None,
            run_id: None,
            write_files: true,
            resume: None,
            journal: None,
            journal_storage: None,
            audit: None,
        }
    }
}

/// Stops a run from outside: [`RunControl::stop`] stops scheduling and asks running phases
/// to stop within the grace period; [`RunControl::abort`] kills them now.
#[derive(Clone, Debug, Default)]
pub struct RunControl {
    stop: CancellationToken,
    abort: CancellationToken,
}

impl RunControl {
    /// A fresh control.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops scheduling; running phases are cancelled gracefully.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Kills running phases without waiting (also stops scheduling).
    pub fn abort(&self) {
        self.stop.cancel();
        self.abort.cancel();
    }

    /// First call stops, second aborts: what Ctrl-C does.
    pub fn interrupt(&self) {
        if self.stop.is_cancelled() {
            self.abort();
        } else {
            self.stop();
        }
    }

    /// Whether the run was asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}

/// Runs a pipeline.
pub struct Runner {
    pipeline: Arc<Pipeline>,
    options: RunOptions,
    bus: EventBus,
}

enum Outcome {
    Done(Result<PhaseOutcome, PhaseError>),
    TimedOut(Duration),
    Aborted,
    Unavailable(AgentError),
    /// The attempt could not start for a reason a retry would not change.
    NotStarted(String),
}

enum Msg {
    Attempt { i: usize, outcome: Outcome },
    Retry(usize),
}

struct Breaker {
    failures: u32,
    consecutive: u32,
    cooldown: Duration,
    open_until: Option<Instant>,
    probing: bool,
}

struct AgentState {
    agent: Arc<dyn Agent>,
    capacity: usize,
    running: usize,
    ready: BinaryHeap<Reverse<u32>>,
    breaker: Breaker,
    health: Arc<OnceCell<Result<(), AgentError>>>,
    unavailable: Unavailable,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Waiting,
    Ready,
    Running,
    Backoff,
    Done,
}

struct PhaseState {
    st: St,
    remaining: u32,
    /// Attempts started (across resumed runs).
    attempts: u32,
    /// Failed attempts that count against `retries`.
    failures: u32,
    first_start: Option<(SystemTime, Instant)>,
    /// Why the last attempt failed, while the phase waits to retry.
    last_error: Option<(PhaseStatus, String)>,
}

/// An attempt whose `Started` record is queued: it starts once the record is written.
struct Starting {
    i: usize,
    attempt: u32,
    at: SystemTime,
    fut: Pin<Box<dyn Future<Output = Msg> + Send>>,
}

/// An attempt of a light phase, polled by the engine loop (a panic in it is reported
/// like one in a task).
type LightAttempt = CatchUnwind<AssertUnwindSafe<Pin<Box<dyn Future<Output = Msg> + Send>>>>;

/// A `PhaseFinished` event waiting for its journal record to be durable.
struct Pending {
    seq: u64,
    event: RunEvent,
}

impl Runner {
    /// A runner for `pipeline`.
    pub fn new(pipeline: Arc<Pipeline>, options: RunOptions) -> Self {
        Self {
            pipeline,
            options,
            bus: EventBus::default(),
        }
    }

    /// Adds an event consumer.
    pub fn subscribe(&mut self, sink: Arc<dyn EventSink>) {
        self.bus.subscribe(sink);
    }

    /// The state directory this run uses.
    pub fn state_dir(&self) -> PathBuf {
        self.options
            .state_dir
            .clone()
            .unwrap_or_else(|| self.pipeline.state_dir())
    }

    /// Runs to the end (or until stopped) and returns the record.
    ///
    /// With `write_files`, the state directory's lock is taken first: a second run on the
    /// same state directory fails at once with [`RunError::Locked`]. When the lock names a
    /// run that died, whatever that run left running is killed before anything starts.
    pub async fn run(self, control: RunControl) -> Result<RunRecord, RunError> {
        let prep = self.prepare().await?;
        Engine::start(self, control, prep)?.run().await
    }

    async fn prepare(&self) -> Result<Prepared, RunError> {
        let run_id = self.options.run_id.clone().unwrap_or_else(RunId::generate);
        // Where the run's processes are contained, and who ends them if this process dies.
        // Forked before anything is opened (the lock above all), so the watchdog never
        // holds a copy of it, not even for the instant before it closes what it inherited.
        let cgroup = crate::cgroup::RunCgroup::create(run_id.as_str()).map(Arc::new);
        let watchdog = match crate::watchdog::Watchdog::start(
            run_id.as_str(),
            cgroup.as_ref().map(|c| c.dir()),
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot start the run's watchdog: {e}");
                None
            }
        };
        if !self.options.write_files {
            if self.options.resume.is_some() {
                return Err(RunError::Resume(
                    "a run that writes no files cannot resume".into(),
                ));
            }
            return Ok(Prepared {
                run_id,
                cgroup,
                watchdog,
                started_at: SystemTime::now(),
                lock: None,
                resume: None,
                journal: None,
                durable: false,
                audit: None,
            });
        }
        // A selection naming unknown phases fails before anything is written.
        self.options.selection.apply(&self.pipeline)?;
        let state_dir = self.state_dir();
        let mut lock = WorkspaceLock::acquire(&state_dir)?;
        failpoint::hit("after-lock");
        if let Some(stale) = lock.stale() {
            // A run died holding the workspace: nothing it started may outlive it, and
            // nothing of it may run beside this run.
            tracing::warn!(
                "taking over the lock of {stale}, which is gone; killing what it left running"
            );
            if let Ok(id) = RunId::parse(&stale.run_id)
                && let Some(dir) = crate::cgroup::run_dir(id.as_str())
            {
                crate::cgroup::remove_tree(&dir).await;
            }
            crate::process::kill_marked(&stale.run_id, None, Duration::from_secs(2)).await;
            // Its attempts' private files (outputs that may hold secrets) go too.
            if !stale.run_id.is_empty() && !stale.run_id.contains(['/', '.']) {
                crate::orch_output::remove_private_dir(&state_dir.join("runs").join(&stale.run_id));
            }
        }
        lock.write_holder(run_id.as_str())?;
        let resume = match &self.options.resume {
            None => None,
            Some(from) => Some(load_resume(&state_dir, from, self.pipeline.name())?),
        };
        let started_at = SystemTime::now();
        let run_dir = state_dir.join("runs").join(run_id.as_str());
        std::fs::create_dir_all(&run_dir).map_err(|source| RunError::State {
            path: run_dir.clone(),
            source,
        })?;
        let mode = self.options.journal.unwrap_or_else(JournalMode::from_env);
        let journal = if mode == JournalMode::Off {
            None
        } else {
            let path = run_dir.join(JOURNAL_FILE);
            let state_err = |source| RunError::State {
                path: path.clone(),
                source,
            };
            let durable = mode == JournalMode::Durable;
            let storage = match &self.options.journal_storage {
                Some(f) => (f.0)(&path).map_err(state_err)?,
                None => Box::new(FileStorage::create(&path, durable).map_err(state_err)?),
            };
            let mut j = JournalWriter::create(storage, durable).map_err(state_err)?;
            // Who this run is and what it inherits: one write, durable before
            // `runs/latest` points here, so a resume of this run never misses them.
            let mut first = vec![Entry::Run {
                run_id: run_id.clone(),
                pipeline: self.pipeline.name().to_owned(),
                started_at: rfc3339(started_at),
                resumed_from: resume.as_ref().map(|(id, _)| id.clone()),
                pid: std::process::id(),
            }];
            if let Some((_, state)) = &resume {
                first.push(Entry::Inherited {
                    phases: state.phases.clone(),
                });
            }
            j.append_all(&first).map_err(state_err)?;
            j.wait_all().await.map_err(|e| RunError::State {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            failpoint::hit("after-journal-header");
            Some(j)
        };
        let settings = self
            .options
            .audit
            .clone()
            .unwrap_or_else(AuditSettings::from_env);
        let audit = if settings.enabled {
            // Under the workspace lock: one writer at a time.
            let path = state_dir.join(AUDIT_FILE);
            Some(AuditWriter::open(
                &path,
                mode == JournalMode::Durable,
                settings.key,
            )?)
        } else {
            None
        };
        Ok(Prepared {
            run_id,
            cgroup,
            watchdog,
            started_at,
            lock: Some(lock),
            resume,
            journal,
            durable: mode == JournalMode::Durable,
            audit,
        })
    }
}

struct Prepared {
    run_id: RunId,
    cgroup: Option<Arc<crate::cgroup::RunCgroup>>,
    watchdog: Option<crate::watchdog::Watchdog>,
    started_at: SystemTime,
    lock: Option<WorkspaceLock>,
    resume: Option<(RunId, ResumeState)>,
    journal: Option<JournalWriter>,
    /// Journal synced: make the `runs/latest` link durable too.
    durable: bool,
    audit: Option<AuditWriter>,
}

/// The id `runs/latest` points at in `state_dir`, if any.
pub fn latest_run(state_dir: &Path) -> Option<RunId> {
    let target = std::fs::read_link(state_dir.join("runs").join("latest")).ok()?;
    RunId::parse(target.file_name()?.to_str()?).ok()
}

/// Loads what the journal of the run to resume says.
fn load_resume(
    state_dir: &Path,
    from: &ResumeFrom,
    pipeline: &str,
) -> Result<(RunId, ResumeState), RunError> {
    let id = match from {
        ResumeFrom::Run(id) => id.clone(),
        ResumeFrom::Latest => latest_run(state_dir).ok_or_else(|| {
            RunError::Resume(format!("no run in {} to resume", state_dir.display()))
        })?,
    };
    let path = state_dir.join("runs").join(id.as_str()).join(JOURNAL_FILE);
    if !path.exists() {
        return Err(RunError::Resume(format!(
            "run {id} has no journal at {} (it did not start, or ran with ORCH_JOURNAL=off)",
            path.display()
        )));
    }
    let contents = crate::journal::read(&path).map_err(|e| {
        let mut msg = e.to_string();
        if let Some(src) = std::error::Error::source(&e) {
            msg.push_str(&format!(": {src}"));
        }
        RunError::Resume(msg)
    })?;
    if contents.torn > 0 {
        tracing::warn!(
            "journal {} ends with {} bytes of an interrupted write; they are ignored",
            path.display(),
            contents.torn
        );
    }
    let state = ResumeState::from_entries(&contents.entries);
    if let Some(name) = &state.pipeline
        && name != pipeline
    {
        return Err(RunError::Resume(format!(
            "run {id} ran pipeline `{name}`, not `{pipeline}`"
        )));
    }
    Ok((id, state))
}

struct Engine {
    p: Arc<Pipeline>,
    opts: RunOptions,
    bus: EventBus,
    control: RunControl,
    run_id: RunId,
    run_dir: Arc<Path>,
    jobs: usize,
    agents: Vec<AgentState>,
    states: Vec<PhaseState>,
    records: Arc<Mutex<Vec<Option<PhaseRecord>>>>,
    logs: Vec<Option<Arc<PhaseLog>>>,
    scope: Arc<RunScope>,
    outputs: Arc<OutputStore>,
    redactor: Redactor,
    env_remove: Arc<[String]>,
    started: (SystemTime, Instant),
    running: usize,
    backoffs: usize,
    stopping: Option<String>,
    failed: bool,
    tasks: JoinSet<Msg>,
    /// Pending attempts of light phases ([`Phase::is_light`]), polled by the engine loop.
    light: FuturesUnordered<LightAttempt>,
    /// Attempts that finished when first polled, waiting to be handled.
    inline_done: Vec<Msg>,
    /// Attempts dispatched in this turn, waiting for their `Started` records to be written.
    starting: Vec<Starting>,
    /// The outputs of every phase that published none.
    no_outputs: Arc<Outputs>,
    /// The pipeline's directory, shared by every phase context.
    base_dir: Arc<Path>,
    journal: Option<JournalWriter>,
    durable_rx: Option<watch::Receiver<u64>>,
    pending: VecDeque<Pending>,
    resumed_from: Option<RunId>,
    /// Per phase: its journaled success in an earlier run, when resuming.
    done: Vec<Option<Done>>,
    /// Per phase: the fingerprint of the attempt that runs (when journaling).
    fingerprints: Vec<Option<String>>,
    /// The run's cgroup, where cgroups are used (see [`crate::cgroup`]).
    cgroup: Option<Arc<crate::cgroup::RunCgroup>>,
    /// Ends the run's processes if this process dies; stopped when the run ends.
    watchdog: Option<crate::watchdog::Watchdog>,
    /// `[policy]`, when the pipeline has one.
    policy: Option<Box<PolicyGate>>,
    /// `STATE_DIR/audit.log`, when written.
    audit: Option<AuditWriter>,
    /// What could not be written so far.
    record_errors: Vec<RecordError>,
    _lock: Option<WorkspaceLock>,
}

/// The policy of a run: its evaluator, the parts of the input that do not change, and the
/// decisions until they go into the phases' records.
struct PolicyGate {
    eval: Evaluator,
    /// `input.run` and `input.git`, as JSON.
    run: serde_json::Value,
    git: Option<serde_json::Value>,
    verdicts: Vec<Option<PolicyVerdict>>,
}

fn fmt_secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

impl Engine {
    fn start(r: Runner, control: RunControl, prep: Prepared) -> Result<Self, RunError> {
        let state_dir = r.state_dir();
        let p = r.pipeline;
        let reasons = r.options.selection.apply(&p)?;
        let r_selection = selection_words(&r.options.selection);
        let run_id = prep.run_id;
        // `prepare` made the run directory (with `write_files`).
        let run_dir: Arc<Path> = Arc::from(state_dir.join("runs").join(run_id.as_str()));
        let started_at = prep.started_at;
        let (resumed_from, resume) = match prep.resume {
            Some((id, state)) => (Some(id), Some(state)),
            None => (None, None),
        };
        let journal = prep.journal;
        let jobs = r
            .options
            .jobs
            .or(p.spec().jobs)
            .unwrap_or_else(crate::pipeline::default_jobs)
            .max(1);

        // Secrets: every name declared anywhere is kept from phases that did not declare
        // it, and every value is redacted everywhere.
        let mut secret_names: Vec<String> = p
            .nodes()
            .iter()
            .flat_map(|n| n.spec.secrets.iter().cloned())
            .collect();
        secret_names.sort();
        secret_names.dedup();
        // Phases never see the audit key: they could forge entries with it.
        let mut env_remove = secret_names.clone();
        env_remove.push(crate::audit::KEY_ENV.to_owned());
        // Values too short to mask without mangling ordinary output are refused (the phases
        // that declare them fail), so they are not masked either.
        // Values are taken as bytes: one that is not UTF-8 cannot be given to a phase (its
        // phases fail, saying so) but is masked all the same.
        let redactor = Redactor::new(
            secret_names
                .iter()
                .filter_map(std::env::var_os)
                .map(std::os::unix::ffi::OsStringExt::into_vec)
                .filter(|v| v.len() >= MIN_SECRET_LEN),
        );

        let mut agents = Vec::with_capacity(p.agents().len());
        for spec in p.agents() {
            let agent = p.registry().build_agent(spec, jobs).map_err(|e| {
                RunError::Selection(format!("agent `{}`: {}", spec.name, e.message))
            })?;
            agents.push(AgentState {
                capacity: agent.capacity().max(1),
                agent,
                running: 0,
                ready: BinaryHeap::new(),
                breaker: Breaker {
                    failures: spec.breaker.failures,
                    consecutive: 0,
                    cooldown: spec.breaker.cooldown,
                    open_until: None,
                    probing: false,
                },
                health: Arc::new(OnceCell::new()),
                unavailable: spec.unavailable,
            });
        }

        let n = p.len();
        let outputs = Arc::new(OutputStore::new(n));
        let scope = Arc::new(RunScope {
            run_id: run_id.to_string(),
            vars: Arc::new(p.spec().vars.clone()),
            index: p.index.clone(),
            outputs: outputs.clone(),
        });
        let known = |node: &crate::pipeline::Node| {
            resume
                .as_ref()
                .and_then(|r| r.phase(node.spec.id.as_str()))
                .cloned()
                .unwrap_or_default()
        };
        let mut done = Vec::with_capacity(n);
        let states = p
            .nodes()
            .iter()
            .map(|node| {
                let k = known(node);
                done.push(k.done);
                PhaseState {
                    st: St::Waiting,
                    remaining: node.needs.len() as u32,
                    attempts: k.attempts,
                    failures: k.failures,
                    first_start: None,
                    last_error: None,
                }
            })
            .collect();
        let now = (started_at, Instant::now());
        let mut e = Self {
            cgroup: prep.cgroup,
            watchdog: prep.watchdog,
            opts: r.options,
            bus: r.bus,
            control,
            run_dir,
            jobs,
            agents,
            states,
            records: Arc::new(Mutex::new(vec![None; n])),
            logs: vec![None; n],
            scope,
            outputs,
            redactor,
            env_remove: Arc::from(env_remove),
            started: now,
            running: 0,
            backoffs: 0,
            stopping: None,
            failed: false,
            tasks: JoinSet::new(),
            light: FuturesUnordered::new(),
            inline_done: Vec::new(),
            starting: Vec::new(),
            no_outputs: Arc::new(Outputs::new()),
            base_dir: Arc::from(p.spec().base_dir.as_path()),
            durable_rx: journal.as_ref().map(JournalWriter::subscribe),
            journal,
            pending: VecDeque::new(),
            resumed_from,
            fingerprints: vec![None; n],
            record_errors: Vec::new(),
            done,
            policy: None,
            audit: prep.audit,
            _lock: prep.lock,
            run_id,
            p,
        };
        if e.opts.write_files {
            // `runs/latest` points at this run from now on, so `--resume` finds it even if
            // the process dies; run.json says `running` until the run ends.
            write_record(&e.run_dir, &e.record_header(RunStatus::Running))?;
            if prep.durable
                && let Some(runs) = e.run_dir.parent()
            {
                std::fs::File::open(runs)
                    .and_then(|d| d.sync_all())
                    .map_err(|source| RunError::State {
                        path: runs.to_owned(),
                        source,
                    })?;
            }
        }
        if let Some(policy) = e.p.policy() {
            // Read once per run: the repository does not change under a run's decisions.
            let git = GitInput::read(&e.p.spec().base_dir);
            e.policy = Some(Box::new(PolicyGate {
                eval: policy.evaluator(),
                run: serde_json::to_value(RunInput::of(&e.p, e.run_id.as_str()))
                    .unwrap_or_default(),
                git: git.and_then(|g| serde_json::to_value(g).ok()),
                verdicts: vec![None; n],
            }));
        }
        if e.audit.is_some() {
            e.audit_run_started(&r_selection);
        }
        let to_run = reasons
            .iter()
            .zip(&e.done)
            .filter(|(r, d)| r.is_none() && d.is_none())
            .count();
        e.bus.emit(&RunEvent::RunStarted {
            run_id: e.run_id.clone(),
            pipeline: e.p.name().to_owned(),
            phases: n,
            to_run,
            at: now.0,
            resumed_from: e.resumed_from.clone(),
        });
        for (i, reason) in reasons.iter().enumerate() {
            if let Some(reason) = reason {
                e.finish(
                    i,
                    PhaseStatus::Skipped,
                    Some((*reason).to_owned()),
                    PhaseOutcome::default(),
                );
            }
        }
        for i in 0..n {
            if e.states[i].st == St::Waiting && e.states[i].remaining == 0 {
                e.make_ready(i);
            }
        }
        Ok(e)
    }

    fn make_ready(&mut self, i: usize) {
        self.states[i].st = St::Ready;
        let a = self.p.nodes()[i].agent;
        self.agents[a].ready.push(Reverse(i as u32));
    }

    /// The next phase to start: the earliest-declared ready phase whose agent has room.
    fn pick(&mut self) -> Option<usize> {
        let mut best: Option<(u32, usize)> = None;
        for (ai, a) in self.agents.iter().enumerate() {
            if a.running >= a.capacity {
                continue;
            }
            if let Some(Reverse(i)) = a.ready.peek()
                && best.is_none_or(|(b, _)| *i < b)
            {
                best = Some((*i, ai));
            }
        }
        let (i, ai) = best?;
        self.agents[ai].ready.pop();
        Some(i as usize)
    }

    async fn run(mut self) -> Result<RunRecord, RunError> {
        let mut stop_seen = false;
        loop {
            if !stop_seen && self.control.is_stopped() {
                // Interrupted before the loop could see it (e.g. while taking the lock).
                stop_seen = true;
                if self.stopping.is_none() {
                    self.stopping = Some("the run was interrupted".into());
                }
            }
            if self.stopping.is_none() {
                while self.running < self.jobs {
                    let Some(i) = self.pick() else { break };
                    self.dispatch(i);
                    if self.stopping.is_some() {
                        break;
                    }
                }
                self.start_queued();
            }
            if !self.inline_done.is_empty() {
                for msg in std::mem::take(&mut self.inline_done) {
                    self.handle(msg);
                }
                continue;
            }
            // Events still waiting for the disk are reported after the loop.
            if self.running == 0 && (self.backoffs == 0 || self.stopping.is_some()) {
                break;
            }
            // What this turn queued is written before the loop waits.
            self.flush_journal();
            let journal_wait = !self.pending.is_empty() && self.durable_rx.is_some();
            let msg = tokio::select! {
                biased;
                () = self.control.stop.cancelled(), if !stop_seen => {
                    stop_seen = true;
                    if self.stopping.is_none() {
                        self.stopping = Some("the run was interrupted".into());
                    }
                    continue;
                }
                changed = durable_changed(&mut self.durable_rx), if journal_wait => {
                    if !changed {
                        let e = self.journal.as_ref().and_then(JournalWriter::error);
                        self.journal_failed(e.unwrap_or_else(|| "the journal sync thread stopped".into()));
                    }
                    self.flush_pending();
                    continue;
                }
                done = self.light.next(), if !self.light.is_empty() => match done {
                    Some(Ok(msg)) => msg,
                    Some(Err(_)) => {
                        tracing::error!("a phase attempt panicked");
                        continue;
                    }
                    None => continue,
                },
                joined = self.tasks.join_next(), if !self.tasks.is_empty() => match joined {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        tracing::error!("a phase task panicked: {e}");
                        continue;
                    }
                    None => continue,
                },
                else => break,
            };
            self.handle(msg);
            // Attempts that finished meanwhile are handled in this turn too: their
            // records share its journal write.
            while let Some(joined) = self.tasks.try_join_next() {
                match joined {
                    Ok(msg) => self.handle(msg),
                    Err(e) => tracing::error!("a phase task panicked: {e}"),
                }
            }
            // (Polling here leaves a no-op waker registered; the select above registers
            // the loop's own again before it waits.)
            while let Some(Some(done)) = self.light.next().now_or_never() {
                match done {
                    Ok(msg) => self.handle(msg),
                    Err(_) => tracing::error!("a phase attempt panicked"),
                }
            }
        }
        // Anything left never started.
        let interrupted = self.control.is_stopped();
        for i in 0..self.p.len() {
            if self.states[i].st == St::Backoff
                && let Some((status, error)) = self.states[i].last_error.take()
            {
                // It ran and failed; the stop only kept it from retrying.
                let stop = self.stopping.clone().unwrap_or_default();
                let reason = format!("{error}; not retried: {stop}");
                let allowed = self.p.nodes()[i].spec.allow_failure;
                self.finish_inner(
                    i,
                    status,
                    Some(reason),
                    PhaseOutcome::default(),
                    allowed,
                    None,
                );
                self.failed |= !allowed;
            } else if self.states[i].st != St::Done {
                let reason = self.stopping.clone().map(|s| format!("not started: {s}"));
                self.finish(i, PhaseStatus::Cancelled, reason, PhaseOutcome::default());
            }
        }
        self.tasks.abort_all();
        self.light.clear();
        // Nothing of the run may survive it: what is left in its cgroups, ...
        if let Some(cg) = &self.cgroup {
            cg.remove().await;
        }
        if self.opts.write_files && (interrupted || self.failed) {
            // ... whatever left its process group, ...
            crate::process::kill_marked(self.run_id.as_str(), None, Duration::from_secs(2)).await;
        }
        // ... and orphans re-parented to this process (when it adopts them).
        let watchdog_pid = self.watchdog.as_ref().map(|w| w.pid());
        crate::process::kill_orphans(watchdog_pid.as_slice());
        if let Some(w) = self.watchdog.take() {
            w.finish();
        }
        // Every phase is durable before the run reports its end.
        self.sync_journal().await;
        self.flush_pending();
        let status = if interrupted {
            RunStatus::Cancelled
        } else if self.failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        self.journal_append(&Entry::RunFinished {
            status,
            finished_at: rfc3339(SystemTime::now()),
            duration_ms: self.started.1.elapsed().as_millis() as u64,
        });
        self.sync_journal().await;
        if let Some(j) = self.journal.take() {
            j.close();
        }
        // Attempts remove their own private files; this clears what an attempt that could
        // not end cleanly left.
        crate::orch_output::remove_private_dir(&self.run_dir);
        let mut audit_head = None;
        if let Some(mut a) = self.audit.take() {
            a.queue(&AuditEvent::RunFinished {
                run: self.run_id.as_str(),
                status,
                duration_ms: self.started.1.elapsed().as_millis() as u64,
            });
            match a.wait_all().await {
                Ok(()) => {
                    let (seq, hash) = a.head();
                    audit_head = Some(AuditHead {
                        seq,
                        hash: hash.to_owned(),
                    });
                }
                Err(e) => tracing::error!("{e}"),
            }
            a.close();
        }
        let mut record = self.record(status);
        record.audit = audit_head;
        if self.opts.write_files {
            failpoint::hit("before-run-record");
            // The run happened: a record that cannot be written is reported with it (the
            // caller still gets every result), never in its place.
            if let Err(e) = write_record(&self.run_dir, &record) {
                let message = match &e {
                    RunError::State { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                record
                    .record_errors
                    .push(RecordError::new(e.file(&self.run_dir), message));
            }
            failpoint::hit("after-run-record");
        }
        self.bus.emit(&RunEvent::RunFinished {
            run_id: self.run_id.clone(),
            status,
            duration: self.started.1.elapsed(),
            at: SystemTime::now(),
        });
        Ok(record)
    }

    /// Waits until every journal record written so far is durable.
    async fn sync_journal(&mut self) {
        let Some(j) = &mut self.journal else { return };
        if let Err(e) = j.wait_all().await {
            self.journal_failed(e);
        }
    }

    /// Appends to the journal (with whatever is queued); a failure to write stops the run.
    fn journal_append(&mut self, entry: &Entry) -> Option<u64> {
        let j = self.journal.as_mut()?;
        match j.append(entry) {
            Ok(seq) => Some(seq),
            Err(e) => {
                self.journal_failed(format!("cannot write the journal: {e}"));
                None
            }
        }
    }

    /// Writes the queued journal records; a failure to write stops the run.
    fn flush_journal(&mut self) {
        if let Some(j) = &mut self.journal
            && j.has_queued()
            && let Err(e) = j.flush()
        {
            self.journal_failed(format!("cannot write the journal: {e}"));
        }
        if let Some(a) = &mut self.audit
            && a.has_queued()
            && let Err(e) = a.flush()
        {
            let path = a.path().display().to_string();
            self.audit = None;
            self.journal_failed(format!("cannot write the audit log {path}: {e}"));
        }
    }

    /// Queues the audit log's `run_started` entry.
    fn audit_run_started(&mut self, selection: &[String]) {
        let Some(a) = &mut self.audit else { return };
        let source = self.p.source.as_ref();
        let digest = source.map(|s| crate::audit::sha256_hex(s.text.as_bytes()));
        let file = self.p.source_path().map(|p| p.display().to_string());
        let vars: IndexMap<String, String> = self
            .p
            .spec()
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), self.redactor.redact(v).into_owned()))
            .collect();
        a.queue(&AuditEvent::RunStarted {
            run: self.run_id.as_str(),
            pipeline: self.p.name(),
            user: &crate::policy::current_user(),
            host: &crate::audit::host_name(),
            file: file.as_deref(),
            file_sha256: digest.as_deref(),
            vars: &vars,
            selection,
            resumed_from: self.resumed_from.as_ref().map(RunId::as_str),
            pid: std::process::id(),
        });
    }

    /// The journal cannot be written: durability is lost, so the run stops (as failed) and
    /// what is waiting is reported anyway rather than never.
    fn journal_failed(&mut self, message: String) {
        tracing::error!("{message}");
        let detail = message
            .strip_prefix("cannot write the journal: ")
            .unwrap_or(&message);
        self.record_errors
            .push(RecordError::new(JOURNAL_FILE, detail));
        self.journal = None;
        self.durable_rx = None;
        self.failed = true;
        if self.stopping.is_none() {
            self.stopping = Some(message);
        }
    }

    /// The highest durable journal sequence number (everything, without a journal).
    fn durable(&mut self) -> u64 {
        match &mut self.durable_rx {
            Some(rx) => *rx.borrow_and_update(),
            None => u64::MAX,
        }
    }

    /// Reports the finished phases whose records are durable, in order.
    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let durable = self.durable();
        while self.pending.front().is_some_and(|p| p.seq <= durable) {
            if let Some(p) = self.pending.pop_front() {
                self.publish(p);
            }
        }
    }

    fn publish(&mut self, p: Pending) {
        failpoint::hit("before-publish");
        self.bus.emit(&p.event);
    }

    fn dispatch(&mut self, i: usize) {
        let node = &self.p.nodes()[i];
        let ai = node.agent;
        // `when`: evaluated once the phases it reads have finished.
        if let Some(cond) = &node.spec.when {
            match expr::eval(cond, &*self.scope) {
                Ok(v) if v.value => {}
                Ok(_) => {
                    let reason = format!("`when` is false: {cond}");
                    self.finish(
                        i,
                        PhaseStatus::Skipped,
                        Some(reason),
                        PhaseOutcome::default(),
                    );
                    return;
                }
                Err(e) => {
                    self.fail(
                        i,
                        PhaseStatus::Failed,
                        e.to_string(),
                        PhaseOutcome::default(),
                    );
                    return;
                }
            }
        }
        // Resume: a phase whose success is journaled, with the same definition and inputs,
        // is not run again.
        if self.journal.is_some() {
            // Once per phase: what it reads is final before it first starts, so a retry
            // has the same fingerprint.
            let fp = self.fingerprints[i].get_or_insert_with(|| {
                crate::resume::fingerprint(&node.spec, &node.spec.needs, &*self.scope)
            });
            if self.done[i].as_ref().is_some_and(|d| d.fingerprint == *fp)
                && let Some(done) = self.done[i].take()
            {
                let reason = format!("done in run {}", done.run);
                let outcome = PhaseOutcome {
                    outputs: done.outputs,
                    artifacts: done.artifacts,
                    exit_code: done.exit_code,
                };
                self.finish_inner(
                    i,
                    PhaseStatus::Skipped,
                    Some(reason),
                    outcome,
                    false,
                    Some(done.run),
                );
                return;
            }
        }
        // `[policy]`: decided once per phase, before its first attempt in this run.
        if self.policy.is_some() && self.states[i].first_start.is_none() && !self.admit(i) {
            return;
        }
        let node = &self.p.nodes()[i];
        // Circuit breaker.
        let b = &mut self.agents[ai].breaker;
        if let Some(until) = b.open_until {
            if Instant::now() < until || b.probing {
                let reason = format!(
                    "agent `{}` is not taking work: its circuit breaker opened after {} consecutive failures",
                    self.agents[ai].agent.name(),
                    self.agents[ai].breaker.consecutive
                );
                self.fail(i, PhaseStatus::Failed, reason, PhaseOutcome::default());
                return;
            }
            // Half-open: let this one through and check health again.
            b.probing = true;
            self.agents[ai].health = Arc::new(OnceCell::new());
        }
        // Secrets this phase declares must be set.
        // The `ORCH_*` variables are added when the phase first reads its environment.
        let mut env = Vec::with_capacity(node.spec.env.len() + node.spec.secrets.len());
        // Attempt numbers never repeat, and never wrap: past the last one, the phase fails.
        let Some(attempt) = self.states[i]
            .attempts
            .checked_add(1)
            .filter(|&a| a <= crate::journal::MAX_ATTEMPT)
        else {
            let message = format!(
                "no attempt number left: {} attempts are already journaled",
                self.states[i].attempts
            );
            self.fail(i, PhaseStatus::Failed, message, PhaseOutcome::default());
            return;
        };
        for (k, v) in &node.spec.env {
            match crate::interpolate::render(v, &*self.scope) {
                Ok(v) => env.push((k.clone(), v)),
                Err(e) => {
                    self.fail(
                        i,
                        PhaseStatus::Failed,
                        format!("cannot render env `{k}`: {e}"),
                        PhaseOutcome::default(),
                    );
                    return;
                }
            }
        }
        // A missing secret fails the attempt once the agent is known to be healthy, so an
        // agent that is unavailable (and set to skip) skips its phases instead.
        let mut missing_secret = None;
        for name in &node.spec.secrets {
            match std::env::var(name) {
                Ok(v) if v.len() < MIN_SECRET_LEN => {
                    missing_secret = Some(format!(
                        "secret `{name}` is too short to redact safely ({} characters; use at least {MIN_SECRET_LEN})",
                        v.chars().count()
                    ));
                    break;
                }
                Ok(v) => env.push((name.clone(), v)),
                Err(std::env::VarError::NotPresent) => {
                    missing_secret = Some(format!("secret `{name}` is not set in the environment"));
                    break;
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    missing_secret = Some(format!(
                        "secret `{name}` is set but its value is not valid UTF-8; orch passes secrets as UTF-8 text (encode binary values, for example as base64)"
                    ));
                    break;
                }
            }
        }
        let workdir: Arc<Path> = match &node.spec.cwd {
            None => self.base_dir.clone(),
            Some(c) => match crate::interpolate::render(c, &*self.scope) {
                Ok(c) => Arc::from(self.p.spec().base_dir.join(c)),
                Err(e) => {
                    self.fail(
                        i,
                        PhaseStatus::Failed,
                        format!("cannot render `cwd`: {e}"),
                        PhaseOutcome::default(),
                    );
                    return;
                }
            },
        };

        let st = &mut self.states[i];
        st.st = St::Running;
        st.attempts = attempt;
        let now = (SystemTime::now(), Instant::now());
        st.first_start.get_or_insert(now);
        self.running += 1;
        self.agents[ai].running += 1;

        let log = self.logs[i]
            .get_or_insert_with(|| {
                let path = self
                    .opts
                    .write_files
                    .then(|| LogPath::RunDir(self.run_dir.clone()));
                Arc::new(PhaseLog::new(
                    node.spec.id.clone(),
                    self.bus.clone(),
                    path,
                    &self.redactor,
                ))
            })
            .clone();
        let snapshot: Option<SnapshotFn> = (node.spec.kind == "report").then(|| {
            let records = self.records.clone();
            let mut base = self.record_header(RunStatus::Running);
            // The audit chain as far as it goes when the report starts.
            base.audit = self.audit.as_ref().map(|a| {
                let (seq, hash) = a.head();
                AuditHead {
                    seq,
                    hash: hash.to_owned(),
                }
            });
            let ids: Vec<String> = self
                .p
                .nodes()
                .iter()
                .map(|n| n.spec.id.to_string())
                .collect();
            Arc::new(move || {
                let mut r = base.clone();
                let recs = records.lock().unwrap_or_else(|p| p.into_inner());
                for (id, rec) in ids.iter().zip(recs.iter()) {
                    if let Some(rec) = rec {
                        r.phases.insert(id.clone(), rec.clone());
                    }
                }
                r
            }) as SnapshotFn
        });
        let ctx = PhaseContext {
            run_id: self.run_id.clone(),
            phase_id: node.spec.id.clone(),
            attempt,
            base_dir: self.base_dir.clone(),
            workdir,
            run_dir: self.run_dir.clone(),
            env: OnceLock::new(),
            env_parts: Mutex::new(Some(EnvParts { extra: env })),
            env_remove: self.env_remove.clone(),
            scope: self.scope.clone(),
            cancel: self.control.stop.clone(),
            grace: self.opts.grace,
            agent: self.agents[ai].agent.clone(),
            log,
            redactor: self.redactor.clone(),
            snapshot,
            cgroup: self.cgroup.clone(),
            pipeline: Some(self.p.clone()),
        };
        // Journaled before anything starts (see `start_queued`), so attempt numbers never
        // repeat after a crash.
        if let Some(j) = &mut self.journal {
            j.queue(&StartedRef {
                phase: node.spec.id.as_str(),
                attempt,
                at: Stamp::new(now.0).as_str(),
            });
        }
        if let Some(a) = &mut self.audit {
            a.queue(&AuditEvent::PhaseStarted {
                run: self.run_id.as_str(),
                phase: node.spec.id.as_str(),
                attempt,
            });
        }
        let phase = node.phase.clone();
        let timeout = node.spec.timeout;
        let abort = self.control.abort.clone();
        let agent = self.agents[ai].agent.clone();
        let health = self.agents[ai].health.clone();
        let check_health = agent.agent_type() != "local";
        let attempt_fut = async move {
            if check_health
                && let Err(e) = health.get_or_init(|| async { agent.health().await }).await
            {
                return Msg::Attempt {
                    i,
                    outcome: Outcome::Unavailable(e.clone()),
                };
            }
            if let Some(message) = missing_secret {
                return Msg::Attempt {
                    i,
                    outcome: Outcome::NotStarted(message),
                };
            }
            let fut = phase.run(&ctx);
            let outcome = tokio::select! {
                biased;
                () = abort.cancelled() => Outcome::Aborted,
                r = async {
                    match timeout {
                        Some(t) => match tokio::time::timeout(t, fut).await {
                            Ok(r) => Outcome::Done(r),
                            Err(_) => Outcome::TimedOut(t),
                        },
                        None => Outcome::Done(fut.await),
                    }
                } => r,
            };
            ctx.flush_output();
            Msg::Attempt { i, outcome }
        };
        self.starting.push(Starting {
            i,
            attempt,
            at: now.0,
            fut: Box::pin(attempt_fut),
        });
    }

    /// Asks the policy whether phase `i` may start; a denied phase fails without running.
    fn admit(&mut self, i: usize) -> bool {
        let Some(gate) = &mut self.policy else {
            return true;
        };
        let mut input = serde_json::Map::with_capacity(3);
        input.insert(
            "phase".into(),
            serde_json::to_value(PhaseInput::of(&self.p, i)).unwrap_or_default(),
        );
        input.insert("run".into(), gate.run.clone());
        if let Some(git) = &gate.git {
            input.insert("git".into(), git.clone());
        }
        let id = &self.p.nodes()[i].spec.id;
        let redact = |s: String| self.redactor.redact(&s).into_owned();
        let (verdict, reason) = match gate.eval.decide(&serde_json::Value::Object(input)) {
            Ok(d) => {
                let reason = (!d.permits()).then(|| redact(d.reason()));
                let verdict = PolicyVerdict {
                    allowed: d.permits(),
                    deny: d.deny.into_iter().map(redact).collect(),
                    error: None,
                };
                (verdict, reason)
            }
            Err(e) => {
                let error = redact(format!("evaluation for phase `{id}` failed: {e}"));
                let reason = format!("denied by policy: {error}");
                let verdict = PolicyVerdict {
                    allowed: false,
                    deny: Vec::new(),
                    error: Some(error),
                };
                (verdict, Some(reason))
            }
        };
        if let Some(j) = &mut self.journal {
            j.queue(&Entry::Policy {
                phase: id.to_string(),
                verdict: verdict.clone(),
            });
        }
        if let Some(a) = &mut self.audit {
            a.queue(&AuditEvent::Policy {
                run: self.run_id.as_str(),
                phase: id.as_str(),
                verdict: &verdict,
            });
        }
        self.bus.emit(&RunEvent::PolicyDecision {
            phase: id.clone(),
            verdict: verdict.clone(),
            reason: reason.clone(),
            at: SystemTime::now(),
        });
        gate.verdicts[i] = Some(verdict);
        match reason {
            None => true,
            Some(reason) => {
                self.fail(i, PhaseStatus::Failed, reason, PhaseOutcome::default());
                false
            }
        }
    }

    /// Starts the attempts `dispatch` queued, once their `Started` records are written
    /// (one write for them and whatever else was queued).
    fn start_queued(&mut self) {
        if self.starting.is_empty() {
            return;
        }
        if let Some(j) = &mut self.journal
            && let Err(e) = j.flush()
        {
            // The attempts are not started: the run stops.
            self.journal_failed(format!("cannot write the journal: {e}"));
            for s in std::mem::take(&mut self.starting) {
                let ai = self.p.nodes()[s.i].agent;
                self.running -= 1;
                self.agents[ai].running -= 1;
                self.finish(
                    s.i,
                    PhaseStatus::Cancelled,
                    self.stopping.clone(),
                    PhaseOutcome::default(),
                );
            }
            return;
        }
        // Their `phase_started` audit entries are written before they start too.
        if let Some(a) = &mut self.audit
            && let Err(e) = a.flush()
        {
            let path = a.path().display().to_string();
            self.audit = None;
            self.journal_failed(format!("cannot write the audit log {path}: {e}"));
        }
        let mut starting = std::mem::take(&mut self.starting);
        for s in starting.drain(..) {
            self.bus.emit(&RunEvent::PhaseStarted {
                phase: self.p.nodes()[s.i].spec.id.clone(),
                attempt: s.attempt,
                at: s.at,
            });
            // Poll once here: an attempt that finishes at once (in-process phases, a failed
            // spawn) is handled without a task and without waking another thread. One that
            // is pending moves to a task, whose first poll registers the real wakers.
            let mut fut = s.fut;
            match fut
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            {
                Poll::Ready(msg) => self.inline_done.push(msg),
                Poll::Pending if self.p.nodes()[s.i].phase.is_light() => {
                    self.light.push(AssertUnwindSafe(fut).catch_unwind());
                }
                Poll::Pending => {
                    self.tasks.spawn(fut);
                }
            }
            failpoint::hit("after-phase-start");
        }
        // The buffer is kept for the next turn.
        self.starting = starting;
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Retry(i) => {
                self.backoffs -= 1;
                if self.stopping.is_some() {
                    let reason = self.stopping.clone();
                    self.finish(i, PhaseStatus::Cancelled, reason, PhaseOutcome::default());
                } else {
                    self.make_ready(i);
                }
            }
            Msg::Attempt { i, outcome } => self.on_attempt(i, outcome),
        }
    }

    fn on_attempt(&mut self, i: usize, outcome: Outcome) {
        let ai = self.p.nodes()[i].agent;
        self.running -= 1;
        self.agents[ai].running -= 1;
        let (status, message, result) = match outcome {
            Outcome::NotStarted(message) => {
                self.fail(i, PhaseStatus::Failed, message, PhaseOutcome::default());
                return;
            }
            Outcome::Done(Ok(out)) => {
                self.breaker_success(ai);
                self.finish(i, PhaseStatus::Succeeded, None, out);
                return;
            }
            Outcome::Done(Err(PhaseError::Skip { reason })) => {
                self.breaker_success(ai);
                self.finish(
                    i,
                    PhaseStatus::Skipped,
                    Some(reason),
                    PhaseOutcome::default(),
                );
                return;
            }
            Outcome::Done(Err(PhaseError::Cancelled)) | Outcome::Aborted => {
                let reason = self.stopping.clone().unwrap_or_else(|| "cancelled".into());
                self.finish(
                    i,
                    PhaseStatus::Cancelled,
                    Some(reason),
                    PhaseOutcome::default(),
                );
                return;
            }
            Outcome::Unavailable(e) => {
                if self.agents[ai].unavailable == Unavailable::Skip {
                    self.finish(
                        i,
                        PhaseStatus::Skipped,
                        Some(e.to_string()),
                        PhaseOutcome::default(),
                    );
                    return;
                }
                self.breaker_failure(ai);
                (PhaseStatus::Failed, e.to_string(), PhaseOutcome::default())
            }
            Outcome::Done(Err(PhaseError::Failed { message, exit_code })) => {
                self.breaker_failure(ai);
                (
                    PhaseStatus::Failed,
                    message,
                    PhaseOutcome {
                        exit_code,
                        ..PhaseOutcome::default()
                    },
                )
            }
            Outcome::TimedOut(t) => {
                self.breaker_failure(ai);
                (
                    PhaseStatus::TimedOut,
                    format!("timed out after {}", fmt_secs(t)),
                    PhaseOutcome::default(),
                )
            }
        };
        let message = self.redactor.redact(&message).into_owned();
        let node = &self.p.nodes()[i];
        let attempt = self.states[i].attempts;
        self.states[i].failures = self.states[i].failures.saturating_add(1);
        let failures = self.states[i].failures;
        if failures <= node.spec.retries && self.stopping.is_none() {
            let delay = node.spec.backoff.delay_jittered(failures);
            // Written with the next turn's records (before the retry starts).
            if let Some(j) = &mut self.journal {
                j.queue(&Entry::AttemptFailed {
                    phase: node.spec.id.to_string(),
                    attempt,
                    error: message.clone(),
                });
            }
            let node = &self.p.nodes()[i];
            self.bus.emit(&RunEvent::PhaseRetrying {
                phase: node.spec.id.clone(),
                attempt,
                error: message.clone(),
                delay,
            });
            if let Some(log) = &self.logs[i] {
                let line = format!(
                    "attempt {attempt} failed: {message}; retrying in {}\n",
                    fmt_secs(delay)
                );
                log.push_log(&line);
            }
            self.states[i].st = St::Backoff;
            self.states[i].last_error = Some((status, message.clone()));
            self.backoffs += 1;
            self.tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                Msg::Retry(i)
            });
            return;
        }
        self.fail(i, status, message, result);
    }

    fn breaker_success(&mut self, ai: usize) {
        let b = &mut self.agents[ai].breaker;
        b.consecutive = 0;
        b.open_until = None;
        b.probing = false;
    }

    fn breaker_failure(&mut self, ai: usize) {
        let b = &mut self.agents[ai].breaker;
        b.consecutive += 1;
        if b.failures > 0 && (b.consecutive >= b.failures || b.probing) {
            b.open_until = Some(Instant::now() + b.cooldown);
            b.probing = false;
        }
    }

    /// A phase ended in failure: record it and apply fail-fast and blocking.
    fn fail(&mut self, i: usize, status: PhaseStatus, message: String, outcome: PhaseOutcome) {
        let node = &self.p.nodes()[i];
        let allowed = node.spec.allow_failure;
        let id = node.spec.id.clone();
        self.finish_inner(i, status, Some(message), outcome, allowed, None);
        if allowed {
            return;
        }
        self.failed = true;
        if !self.opts.keep_going && self.stopping.is_none() {
            self.stopping = Some(format!(
                "the run stopped after `{id}` {}",
                if status == PhaseStatus::TimedOut {
                    "timed out"
                } else {
                    "failed"
                }
            ));
        }
        // Block everything downstream that has not started.
        let mut stack: Vec<(usize, usize)> = self.p.nodes()[i]
            .dependents
            .iter()
            .map(|&d| (d as usize, i))
            .collect();
        while let Some((d, via)) = stack.pop() {
            if self.states[d].st == St::Done || self.states[d].st == St::Running {
                continue;
            }
            let reason = format!(
                "needs `{}`, which did not succeed",
                self.p.nodes()[via].spec.id
            );
            self.finish_inner(
                d,
                PhaseStatus::Blocked,
                Some(reason),
                PhaseOutcome::default(),
                false,
                None,
            );
            stack.extend(
                self.p.nodes()[d]
                    .dependents
                    .iter()
                    .map(|&x| (x as usize, d)),
            );
        }
    }

    fn finish(
        &mut self,
        i: usize,
        status: PhaseStatus,
        reason: Option<String>,
        outcome: PhaseOutcome,
    ) {
        self.finish_inner(i, status, reason, outcome, false, None);
    }

    fn finish_inner(
        &mut self,
        i: usize,
        status: PhaseStatus,
        reason: Option<String>,
        outcome: PhaseOutcome,
        allowed: bool,
        done_in: Option<RunId>,
    ) {
        let was = self.states[i].st;
        if was == St::Done {
            return;
        }
        if was == St::Ready {
            // Still in its agent's queue: drop it there lazily (see `pick`); simpler to
            // rebuild the queue, which is rare (blocking, fail-fast).
            let a = self.p.nodes()[i].agent;
            let q = std::mem::take(&mut self.agents[a].ready);
            self.agents[a].ready = q
                .into_iter()
                .filter(|Reverse(x)| *x as usize != i)
                .collect();
        }
        self.states[i].st = St::Done;
        let now = SystemTime::now();
        let (started, duration) = match self.states[i].first_start {
            Some((wall, mono)) => (Some(wall), mono.elapsed()),
            None => (None, Duration::ZERO),
        };
        // The one place outputs are redacted, keys and values, before they reach the
        // scope, the journal, the record and every event.
        let outputs: Outputs = if self.redactor.is_empty() {
            outcome.outputs
        } else {
            self.redactor.redact_map(outcome.outputs)
        };
        // Most phases publish nothing: they share one empty map.
        let outputs = if outputs.is_empty() {
            self.no_outputs.clone()
        } else {
            Arc::new(outputs)
        };
        let node = &self.p.nodes()[i];
        // The phase is done: its log state goes (the file stays). A log that could not be
        // written in full is a warning on the phase and a record error of the run.
        let mut warnings = Vec::new();
        let log = match self.logs[i].take() {
            Some(l) => {
                let file = format!("logs/{}.log", node.spec.id);
                if let Some(problem) = l.close() {
                    warnings.push(format!("log {problem}"));
                    self.record_errors
                        .push(RecordError::new(file.clone(), problem));
                }
                l.wrote_file().then_some(file)
            }
            None => None,
        };
        let artifacts = redact_artifacts(&self.redactor, outcome.artifacts);
        let allowed_failure = allowed && status.is_failure();
        let lets_run = status.lets_dependents_run() || allowed;
        if lets_run {
            self.outputs.set(i, outputs.clone());
        }
        let finished_at = rfc3339(now);
        let mut record = PhaseRecord {
            status,
            kind: node.spec.kind.clone(),
            attempts: self.states[i].attempts,
            exit_code: outcome.exit_code,
            started_at: started.map(rfc3339),
            finished_at: None,
            duration_ms: started.map(|_| duration.as_millis() as u64),
            reason: reason.clone(),
            allowed_failure,
            outputs: (*outputs).clone(),
            artifacts,
            needs: node.spec.needs.iter().map(ToString::to_string).collect(),
            tags: node.spec.tags.clone(),
            description: node.spec.description.clone(),
            log,
            policy: self.policy.as_mut().and_then(|g| g.verdicts[i].take()),
            warnings: warnings.clone(),
        };
        let seq = match &mut self.journal {
            Some(j) => {
                // A phase's success counts for resume only with the fingerprint of what
                // ran. Written with the rest of this turn's records, before the loop waits
                // or starts an attempt.
                let fingerprint = self.fingerprints[i].take();
                j.queue(&FinishedRef {
                    phase: node.spec.id.as_str(),
                    kind: &record.kind,
                    status,
                    attempts: record.attempts,
                    exit_code: record.exit_code,
                    reason: record.reason.as_deref(),
                    allowed_failure,
                    outputs: &record.outputs,
                    artifacts: &record.artifacts,
                    fingerprint: fingerprint.as_deref(),
                    done_in: done_in.as_ref(),
                    started_at: record.started_at.as_deref(),
                    finished_at: &finished_at,
                    duration_ms: record.duration_ms,
                })
            }
            None => 0,
        };
        if let Some(a) = &mut self.audit {
            a.queue(&AuditEvent::PhaseFinished {
                run: self.run_id.as_str(),
                phase: node.spec.id.as_str(),
                status,
                attempts: record.attempts,
                outputs_sha256: crate::audit::outputs_digest(&record.outputs).as_deref(),
                reason: record.reason.as_deref(),
            });
        }
        if started.is_some() {
            record.finished_at = Some(finished_at);
        }
        self.records.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(record);
        let event = RunEvent::PhaseFinished {
            phase: node.spec.id.clone(),
            status,
            attempts: self.states[i].attempts,
            duration,
            exit_code: outcome.exit_code,
            reason,
            allowed_failure,
            outputs,
            warnings,
            at: now,
        };
        // Reported once its record is durable. Scheduling does not wait for the disk:
        // dependents are released now, and since their records come after this one in
        // the journal, no crash can keep a dependent's and lose this one's.
        self.pending.push_back(Pending { seq, event });
        self.flush_pending();
        if lets_run {
            for k in 0..self.p.nodes()[i].dependents.len() {
                let d = self.p.nodes()[i].dependents[k] as usize;
                let s = &mut self.states[d];
                s.remaining -= 1;
                if s.remaining == 0 && s.st == St::Waiting {
                    self.make_ready(d);
                }
            }
        }
    }

    fn record_header(&self, status: RunStatus) -> RunRecord {
        RunRecord {
            format_version: RECORD_FORMAT_VERSION,
            run_id: self.run_id.clone(),
            pipeline: self.p.name().to_owned(),
            status,
            started_at: rfc3339(self.started.0),
            finished_at: None,
            duration_ms: None,
            resumed_from: self.resumed_from.clone(),
            pipeline_file: self.p.source_path().map(|p| p.display().to_string()),
            audit: None,
            vars: self
                .p
                .spec()
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), self.redactor.redact(v).into_owned()))
                .collect(),
            phases: IndexMap::new(),
            record_errors: Vec::new(),
        }
    }

    fn record(&self, status: RunStatus) -> RunRecord {
        let mut r = self.record_header(status);
        r.finished_at = Some(rfc3339(SystemTime::now()));
        r.duration_ms = Some(self.started.1.elapsed().as_millis() as u64);
        let mut recs = self.records.lock().unwrap_or_else(|p| p.into_inner());
        r.phases.reserve(recs.len());
        for (n, rec) in self.p.nodes().iter().zip(recs.iter_mut()) {
            if let Some(rec) = rec.take() {
                r.phases.insert(n.spec.id.to_string(), rec);
            }
        }
        r.record_errors = self.record_errors.clone();
        r
    }
}

/// The selection as the audit log records it (`only:ID`, `skip:tag:T`, `from:ID`).
fn selection_words(s: &Selection) -> Vec<String> {
    let word = |kind: &str, sel: &crate::select::Selector| match sel {
        crate::select::Selector::Id(id) => format!("{kind}:{id}"),
        crate::select::Selector::Tag(t) => format!("{kind}:tag:{t}"),
    };
    let mut out: Vec<String> = s.only.iter().map(|x| word("only", x)).collect();
    out.extend(s.skip.iter().map(|x| word("skip", x)));
    out.extend(s.from.iter().map(|x| format!("from:{x}")));
    out
}

/// Waits for a new durable sequence number; false when the sync thread is gone.
async fn durable_changed(rx: &mut Option<watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

fn redact_artifacts(r: &Redactor, artifacts: Vec<Artifact>) -> Vec<Artifact> {
    if r.is_empty() {
        return artifacts;
    }
    artifacts
        .into_iter()
        .map(|mut a| {
            a.kind = r.redact(&a.kind).into_owned();
            a.name = r.redact(&a.name).into_owned();
            a.path = a.path.map(|p| r.redact(&p).into_owned());
            a.digest = a.digest.map(|d| r.redact(&d).into_owned());
            a.details = a
                .details
                .into_iter()
                .map(|(k, mut v)| {
                    r.redact_json(&mut v);
                    (r.redact(&k).into_owned(), v)
                })
                .collect();
            a
        })
        .collect()
}

/// Writes `run.json` atomically and points `runs/latest` at the run. On failure nothing
/// half-written is left: the temporary file (or link) is removed, and an earlier
/// `run.json` stays as it was.
pub fn write_record(run_dir: &Path, record: &RunRecord) -> Result<(), RunError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| RunError::State { path, source }
    };
    let path = run_dir.join("run.json");
    let tmp = run_dir.join("run.json.tmp");
    // Streamed to the file (a record of 10k phases is some MB of text).
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut out, record).map_err(std::io::Error::other)?;
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        Ok(())
    };
    if let Err(e) = write().and_then(|()| std::fs::rename(&tmp, &path)) {
        remove_quietly(&tmp);
        return Err(err(&path)(e));
    }
    if let (Some(runs), Some(name)) = (run_dir.parent(), run_dir.file_name()) {
        let latest = runs.join("latest");
        let tmp_link = runs.join(format!(".latest.{}", std::process::id()));
        remove_quietly(&tmp_link);
        if let Err(e) = std::os::unix::fs::symlink(name, &tmp_link)
            .and_then(|()| std::fs::rename(&tmp_link, &latest))
        {
            remove_quietly(&tmp_link);
            return Err(err(&latest)(e));
        }
    }
    Ok(())
}

/// Removes a temporary file that may not exist (nothing to report either way: the
/// operation that made it has failed already, or is about to make it again).
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", path.display());
    }
}

/// The run future can be spawned (the Python module does).
#[allow(dead_code)]
fn _run_future_is_send(r: Runner) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&r.run(RunControl::new()));
}
