//! `_Pipeline`: a pipeline from a file, from code, or both, and how it plans and starts
//! runs. `orch.Pipeline` (Python) wraps it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use orch_core::diagnostics::did_you_mean;
use orch_core::spec::Backoff;
use orch_core::{
    LoadOptions, Phase, PhaseId, PhaseSpec, Pipeline, Plan, ResumeFrom, RunControl, RunId,
    RunOptions, RunSpec, Runner, Selection, Selector, WithTable,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

use crate::errors::Error;
use crate::phase::PyPhase;
use crate::runs::{self, Inbox, RunHandle, RunShared, Sink};
use crate::runtime::registry;

/// A phase added in code.
struct Extra {
    spec: PhaseSpec,
    /// A Python phase's implementation; `None` for a registry kind, which the engine
    /// builds (and places on an agent) like a phase from a file.
    python: Option<Arc<dyn Phase>>,
}

/// The core of `orch.Pipeline`.
#[pyclass(module = "orch._orch", name = "_Pipeline")]
pub struct CorePipeline {
    name: String,
    base_dir: PathBuf,
    jobs: Option<usize>,
    state_dir: Option<PathBuf>,
    vars: IndexMap<String, String>,
    /// The pipeline loaded from a file, if any.
    file: Option<Arc<Pipeline>>,
    extra: Vec<Extra>,
    ids: HashSet<PhaseId, foldhash::fast::RandomState>,
    built: Option<Arc<Pipeline>>,
}

fn selection(only: Vec<String>, skip: Vec<String>, from: Vec<String>) -> Selection {
    Selection {
        only: only.iter().map(|s| Selector::parse(s)).collect(),
        skip: skip.iter().map(|s| Selector::parse(s)).collect(),
        from,
    }
}

fn duration(secs: Option<f64>, what: &str) -> Result<Option<Duration>, Error> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(Error::invalid(format!(
            "{what} must be a non-negative number of seconds, not {s}"
        ))),
    }
}

fn phase_id(id: &str) -> Result<PhaseId, Error> {
    PhaseId::new(id).map_err(|e| Error::invalid(e.to_string()))
}

/// Settings every phase added in code takes.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub struct Common {
    needs: Vec<String>,
    retries: Option<u32>,
    timeout: Option<f64>,
    backoff: Option<f64>,
    tags: Vec<String>,
    description: Option<String>,
    allow_failure: bool,
    when: Option<String>,
    env: IndexMap<String, String>,
    cwd: Option<String>,
    secrets: Vec<String>,
    agent: Option<String>,
    #[pyo3(item("assert"))]
    asserts: Vec<String>,
}

impl Common {
    fn apply(self, spec: &mut PhaseSpec) -> Result<(), Error> {
        spec.needs = self
            .needs
            .iter()
            .map(|n| phase_id(n))
            .collect::<Result<_, _>>()?;
        spec.retries = self.retries;
        spec.timeout = duration(self.timeout, "timeout")?;
        spec.backoff = duration(self.backoff, "backoff")?.map(|initial| {
            Box::new(Backoff {
                initial,
                ..Backoff::default()
            })
        });
        spec.tags = self.tags;
        spec.description = self.description;
        spec.allow_failure = self.allow_failure;
        spec.when = self.when;
        spec.env = self.env.into();
        spec.cwd = self.cwd;
        spec.secrets = self.secrets;
        spec.agent = self.agent;
        spec.assert = self.asserts;
        Ok(())
    }
}

impl CorePipeline {
    fn add(&mut self, extra: Extra) -> Result<(), Error> {
        if !self.ids.insert(extra.spec.id.clone()) {
            let id = &extra.spec.id;
            return Err(Error::invalid(format!("phase `{id}` is declared twice")));
        }
        self.extra.push(extra);
        self.built = None;
        Ok(())
    }

