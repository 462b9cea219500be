//! Python functions as orch phases.
//!
//! A [`PyPhase`] is an ordinary [`Phase`]: the engine schedules it like any other kind.
//! Its `run` hands the call to a thread of tokio's blocking pool, which attaches to the
//! interpreter only for the call itself, so the engine never waits on the GIL:
//!
//! - a plain function is called in that thread (so with `jobs > 1` several run in
//!   parallel threads, as with a `ThreadPoolExecutor`);
//! - an `async def` function is turned into a coroutine that is scheduled with
//!   `asyncio.run_coroutine_threadsafe` on an event loop: the loop `run_async` was awaited
//!   on, or else one background loop thread per process; the result comes back through a
//!   done-callback, so no thread waits for a coroutine.
//!
//! Log lines the function writes (`ctx.log`, `ctx.logger`) travel through a channel to
//! the phase's task, which writes them with [`PhaseContext::log`].
//!
//! Cancellation: when the run is stopped, `ctx.cancelled` turns true and coroutines are
//! cancelled at once; a plain function gets the grace period to return, after which
//! `orch.PhaseCancelled` is raised inside it (`PyThreadState_SetAsyncExc`). When the engine
//! drops the attempt (timeout, abort) the same happens without waiting. Code blocked in
//! a C call (`time.sleep`, a socket read) sees the exception when that call returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orch_core::{
    Description, Outputs, Phase, PhaseContext, PhaseError, PhaseOutcome, PlanContext,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::runs::{Inflight, RunShared};

/// The Python side of phase calls (`orch/_runtime.py`).
pub(crate) struct Helpers {
    call_sync: Py<PyAny>,
    submit_async: Py<PyAny>,
    describe_error: Py<PyAny>,
    logger_for: Py<PyAny>,
    cancelled: Py<PyAny>,
}

pub(crate) fn helpers(py: Python<'_>) -> PyResult<&Helpers> {
    static HELPERS: PyOnceLock<Helpers> = PyOnceLock::new();
    HELPERS.get_or_try_init(py, || {
        let m = py.import("orch._runtime")?;
        let errors = py.import("orch._errors")?;
        Ok(Helpers {
            call_sync: m.getattr("call_sync")?.unbind(),
            submit_async: m.getattr("submit_async")?.unbind(),
            describe_error: m.getattr("describe_error")?.unbind(),
            logger_for: m.getattr("logger_for")?.unbind(),
            cancelled: errors.getattr("PhaseCancelled")?.unbind(),
        })
    })
}

/// Raising exceptions in other threads, and thread identities (the only unsafe code of
/// the crate: two calls of CPython's stable ABI).
#[allow(unsafe_code)]
mod ffi {
    use pyo3::prelude::*;

    /// The interpreter's identifier of the current thread (`threading.get_ident()`).
    pub(super) fn thread_ident(_py: Python<'_>) -> u64 {
        // SAFETY: a plain query of the current thread's identity; the token proves the
        // thread is attached to the interpreter.
        u64::from(unsafe { pyo3::ffi::PyThread_get_thread_ident() })
    }

    /// Makes thread `ident` raise `exc` (a class) at its next bytecode, or clears a
    /// pending one when `exc` is `None`. Returns how many threads it touched.
    pub(super) fn set_async_exc(_py: Python<'_>, ident: u64, exc: Option<&Bound<'_, PyAny>>) -> i32 {
        let ptr = exc.map_or(std::ptr::null_mut(), Bound::as_ptr);
        // SAFETY: the token proves we are attached (the call requires it); `ptr` is a
        // live object borrowed for the call (CPython takes its own reference) or null.
        unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(ident as std::ffi::c_long, ptr) }
    }
}

/// How a call of a phase function ended.
pub(crate) enum CallResult {
    Ok(Option<Outputs>),
    Failed { message: String, traceback: String },
    Skip(String),
    Cancelled,
    /// The function raised `KeyboardInterrupt`: the whole run is interrupted.
    Interrupted { traceback: String },
}

/// The state of one call, shared by the engine task, the thread running it and the
/// Python context object. Fields behind the mutex are only touched while attached to the
/// interpreter, so the GIL orders "inject an exception" against "the call returned".
pub(crate) struct CallState {
    cancelled: AtomicBool,
    inner: Mutex<CallInner>,
}

#[derive(Default)]
struct CallInner {
    /// The thread running a plain function, while it runs.
    thread: Option<u64>,
    /// An exception was injected into that thread.
    injected: bool,
    /// The call ended.
    finished: bool,
    /// The `concurrent.futures.Future` of a coroutine.
    future: Option<Py<PyAny>>,
}

