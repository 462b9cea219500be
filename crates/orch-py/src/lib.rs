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
    m.add_class::<runs::RunHandle>()?;
    m.add_class::<result::RunResult>()?;
    m.add_class::<result::PhaseResult>()?;
    m.add_class::<result::Event>()?;
    m.add_class::<phase::Context>()?;
    m.add_function(wrap_pyfunction!(kinds, m)?)?;
    m.add_function(wrap_pyfunction!(parse_duration, m)?)?;
    m.add_function(wrap_pyfunction!(_bench_engine, m)?)?;
    m.add_function(wrap_pyfunction!(phase::_current_context, m)?)?;
    Ok(())
}

struct Noop;
#[async_trait::async_trait]
impl orch_core::Phase for Noop {
    fn describe(&self, _: &orch_core::PlanContext<'_>) -> orch_core::Description {
        orch_core::Description::new("noop")
    }
    async fn run(
        &self,
        _: &orch_core::PhaseContext,
    ) -> Result<orch_core::PhaseOutcome, orch_core::PhaseError> {
        Ok(orch_core::PhaseOutcome::default())
    }
}

/// tmp
#[pyfunction]
fn _bench_engine(
    py: Python<'_>,
    layers: usize,
    width: usize,
    jobs: usize,
    dir: String,
    write_files: bool,
) -> f64 {
    use std::sync::Arc;
    let mut b = orch_core::Pipeline::builder("b", dir).jobs(jobs);
    for l in 0..layers {
        for i in 0..width {
            let id = orch_core::PhaseId::new(format!("l{l}_{i}")).unwrap();
            let needs: Vec<_> = if l == 0 {
                vec![]
            } else {
                vec![
                    orch_core::PhaseId::new(format!("l{}_{i}", l - 1)).unwrap(),
                    orch_core::PhaseId::new(format!("l{}_{}", l - 1, (i + 1) % width)).unwrap(),
                ]
            };
            b = b.custom(
                orch_core::PhaseSpec::new(id, "noop").needs(needs),
                Arc::new(Noop),
            );
        }
    }
    let p = Arc::new(b.build().unwrap());
    py.detach(|| {
        let rt = runtime::runtime().unwrap();
        let t = std::time::Instant::now();
        let h = rt.spawn(
            orch_core::Runner::new(
                p,
                orch_core::RunOptions {
                    write_files,
                    ..Default::default()
                },
            )
            .run(orch_core::RunControl::new()),
        );
        let r = rt.block_on(h).unwrap().unwrap();
        assert_eq!(r.phases.len(), layers * width);
        t.elapsed().as_secs_f64()
    })
}
