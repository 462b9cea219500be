//! Python functions as orch phases.
//!
//! A [`PyPhase`] is an ordinary [`Phase`]: the engine schedules it like any other kind.
//! Its `run` hands the call to a worker of the Python pool ([`crate::pool`]), whose threads
//! hold the GIL only while they call Python, so the engine never waits on the GIL:
//!
//! - a plain function is called in that thread (so with `jobs > 1` several run in
//!   parallel threads, as with a `ThreadPoolExecutor`);
//! - an `async def` function is turned into a coroutine that is scheduled with
//!   `asyncio.run_coroutine_threadsafe` on an event loop: the loop `run_async` was awaited
//!   on, or else one background loop thread per process; the result comes back through a
//!   done-callback, so no thread waits for a coroutine.
//!
//! Log lines the function writes (`ctx.log`, `ctx.logger`) and its result meet the phase's
//! task in a `Completion` cell (a mutex and a `Notify`); the task writes the lines with
//! [`PhaseContext::log`] as they come.
//!
//! Cancellation: when the run is stopped, `ctx.cancelled` turns true and coroutines are
//! cancelled at once; a plain function gets the grace period to return, after which
//! `orch.PhaseCancelled` is raised inside it (`PyThreadState_SetAsyncExc`). When the engine
//! drops the attempt (timeout, abort) the same happens without waiting. Code blocked in
//! a C call (`time.sleep`, a socket read) sees the exception when that call returns.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orch_core::{
    Description, Outputs, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PlanContext,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::runs::{Inflight, RunShared};

/// The Python side of phase calls (`orch/_runtime.py`).
pub(crate) struct Helpers {
    run_awaitable: Py<PyAny>,
    normalize: Py<PyAny>,
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
            run_awaitable: m.getattr("run_awaitable")?.unbind(),
            normalize: m.getattr("normalize")?.unbind(),
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
    // `c_ulong` is `u64` here but not on every platform.
    #[allow(clippy::useless_conversion)]
    pub(super) fn thread_ident(_py: Python<'_>) -> u64 {
        // SAFETY: a plain query of the current thread's identity; the token proves the
        // thread is attached to the interpreter.
        u64::from(unsafe { pyo3::ffi::PyThread_get_thread_ident() })
    }

    /// Makes thread `ident` raise `exc` (a class) at its next bytecode, or clears a
    /// pending one when `exc` is `None`. Returns how many threads it touched.
    pub(super) fn set_async_exc(
        _py: Python<'_>,
        ident: u64,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> i32 {
        let ptr = exc.map_or(std::ptr::null_mut(), Bound::as_ptr);
        // SAFETY: the token proves we are attached (the call requires it); `ptr` is a
        // live object borrowed for the call (CPython takes its own reference) or null.
        unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(ident as std::ffi::c_long, ptr) }
    }
}

/// How a call of a phase function ended.
pub(crate) enum CallResult {
    Ok(Option<Outputs>),
    Failed {
        message: String,
        traceback: String,
    },
    Skip(String),
    Cancelled,
    /// The function raised `KeyboardInterrupt`: the whole run is interrupted.
    Interrupted {
        traceback: String,
    },
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

/// Where a call's log lines and result meet the engine task that waits for them.
#[derive(Default)]
pub(crate) struct Completion {
    state: Mutex<CompletionState>,
    notify: Notify,
}

#[derive(Default)]
struct CompletionState {
    lines: Vec<String>,
    result: Option<CallResult>,
}

impl Completion {
    fn lock(&self) -> std::sync::MutexGuard<'_, CompletionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, line: String) {
        self.lock().lines.push(line);
        self.notify.notify_one();
    }

    fn finish(&self, result: CallResult) {
        self.lock().result = Some(result);
        crate::pool::completed();
        self.notify.notify_one();
    }
}

/// What a phase function sees of its attempt (read by [`Context`]).
pub(crate) struct ContextData {
    pub(crate) shared: Option<Arc<RunShared>>,
    pub(crate) phase_id: PhaseId,
    pub(crate) attempt: u32,
    /// The outputs of the phases this one needs, as the engine provides them (restored
    /// ones included, in a resumed run), in the order of `needs`.
    pub(crate) outputs: Vec<(PhaseId, Option<Outputs>)>,
    pub(crate) completion: Arc<Completion>,
    pub(crate) cancel: CancellationToken,
    /// The phase's working directory when it is not the pipeline's.
    pub(crate) workdir: Option<PathBuf>,
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
        self.data.shared.as_ref().map_or("", |s| s.run_id.as_str())
    }

    /// This phase's id.
    #[getter]
    fn phase_id(&self) -> &str {
        self.data.phase_id.as_str()
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
        for (need, outputs) in &self.data.outputs {
            let inner = PyDict::new(py);
            for (k, v) in outputs.iter().flatten() {
                inner.set_item(k, v)?;
            }
            d.set_item(need.as_str(), inner)?;
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
        self.data.shared.as_ref().map_or("", |s| s.run_dir.as_str())
    }

    /// The pipeline's directory.
    #[getter]
    fn base_dir(&self) -> &str {
        self.data
            .shared
            .as_ref()
            .map_or("", |s| s.base_dir.as_str())
    }

    /// The phase's working directory.
    #[getter]
    fn workdir(&self) -> String {
        match &self.data.workdir {
            Some(w) => w.display().to_string(),
            None => self.base_dir().to_owned(),
        }
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
            self.data.completion.log(String::new());
        }
        for line in message.lines() {
            self.data.completion.log(line.to_owned());
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "<orch.Context phase={:?} attempt={} run={:?}>",
            self.data.phase_id.as_str(),
            self.data.attempt,
            self.run_id()
        )
    }
}