impl CallState {
    fn new() -> Self {
        Self {
            cancelled: AtomicBool::new(false),
            inner: Mutex::new(CallInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CallInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Asks the call to stop: the flag always; with `force`, an exception in the thread of a
    /// plain function; a coroutine is cancelled in both cases.
    fn cancel(&self, py: Python<'_>, force: bool) {
        self.cancelled.store(true, Ordering::Relaxed);
        let (thread, future) = {
            let mut g = self.lock();
            if g.finished {
                return;
            }
            let thread = if force { g.thread } else { None };
            if thread.is_some() {
                g.injected = true;
            }
            (thread, g.future.as_ref().map(|f| f.clone_ref(py)))
        };
        if let Some(ident) = thread
            && let Ok(h) = helpers(py)
        {
            ffi::set_async_exc(py, ident, Some(h.cancelled.bind(py)));
        }
        if let Some(f) = future {
            let _ = f.call_method0(py, "cancel");
        }
    }

    fn enter(&self, py: Python<'_>) {
        self.lock().thread = Some(ffi::thread_ident(py));
    }

    fn exit(&self, py: Python<'_>) {
        let (ident, injected) = {
            let mut g = self.lock();
            g.finished = true;
            (g.thread.take(), g.injected)
        };
        if injected && let Some(ident) = ident {
            // An exception injected as the function returned must not fire later in
            // whatever this thread runs next.
            ffi::set_async_exc(py, ident, None);
        }
    }
}

/// What a phase function sees of its attempt (read by [`Context`]).
pub(crate) struct ContextData {
    pub(crate) run_id: String,
    pub(crate) phase_id: String,
    pub(crate) attempt: u32,
    pub(crate) shared: Option<Arc<RunShared>>,
    pub(crate) needs: Arc<[String]>,
    pub(crate) log: mpsc::UnboundedSender<String>,
    pub(crate) cancel: CancellationToken,
    pub(crate) run_dir: String,
    pub(crate) base_dir: String,
    pub(crate) workdir: String,
}

/// The context a phase function receives: `fn(ctx: orch.Context) -> dict | None`.
#[pyclass(module = "orch._orch", name = "Context", frozen)]
pub struct Context {
    data: ContextData,
    call: Arc<CallState>,
}

#[pymethods]
impl Context {
    /// The run's id.
    #[getter]
    fn run_id(&self) -> &str {
        &self.data.run_id
    }

    /// This phase's id.
    #[getter]
    fn phase_id(&self) -> &str {
        &self.data.phase_id
    }

    /// The attempt, from 1.
    #[getter]
    fn attempt(&self) -> u32 {
        self.data.attempt
    }

    /// The pipeline's variables (a fresh dict).
    #[getter]
    fn vars<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Some(s) = &self.data.shared {
            for (k, v) in s.vars.iter() {
                d.set_item(k, v)?;
            }
        }
        Ok(d)
    }

    /// Outputs of the phases this one needs: `ctx.outputs["build"]["artifact"]`.
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        if let Some(s) = &self.data.shared {
            for need in self.data.needs.iter() {
                let inner = PyDict::new(py);
                if let Some(o) = s.outputs_of(need) {
                    for (k, v) in o.iter() {
                        inner.set_item(k, v)?;
                    }
                }
                d.set_item(need, inner)?;
            }
        }
        Ok(d)
    }

    /// Whether the run was stopped or this attempt timed out: return soon.
    #[getter]
    fn cancelled(&self) -> bool {
        self.call.is_cancelled() || self.data.cancel.is_cancelled()
    }

    /// The run's directory (`STATE_DIR/runs/RUN_ID`): write run artifacts there.
    #[getter]
    fn run_dir(&self) -> &str {
        &self.data.run_dir
    }

    /// The pipeline's directory.
    #[getter]
    fn base_dir(&self) -> &str {
        &self.data.base_dir
    }

    /// The phase's working directory.
    #[getter]
    fn workdir(&self) -> &str {
        &self.data.workdir
    }

    /// A `logging.Logger` (`orch.phase.ID`) whose records go to the phase log.
    #[getter]
    fn logger<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        helpers(py)?
            .logger_for
            .bind(py)
            .call1((self.data.phase_id.as_str(),))
    }

    /// Writes a message to the phase log (each line becomes a log line and an event).
    fn log(&self, message: &str) {
        if message.is_empty() {
            let _ = self.data.log.send(String::new());
        }
        for line in message.lines() {
            let _ = self.data.log.send(line.to_owned());
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "<orch.Context phase={:?} attempt={} run={:?}>",
            self.data.phase_id, self.data.attempt, self.data.run_id
        )
    }
}