    /// The validated pipeline, with `vars` overriding declared variables.
    fn build(&mut self, vars: &IndexMap<String, String>) -> Result<Arc<Pipeline>, Error> {
        if vars.is_empty()
            && let Some(b) = &self.built
        {
            return Ok(b.clone());
        }
        let declared: Vec<&str> = match &self.file {
            Some(f) => f.spec().vars.keys().map(String::as_str).collect(),
            None => self.vars.keys().map(String::as_str).collect(),
        };
        for k in vars.keys() {
            if !declared.contains(&k.as_str()) {
                let help = did_you_mean(k, declared.iter().copied())
                    .unwrap_or_else(|| "declare it first".to_owned());
                return Err(Error::invalid(format!(
                    "`vars` sets `{k}`, which the pipeline does not declare ({help})"
                )));
            }
        }
        let p = match &self.file {
            Some(f) if self.extra.is_empty() && vars.is_empty() => f.clone(),
            _ => Arc::new(self.builder(vars).build()?),
        };
        if vars.is_empty() {
            self.built = Some(p.clone());
        }
        Ok(p)
    }

    fn builder(&self, vars: &IndexMap<String, String>) -> orch_core::PipelineBuilder {
        let mut b = match &self.file {
            // A loaded pipeline extended in code: its declaration, rebuilt with the same
            // registry (kinds are built again; they do no I/O when built).
            Some(f) => {
                let s = f.spec();
                let mut b = Pipeline::builder(s.name.clone(), s.base_dir.clone())
                    .state_dir(s.state_dir.clone());
                if let Some(j) = s.jobs {
                    b = b.jobs(j);
                }
                for (k, v) in &s.vars {
                    b = b.var(k.clone(), v.clone());
                }
                for a in s.agents.values() {
                    b = b.agent(a.clone());
                }
                // The file's `[policy]` and `[defaults]` govern phases added in code too.
                if let Some(policy) = f.policy() {
                    b = b.policy(policy.clone());
                }
                b = b.defaults(s.defaults.clone());
                for n in f.nodes() {
                    b = b.phase(n.spec.clone());
                }
                b
            }
            None => {
                let mut b = Pipeline::builder(self.name.clone(), self.base_dir.clone());
                if let Some(d) = &self.state_dir {
                    b = b.state_dir(d.clone());
                }
                if let Some(j) = self.jobs {
                    b = b.jobs(j);
                }
                for (k, v) in &self.vars {
                    b = b.var(k.clone(), v.clone());
                }
                b
            }
        };
        b = b.registry(registry().clone());
        for (k, v) in vars {
            b = b.var(k.clone(), v.clone());
        }
        for e in &self.extra {
            b = match &e.python {
                Some(phase) => b.custom(e.spec.clone(), phase.clone()),
                None => b.phase(e.spec.clone()),
            };
        }
        b
    }
}

/// What `@pipeline.phase(...)` says about the functions it decorates.
pub struct FunctionSettings {
    id: Option<PhaseId>,
    needs: Arc<[PhaseId]>,
    retries: Option<u32>,
    timeout: Option<Duration>,
    backoff: Option<Backoff>,
    tags: Vec<String>,
    description: Option<String>,
    allow_failure: bool,
    when: Option<String>,
}

/// The Python helpers that convert the less common forms of the decorator's arguments
/// (functions as `needs`, durations as text or `timedelta`).
fn python_helper<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import(pyo3::intern!(py, "orch"))?.getattr(name)
}

/// Strings from a list or tuple of `str`; `None` when it holds anything else.
fn plain_strings(value: &Bound<'_, PyAny>) -> Option<Vec<String>> {
    use pyo3::types::{PyList, PyTuple};
    let collect = |items: &mut dyn Iterator<Item = Bound<'_, PyAny>>| {
        items
            .map(|v| Some(v.cast::<PyString>().ok()?.to_cow().ok()?.into_owned()))
            .collect::<Option<Vec<String>>>()
    };
    if let Ok(l) = value.cast::<PyList>() {
        collect(&mut l.iter())
    } else if let Ok(t) = value.cast::<PyTuple>() {
        collect(&mut t.iter())
    } else {
        None
    }
}

