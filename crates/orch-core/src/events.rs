//! The one event stream of a run: every consumer (terminal, reports, notifications,
//! Python) reads [`Event`]s: what happened ([`RunEvent`]) in one envelope with when it
//! happened, so no kind carries its own time.

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
        /// The run this one resumes.
        resumed_from: Option<RunId>,
    },
    /// An attempt of a phase began.
    PhaseStarted {
        /// The phase.
        phase: PhaseId,
        /// 1-based attempt number.
        attempt: u32,
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
    },
    /// The run ended.
    RunFinished {
        /// The run.
        run_id: RunId,
        /// Final status.
        status: RunStatus,
        /// Wall time.
        duration: Duration,
    },
}

/// One event of a run with its time: what every [`EventSink`] receives.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Event {
    /// When it happened (wall clock).
    pub at: SystemTime,
    /// Time since the run started (zero for [`RunEvent::RunStarted`]; for a phase context
    /// built on its own, since it was built).
    pub elapsed: Duration,
    /// What happened.
    pub kind: RunEvent,
}

/// A consumer of run events.
///
/// Called synchronously from the engine's tasks, possibly from several threads at once:
/// keep it quick and do blocking work elsewhere.
pub trait EventSink: Send + Sync {
    /// Receives one event.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

/// Fans one event out to several sinks, in order, and stamps events with their time.
#[derive(Clone, Default)]
pub struct EventBus {
    sinks: Vec<Arc<dyn EventSink>>,
    /// When the run started: what [`Event::elapsed`] counts from.
    started: Option<SystemTime>,
}

impl EventBus {
    /// Adds a sink.
    pub fn subscribe(&mut self, sink: Arc<dyn EventSink>) {
        self.sinks.push(sink);
    }

    /// Sets when the run started (what [`Event::elapsed`] counts from). Clones made after
    /// keep it.
    pub fn start(&mut self, at: SystemTime) {
        self.started = Some(at);
    }

    /// Whether nobody listens (output lines can then skip formatting work).
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// `kind` in its envelope, stamped `at` (a time already read for something else, so
    /// that the event and, say, its record agree).
    pub fn stamp_at(&self, at: SystemTime, kind: RunEvent) -> Event {
        let elapsed = self
            .started
            .and_then(|s| at.duration_since(s).ok())
            .unwrap_or_default();
        Event { at, elapsed, kind }
    }

    /// Sends `kind` to every sink, stamped now (one clock read, no allocation).
    pub fn emit(&self, kind: RunEvent) {
        self.send(&self.stamp_at(SystemTime::now(), kind));
    }

    /// Sends `kind` to every sink, stamped `at`.
    pub fn emit_at(&self, at: SystemTime, kind: RunEvent) {
        self.send(&self.stamp_at(at, kind));
    }

    /// Sends an event already stamped (one held back until its record was durable).
    pub fn send(&self, event: &Event) {
        for s in &self.sinks {
            s.on_event(event);
        }
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("sinks", &self.sinks.len())
            .field("started", &self.started)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn started(run: &str) -> RunEvent {
        RunEvent::RunStarted {
            run_id: RunId::parse(run).unwrap(),
            pipeline: "p".into(),
            phases: 1,
            to_run: 1,
            resumed_from: None,
        }
    }

    #[test]
    fn every_sink_gets_the_event_in_its_envelope_timed_from_the_run_start() {
        let seen: Arc<Mutex<Vec<(SystemTime, Duration)>>> = Arc::default();
        let mut bus = EventBus::default();
        for _ in 0..2 {
            let seen = seen.clone();
            bus.subscribe(Arc::new(move |e: &Event| {
                assert!(matches!(e.kind, RunEvent::RunStarted { .. }));
                seen.lock().unwrap().push((e.at, e.elapsed));
            }));
        }
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        bus.start(start);
        bus.emit_at(start, started("r1"));
        bus.emit_at(start + Duration::from_millis(1500), started("r1"));
        // A clock that went back gives zero, not an error.
        bus.emit_at(start - Duration::from_secs(1), started("r1"));
        let held = bus.stamp_at(start + Duration::from_secs(2), started("r1"));
        bus.send(&held);
        let seen = seen.lock().unwrap();
        let elapsed: Vec<u128> = seen.iter().map(|(_, e)| e.as_millis()).collect();
        assert_eq!(elapsed, [0, 0, 1500, 1500, 0, 0, 2000, 2000]);
        assert_eq!(seen[6].0, start + Duration::from_secs(2));
    }

    #[test]
    fn emit_stamps_with_the_clock_and_a_cloned_bus_keeps_the_start() {
        let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
        let mut bus = EventBus::default();
        let sink = seen.clone();
        bus.subscribe(Arc::new(move |e: &Event| {
            sink.lock().unwrap().push(e.clone())
        }));
        let before = SystemTime::now();
        bus.start(before - Duration::from_secs(60));
        let clone = bus.clone();
        clone.emit(started("r2"));
        let after = SystemTime::now();
        let e = &seen.lock().unwrap()[0];
        assert!(before <= e.at && e.at <= after, "{e:?}");
        assert!(e.elapsed >= Duration::from_secs(60), "{e:?}");
    }
}
