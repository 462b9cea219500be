//! Errors of the module and the one place where they become Python exceptions.
//!
//! The Python hierarchy lives in `orch/_errors.py` (so it has real constructors,
//! attributes and docstrings); [`Error::into_pyerr`] instantiates it:
//!
//! ```text
//! orch.OrchError
//! ├── orch.ValidationError   file, line, column, problems (every problem found)
//! ├── orch.PipelineFailed    result (raised by the Python layer, from a RunResult)
//! └── orch.RunError          the run could not be carried out (state dir, selection)
//! ```

use orch_core::diagnostics::Diagnostics;
pub use orch_core::errors::chain;
use orch_core::{LoadError, RunError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};

/// Something the module reports to Python as an `orch.OrchError`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline file or a pipeline built in code is invalid.
    #[error("{0}")]
    Load(#[from] LoadError),
    /// An argument given in code is invalid (a phase id, a var, a duration).
    #[error("{message}")]
    Invalid {
        /// What is wrong, as a lowercase fragment.
        message: String,
    },
    /// The run could not be carried out.
    #[error("{0}")]
    Run(#[from] RunError),
    /// The run failed to complete, as one line (kept after the engine's error is gone).
    #[error("{0}")]
    Engine(String),
}

impl Error {
    /// An invalid argument.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
        }
    }

    /// The Python exception for this error.
    pub fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self.build(py) {
            Ok(e) => e,
            Err(e) => e,
        }
    }

    fn build(self, py: Python<'_>) -> PyResult<PyErr> {
        let module = errors_module(py)?;
        let kwargs = PyDict::new(py);
        let class = match &self {
            Error::Load(LoadError::Invalid(d)) => {
                fill_diagnostics(py, &kwargs, d)?;
                "ValidationError"
            }
            Error::Load(LoadError::Read { path, source }) => {
                let message = format!("cannot read pipeline file {}: {source}", path.display());
                kwargs.set_item("file", path_str(path))?;
                kwargs.set_item("problems", vec![problem(py, &message, None, None, None)?])?;
                kwargs.set_item("message", message)?;
                "ValidationError"
            }
            Error::Load(LoadError::Policy(e)) => {
                // A policy file's syntax error points into that file.
                let message = format!("invalid policy: {e}");
                let (file, line, column) = match e {
                    orch_core::policy::PolicyError::Syntax {
                        path, line, column, ..
                    } => (
                        Some(path_str(path)),
                        Some(*line as usize),
                        Some(*column as usize),
                    ),
                    _ => (None, None, None),
                };
                kwargs.set_item("file", file)?;
                kwargs.set_item("problems", vec![problem(py, &message, line, column, None)?])?;
                kwargs.set_item("message", message)?;
                "ValidationError"
            }
            Error::Invalid { message } => {
                kwargs.set_item("problems", vec![problem(py, message, None, None, None)?])?;
                kwargs.set_item("message", message)?;
                "ValidationError"
            }
            Error::Run(_) | Error::Engine(_) => {
                kwargs.set_item("message", chain(&self))?;
                "RunError"
            }
        };
        let class = module.getattr(class)?;
        let value = class.call((), Some(&kwargs))?;
        Ok(PyErr::from_value(value))
    }
}

impl From<Error> for PyErr {
    fn from(e: Error) -> Self {
        Python::attach(|py| e.into_pyerr(py))
    }
}

fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    MODULE
        .get_or_try_init(py, || py.import("orch._errors").map(Bound::unbind))
        .map(|m| m.bind(py))
}

fn problem<'py>(
    py: Python<'py>,
    message: &str,
    line: Option<usize>,
    column: Option<usize>,
    help: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    errors_module(py)?
        .getattr("Problem")?
        .call1((message, line, column, help))
}

fn fill_diagnostics(py: Python<'_>, kwargs: &Bound<'_, PyDict>, d: &Diagnostics) -> PyResult<()> {
    let problems = PyList::empty(py);
    for item in &d.items {
        problems.append(problem(
            py,
            &item.message,
            item.line,
            item.column,
            item.help.as_deref(),
        )?)?;
    }
    let first = d.items.first();
    kwargs.set_item("file", d.path().map(path_str))?;
    kwargs.set_item("line", first.and_then(|f| f.line))?;
    kwargs.set_item("column", first.and_then(|f| f.column))?;
    kwargs.set_item("problems", problems)?;
    let text = if d.source.is_some() {
        d.render().trim_end().to_owned()
    } else {
        d.items
            .iter()
            .map(|i| match &i.help {
                Some(h) => format!("{} ({h})", i.message),
                None => i.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    kwargs.set_item("message", text)?;
    Ok(())
}

/// A failure inside the binding itself (not the user's doing).
pub fn internal(message: impl Into<String>) -> PyErr {
    PyRuntimeError::new_err(message.into())
}
