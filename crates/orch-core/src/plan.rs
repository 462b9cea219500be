//! The plan: what a run would do, in order, with no side effects.

use std::fmt::Write as _;
use std::time::Duration;

use crate::errors::RunError;
use crate::phase::{Description, PlanContext};
use crate::pipeline::Pipeline;
use crate::scope::PlanScope;
use crate::select::Selection;

/// One planned phase.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PlannedPhase {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// The agent that would run it.
    pub agent: String,
    /// What it would do.
    pub summary: String,
    /// Settings worth showing.
    pub details: Vec<(String, String)>,
    /// What it would change outside the state directory.
    pub changes: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Names of the environment variables it sets (values are not shown).
    pub env: Vec<String>,
    /// Secrets it receives (names only).
    pub secrets: Vec<String>,
    /// Timeout of one attempt.
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Extra attempts.
    pub retries: u32,
    /// Phases it needs.
    pub needs: Vec<String>,
    /// Its `when` condition.
    pub when: Option<String>,
    /// Allowed to fail.
    pub allow_failure: bool,
    /// Why `[policy]` would keep it from starting, when it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<String>,
}

mod opt_duration {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

/// The ordered plan: waves of phases that could run together.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Plan {
    /// Pipeline name.
    pub pipeline: String,
    /// Job limit.
    pub jobs: usize,
    /// Waves: each wave's phases need only phases of earlier waves.
    pub waves: Vec<Vec<PlannedPhase>>,
    /// Phases left out, with why.
    pub not_selected: Vec<(String, String)>,
}

