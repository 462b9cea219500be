//! What runs give back to Python: [`RunResult`], [`PhaseResult`] and [`Event`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use orch_core::{PhaseRecord, Reason, RunEvent, RunRecord, Stream};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn json_loads<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.getattr("loads")?.call1((text,))
}

/// Something that happened in a run, as `on_event` receives it.
///
/// `kind` is one of `run_started`, `policy_decision`, `phase_started`, `phase_output`,
/// `phase_retrying`, `phase_finished`, `run_finished`; fields that do not apply to the kind
/// are `None`. A `policy_decision` has `status` `allowed` or `denied` and, when denied,
/// the `reason`.
#[pyclass(module = "orch._orch", name = "Event", frozen)]
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Event {
    /// What happened.
    #[pyo3(get)]
    kind: &'static str,
    /// The run (`run_started`, `run_finished`).
    #[pyo3(get)]
    run_id: Option<String>,
    /// The pipeline's name (`run_started`).
    #[pyo3(get)]
    pipeline: Option<String>,
    /// The phase (`phase_*`).
    #[pyo3(get)]
    phase: Option<String>,
    /// The attempt, from 1 (`phase_started`, `phase_retrying`; attempts made for
    /// `phase_finished`).
    #[pyo3(get)]
    attempt: Option<u32>,
    /// Final status (`phase_finished`, `run_finished`; `allowed` or `denied` for
    /// `policy_decision`).
    #[pyo3(get)]
    status: Option<&'static str>,
    /// `stdout`, `stderr` or `log` (`phase_output`).
    #[pyo3(get)]
    stream: Option<&'static str>,
    /// One line of output (`phase_output`).
    #[pyo3(get)]
    line: Option<String>,
    /// Why the attempt failed (`phase_retrying`).
    #[pyo3(get)]
    error: Option<String>,
    /// Why the phase ended so (`phase_finished`).
    #[pyo3(get)]
    reason: Option<String>,
    /// Seconds (`phase_finished`, `run_finished`).
    #[pyo3(get)]
    duration: Option<f64>,
    /// Seconds before the next attempt (`phase_retrying`).
    #[pyo3(get)]
    delay: Option<f64>,
    /// Exit code of a process (`phase_finished`).
    #[pyo3(get)]
    exit_code: Option<i32>,
    /// Outputs published (`phase_finished`).
    #[pyo3(get)]
    outputs: Option<BTreeMap<String, String>>,
    /// Phases in the pipeline (`run_started`).
    #[pyo3(get)]
    phases: Option<usize>,
    /// Phases that will run (`run_started`).
    #[pyo3(get)]
    to_run: Option<usize>,
    /// Unix time of the event (every event has one).
    #[pyo3(get)]
    at: Option<f64>,
    /// Why the phase ended so, as data (`phase_finished`): the `cause` of `run.json` and of
    /// the server's events, e.g. `{"type": "blocked", "by": "build"}`. Read by its getter.
    cause: Option<Reason>,
}

impl Event {
    /// The Python view of an engine event (`None` for kinds this module does not know).
    pub(crate) fn from_run_event(e: &orch_core::Event) -> Option<Self> {
        let event = match &e.kind {
            RunEvent::RunStarted {
                run_id,
                pipeline,
                phases,
                to_run,
                ..
            } => Self {
                kind: "run_started",
                run_id: Some(run_id.to_string()),
                pipeline: Some(pipeline.clone()),
                phases: Some(*phases),
                to_run: Some(*to_run),
                ..Self::default()
            },
            RunEvent::PhaseStarted { phase, attempt } => Self {
                kind: "phase_started",
                phase: Some(phase.to_string()),
                attempt: Some(*attempt),
                ..Self::default()
            },
            RunEvent::PhaseOutput {
                phase,
                stream,
                line,
            } => Self {
                kind: "phase_output",
                phase: Some(phase.to_string()),
                stream: Some(match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                    Stream::Log => "log",
                }),
                line: Some(line.clone()),
                ..Self::default()
            },
            RunEvent::PhaseRetrying {
                phase,
                attempt,
                error,
                delay,
            } => Self {
                kind: "phase_retrying",
                phase: Some(phase.to_string()),
                attempt: Some(*attempt),
                error: Some(error.clone()),
                delay: Some(secs(*delay)),
                ..Self::default()
            },
            RunEvent::PhaseFinished {
                phase,
                status,
                attempts,
                duration,
                exit_code,
                reason,
                cause,
                outputs,
                ..
            } => Self {
                kind: "phase_finished",
                cause: cause.clone(),
                phase: Some(phase.to_string()),
                status: Some(status.as_str()),
                attempt: Some(*attempts),
                duration: Some(secs(*duration)),
                exit_code: *exit_code,
                reason: reason.clone(),
                outputs: Some((**outputs).clone()),
                ..Self::default()
            },
            RunEvent::PolicyDecision {
                phase,
                verdict,
                reason,
            } => Self {
                kind: "policy_decision",
                phase: Some(phase.to_string()),
                status: Some(if verdict.allowed { "allowed" } else { "denied" }),
                reason: reason.clone(),
                ..Self::default()
            },
            RunEvent::RunFinished {
                run_id,
                status,
                duration,
            } => Self {
                kind: "run_finished",
                run_id: Some(run_id.to_string()),
                status: Some(status.as_str()),
                duration: Some(secs(*duration)),
                ..Self::default()
            },
            _ => return None,
        };
        Some(Self {
            at: Some(unix(e.at)),
            ..event
        })
    }
}

