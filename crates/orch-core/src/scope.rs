//! Interpolation scopes of a pipeline: at plan time (outputs not known yet) and at run time.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;

use crate::errors::InterpolationError;

use crate::interpolate::{Reference, Scope};
use crate::pipeline::Pipeline;
use crate::record::Outputs;

/// Plan-time scope: vars are known, outputs show as `<phases.ID.outputs.KEY>`.
pub(crate) struct PlanScope<'a> {
    vars: &'a IndexMap<String, String>,
}

impl<'a> PlanScope<'a> {
    pub(crate) fn new(p: &'a Pipeline) -> Self {
        Self {
            vars: &p.spec().vars,
        }
    }
}

impl Scope for PlanScope<'_> {
    fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError> {
        match r {
            Reference::Var(k) => self
                .vars
                .get(k)
                .map(|v| Cow::Borrowed(v.as_str()))
                .ok_or_else(|| InterpolationError::UnknownVar { name: k.clone() }),
            Reference::RunId => Ok(Cow::Borrowed("<run.id>")),
            Reference::Output { .. } => Ok(Cow::Owned(format!("<{r}>"))),
        }
    }
}

/// Outputs of the phases of a run, filled as phases finish.
pub(crate) struct OutputStore {
    slots: Vec<OnceLock<Arc<Outputs>>>,
}

impl OutputStore {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            slots: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    pub(crate) fn set(&self, i: usize, o: Arc<Outputs>) {
        let _ = self.slots[i].set(o);
    }

    pub(crate) fn get(&self, i: usize) -> Option<&Arc<Outputs>> {
        self.slots[i].get()
    }
}

/// Run-time scope, shared by every phase of a run.
pub(crate) struct RunScope {
    pub(crate) run_id: String,
    pub(crate) vars: Arc<IndexMap<String, String>>,
    pub(crate) index: Arc<crate::pipeline::IdMap<usize>>,
    pub(crate) outputs: Arc<OutputStore>,
}

impl Scope for RunScope {
    fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError> {
        match r {
            Reference::RunId => Ok(Cow::Borrowed(&self.run_id)),
            Reference::Var(k) => self
                .vars
                .get(k)
                .map(|v| Cow::Borrowed(v.as_str()))
                .ok_or_else(|| InterpolationError::UnknownVar { name: k.clone() }),
            Reference::Output { phase, key } => {
                let i = self.index.get(phase.as_str()).ok_or_else(|| {
                    InterpolationError::NotNeeded {
                        phase: phase.clone(),
                    }
                })?;
                let outputs =
                    self.outputs
                        .get(*i)
                        .ok_or_else(|| InterpolationError::MissingOutput {
                            phase: phase.clone(),
                            key: key.clone(),
                        })?;
                outputs
                    .get(key)
                    .map(|v| Cow::Borrowed(v.as_str()))
                    .ok_or_else(|| InterpolationError::MissingOutput {
                        phase: phase.clone(),
                        key: key.clone(),
                    })
            }
        }
    }

    fn vars(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn phase_outputs(&self, phase: &str) -> Option<Outputs> {
        let i = self.index.get(phase)?;
        self.outputs.get(*i).map(|o| (**o).clone())
    }
}