impl Plan {
    /// Plans a run of `pipeline` with `selection`.
    pub fn new(
        pipeline: &Pipeline,
        selection: &Selection,
        jobs: Option<usize>,
    ) -> Result<Self, RunError> {
        let reasons = selection.apply(pipeline)?;
        let nodes = pipeline.nodes();
        let mut level = vec![0usize; nodes.len()];
        let mut max_level = 0;
        // Nodes are in declaration order, which need not be topological: compute levels
        // in topological order.
        for i in topo_order(pipeline) {
            let l = nodes[i]
                .needs
                .iter()
                .filter(|&&k| reasons[k as usize].is_none())
                .map(|&k| level[k as usize] + 1)
                .max()
                .unwrap_or(0);
            level[i] = l;
            if reasons[i].is_none() {
                max_level = max_level.max(l);
            }
        }
        let scope = PlanScope::new(pipeline);
        // The policy sees what a run would give it (run id `plan`).
        let mut policy = pipeline.policy().map(|p| {
            let run = crate::policy::RunInput::of(pipeline, "plan");
            let git = crate::policy::GitInput::read(&pipeline.spec().base_dir);
            (p.evaluator(), run, git)
        });
        let mut waves: Vec<Vec<PlannedPhase>> = vec![Vec::new(); max_level + 1];
        let mut not_selected = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            if let Some(r) = &reasons[i] {
                not_selected.push((n.spec.id.to_string(), r.to_string()));
                continue;
            }
            let base = &pipeline.spec().base_dir;
            let mut ctx = PlanContext::new(&n.spec.id, base, &scope);
            if let Some(cwd) = &n.spec.cwd {
                ctx.workdir = base.join(ctx.render(cwd));
            }
            let Description {
                summary,
                details,
                changes,
            } = n.phase.describe(&ctx);
            let denied = policy.as_mut().and_then(|(eval, run, git)| {
                let input = crate::policy::Input {
                    phase: crate::policy::PhaseInput::of(pipeline, i),
                    run: run.clone(),
                    git: git.clone(),
                };
                match eval.decide(&input.to_json()) {
                    Ok(d) if d.permits() => None,
                    Ok(d) => Some(d.reason()),
                    Err(e) => Some(format!(
                        "denied by policy: evaluation for phase `{}` failed: {e}",
                        n.spec.id
                    )),
                }
            });
            waves[level[i]].push(PlannedPhase {
                id: n.spec.id.to_string(),
                kind: n.spec.kind.to_string(),
                agent: pipeline.agents()[n.agent].name.clone(),
                summary,
                details,
                changes,
                cwd: ctx.workdir().display().to_string(),
                env: n.spec.env.keys().cloned().collect(),
                secrets: n.spec.secrets.clone(),
                timeout: n.spec.timeout,
                retries: n.spec.retry_limit(),
                needs: n.spec.needs.iter().map(ToString::to_string).collect(),
                when: n.spec.when.clone(),
                allow_failure: n.spec.allow_failure,
                denied,
            });
        }
        waves.retain(|w| !w.is_empty());
        Ok(Self {
            pipeline: pipeline.name().to_owned(),
            jobs: jobs
                .or(pipeline.spec().jobs)
                .unwrap_or_else(crate::pipeline::default_jobs),
            waves,
            not_selected,
        })
    }

    /// Number of phases that would run.
    pub fn len(&self) -> usize {
        self.waves.iter().map(Vec::len).sum()
    }

    /// Whether nothing would run.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Renders the plan for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "plan for `{}`: {} phase{} in {} wave{}, {} at once",
            self.pipeline,
            self.len(),
            if self.len() == 1 { "" } else { "s" },
            self.waves.len(),
            if self.waves.len() == 1 { "" } else { "s" },
            self.jobs
        );
        let denied = self
            .waves
            .iter()
            .flatten()
            .filter(|p| p.denied.is_some())
            .count();
        if denied > 0 {
            let _ = writeln!(
                out,
                "the policy denies {denied} phase{} (they would fail without running)",
                if denied == 1 { "" } else { "s" }
            );
        }
        for (w, wave) in self.waves.iter().enumerate() {
            let _ = writeln!(out, "\nwave {}:", w + 1);
            for p in wave {
                let _ = writeln!(out, "  {} [{} on {}]", p.id, p.kind, p.agent);
                if let Some(why) = &p.denied {
                    let why = why.strip_prefix("denied by policy: ").unwrap_or(why);
                    let _ = writeln!(out, "      DENIED by policy: {why}");
                }
                let _ = writeln!(out, "      does: {}", p.summary);
                if !p.needs.is_empty() {
                    let _ = writeln!(out, "      needs: {}", p.needs.join(", "));
                }
                if let Some(w) = &p.when {
                    let _ = writeln!(out, "      when: {w}");
                }
                let _ = writeln!(out, "      cwd: {}", p.cwd);
                if !p.env.is_empty() {
                    let _ = writeln!(out, "      env: {}", p.env.join(", "));
                }
                if !p.secrets.is_empty() {
                    let _ = writeln!(out, "      secrets: {}", p.secrets.join(", "));
                }
                let timeout = p.timeout.map_or_else(
                    || "none".to_owned(),
                    |d| humantime::format_duration(d).to_string(),
                );
                let _ = writeln!(
                    out,
                    "      timeout: {timeout}, retries: {}{}",
                    p.retries,
                    if p.allow_failure {
                        ", allowed to fail"
                    } else {
                        ""
                    }
                );
                for (k, v) in &p.details {
                    let _ = writeln!(out, "      {k}: {v}");
                }
                for c in &p.changes {
                    let _ = writeln!(out, "      changes: {c}");
                }
            }
        }
        if !self.not_selected.is_empty() {
            let _ = writeln!(out, "\nnot run:");
            for (id, why) in &self.not_selected {
                let _ = writeln!(out, "  {id}: {why}");
            }
        }
        out
    }
}

/// Phase indices in a topological order that follows declaration order where it can
/// (Kahn's algorithm with a min-heap of ready indices).
pub fn topo_order(p: &Pipeline) -> Vec<usize> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let nodes = p.nodes();
    let mut indeg: Vec<usize> = nodes.iter().map(|n| n.needs.len()).collect();
    let mut heap: BinaryHeap<Reverse<usize>> = (0..nodes.len())
        .filter(|&i| indeg[i] == 0)
        .map(Reverse)
        .collect();
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = heap.pop() {
        out.push(i);
        for &d in &nodes[i].dependents {
            let d = d as usize;
            indeg[d] -= 1;
            if indeg[d] == 0 {
                heap.push(Reverse(d));
            }
        }
    }
    out
}