/// A reason as Python data (a dict with its `type`), as the JSON of events and records
/// gives it.
fn cause_to_py<'py>(
    py: Python<'py>,
    cause: Option<&Reason>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(cause) = cause else {
        return Ok(None);
    };
    let text = serde_json::to_string(cause)
        .map_err(|e| crate::errors::internal(format!("cannot serialize a cause: {e}")))?;
    json_loads(py, &text).map(Some)
}

#[pymethods]
impl Event {
    /// Why the phase ended so, as data (`phase_finished`; `None` otherwise): a dict with a
    /// `type` (`not_selected`, `before_from`, `when_false`, `done_in_run`, `blocked`,
    /// `not_started`, `stopped`, `not_retried`, `skipped`, `error`, ...) and its fields;
    /// a run's stop is under `stop` (`interrupted`, `fail_fast`, `journal_failure`).
    #[getter]
    fn cause<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        cause_to_py(py, self.cause.as_ref())
    }

    /// The event as a dict (fields that do not apply are left out).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut v = serde_json::to_value(self)
            .map_err(|e| crate::errors::internal(format!("cannot serialize an event: {e}")))?;
        if let serde_json::Value::Object(m) = &mut v {
            m.retain(|_, v| !v.is_null());
        }
        json_loads(py, &v.to_string())
    }

    fn __repr__(&self) -> String {
        let mut s = format!("<orch.Event {}", self.kind);
        if let Some(p) = &self.phase {
            s.push_str(&format!(" phase={p:?}"));
        }
        if let Some(st) = self.status {
            s.push_str(&format!(" status={st}"));
        }
        if let Some(l) = &self.line {
            s.push_str(&format!(" line={l:?}"));
        }
        s.push('>');
        s
    }
}

/// How one phase of a run ended.
#[pyclass(module = "orch._orch", name = "PhaseResult", frozen)]
pub struct PhaseResult {
    id: String,
    record: PhaseRecord,
    run_dir: Arc<PathBuf>,
}

#[pymethods]
impl PhaseResult {
    /// The phase's id.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// `succeeded`, `failed`, `timed_out`, `cancelled`, `skipped` or `blocked`.
    #[getter]
    fn status(&self) -> &'static str {
        self.record.status.as_str()
    }

    /// Its kind (`command`, `python`, `docker.build`, ...).
    #[getter]
    fn kind(&self) -> &str {
        &self.record.kind
    }

    /// Attempts made.
    #[getter]
    fn attempts(&self) -> u32 {
        self.record.attempts
    }

    /// Outputs it published (a fresh dict).
    #[getter]
    fn outputs(&self) -> BTreeMap<String, String> {
        self.record.outputs.clone()
    }

    /// Seconds from its first start to its end; `None` if it never ran.
    #[getter]
    fn duration(&self) -> Option<f64> {
        self.record.duration_ms.map(|ms| ms as f64 / 1000.0)
    }

    /// Exit code of its last attempt, for processes.
    #[getter]
    fn exit_code(&self) -> Option<i32> {
        self.record.exit_code
    }

    /// Why it ended so (error message, skip reason, the phase that blocked it).
    #[getter]
    fn reason(&self) -> Option<&str> {
        self.record.reason.as_deref()
    }

    /// Why it ended so, as data: a dict with a `type` and its fields, as `run.json`'s
    /// `cause` (see `Event.cause`); `None` when it succeeded.
    #[getter]
    fn cause<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        cause_to_py(py, self.record.cause.as_deref())
    }

    /// When its first attempt started (RFC 3339).
    #[getter]
    fn started_at(&self) -> Option<&str> {
        self.record.started_at.as_deref()
    }

    /// When it ended (RFC 3339).
    #[getter]
    fn finished_at(&self) -> Option<&str> {
        self.record.finished_at.as_deref()
    }

    /// Path of its log file, when it wrote one.
    #[getter]
    fn log(&self) -> Option<String> {
        self.record
            .log
            .as_ref()
            .map(|l| self.run_dir.join(l).display().to_string())
    }

    /// The text of its log ("" when it wrote none).
    fn log_text(&self) -> PyResult<String> {
        match self.log() {
            Some(path) => Ok(std::fs::read_to_string(path)?),
            None => Ok(String::new()),
        }
    }

    /// Its tags.
    #[getter]
    fn tags(&self) -> Vec<String> {
        self.record.tags.clone()
    }

    /// The phases it needs.
    #[getter]
    fn needs(&self) -> Vec<String> {
        self.record.needs.iter().map(ToString::to_string).collect()
    }

    /// It failed, but was allowed to.
    #[getter]
    fn allowed_failure(&self) -> bool {
        self.record.allowed_failure
    }

    /// Whether it succeeded.
    #[getter]
    fn ok(&self) -> bool {
        self.record.status == orch_core::PhaseStatus::Succeeded
    }

    /// The record as a dict, as in `run.json`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = serde_json::to_string(&self.record)
            .map_err(|e| crate::errors::internal(format!("cannot serialize a record: {e}")))?;
        json_loads(py, &text)
    }

    fn __repr__(&self) -> String {
        format!(
            "<orch.PhaseResult {} {} attempts={}>",
            self.id,
            self.record.status.as_str(),
            self.record.attempts
        )
    }
}

