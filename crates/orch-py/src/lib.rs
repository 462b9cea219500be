//! `orch-py`: the orch engine as the Python module `orch`, built with maturin.
//!
//! The crate compiles to the extension `orch._orch`; the package `orch` (in `python/orch`)
//! wraps it in Python so the API reads as Python. Pipelines come from files (every kind
//! the `orch` binary knows) or from code, and Python functions become phases:
//!
//! ```python
//! import orch
//!
//! p = orch.Pipeline.load("orch.toml")          # file phases: build, ...
//!
//! @p.phase(needs=["build"], retries=2, timeout="1m")
//! def smoke(ctx: orch.Context) -> dict[str, str]:
//!     ctx.log(f"testing {ctx.outputs['build']['artifact']}")
//!     return {"ok": "yes"}
//!
//! result = p.run(jobs=4, on_event=print)
//! print(result.status, result.phases["smoke"].outputs)
//! ```
//!
//! How it runs: the engine runs on a process-wide tokio runtime with the GIL released; a
//! Python phase is a [`phase::PyPhase`] whose calls run in a pool of threads that keep
//! their interpreter thread state and hold the GIL only while they call Python; events
//! reach `on_event` in the thread that called `run()` (see [`runs`]). Errors map to one
//! Python hierarchy in [`errors`].

pub mod errors;
pub mod phase;
pub mod pipeline;
pub mod pool;
pub mod result;
pub mod runs;
pub mod runtime;

use pyo3::prelude::*;

/// Every phase kind this build knows, as `(kind, agent type, summary)`.
#[pyfunction]
fn kinds() -> Vec<(String, String, String)> {
    runtime::registry()
        .kinds()
        .filter(|(k, _)| !k.starts_with('\u{0}'))
        .map(|(k, e)| (k.to_owned(), e.agent_type.clone(), e.summary.clone()))
        .collect()
}

/// Parses a duration such as `"250ms"`, `"30s"` or `"1h 5m"` into seconds.
#[pyfunction]
fn parse_duration(py: Python<'_>, text: &str) -> PyResult<f64> {
    humantime::parse_duration(text.trim())
        .map(|d| d.as_secs_f64())
        .map_err(|e| {
            errors::Error::invalid(format!("invalid duration `{text}`: {e}")).into_pyerr(py)
        })
}

/// The extension module `orch._orch`.
#[pymodule]
#[pyo3(name = "_orch")]
fn orch_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<pipeline::CorePipeline>()?;
    m.add_class::<pipeline::PhaseDecorator>()?;
    m.add_class::<runs::RunHandle>()?;
    m.add_class::<result::RunResult>()?;
    m.add_class::<result::PhaseResult>()?;
    m.add_class::<result::Event>()?;
    m.add_class::<phase::Context>()?;
    m.add_function(wrap_pyfunction!(kinds, m)?)?;
    m.add_function(wrap_pyfunction!(parse_duration, m)?)?;
    m.add_function(wrap_pyfunction!(phase::_current_context, m)?)?;
    m.add_function(wrap_pyfunction!(pool::_after_fork_in_child, m)?)?;
    Ok(())
}
