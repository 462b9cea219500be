//! A run this server started (or queued): its events in memory, fed by the engine's event
//! stream, and a record kept up to date from them.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use orch_core::{Event, EventSink, Pipeline, RunControl, RunEvent, RunId};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::events;
use crate::metrics::Metrics;

/// The events of one run: ids are 1, 2, 3, ...; the last `cap` stay in memory.
struct EventLog {
    window: VecDeque<Arc<str>>,
    /// Id of `window[0]`.
    first: u64,
    /// Id the next event gets.
    next: u64,
    cap: usize,
    /// No event will follow.
    closed: bool,
}

/// What a reader gets from [`LiveRun::read`].
pub(crate) enum Read {
    /// Events after the cursor (id, SSE frame), in order.
    Events(Vec<(u64, Arc<str>)>),
    /// The events after the cursor left memory: the reader fell too far behind.
    Lagged {
        /// The newest id now.
        head: u64,
    },
    /// Nothing new; `closed`: nothing will come.
    Idle {
        /// The run ended and every event was read.
        closed: bool,
    },
}

/// A queued, running or just-finished run of this server.
pub(crate) struct LiveRun {
    log: Mutex<EventLog>,
    head: watch::Sender<u64>,
    view: Mutex<Map<String, Value>>,
    pub(crate) control: RunControl,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LiveRun {
    /// A queued run of `pipeline` (`None`: it could not be loaded), each phase `pending`.
    pub(crate) fn new(
        run_id: RunId,
        pipeline: Option<&Pipeline>,
        vars: &Map<String, Value>,
        cap: usize,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let mut phases = Map::new();
        for n in pipeline.iter().flat_map(|p| p.nodes()) {
            phases.insert(
                n.spec.id.to_string(),
                json!({
                    "status": "pending", "kind": n.spec.kind, "attempts": 0,
                    "needs": n.spec.needs, "tags": n.spec.tags,
                    "description": n.spec.description, "outputs": {},
                }),
            );
        }
        let view = json!({
            "run_id": run_id, "pipeline": pipeline.map(Pipeline::name), "status": "queued",
            "started_at": null, "live": true, "vars": vars, "phases": phases,
        });
        let Value::Object(view) = view else {
            unreachable!("json! of an object is an object")
        };
        Arc::new(Self {
            log: Mutex::new(EventLog {
                window: VecDeque::new(),
                first: 1,
                next: 1,
                cap: cap.max(1),
                closed: false,
            }),
            head: watch::channel(0).0,
            view: Mutex::new(view),
            control: RunControl::new(),
            metrics,
        })
    }

    /// Appends an event (JSON without id) and wakes the readers.
    pub(crate) fn push(&self, event: Value) {
        // Serialized once, outside the lock; readers copy the ready frame.
        let body = event.to_string();
        let id = {
            let mut log = lock(&self.log);
            if log.closed {
                return;
            }
            let id = log.next;
            log.next += 1;
            let frame = events::frame(id, &events::stamp(id, &body));
            log.window.push_back(Arc::from(frame));
            if log.window.len() > log.cap {
                log.window.pop_front();
                log.first += 1;
            }
            id
        };
        self.head.send_replace(id);
    }

    /// Marks the end of the events.
    pub(crate) fn close(&self) {
        self.set(&[("live", json!(false))]);
        let head = {
            let mut log = lock(&self.log);
            log.closed = true;
            log.next - 1
        };
        // Wake readers waiting for more: they see `closed`.
        self.head.send_replace(head);
    }

    /// Up to `max` events with ids above `after`.
    pub(crate) fn read(&self, after: u64, max: usize) -> Read {
        let log = lock(&self.log);
        let head = log.next - 1;
        if after >= head {
            return Read::Idle { closed: log.closed };
        }
        if after + 1 < log.first {
            return Read::Lagged { head };
        }
        let start = (after + 1 - log.first) as usize;
        Read::Events(
            log.window
                .iter()
                .skip(start)
                .take(max)
                .enumerate()
                .map(|(i, e)| (after + 1 + i as u64, e.clone()))
                .collect(),
        )
    }

    /// A receiver that changes whenever an event arrives or the log closes.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The id of the newest event.
    pub(crate) fn head(&self) -> u64 {
        lock(&self.log).next - 1
    }

    /// Whether no more events will come.
    pub(crate) fn is_closed(&self) -> bool {
        lock(&self.log).closed
    }

    /// The run's record as known now.
    pub(crate) fn view(&self) -> Value {
        Value::Object(lock(&self.view).clone())
    }

    /// Sets top-level fields of the record.
    pub(crate) fn set(&self, fields: &[(&str, Value)]) {
        let mut v = lock(&self.view);
        for (k, val) in fields {
            v.insert((*k).to_owned(), val.clone());
        }
    }

    /// Its status now (`queued`, `running`, or the final one).
    pub(crate) fn status(&self) -> String {
        lock(&self.view)
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("running")
            .to_owned()
    }

    /// The run could not start or run: the record says why and the events end.
    pub(crate) fn fail(&self, status: &str, message: &str) {
        self.set(&[("status", json!(status)), ("error", json!(message))]);
        self.push(json!({ "type": "run_error", "status": status, "message": message }));
        self.close();
    }

    fn apply(&self, event: &RunEvent, json: &Value) {
        let mut v = lock(&self.view);
        let phase_entry = |v: &mut Map<String, Value>, id: &str| -> Option<Map<String, Value>> {
            v.get_mut("phases")?
                .as_object_mut()?
                .get_mut(id)?
                .as_object_mut()
                .map(std::mem::take)
        };
        let put_back = |v: &mut Map<String, Value>, id: &str, p: Map<String, Value>| {
            if let Some(Value::Object(phases)) = v.get_mut("phases") {
                phases.insert(id.to_owned(), Value::Object(p));
            }
        };
        match event {
            RunEvent::RunStarted { resumed_from, .. } => {
                v.insert("status".into(), json!("running"));
                v.insert("started_at".into(), json["at"].clone());
                v.insert("resumed_from".into(), json!(resumed_from));
            }
            RunEvent::PhaseStarted { phase, attempt, .. } => {
                if let Some(mut p) = phase_entry(&mut v, phase.as_str()) {
                    p.insert("status".into(), json!("running"));
                    p.insert("attempts".into(), json!(attempt));
                    if p.get("started_at").is_none_or(Value::is_null) {
                        p.insert("started_at".into(), json["at"].clone());
                    }
                    put_back(&mut v, phase.as_str(), p);
                }
            }
            RunEvent::PhaseRetrying { phase, error, .. } => {
                if let Some(mut p) = phase_entry(&mut v, phase.as_str()) {
                    p.insert("status".into(), json!("retrying"));
                    p.insert("reason".into(), json!(error));
                    put_back(&mut v, phase.as_str(), p);
                }
            }
            RunEvent::PhaseFinished { phase, .. } => {
                if let Some(mut p) = phase_entry(&mut v, phase.as_str()) {
                    for k in [
                        "status",
                        "attempts",
                        "duration_ms",
                        "exit_code",
                        "reason",
                        "allowed_failure",
                        "outputs",
                    ] {
                        p.insert(k.into(), json[k].clone());
                    }
                    p.insert("finished_at".into(), json["at"].clone());
                    put_back(&mut v, phase.as_str(), p);
                }
            }
            RunEvent::RunFinished { status, .. } => {
                v.insert("status".into(), json!(status));
                v.insert("finished_at".into(), json["at"].clone());
                v.insert("live".into(), json!(false));
                v.insert("duration_ms".into(), json["duration_ms"].clone());
            }
            _ => {}
        }
    }
}

/// The engine's events into a [`LiveRun`].
pub(crate) struct LiveSink(pub(crate) Arc<LiveRun>);

impl EventSink for LiveSink {
    fn on_event(&self, event: &Event) {
        let Some(json) = events::to_json(event) else {
            return;
        };
        let run = &self.0;
        let event = &event.kind;
        match event {
            RunEvent::PhaseOutput { .. } => {
                run.metrics.output_lines.fetch_add(1, Ordering::Relaxed);
            }
            RunEvent::PhaseFinished {
                status, duration, ..
            } => {
                let ran = (*duration > Duration::ZERO).then_some(*duration);
                run.metrics.phase_finished(status.as_str(), ran);
                run.apply(event, &json);
            }
            RunEvent::RunFinished { status, .. } => {
                run.metrics.run_finished(status.as_str());
                run.apply(event, &json);
            }
            _ => run.apply(event, &json),
        }
        run.push(json);
    }
}