/// Seconds from a number, else from `orch._seconds` (text, `timedelta`, errors).
fn seconds(value: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<f64>> {
    if value.is_none() {
        return Ok(None);
    }
    if !value.is_instance_of::<PyBool>()
        && (value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>())
    {
        return value.extract().map(Some);
    }
    python_helper(value.py(), "_seconds")?
        .call1((value, what))?
        .extract()
}

impl FunctionSettings {
    /// Checks and converts the decorator's arguments as `orch.Pipeline.phase` documents
    /// them: the common forms here, the others through the package's Python helpers.
    #[allow(clippy::too_many_arguments)]
    fn from_python(
        id: Option<&str>,
        needs: &Bound<'_, PyAny>,
        retries: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
        backoff: &Bound<'_, PyAny>,
        tags: &Bound<'_, PyAny>,
        description: Option<String>,
        allow_failure: &Bound<'_, PyAny>,
        when: Option<String>,
    ) -> PyResult<Self> {
        let py = needs.py();
        let invalid = |e: Error| e.into_pyerr(py);
        let needs = match plain_strings(needs) {
            Some(n) => n,
            None => python_helper(py, "_refs")?.call1((needs,))?.extract()?,
        };
        let needs = needs
            .iter()
            .map(|n| phase_id(n))
            .collect::<Result<Arc<[PhaseId]>, _>>()
            .map_err(invalid)?;
        let retries = match retries.extract::<u32>() {
            _ if retries.is_none() => None,
            Ok(r) if !retries.is_instance_of::<PyBool>() => Some(r),
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "retries must be a non-negative int, not {}",
                    retries.repr()?
                )));
            }
        };
        let tags = match plain_strings(tags) {
            Some(t) => t,
            None => python_helper(py, "_strings")?.call1((tags,))?.extract()?,
        };
        let timeout = duration(seconds(timeout, "timeout")?, "timeout").map_err(invalid)?;
        let backoff = duration(seconds(backoff, "backoff")?, "backoff")
            .map_err(invalid)?
            .map(|initial| Backoff {
                initial,
                ..Backoff::default()
            });
        Ok(Self {
            id: id.map(phase_id).transpose().map_err(invalid)?,
            needs,
            retries,
            timeout,
            backoff,
            tags,
            description,
            allow_failure: allow_failure.is_truthy()?,
            when,
        })
    }
}

/// What `@pipeline.phase(...)` returns: called with a function, adds it as a phase of
/// the pipeline and returns it unchanged.
#[pyclass(module = "orch._orch", name = "PhaseDecorator", frozen)]
pub struct PhaseDecorator {
    pipeline: Py<CorePipeline>,
    settings: FunctionSettings,
}

#[pymethods]
impl PhaseDecorator {
    fn __call__<'py>(&self, func: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = func.py();
        self.pipeline
            .bind(py)
            .borrow_mut()
            .add_function(func, &self.settings)
    }

    fn __repr__(&self) -> String {
        match &self.settings.id {
            Some(id) => format!("<orch phase decorator id={:?}>", id.as_str()),
            None => "<orch phase decorator>".to_owned(),
        }
    }
}