/// A phase implemented by a Python function.
pub struct PyPhase {
    func: Arc<Py<PyAny>>,
    is_async: bool,
    qualname: String,
    needs: Arc<[PhaseId]>,
}

impl PyPhase {
    /// A phase calling `func`; `needs` are the ids whose outputs the function sees.
    pub fn new(func: Py<PyAny>, is_async: bool, qualname: String, needs: Arc<[PhaseId]>) -> Self {
        Self {
            func: Arc::new(func),
            is_async,
            qualname,
            needs,
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
        crate::pool::submit(Box::new(move |py| call.cancel(py, true)));
    }
}

/// Whether calling `func` makes a coroutine: the code flag of plain functions, else
/// `inspect.iscoroutinefunction` on it or its `__call__`.
pub(crate) fn is_coroutine_function(func: &Bound<'_, PyAny>) -> PyResult<bool> {
    const CO_COROUTINE: i64 = 0x80;
    let py = func.py();
    if func.is_instance_of::<pyo3::types::PyFunction>()
        && let Ok(code) = func.getattr(pyo3::intern!(py, "__code__"))
    {
        let flags: i64 = code.getattr(pyo3::intern!(py, "co_flags"))?.extract()?;
        return Ok(flags & CO_COROUTINE != 0);
    }
    let inspect = py.import("inspect")?;
    let check = inspect.getattr("iscoroutinefunction")?;
    if check.call1((func,))?.is_truthy()? {
        return Ok(true);
    }
    match func.getattr(pyo3::intern!(py, "__call__")) {
        Ok(call) => check.call1((call,))?.is_truthy(),
        Err(_) => Ok(false),
    }
}

/// Turns a raised exception into a [`CallResult`].
fn classify(py: Python<'_>, err: PyErr) -> CallResult {
    let described = helpers(py).and_then(|h| {
        h.describe_error
            .bind(py)
            .call1((err.value(py), err.traceback(py)))?
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

/// Outputs from what a function returned: `None`, a dict of `str` (read here), or
/// anything else (converted, or rejected, by `_runtime.normalize`).
fn outputs_from(py: Python<'_>, value: &Bound<'_, PyAny>, phase_id: &str) -> CallResult {
    if value.is_none() {
        return CallResult::Ok(None);
    }
    if let Ok(d) = value.cast::<PyDict>() {
        let mut out = Outputs::new();
        let mut plain = true;
        for (k, v) in d.iter() {
            match (k.cast::<PyString>(), v.cast::<PyString>()) {
                (Ok(k), Ok(v)) => match (k.to_cow(), v.to_cow()) {
                    (Ok(k), Ok(v)) => {
                        out.insert(k.into_owned(), v.into_owned());
                    }
                    _ => plain = false,
                },
                _ => plain = false,
            }
            if !plain {
                break;
            }
        }
        if plain {
            return CallResult::Ok(Some(out));
        }
    }
    let normalized = helpers(py).and_then(|h| {
        h.normalize
            .bind(py)
            .call1((value, phase_id))?
            .extract::<Option<Outputs>>()
    });
    match normalized {
        Ok(o) => CallResult::Ok(o),
        Err(e) => classify(py, e),
    }
}

thread_local! {
    /// The context of the plain phase function running in this thread, for
    /// `orch.phase.*` loggers (coroutines use a `ContextVar` instead).
    static CURRENT: RefCell<Option<Py<Context>>> = const { RefCell::new(None) };
}

/// The context of the phase function running in this thread, if any.
#[pyfunction]
pub fn _current_context(py: Python<'_>) -> Option<Py<Context>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| c.clone_ref(py)))
}

/// Calls a plain function in the current (pool) thread.
fn call_sync(
    py: Python<'_>,
    func: &Py<PyAny>,
    data: ContextData,
    call: &Arc<CallState>,
) -> CallResult {
    if call.is_cancelled() {
        return CallResult::Cancelled;
    }
    let phase_id = data.phase_id.clone();
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
    CURRENT.with(|c| *c.borrow_mut() = Some(ctx.clone_ref(py)));
    call.enter(py);
    let r = func.bind(py).call1((ctx,));
    call.exit(py);
    let previous = CURRENT.with(|c| c.borrow_mut().take());
    drop(previous);
    match r {
        Ok(v) if v.is_none() => CallResult::Ok(None),
        Ok(v) => {
            // A plain function may return an awaitable: run it on the background loop.
            if !v.is_instance_of::<PyDict>()
                && v.hasattr(pyo3::intern!(py, "__await__")).unwrap_or(false)
            {
                let awaited = helpers(py).and_then(|h| h.run_awaitable.bind(py).call1((v,)));
                return match awaited {
                    Ok(v) => outputs_from(py, &v, phase_id.as_str()),
                    Err(e) => classify(py, e),
                };
            }
            outputs_from(py, &v, phase_id.as_str())
        }
        Err(e) => classify(py, e),
    }
}

/// Receives the result of a coroutine (a `concurrent.futures.Future` done-callback).
#[pyclass(module = "orch._orch", frozen)]
struct DoneCallback {
    completion: Arc<Completion>,
    phase_id: PhaseId,
    call: Arc<CallState>,
    inflight: Mutex<Option<Inflight>>,
}

#[pymethods]
impl DoneCallback {
    fn __call__(&self, py: Python<'_>, future: &Bound<'_, PyAny>) {
        let result = match future.call_method0("result") {
            Ok(v) => outputs_from(py, &v, self.phase_id.as_str()),
            Err(e) => classify(py, e),
        };
        {
            let mut g = self.call.lock();
            g.finished = true;
            g.future = None;
        }
        self.completion.finish(result);
        drop(
            self.inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

/// Schedules a coroutine function on an event loop; the result arrives through the
/// data's completion (from the future's done-callback).
fn submit_async(
    py: Python<'_>,
    func: &Py<PyAny>,
    data: ContextData,
    call: &Arc<CallState>,
    inflight: Option<Inflight>,
) {
    if call.is_cancelled() {
        data.completion.finish(CallResult::Cancelled);
        return;
    }
    let completion = data.completion.clone();
    let phase_id = data.phase_id.clone();
    let event_loop = data.shared.as_ref().and_then(|s| s.event_loop.clone());
    let go = || -> PyResult<()> {
        let h = helpers(py)?;
        let ctx = Py::new(
            py,
            Context {
                data,
                call: call.clone(),
            },
        )?;
        let done = Py::new(
            py,
            DoneCallback {
                completion: completion.clone(),
                phase_id,
                call: call.clone(),
                inflight: Mutex::new(inflight),
            },
        )?;
        let loop_arg = event_loop.as_ref().map(|l| l.bind(py).clone());
        let future = h
            .submit_async
            .bind(py)
            .call1((func.bind(py), ctx, done, loop_arg))?;
        let mut g = call.lock();
        if !g.finished {
            g.future = Some(future.unbind());
        }
        Ok(())
    };
    if let Err(e) = go() {
        completion.finish(classify(py, e));
    }
}

#[async_trait]
impl Phase for PyPhase {
    fn describe(&self, _ctx: &PlanContext<'_>) -> Description {
        let how = if self.is_async { "await" } else { "call" };
        Description::new(format!("{how} python {}", self.qualname))
            .detail("function", self.qualname.clone())
    }

    /// The call runs in a pool thread or on an event loop; the attempt only waits for it.
    fn is_light(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let shared = crate::runs::get(ctx.run_id().as_str());
        let completion = Arc::new(Completion::default());
        let call = Arc::new(CallState::new());
        let workdir = match &shared {
            Some(s)
                if ctx.workdir() == ctx.base_dir()
                    && s.base_dir == ctx.base_dir().to_string_lossy() =>
            {
                None
            }
            _ => Some(ctx.workdir().to_owned()),
        };
        let data = ContextData {
            shared: shared.clone(),
            phase_id: ctx.phase_id().clone(),
            attempt: ctx.attempt(),
            outputs: self
                .needs
                .iter()
                .map(|n| (n.clone(), ctx.outputs_of(n.as_str())))
                .collect(),
            completion: completion.clone(),
            cancel: ctx.cancelled().clone(),
            workdir,
        };
        let inflight = shared.as_ref().map(|s| s.enter());
        let mut guard = DropGuard {
            call: call.clone(),
            armed: true,
        };
        let func = self.func.clone();
        let c = call.clone();
        if self.is_async {
            crate::pool::submit(Box::new(move |py| {
                submit_async(py, &func, data, &c, inflight);
            }));
        } else {
            crate::pool::submit(Box::new(move |py| {
                let completion = data.completion.clone();
                let r = call_sync(py, &func, data, &c);
                completion.finish(r);
                drop(inflight);
            }));
        }

        let mut stop_deadline: Option<tokio::time::Instant> = None;
        let result = loop {
            let (lines, result) = {
                let mut st = completion.lock();
                (std::mem::take(&mut st.lines), st.result.take())
            };
            for line in lines {
                ctx.log(line);
            }
            if let Some(r) = result {
                break r;
            }
            tokio::select! {
                biased;
                () = completion.notify.notified() => {}
                () = ctx.cancelled().cancelled(), if stop_deadline.is_none() => {
                    stop_deadline = Some(tokio::time::Instant::now() + ctx.grace());
                    call.cancelled.store(true, Ordering::Relaxed);
                    if self.is_async {
                        let c = call.clone();
                        crate::pool::submit(Box::new(move |py| c.cancel(py, false)));
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
