//! The engine's state, and how it is built from a prepared run: agents with their
//! breakers, phases with what a resumed run knows of them, the secrets to redact, and
//! the phases the selection skips.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::CatchUnwind;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::breaker::Breaker;
use super::prepare::Prepared;
use super::record::write_record;
use super::{MIN_SECRET_LEN, RunControl, RunOptions, Runner};
use crate::agent::Agent;
use crate::audit::AuditWriter;
use crate::errors::{AgentError, RunError};
use crate::events::{Event, EventBus, RunEvent};
use crate::ids::{PhaseId, RunId};
use crate::journal::{Done, JournalWriter};
use crate::lock::WorkspaceLock;
use crate::phase::{LogBook, PhaseError, PhaseLog, PhaseOutcome, RunShared};
use crate::pipeline::Pipeline;
use crate::policy::{Evaluator, GitInput, RunInput};
use crate::record::{
    Outputs, PhaseRecord, PhaseStatus, PolicyVerdict, Reason, RecordError, RunStatus, Stop,
    Timestamp,
};
use crate::redact::Redactor;
use crate::scope::{OutputStore, RunScope};
use crate::select::Selection;
use crate::spec::Unavailable;

pub(super) enum Outcome {
    Done(Result<PhaseOutcome, PhaseError>),
    TimedOut(Duration),
    Aborted,
    Unavailable(AgentError),
    /// The attempt could not start for a reason a retry would not change.
    NotStarted(String),
}

/// How a phase ended: what [`Engine::finish_inner`] records, journals and reports.
pub(super) struct Ending {
    pub(super) status: PhaseStatus,
    /// Why it ended this way (none for a success).
    pub(super) cause: Option<Reason>,
    /// What it produced.
    pub(super) outcome: PhaseOutcome,
    /// It failed and may (`allow_failure`): its dependents run all the same.
    pub(super) allowed: bool,
    /// It did not run: it succeeded in this earlier run.
    pub(super) done_in: Option<RunId>,
}

impl Ending {
    /// An ending that is not an allowed failure and not done in an earlier run.
    pub(super) fn new(status: PhaseStatus, cause: Option<Reason>, outcome: PhaseOutcome) -> Self {
        Self {
            status,
            cause,
            outcome,
            allowed: false,
            done_in: None,
        }
    }
}

pub(super) enum Msg {
    Attempt { i: usize, outcome: Outcome },
    Retry(usize),
}