impl CorePipeline {
    /// The decorator's work: adds `func` as a phase (id: the settings' or its `__name__`;
    /// description: the settings' or its docstring's first line), marks it with
    /// `__orch_phase__`, and returns it.
    fn add_function<'py>(
        &mut self,
        func: Bound<'py, PyAny>,
        settings: &FunctionSettings,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = func.py();
        let id = match &settings.id {
            Some(id) => id.clone(),
            None => match func
                .getattr(pyo3::intern!(py, "__name__"))
                .and_then(|n| n.extract::<String>())
            {
                Ok(name) => phase_id(&name).map_err(|e| e.into_pyerr(py))?,
                Err(_) => {
                    return Err(pyo3::exceptions::PyValueError::new_err(format!(
                        "{} has no __name__: pass id=",
                        func.repr()?
                    )));
                }
            },
        };
        let description = settings.description.clone().or_else(|| {
            func.getattr(pyo3::intern!(py, "__doc__"))
                .ok()
                .and_then(|d| d.extract::<String>().ok())
                .and_then(|d| d.trim().lines().next().map(str::to_owned))
                .filter(|d| !d.is_empty())
        });
        let attr = |name: &Bound<'py, PyString>| {
            func.getattr(name)
                .ok()
                .and_then(|v| v.extract::<String>().ok())
        };
        let mut qualname = attr(pyo3::intern!(py, "__module__")).unwrap_or_else(|| "?".into());
        qualname.push('.');
        match attr(pyo3::intern!(py, "__qualname__")) {
            Some(q) => qualname.push_str(&q),
            None => qualname.push_str(id.as_str()),
        }
        let is_async = crate::phase::is_coroutine_function(&func)?;
        let mut spec = PhaseSpec::new(id.clone(), "python");
        spec.needs = settings.needs.iter().cloned().collect();
        spec.retries = settings.retries;
        spec.timeout = settings.timeout;
        spec.backoff = settings.backoff.map(Box::new);
        spec.tags = settings.tags.clone();
        spec.description = description;
        spec.allow_failure = settings.allow_failure;
        spec.when = settings.when.clone();
        let phase = PyPhase::new(
            func.clone().unbind(),
            is_async,
            qualname,
            settings.needs.clone(),
        );
        self.add(Extra {
            spec,
            python: Some(Arc::new(phase)),
        })
        .map_err(|e| e.into_pyerr(py))?;
        // Functions take attributes; other callables may not, which is fine.
        let _ = func.setattr(pyo3::intern!(py, "__orch_phase__"), id.as_str());
        Ok(func)
    }
}

#[pymethods]
impl CorePipeline {
    /// A pipeline built in code.
    #[new]
    #[pyo3(signature = (name, base_dir, jobs = None, state_dir = None, vars = None))]
    fn new(
        name: String,
        base_dir: PathBuf,
        jobs: Option<usize>,
        state_dir: Option<PathBuf>,
        vars: Option<IndexMap<String, String>>,
    ) -> Self {
        Self {
            name,
            base_dir,
            jobs,
            state_dir,
            vars: vars.unwrap_or_default(),
            file: None,
            extra: Vec::new(),
            ids: HashSet::default(),
            built: None,
        }
    }