/// The result of a run: its status, every phase's result, and the record (`run.json`).
#[pyclass(module = "orch._orch", name = "RunResult", frozen)]
pub struct RunResult {
    record: Arc<RunRecord>,
    run_dir: Arc<PathBuf>,
    phases: PyOnceLock<Py<PyDict>>,
}

impl RunResult {
    pub(crate) fn new(record: Arc<RunRecord>, run_dir: PathBuf) -> Self {
        Self {
            record,
            run_dir: Arc::new(run_dir),
            phases: PyOnceLock::new(),
        }
    }

    fn json(&self, indent: Option<usize>) -> PyResult<String> {
        let r = match indent {
            None => serde_json::to_string(&*self.record),
            Some(n) => {
                let indent = " ".repeat(n);
                let mut out = Vec::new();
                let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
                let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
                serde::Serialize::serialize(&*self.record, &mut ser)
                    .map(|()| String::from_utf8_lossy(&out).into_owned())
            }
        };
        r.map_err(|e| crate::errors::internal(format!("cannot serialize the record: {e}")))
    }
}

#[pymethods]
impl RunResult {
    /// The run's id.
    #[getter]
    fn run_id(&self) -> &str {
        self.record.run_id.as_str()
    }

    /// The pipeline's name.
    #[getter]
    fn pipeline(&self) -> &str {
        &self.record.pipeline
    }

    /// `succeeded`, `failed` or `cancelled`.
    #[getter]
    fn status(&self) -> &'static str {
        self.record.status.as_str()
    }

    /// Whether the run succeeded.
    #[getter]
    fn ok(&self) -> bool {
        self.record.status == orch_core::RunStatus::Succeeded
    }

    /// Wall time in seconds.
    #[getter]
    fn duration(&self) -> Option<f64> {
        self.record.duration_ms.map(|ms| ms as f64 / 1000.0)
    }

    /// When it started (RFC 3339).
    #[getter]
    fn started_at(&self) -> &str {
        &self.record.started_at
    }

    /// When it ended (RFC 3339).
    #[getter]
    fn finished_at(&self) -> Option<&str> {
        self.record.finished_at.as_deref()
    }

    /// The run's directory (`STATE_DIR/runs/RUN_ID`: run.json, logs/).
    #[getter]
    fn run_dir(&self) -> String {
        self.run_dir.display().to_string()
    }

    /// Every phase, by id, in declaration order.
    #[getter]
    fn phases<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self
            .phases
            .get_or_try_init(py, || -> PyResult<Py<PyDict>> {
                let d = PyDict::new(py);
                for (id, rec) in &self.record.phases {
                    let p = PhaseResult {
                        id: id.to_string(),
                        record: rec.clone(),
                        run_dir: self.run_dir.clone(),
                    };
                    d.set_item(id.as_str(), Py::new(py, p)?)?;
                }
                Ok(d.unbind())
            })?;
        d.bind(py).copy()
    }

    /// Ids of the phases that failed or timed out (not those allowed to).
    #[getter]
    fn failed(&self) -> Vec<String> {
        self.record
            .phases
            .iter()
            .filter(|(_, p)| p.status.is_failure() && !p.allowed_failure)
            .map(|(id, _)| id.to_string())
            .collect()
    }

    /// Counts of phases by status.
    #[getter]
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.record
            .counts()
            .into_iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect()
    }

    /// The record as a dict (the content of `run.json`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_loads(py, &self.json(None)?)
    }

    /// The record as JSON (the content of `run.json`); `indent=None` for one line.
    #[pyo3(signature = (indent = Some(2)))]
    fn to_json(&self, indent: Option<usize>) -> PyResult<String> {
        self.json(indent)
    }

    fn __repr__(&self) -> String {
        format!(
            "<orch.RunResult {} {} run_id={:?} phases={}>",
            self.record.pipeline,
            self.record.status.as_str(),
            self.record.run_id.as_str(),
            self.record.phases.len()
        )
    }
}