/// A phase implemented by a Python function.
pub struct PyPhase {
    func: Arc<Py<PyAny>>,
    is_async: bool,
    qualname: String,
    needs: Arc<[String]>,
}

impl PyPhase {
    /// A phase calling `func`; `needs` are the ids whose outputs the function sees.
    pub fn new(func: Py<PyAny>, is_async: bool, qualname: String, needs: Vec<String>) -> Self {
        Self {
            func: Arc::new(func),
            is_async,
            qualname,
            needs: needs.into(),
        }
    }
}

/// Cancels the call if the attempt is dropped before it ended (timeout, abort).
struct DropGuard {
    call: Arc<CallState>,
    armed: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.call.cancelled.store(true, Ordering::Relaxed);
        let call = self.call.clone();
        let job = move || {
            let _ = Python::try_attach(|py| call.cancel(py, true));
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(job);
            }
            Err(_) => {
                std::thread::spawn(job);
            }
        }
    }
}

/// Turns a raised exception into a [`CallResult`].
fn classify(py: Python<'_>, err: PyErr) -> CallResult {
    let described = helpers(py).and_then(|h| {
        h.describe_error
            .bind(py)
            .call1((err.value(py),))?
            .extract::<(String, String, String)>()
    });
    match described {
        Ok((kind, message, traceback)) => match kind.as_str() {
            "skip" => CallResult::Skip(message),
            "cancelled" => CallResult::Cancelled,
            "interrupt" => CallResult::Interrupted { traceback },
            _ => CallResult::Failed { message, traceback },
        },
        Err(e) => CallResult::Failed {
            message: format!("{err} (and describing it failed: {e})"),
            traceback: String::new(),
        },
    }
}

fn outputs_from(py: Python<'_>, value: &Bound<'_, PyAny>) -> CallResult {
    if value.is_none() {
        return CallResult::Ok(None);
    }
    match value.extract::<Outputs>() {
        Ok(o) => CallResult::Ok(Some(o)),
        Err(e) => classify(py, e),
    }
}

fn shutting_down() -> CallResult {
    CallResult::Failed {
        message: "the python interpreter is shutting down".into(),
        traceback: String::new(),
    }
}

/// Calls a plain function in the current (blocking-pool) thread.
fn call_sync(func: &Py<PyAny>, data: ContextData, call: Arc<CallState>) -> CallResult {
    Python::try_attach(|py| {
        if call.is_cancelled() {
            return CallResult::Cancelled;
        }
        let h = match helpers(py) {
            Ok(h) => h,
            Err(e) => return classify(py, e),
        };
        let ctx = match Py::new(
            py,
            Context {
                data,
                call: call.clone(),
            },
        ) {
            Ok(c) => c,
            Err(e) => return classify(py, e),
        };
        call.enter(py);
        let r = h.call_sync.bind(py).call1((func.bind(py), ctx));
        call.exit(py);
        match r {
            Ok(v) => outputs_from(py, &v),
            Err(e) => classify(py, e),
        }
    })
    .unwrap_or_else(shutting_down)
}

/// Receives the result of a coroutine (a `concurrent.futures.Future` done-callback).
#[pyclass(module = "orch._orch", frozen)]
struct DoneCallback {
    tx: Mutex<Option<oneshot::Sender<CallResult>>>,
    call: Arc<CallState>,
    inflight: Mutex<Option<Inflight>>,
}