    /// Loads and validates a pipeline file; raises `orch.ValidationError` with every
    /// problem found.
    #[staticmethod]
    #[pyo3(signature = (path, vars = None))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        vars: Option<IndexMap<String, String>>,
    ) -> PyResult<Self> {
        let options = LoadOptions {
            vars: vars.unwrap_or_default().into_iter().collect(),
        };
        let p = py
            .detach(|| Pipeline::load(&path, registry(), &options))
            .map_err(|e| Error::from(e).into_pyerr(py))?;
        let s = p.spec();
        Ok(Self {
            name: s.name.clone(),
            base_dir: s.base_dir.clone(),
            jobs: s.jobs,
            state_dir: Some(s.state_dir.clone()),
            vars: s.vars.clone(),
            ids: p.nodes().iter().map(|n| n.spec.id.clone()).collect(),
            file: Some(Arc::new(p)),
            extra: Vec::new(),
            built: None,
        })
    }

    /// The pipeline's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The directory relative paths resolve against.
    #[getter]
    fn base_dir(&self) -> String {
        self.base_dir.display().to_string()
    }

    /// The job limit, if set.
    #[getter]
    fn jobs(&self) -> Option<usize> {
        self.jobs
    }

    /// The state directory (runs, logs).
    #[getter]
    fn state_dir(&self) -> String {
        let rel = self
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".orch"));
        self.base_dir.join(rel).display().to_string()
    }

    /// The file it was loaded from, if any.
    #[getter]
    fn source(&self) -> Option<String> {
        self.file
            .as_ref()
            .and_then(|f| f.source_path())
            .map(|p| p.display().to_string())
    }

    /// Declared variables and their values.
    #[getter]
    fn vars(&self) -> IndexMap<String, String> {
        self.vars.clone()
    }

    /// Phase ids, in declaration order.
    #[getter]
    fn phase_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .file
            .iter()
            .flat_map(|f| f.nodes().iter().map(|n| n.spec.id.to_string()))
            .collect();
        ids.extend(self.extra.iter().map(|e| e.spec.id.to_string()));
        ids
    }

    /// Whether a phase with this id exists.
    fn has_phase(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// `orch.Pipeline.phase`: with `func`, adds it as a phase and returns it; without,
    /// returns the decorator that will. The settings are checked and converted here, once
    /// for every use of the decorator (see [`FunctionSettings::from_python`]).
    #[pyo3(signature = (func, id, needs, retries, timeout, backoff, tags, description, allow_failure, when))]
    #[allow(clippy::too_many_arguments)]
    fn phase<'py>(
        slf: Bound<'py, Self>,
        func: Option<Bound<'py, PyAny>>,
        id: Option<String>,
        needs: Bound<'py, PyAny>,
        retries: Bound<'py, PyAny>,
        timeout: Bound<'py, PyAny>,
        backoff: Bound<'py, PyAny>,
        tags: Bound<'py, PyAny>,
        description: Option<String>,
        allow_failure: Bound<'py, PyAny>,
        when: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let settings = FunctionSettings::from_python(
            id.as_deref(),
            &needs,
            &retries,
            &timeout,
            &backoff,
            &tags,
            description,
            &allow_failure,
            when,
        )?;
        match func {
            Some(func) => slf.borrow_mut().add_function(func, &settings),
            None => Ok(Bound::new(
                py,
                PhaseDecorator {
                    pipeline: slf.unbind(),
                    settings,
                },
            )?
            .into_any()),
        }
    }

    /// Adds a phase of a registered kind: `command` with `run` (a string for `sh -c`, a
    /// list for an argv), or any kind with its `with` table as JSON text.
    #[pyo3(signature = (id, kind, run, with_json, common))]
    fn add_kind(
        &mut self,
        py: Python<'_>,
        id: &str,
        kind: String,
        run: Option<Bound<'_, PyAny>>,
        with_json: Option<String>,
        common: Common,
    ) -> PyResult<()> {
        let run = match run {
            None => None,
            Some(r) => Some(match r.extract::<String>() {
                Ok(s) => RunSpec::Shell(s),
                Err(_) => RunSpec::Argv(r.extract::<Vec<String>>()?),
            }),
        };
        let go = || -> Result<(), Error> {
            let mut spec = PhaseSpec::new(phase_id(id)?, kind);
            spec.run = run;
            if let Some(text) = with_json {
                let table: toml::Table = serde_json::from_str(&text).map_err(|e| {
                    Error::invalid(format!(
                        "phase `{id}`: `with` must be a table of strings, numbers, booleans, lists and tables (no None): {e}"
                    ))
                })?;
                spec.with = WithTable::new(table);
            }
            common.apply(&mut spec)?;
            if registry().kind(&spec.kind).is_none() {
                let kinds: Vec<&str> = registry().kinds().map(|(k, _)| k).collect();
                let help = did_you_mean(&spec.kind, kinds.iter().copied())
                    .unwrap_or_else(|| format!("known kinds: {}", kinds.join(", ")));
                return Err(Error::invalid(format!(
                    "phase `{id}` has unknown kind `{}` ({help})",
                    spec.kind
                )));
            }
            // Built now, so its settings are checked where they are written (the pipeline
            // builds it again: kinds do no I/O when built).
            registry().build_phase(&spec).map_err(|e| {
                Error::invalid(format!("phase `{id}` ({}): {}", spec.kind, e.message))
            })?;
            self.add(Extra { spec, python: None })
        };
        go().map_err(|e| e.into_pyerr(py))
    }

    /// Validates the whole pipeline; raises `orch.ValidationError`.
    fn validate(&mut self, py: Python<'_>) -> PyResult<()> {
        self.build(&IndexMap::new())
            .map(drop)
            .map_err(|e| e.into_pyerr(py))
    }

    /// The plan as `(json, text)`.
    #[pyo3(signature = (jobs, only, skip, from_, vars))]
    fn plan(
        &mut self,
        py: Python<'_>,
        jobs: Option<usize>,
        only: Vec<String>,
        skip: Vec<String>,
        from_: Vec<String>,
        vars: IndexMap<String, String>,
    ) -> PyResult<(String, String)> {
        let go = || -> Result<(String, String), Error> {
            let p = self.build(&vars)?;
            let plan = Plan::new(&p, &selection(only, skip, from_), jobs)?;
            let json = serde_json::to_string(&plan)
                .map_err(|e| Error::Engine(format!("cannot serialize the plan: {e}")))?;
            Ok((json, plan.render()))
        };
        go().map_err(|e| e.into_pyerr(py))
    }

    /// Starts a run on the engine's threads and returns its handle at once.
    #[pyo3(signature = (jobs, only, skip, from_, keep_going, vars, grace, collect_events, event_loop, resume, record = true))]
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        py: Python<'_>,
        jobs: Option<usize>,
        only: Vec<String>,
        skip: Vec<String>,
        from_: Vec<String>,
        keep_going: bool,
        vars: IndexMap<String, String>,
        grace: f64,
        collect_events: bool,
        event_loop: Option<Py<PyAny>>,
        resume: Option<Bound<'_, PyAny>>,
        record: bool,
    ) -> PyResult<RunHandle> {
        let resume = resume_from(resume.as_ref()).map_err(|e| e.into_pyerr(py))?;
        let go = || -> Result<RunHandle, Error> {
            let pipeline = self.build(&vars)?;
            let selection = selection(only, skip, from_);
            selection.apply(&pipeline)?;
            let grace = duration(Some(grace), "grace")?.unwrap_or_default();
            let run_id = RunId::generate();
            let control = RunControl::new();
            let inbox = Arc::new(Inbox::default());
            let options = RunOptions {
                jobs,
                selection,
                keep_going,
                grace,
                run_id: Some(run_id.clone()),
                resume,
                write_files: record,
                ..RunOptions::default()
            };
            let vars = pipeline.spec().vars.clone();
            let base_dir = pipeline.spec().base_dir.display().to_string();
            let mut runner = Runner::new(pipeline, options);
            let state_dir = absolute(&runner.state_dir());
            let shared = Arc::new(RunShared::new(
                run_id.to_string(),
                state_dir
                    .join("runs")
                    .join(run_id.as_str())
                    .display()
                    .to_string(),
                base_dir,
                vars,
                control.clone(),
                event_loop,
            ));
            runner.subscribe(Arc::new(Sink {
                inbox: inbox.clone(),
                collect: collect_events,
            }));
            runs::register(run_id.as_str(), shared.clone());
            runs::spawn(runner, control.clone(), run_id.to_string(), inbox.clone())?;
            Ok(RunHandle {
                run_id: run_id.to_string(),
                shared,
                inbox,
                control,
                state_dir,
            })
        };
        go().map_err(|e| e.into_pyerr(py))
    }
}

