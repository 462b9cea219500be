//! Selection: which phases of a pipeline a run executes (`--only`, `--skip`, `--from`).

use crate::errors::RunError;
use crate::pipeline::Pipeline;
use crate::record::Reason;

/// One selector: a phase id or `tag:T`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// A phase by id.
    Id(String),
    /// Every phase with this tag.
    Tag(String),
}

impl Selector {
    /// Parses `ID` or `tag:T`.
    pub fn parse(s: &str) -> Self {
        match s.strip_prefix("tag:") {
            Some(t) => Self::Tag(t.to_owned()),
            None => Self::Id(s.to_owned()),
        }
    }
}

/// Which phases to run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Run these and what they need (empty: everything).
    pub only: Vec<Selector>,
    /// Do not run these.
    pub skip: Vec<Selector>,
    /// Run these and everything after them (phases that transitively need them).
    pub from: Vec<String>,
}

impl Selection {
    /// Whether it selects everything.
    pub fn is_all(&self) -> bool {
        self.only.is_empty() && self.skip.is_empty() && self.from.is_empty()
    }

    fn matches(&self, p: &Pipeline, sel: &Selector) -> Result<Vec<usize>, RunError> {
        match sel {
            Selector::Id(id) => p.index_of(id).map(|i| vec![i]).ok_or_else(|| {
                let hint = crate::diagnostics::did_you_mean(
                    id,
                    p.nodes().iter().map(|n| n.spec.id.as_str()),
                )
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
                RunError::Selection(format!("no phase `{id}` in the pipeline{hint}"))
            }),
            Selector::Tag(t) => {
                let found: Vec<usize> = p
                    .nodes()
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.spec.tags.iter().any(|x| x == t))
                    .map(|(i, _)| i)
                    .collect();
                if found.is_empty() {
                    Err(RunError::Selection(format!("no phase has tag `{t}`")))
                } else {
                    Ok(found)
                }
            }
        }
    }

    /// For each phase, `None` when selected, or why not.
    pub fn apply(&self, p: &Pipeline) -> Result<Vec<Option<Reason>>, RunError> {
        let n = p.len();
        let mut reason: Vec<Option<Reason>> = vec![None; n];
        if !self.only.is_empty() {
            let mut keep = vec![false; n];
            let mut stack = Vec::new();
            for s in &self.only {
                stack.extend(self.matches(p, s)?);
            }
            while let Some(i) = stack.pop() {
                if !std::mem::replace(&mut keep[i], true) {
                    stack.extend(p.nodes()[i].needs.iter().map(|&k| k as usize));
                }
            }
            for i in 0..n {
                if !keep[i] {
                    reason[i] = Some(Reason::NotSelected);
                }
            }
        }
        if !self.from.is_empty() {
            let mut keep = vec![false; n];
            let mut stack = Vec::new();
            for id in &self.from {
                stack.extend(self.matches(p, &Selector::Id(id.clone()))?);
            }
            while let Some(i) = stack.pop() {
                if !std::mem::replace(&mut keep[i], true) {
                    stack.extend(p.nodes()[i].dependents.iter().map(|&k| k as usize));
                }
            }
            for i in 0..n {
                if !keep[i] && reason[i].is_none() {
                    reason[i] = Some(Reason::BeforeFrom);
                }
            }
        }
        for s in &self.skip {
            for i in self.matches(p, s)? {
                reason[i] = Some(Reason::SkippedBySelection);
            }
        }
        Ok(reason)
    }

    /// The phases it leaves out, with why, in declaration order: nothing (and no
    /// allocation) when it selects everything, as most runs do.
    pub(crate) fn unselected(&self, p: &Pipeline) -> Result<Vec<(usize, Reason)>, RunError> {
        if self.is_all() {
            return Ok(Vec::new());
        }
        Ok(self
            .apply(p)?
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r?)))
            .collect())
    }
}
