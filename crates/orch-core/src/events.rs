//! The one event stream of a run: every consumer (terminal, journal, reports, Python) reads
//! [`RunEvent`]s.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::ids::{PhaseId, RunId};
use crate::record::{Outputs, PhaseStatus, PolicyVerdict, Reason, RunStatus};

/// Which stream an output line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A line the phase kind logged itself (not from a process).
    Log,
}

/// Something that happened in a run. Secrets are already redacted in every field.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RunEvent {
    /// The run began.
    RunStarted {
        /// The run.
        run_id: RunId,
        /// Pipeline name.
        pipeline: String,
        /// Phases in the pipeline.
        phases: usize,
        /// Phases that will run (selected and not already done).
        to_run: usize,
        /// When.
        at: SystemTime,
        /// The run this one resumes.
        resumed_from: Option<RunId>,
    },
    /// An attempt of a phase began.
    PhaseStarted {
        /// The phase.
        phase: PhaseId,
        /// 1-based attempt number.
        attempt: u32,
        /// When.
        at: SystemTime,
    },
    /// `[policy]` decided whether a phase may start (before its first attempt; a denied
    /// phase then finishes `failed` without running).
    PolicyDecision {
        /// The phase.
        phase: PhaseId,
        /// The decision.
        verdict: PolicyVerdict,
        /// Why it was denied (the phase's `reason`), when it was.
        reason: Option<String>,
        /// When.
        at: SystemTime,
    },
    /// One line of a phase's output.
    PhaseOutput {
        /// The phase.
        phase: PhaseId,
        /// Which stream.
        stream: Stream,
        /// The line, without its newline.
        line: String,
    },
    /// An attempt failed and the phase will be tried again.
    PhaseRetrying {
        /// The phase.
        phase: PhaseId,
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed.
        error: String,
        /// Wait before the next attempt.
        delay: Duration,
    },
    /// A phase reached its final status.
    PhaseFinished {
        /// The phase.
        phase: PhaseId,
        /// Final status.
        status: PhaseStatus,
        /// Attempts made.
        attempts: u32,
        /// Wall time since its first attempt began (zero if it never ran).
        duration: Duration,
        /// Exit code of the last attempt, for processes.
        exit_code: Option<i32>,
        /// Why, in words (error, skip reason, blocking phase): the text of `cause`.
        reason: Option<String>,
        /// Why, as data: decide from this, never from the words.
        cause: Option<Reason>,
        /// Failed, but allowed to.
        allowed_failure: bool,
        /// What it published.
        outputs: Arc<Outputs>,
        /// What went wrong without changing its status (its log could not be written in
        /// full, ...).
        warnings: Vec<String>,
        /// When.
        at: SystemTime,
    },
    /// The run ended.
    RunFinished {
        /// The run.
        run_id: RunId,
        /// Final status.
        status: RunStatus,
        /// Wall time.
        duration: Duration,
        /// When.
        at: SystemTime,
    },
}

/// A consumer of run events.
///
/// Called synchronously from the engine's tasks, possibly from several threads at once:
/// keep it quick and do blocking work elsewhere.
pub trait EventSink: Send + Sync {
    /// Receives one event.
    fn on_event(&self, event: &RunEvent);
}

impl<F: Fn(&RunEvent) + Send + Sync> EventSink for F {
    fn on_event(&self, event: &RunEvent) {
        self(event)
    }
}

/// Fans one event out to several sinks, in order.
#[derive(Clone, Default)]
pub struct EventBus {
    sinks: Vec<Arc<dyn EventSink>>,
}

impl EventBus {
    /// Adds a sink.
    pub fn subscribe(&mut self, sink: Arc<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// Whether nobody listens (output lines can then skip formatting work).
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Sends `event` to every sink.
    pub fn emit(&self, event: &RunEvent) {
        for s in &self.sinks {
            s.on_event(event);
        }
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}