#[pymethods]
impl DoneCallback {
    fn __call__(&self, py: Python<'_>, future: &Bound<'_, PyAny>) {
        let result = match future.call_method0("result") {
            Ok(v) => outputs_from(py, &v),
            Err(e) => classify(py, e),
        };
        {
            let mut g = self.call.lock();
            g.finished = true;
            g.future = None;
        }
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(result);
        }
        drop(self.inflight.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// Schedules a coroutine function on an event loop; the result arrives through `tx`.
fn submit_async(
    func: &Py<PyAny>,
    data: ContextData,
    call: Arc<CallState>,
    tx: oneshot::Sender<CallResult>,
    inflight: Option<Inflight>,
) {
    let event_loop = data.shared.as_ref().and_then(|s| s.event_loop.clone());
    let outcome = Python::try_attach(|py| -> Result<(), (CallResult, oneshot::Sender<CallResult>)> {
        if call.is_cancelled() {
            return Err((CallResult::Cancelled, tx));
        }
        let h = match helpers(py) {
            Ok(h) => h,
            Err(e) => return Err((classify(py, e), tx)),
        };
        let ctx = match Py::new(
            py,
            Context {
                data,
                call: call.clone(),
            },
        ) {
            Ok(c) => c,
            Err(e) => return Err((classify(py, e), tx)),
        };
        let done = match Py::new(
            py,
            DoneCallback {
                tx: Mutex::new(Some(tx)),
                call: call.clone(),
                inflight: Mutex::new(inflight),
            },
        ) {
            Ok(d) => d,
            // `tx` went down with the callback: the phase reports a lost result.
            Err(_) => return Ok(()),
        };
        let loop_arg = event_loop.as_ref().map(|l| l.bind(py).clone());
        match h
            .submit_async
            .bind(py)
            .call1((func.bind(py), ctx, done.bind(py), loop_arg))
        {
            Ok(future) => {
                let mut g = call.lock();
                if !g.finished {
                    g.future = Some(future.unbind());
                }
                Ok(())
            }
            Err(e) => {
                let r = classify(py, e);
                // The callback was never registered: answer through it directly.
                let tx = done.get().tx.lock().unwrap_or_else(|p| p.into_inner()).take();
                match tx {
                    Some(tx) => Err((r, tx)),
                    None => Ok(()),
                }
            }
        }
    });
    match outcome {
        Some(Ok(())) => {}
        Some(Err((r, tx))) => {
            let _ = tx.send(r);
        }
        None => {}
    }
}

#[async_trait]
impl Phase for PyPhase {
    fn describe(&self, _ctx: &PlanContext<'_>) -> Description {
        let how = if self.is_async { "await" } else { "call" };
        Description::new(format!("{how} python {}", self.qualname))
            .detail("function", self.qualname.clone())
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let shared = crate::runs::get(ctx.run_id().as_str());
        let (log_tx, mut log_rx) = mpsc::unbounded_channel();
        let call = Arc::new(CallState::new());
        let data = ContextData {
            run_id: ctx.run_id().to_string(),
            phase_id: ctx.phase_id().to_string(),
            attempt: ctx.attempt(),
            shared: shared.clone(),
            needs: self.needs.clone(),
            log: log_tx,
            cancel: ctx.cancelled().clone(),
            run_dir: ctx.run_dir().display().to_string(),
            base_dir: ctx.base_dir().display().to_string(),
            workdir: ctx.workdir().display().to_string(),
        };
        let (tx, mut rx) = oneshot::channel();
        let inflight = shared.as_ref().map(|s| s.enter());
        let mut guard = DropGuard {
            call: call.clone(),
            armed: true,
        };
        let func = self.func.clone();
        let c = call.clone();
        if self.is_async {
            tokio::task::spawn_blocking(move || submit_async(&func, data, c, tx, inflight));
        } else {
            tokio::task::spawn_blocking(move || {
                let r = call_sync(&func, data, c);
                let _ = tx.send(r);
                drop(inflight);
            });
        }

        let mut stop_deadline: Option<tokio::time::Instant> = None;
        let result = loop {
            tokio::select! {
                biased;
                r = &mut rx => break r.unwrap_or_else(|_| CallResult::Failed {
                    message: "the phase function ended without a result".into(),
                    traceback: String::new(),
                }),
                Some(line) = log_rx.recv() => ctx.log(line),
                () = ctx.cancelled().cancelled(), if stop_deadline.is_none() => {
                    stop_deadline = Some(tokio::time::Instant::now() + ctx.grace());
                    call.cancelled.store(true, Ordering::Relaxed);
                    if self.is_async {
                        let c = call.clone();
                        tokio::task::spawn_blocking(move || {
                            let _ = Python::try_attach(|py| c.cancel(py, false));
                        });
                    }
                }
                () = async {
                    match stop_deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    ctx.log("the phase did not stop within the grace period: raising PhaseCancelled in it");
                    // The guard raises `PhaseCancelled` in the function's thread.
                    return Err(PhaseError::Cancelled);
                }
            }
        };
        guard.armed = false;
        while let Ok(line) = log_rx.try_recv() {
            ctx.log(line);
        }
        match result {
            CallResult::Ok(outputs) => Ok(PhaseOutcome {
                outputs: outputs.unwrap_or_default(),
                ..PhaseOutcome::default()
            }),
            CallResult::Failed { message, traceback } => {
                for line in traceback.lines() {
                    ctx.log(line);
                }
                Err(PhaseError::failed(message))
            }
            CallResult::Skip(reason) => Err(PhaseError::Skip { reason }),
            CallResult::Cancelled => Err(PhaseError::Cancelled),
            CallResult::Interrupted { traceback } => {
                for line in traceback.lines() {
                    ctx.log(line);
                }
                if let Some(s) = &shared {
                    s.interrupt();
                }
                Err(PhaseError::Cancelled)
            }
        }
    }
}
