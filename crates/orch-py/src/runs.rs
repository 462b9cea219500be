//! Runs in progress: what their Python phases share, the event inbox the waiting Python
//! thread drains, and the handle Python holds.
//!
//! The engine never calls into Python: its event sink only appends events to an inbox
//! guarded by a plain mutex (when the caller passed `on_event`). The thread that waits in `run()` takes them from there and
//! calls `on_event` itself, so callbacks never hold an engine lock and phases running
//! in other threads never wait for a callback.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use orch_core::{EventSink, RunControl, RunRecord};
use pyo3::prelude::*;

use crate::errors::{Error, chain};
use crate::result::{Event, RunResult};

/// What the Python phases of one run share.
pub struct RunShared {
    /// The run's id.
    pub(crate) run_id: String,
    /// `STATE_DIR/runs/RUN_ID`.
    pub(crate) run_dir: String,
    /// The pipeline's directory.
    pub(crate) base_dir: String,
    /// The pipeline's variables.
    pub(crate) vars: Arc<IndexMap<String, String>>,
    inflight: Mutex<Inflights>,
    idle: Condvar,
    interrupted: AtomicBool,
    control: RunControl,
    /// The event loop coroutines run on (`run_async`'s), if not the background one.
    pub(crate) event_loop: Option<Arc<Py<PyAny>>>,
}

impl RunShared {
    pub(crate) fn new(
        run_id: String,
        run_dir: String,
        base_dir: String,
        vars: IndexMap<String, String>,
        control: RunControl,
        event_loop: Option<Py<PyAny>>,
    ) -> Self {
        Self {
            run_id,
            run_dir,
            base_dir,
            vars: Arc::new(vars),
            inflight: Mutex::new(Inflights::default()),
            idle: Condvar::new(),
            interrupted: AtomicBool::new(false),
            control,
            event_loop: event_loop.map(Arc::new),
        }
    }

    /// Counts a Python call until the returned guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> Inflight {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .calls += 1;
        Inflight(self.clone())
    }

    /// A phase raised `KeyboardInterrupt`: stop the run, and re-raise it in `run()`.
    pub(crate) fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
        self.control.stop();
    }

    /// Waits until no Python call of the run is in progress; false on timeout.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut n = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        n.waiters += 1;
        while n.calls > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            n = self
                .idle
                .wait_timeout(n, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        n.waiters -= 1;
        n.calls == 0
    }
}

/// Python calls in progress, and threads waiting for there to be none.
#[derive(Default)]
struct Inflights {
    calls: usize,
    waiters: usize,
}

/// One Python call in progress.
pub(crate) struct Inflight(Arc<RunShared>);

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut n = self.0.inflight.lock().unwrap_or_else(|p| p.into_inner());
        n.calls = n.calls.saturating_sub(1);
        if n.calls == 0 && n.waiters > 0 {
            self.0.idle.notify_all();
        }
    }
}

static RUNS: LazyLock<Mutex<HashMap<String, Arc<RunShared>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The shared state of a run in progress.
pub(crate) fn get(run_id: &str) -> Option<Arc<RunShared>> {
    RUNS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(run_id)
        .cloned()
}

pub(crate) fn register(run_id: &str, shared: Arc<RunShared>) {
    RUNS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(run_id.to_owned(), shared);
}

fn unregister(run_id: &str) {
    RUNS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(run_id);
}

#[derive(Default)]
struct InboxState {
    events: Vec<Event>,
    done: Option<Result<Arc<RunRecord>, String>>,
}

/// Events and the final result, from the engine to the waiting thread.
#[derive(Default)]
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    cond: Condvar,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, result: Result<Arc<RunRecord>, String>) {
        self.lock().done = Some(result);
        self.cond.notify_all();
    }

    /// Waits for events or the end, up to `timeout`.
    fn wait(&self, timeout: Duration) -> (Vec<Event>, bool) {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        while g.events.is_empty() && g.done.is_none() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = self
                .cond
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        (std::mem::take(&mut g.events), g.done.is_some())
    }
}

/// The engine's event consumer for a Python run.
pub(crate) struct Sink {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) collect: bool,
}

impl EventSink for Sink {
    fn on_event(&self, event: &orch_core::Event) {
        if self.collect
            && let Some(e) = Event::from_run_event(event)
        {
            self.inbox.lock().events.push(e);
            self.inbox.cond.notify_all();
        }
    }
}

/// Starts `runner` on the process runtime; the result lands in `inbox`.
pub(crate) fn spawn(
    runner: orch_core::Runner,
    control: RunControl,
    run_id: String,
    inbox: Arc<Inbox>,
) -> Result<(), Error> {
    let rt = crate::runtime::runtime()?;
    let engine = rt.spawn(runner.run(control));
    rt.spawn(async move {
        let result = match engine.await {
            Ok(Ok(record)) => Ok(Arc::new(record)),
            Ok(Err(e)) => Err(chain(&e)),
            Err(e) => Err(format!("the engine stopped unexpectedly: {e}")),
        };
        unregister(&run_id);
        inbox.finish(result);
    });
    Ok(())
}

/// A run in progress (returned by `_Pipeline.start`; `orch.Pipeline.run` drives it).
#[pyclass(module = "orch._orch", name = "_RunHandle", frozen)]
pub struct RunHandle {
    pub(crate) run_id: String,
    pub(crate) shared: Arc<RunShared>,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) control: RunControl,
    pub(crate) state_dir: PathBuf,
}

#[pymethods]
impl RunHandle {
    /// The run's id.
    #[getter]
    fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Waits up to `timeout` seconds, without the GIL, for events or the end of the run.
    /// Returns the events that arrived and whether the run has ended.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<(Vec<Event>, bool)> {
        let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        let inbox = self.inbox.clone();
        Ok(py.detach(move || inbox.wait(timeout)))
    }

    /// Stops scheduling; running phases are asked to stop within the grace period.
    fn stop(&self) {
        self.control.stop();
    }

    /// Kills running phases now.
    fn abort(&self) {
        self.control.abort();
    }

    /// Whether a phase raised `KeyboardInterrupt`.
    #[getter]
    fn interrupted(&self) -> bool {
        self.shared.interrupted.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` seconds, without the GIL, until no Python phase function of
    /// this run is still executing; false if some still are.
    fn join_phases(&self, py: Python<'_>, timeout: f64) -> bool {
        let timeout = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        let shared = self.shared.clone();
        py.detach(move || shared.wait_idle(timeout))
    }

    /// The result of the ended run; raises `orch.RunError` if it could not be carried out.
    fn result(&self, py: Python<'_>) -> PyResult<RunResult> {
        let done = self.inbox.lock().done.clone();
        match done {
            Some(Ok(record)) => {
                let run_dir = self.state_dir.join("runs").join(record.run_id.as_str());
                Ok(RunResult::new(record, run_dir))
            }
            Some(Err(message)) => Err(Error::Engine(message).into_pyerr(py)),
            None => Err(Error::Engine("the run has not ended yet".into()).into_pyerr(py)),
        }
    }
}
