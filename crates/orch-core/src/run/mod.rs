//! The scheduler: runs a pipeline's phases on tokio, bounded by the job limit and each
//! agent's capacity, with timeouts, retries, circuit breakers and cancellation.
//!
//! The public API is here ([`Runner`], [`RunOptions`], [`RunControl`]); the engine behind
//! it is split by concern:
//! - `prepare`: what happens before the first phase (the run's cgroup and watchdog, the
//!   workspace lock, the run to resume, the journal's header, the audit log);
//! - `engine`: the engine's state and how it is built from a prepared run;
//! - `scheduler`: the loop (pick a ready phase, handle what an attempt reports, retry,
//!   finish a phase and release its dependents, block and stop) and the end of a run;
//! - `attempt`: the one place an attempt is built (its `PhaseContext` with env, secrets
//!   and cwd, and the future that applies the timeout, abort and agent health check),
//!   and the `[policy]` gate before a phase's first attempt;
//! - `breaker`: the per-agent circuit breaker;
//! - `durability`: journal and audit-log writes, and reporting a phase once its record is
//!   durable;
//! - `record`: the run record (`run.json`) and writing it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audit::AuditSettings;
use crate::errors::RunError;
use crate::events::{EventBus, EventSink};
use crate::ids::RunId;
use crate::journal::{JournalMode, StorageFactory};
use crate::pipeline::Pipeline;
use crate::record::RunRecord;
use crate::select::Selection;

mod attempt;
mod breaker;
mod durability;
mod engine;
mod prepare;
mod record;
mod scheduler;

use engine::Engine;

pub use prepare::latest_run;
pub use record::write_record;

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
    // Shared, not cloned: a token's clone and drop each take its tree's lock, and every
    // attempt holds both.
    stop: Arc<CancellationToken>,
    abort: Arc<CancellationToken>,
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
}

/// The run future can be spawned (the Python module does).
#[allow(dead_code)]
fn _run_future_is_send(r: Runner) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&r.run(RunControl::new()));
}