pub(super) struct AgentState {
    pub(super) agent: Arc<dyn Agent>,
    pub(super) capacity: usize,
    pub(super) running: usize,
    pub(super) ready: BinaryHeap<Reverse<u32>>,
    pub(super) breaker: Breaker,
    pub(super) health: Arc<OnceCell<Result<(), AgentError>>>,
    pub(super) unavailable: Unavailable,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum St {
    Waiting,
    Ready,
    Running,
    Backoff,
    Done,
}

pub(super) struct PhaseState {
    pub(super) st: St,
    pub(super) remaining: u32,
    /// Attempts started (across resumed runs).
    pub(super) attempts: u32,
    /// Failed attempts that count against `retries`.
    pub(super) failures: u32,
    /// When its first attempt started (see [`Engine::wall`] for its wall time).
    pub(super) first_start: Option<Instant>,
    /// Why the last attempt failed, while the phase waits to retry.
    /// Boxed: few phases ever wait to retry, and every phase has a state.
    pub(super) last_error: Option<Box<(PhaseStatus, String)>>,
}

/// An attempt whose `Started` record is queued: it starts once the record is written.
pub(super) struct Starting {
    pub(super) i: usize,
    pub(super) attempt: u32,
    pub(super) at: SystemTime,
    pub(super) fut: Pin<Box<dyn Future<Output = Msg> + Send>>,
}

/// An attempt of a light phase, polled by the engine loop (a panic in it is reported
/// like one in a task).
pub(super) type LightAttempt =
    CatchUnwind<AssertUnwindSafe<Pin<Box<dyn Future<Output = Msg> + Send>>>>;

/// The records of the phases that ended, keyed by phase id (the run record's `phases`).
pub(super) type PhaseRecords = indexmap::IndexMap<PhaseId, PhaseRecord>;

/// A `PhaseFinished` event waiting for its journal record to be durable.
pub(super) struct Pending {
    pub(super) seq: u64,
    pub(super) event: Event,
}

pub(super) struct Engine {
    pub(super) p: Arc<Pipeline>,
    pub(super) opts: RunOptions,
    pub(super) bus: EventBus,
    pub(super) control: RunControl,
    pub(super) run_id: RunId,
    pub(super) run_dir: Arc<Path>,
    /// What every attempt's context shares, and where the engine finds them too: the
    /// redactor, the log book, the cgroup, `RUN_DIR/private` (attempts' `ORCH_OUTPUT`
    /// files), ...
    pub(super) shared: Arc<RunShared>,
    pub(super) jobs: usize,
    pub(super) agents: Vec<AgentState>,
    pub(super) states: Vec<PhaseState>,
    /// The records of the phases that ended, by id, in the order they ended: they go into
    /// the run record as they are (sorted into declaration order), never copied.
    pub(super) records: Arc<Mutex<PhaseRecords>>,
    /// Whether `records` is in declaration order (every phase ended after those declared
    /// before it), and the last phase that ended.
    pub(super) records_sorted: bool,
    pub(super) last_finished: Option<usize>,
    /// The phases' logs, once made (see `take_made_logs`).
    pub(super) logs: Vec<Option<Arc<PhaseLog>>>,
    pub(super) scope: Arc<RunScope>,
    pub(super) outputs: Arc<OutputStore>,
    pub(super) started: (SystemTime, Instant),
    /// The wall clock and the monotonic clock, read together once the engine is built:
    /// phases' times are read on the monotonic clock only (see [`Engine::wall`]).
    pub(super) clock: (SystemTime, Instant),
    /// `clock`'s wall time after the Unix epoch (none before it).
    pub(super) clock_epoch: Option<Duration>,
    /// The monotonic clock as last read, while no phase code has run and the loop has
    /// not waited since (see [`Engine::mono_now`]).
    pub(super) last_read: Option<Instant>,
    pub(super) running: usize,
    pub(super) backoffs: usize,
    pub(super) stopping: Option<Stop>,
    pub(super) failed: bool,
    pub(super) tasks: JoinSet<Msg>,
    /// Pending attempts of light phases ([`Phase::is_light`]), polled by the engine loop.
    pub(super) light: FuturesUnordered<LightAttempt>,
    /// Attempts that finished when first polled, waiting to be handled.
    pub(super) inline_done: Vec<Msg>,
    /// Attempts dispatched in this turn, waiting for their `Started` records to be written.
    pub(super) starting: Vec<Starting>,
    /// The outputs of every phase that published none.
    pub(super) no_outputs: Arc<Outputs>,
    pub(super) journal: Option<JournalWriter>,
    pub(super) durable_rx: Option<watch::Receiver<u64>>,
    pub(super) pending: VecDeque<Pending>,
    pub(super) resumed_from: Option<RunId>,
    /// Per phase: its journaled success in an earlier run, when resuming.
    /// Boxed: a run that resumes none has a pointer per phase.
    pub(super) done: Vec<Option<Box<Done>>>,
    /// Per phase: the fingerprint of the attempt that runs (when journaling).
    pub(super) fingerprints: Vec<Option<String>>,
    /// Ends the run's processes if this process dies; stopped when the run ends.
    pub(super) watchdog: Option<crate::watchdog::Watchdog>,
    /// `[policy]`, when the pipeline has one.
    pub(super) policy: Option<Box<PolicyGate>>,
    /// `STATE_DIR/audit.log`, when written.
    pub(super) audit: Option<AuditWriter>,
    /// What could not be written so far.
    pub(super) record_errors: Vec<RecordError>,
    pub(super) _lock: Option<WorkspaceLock>,
}

/// The policy of a run: its evaluator, the parts of the input that do not change, and the
/// decisions until they go into the phases' records.
pub(super) struct PolicyGate {
    pub(super) eval: Evaluator,
    /// `input.run` and `input.git`, as JSON.
    pub(super) run: serde_json::Value,
    pub(super) git: Option<serde_json::Value>,
    pub(super) verdicts: Vec<Option<PolicyVerdict>>,
}

impl Engine {
    pub(super) fn start(r: Runner, control: RunControl, prep: Prepared) -> Result<Self, RunError> {
        let state_dir = r.state_dir();
        let p = r.pipeline;
        let unselected = r.options.selection.unselected(&p)?;
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
            let breaker = spec.breaker.unwrap_or_default();
            agents.push(AgentState {
                capacity: agent.capacity().max(1),
                agent,
                running: 0,
                ready: BinaryHeap::new(),
                breaker: Breaker {
                    failures: breaker.failures,
                    consecutive: 0,
                    cooldown: breaker.cooldown,
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
                done.push(k.done.map(Box::new));
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
        let mut bus = r.bus;
        bus.start(started_at);
        let log_book = Arc::new(LogBook::new(
            bus.clone(),
            r.options.write_files.then(|| run_dir.clone()),
            redactor.clone(),
        ));
        let shared = Arc::new(RunShared {
            run_id: run_id.clone(),
            base_dir: Arc::from(p.spec().base_dir.as_path()),
            run_dir: run_dir.clone(),
            private: crate::orch_output::PrivateDir::new(&run_dir),
            env_remove: Arc::from(env_remove),
            scope: scope.clone(),
            cancel: control.stop.clone(),
            abort: control.abort.clone(),
            grace: r.options.grace,
            agents: agents.iter().map(|a| a.agent.clone()).collect(),
            redactor,
            log_book,
            cgroup: prep.cgroup,
            pipeline: Some(p.clone()),
        });
        let (clock_wall, clock_mono) = (SystemTime::now(), Instant::now());
        let mut e = Self {
            shared,
            watchdog: prep.watchdog,
            opts: r.options,
            bus,
            control,
            run_dir,
            jobs,
            agents,
            states,
            records: Arc::new(Mutex::new(records_for(n))),
            records_sorted: true,
            last_finished: None,
            logs: vec![None; n],
            scope,
            outputs,
            started: now,
            clock: (clock_wall, clock_mono),
            clock_epoch: clock_wall.duration_since(std::time::UNIX_EPOCH).ok(),
            last_read: None,
            running: 0,
            backoffs: 0,
            stopping: None,
            failed: false,
            tasks: JoinSet::new(),
            light: FuturesUnordered::new(),
            inline_done: Vec::new(),
            starting: Vec::new(),
            no_outputs: Arc::new(Outputs::new()),
            // Read and written only when journaling.
            fingerprints: if journal.is_some() {
                vec![None; n]
            } else {
                Vec::new()
            },
            durable_rx: journal.as_ref().map(JournalWriter::subscribe),
            journal,
            pending: VecDeque::new(),
            resumed_from,
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
        // Phases done in an earlier run, and the unselected ones that are not.
        let done = e.done.iter().filter(|d| d.is_some()).count();
        let unselected_not_done = unselected
            .iter()
            .filter(|(i, _)| e.done[*i].is_none())
            .count();
        let to_run = n - done - unselected_not_done;
        e.bus.emit_at(
            e.started.0,
            RunEvent::RunStarted {
                run_id: e.run_id.clone(),
                pipeline: e.p.name().to_owned(),
                phases: n,
                to_run,
                resumed_from: e.resumed_from.clone(),
            },
        );
        for (i, reason) in unselected {
            e.finish(
                i,
                PhaseStatus::Skipped,
                Some(reason),
                PhaseOutcome::default(),
            );
        }
        for i in 0..n {
            if e.states[i].st == St::Waiting && e.states[i].remaining == 0 {
                e.make_ready(i);
            }
        }
        Ok(e)
    }
}

impl Engine {
    /// The wall time of a monotonic instant of this run: one clock read gives both a
    /// phase's time and its duration, and its times keep the order of its instants.
    /// The monotonic clock, read at most once between two points where time can pass
    /// for a phase: the engine's own bookkeeping in between takes well under a
    /// microsecond, so the phases it starts and ends meanwhile share one reading (one
    /// clock read per turn of the loop instead of one per start and one per end).
    pub(super) fn mono_now(&mut self) -> Instant {
        *self.last_read.get_or_insert_with(Instant::now)
    }

    /// Time can pass for a phase from here on (phase code runs, a policy is evaluated,
    /// the loop waits): the next [`mono_now`](Self::mono_now) reads the clock again.
    pub(super) fn time_passes(&mut self) {
        self.last_read = None;
    }

    pub(super) fn wall(&self, at: Instant) -> SystemTime {
        self.clock.0 + at.saturating_duration_since(self.clock.1)
    }

    /// The time `since` after the engine's clock was read, as a record keeps it.
    pub(super) fn timestamp(&self, since: Duration) -> Timestamp {
        match self.clock_epoch.and_then(|e| e.checked_add(since)) {
            Some(d) => Timestamp::since_epoch(d),
            None => Timestamp::new(self.clock.0 + since),
        }
    }

    /// Keeps the logs attempts made since the last call (a phase's log is made when it
    /// first writes).
    pub(super) fn take_made_logs(&mut self) {
        for (i, log) in self.shared.log_book.take_made() {
            self.logs[i] = Some(log);
        }
    }

    /// Phase `i`'s log, made now if it has none yet.
    pub(super) fn log_of(&mut self, i: usize) -> Arc<PhaseLog> {
        self.take_made_logs();
        self.logs[i]
            .get_or_insert_with(|| {
                Arc::new(self.shared.log_book.make(self.p.nodes()[i].spec.id.clone()))
            })
            .clone()
    }
}

/// An empty map for the records of `n` phases, in a block the kernel backs with huge pages
/// where it can: the records are written once each, in the order phases end, and with
/// 4 KiB pages every twelfth record took a page fault (at 100,000 phases, 34 MB of records
/// and 8,400 faults per run; a couple of dozen with 2 MiB pages).
fn records_for(n: usize) -> PhaseRecords {
    let records = PhaseRecords::with_capacity(n);
    // The map keeps its entries in one vector of (hash, key, value): at least this size
    // each, so the range below stays within that vector.
    let entry = std::mem::size_of::<(u64, PhaseId, PhaseRecord)>();
    let start = std::ptr::from_ref(records.as_slice()).cast::<u8>();
    prefer_huge_pages(start, records.capacity().saturating_mul(entry));
    records
}

/// Asks the kernel to back the 2 MiB pages that lie wholly within the `len` bytes from
/// `start` (a block this process allocated) with huge pages. Only how the memory is backed
/// changes, never what it holds; where transparent huge pages are off, nothing changes.
#[allow(unsafe_code)]
fn prefer_huge_pages(start: *const u8, len: usize) {
    const HUGE: usize = 2 << 20;
    let begin = start.addr().next_multiple_of(HUGE);
    let end = start.addr().saturating_add(len) / HUGE * HUGE;
    if end <= begin {
        return;
    }
    // SAFETY: `madvise(MADV_HUGEPAGE)` changes no byte of the range, which lies within a
    // block this process allocated; a failure (no huge page support) changes nothing.
    unsafe {
        nix::libc::madvise(
            start.with_addr(begin).cast_mut().cast(),
            end - begin,
            nix::libc::MADV_HUGEPAGE,
        );
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