/// `resume=`: `None`/`False` (a new run), `True` (the latest run) or a run id.
fn resume_from(value: Option<&Bound<'_, PyAny>>) -> Result<Option<ResumeFrom>, Error> {
    let Some(v) = value else { return Ok(None) };
    if v.is_none() {
        return Ok(None);
    }
    if let Ok(b) = v.extract::<bool>() {
        return Ok(b.then_some(ResumeFrom::Latest));
    }
    match v.extract::<String>() {
        Ok(id) => RunId::parse(&id)
            .map(|id| Some(ResumeFrom::Run(id)))
            .map_err(|e| Error::invalid(e.to_string())),
        Err(_) => Err(Error::invalid(
            "`resume` takes True (the latest run) or a run id",
        )),
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_non_negative_seconds() {
        assert_eq!(duration(None, "timeout").ok(), Some(None));
        assert_eq!(
            duration(Some(1.5), "timeout").ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = duration(Some(bad), "timeout").err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.starts_with("timeout must be")), "{bad}");
        }
    }

    #[test]
    fn selections_parse_ids_and_tags() {
        let s = selection(
            vec!["build".into(), "tag:slow".into()],
            vec!["lint".into()],
            vec!["test".into()],
        );
        assert_eq!(
            s.only,
            [Selector::Id("build".into()), Selector::Tag("slow".into())]
        );
        assert_eq!(s.skip, [Selector::Id("lint".into())]);
        assert_eq!(s.from, ["test"]);
    }
}
