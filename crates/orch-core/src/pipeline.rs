//! A validated pipeline: phases built by their kinds, the DAG, agents resolved.

use std::collections::HashMap;

/// Maps keyed by phase id: ids are short strings made by the pipeline's author, so a
/// fast non-cryptographic hash suits them.
pub(crate) type IdMap<V> = HashMap<PhaseId, V, foldhash::fast::RandomState>;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostics::{Diagnostic, Diagnostics, Source, did_you_mean};
use crate::errors::LoadError;
use crate::expr;
use crate::file::{self, FileSpans, PhaseSpans};
use crate::ids::PhaseId;
use crate::interpolate::{self, Reference};
use crate::phase::Phase;
use crate::policy::{Policy, PolicyError};
use crate::registry::Registry;
use crate::spec::{
    AgentSpec, BreakerSpec, MAX_JOBS, MAX_RETRIES, PhaseSpec, PipelineSpec, RunSpec, Unavailable,
    WithTable,
};

/// One phase of a validated pipeline.
pub struct Node {
    /// Its declaration.
    pub spec: PhaseSpec,
    /// Its implementation.
    pub phase: Arc<dyn Phase>,
    /// Index of its agent in [`Pipeline::agents`].
    pub agent: usize,
    /// Indices of the phases it needs.
    pub needs: Vec<u32>,
    /// Indices of the phases that need it.
    pub dependents: Vec<u32>,
}

/// A validated pipeline, ready to plan or run.
pub struct Pipeline {
    pub(crate) spec: PipelineSpec,
    pub(crate) nodes: Vec<Node>,
    pub(crate) index: Arc<IdMap<usize>>,
    pub(crate) agents: Vec<AgentSpec>,
    pub(crate) registry: Registry,
    pub(crate) source: Option<Source>,
    pub(crate) policy: Option<Arc<Policy>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.spec.name)
            .field("phases", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

/// Options for loading a pipeline file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--var KEY=VALUE` overrides, in order.
    pub vars: Vec<(String, String)>,
}

impl Pipeline {
    /// Loads and validates a pipeline file, reporting every problem at once.
    pub fn load(
        path: &Path,
        registry: &Registry,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let text = crate::input::read_regular_text(path, crate::input::MAX_PIPELINE_FILE).map_err(
            |source| LoadError::Read {
                path: path.to_owned(),
                source,
            },
        )?;
        Self::from_str(&text, path, registry, options)
    }

    /// Validates pipeline text as if read from `path`.
    pub fn from_str(
        text: &str,
        path: &Path,
        registry: &Registry,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let source = Source {
            path: path.to_owned(),
            text: Arc::from(text),
        };
        let (mut spec, spans, mut diags) = match file::parse(text, path) {
            Ok(parsed) => parsed,
            Err(diags) => return Err(LoadError::Invalid(Diagnostics::new(Some(source), diags))),
        };
        for (k, v) in &options.vars {
            if spec.vars.contains_key(k) {
                spec.vars.insert(k.clone(), v.clone());
            } else {
                let mut d = Diagnostic::at(
                    None,
                    format!("`--var {k}=...` sets a variable that [vars] does not declare"),
                );
                if let Some(help) = did_you_mean(k, spec.vars.keys().map(String::as_str)) {
                    d = d.with_help(help);
                } else {
                    d = d.with_help(format!("declare it in [vars]: `{k} = \"...\"`"));
                }
                diags.push(d);
            }
        }
        match validate(spec, Some(&spans), registry, diags, &IdMap::default()) {
            Ok(mut p) => {
                if let Some(policy) = &p.spec.policy {
                    match Policy::load(&p.spec.base_dir, policy) {
                        Ok(policy) => p.policy = Some(Arc::new(policy)),
                        Err(e @ (PolicyError::NoFiles { .. } | PolicyError::Pattern { .. })) => {
                            let pattern = match &e {
                                PolicyError::NoFiles { pattern, .. }
                                | PolicyError::Pattern { pattern, .. } => pattern.clone(),
                                _ => String::new(),
                            };
                            let span = policy
                                .files
                                .iter()
                                .position(|f| *f == pattern)
                                .and_then(|k| spans.policy_files.get(k).cloned());
                            let d = Diagnostic::at(span, e.to_string())
                                .with_help("`[policy] files` are relative to the pipeline file");
                            return Err(LoadError::Invalid(Diagnostics::new(
                                Some(source),
                                vec![d],
                            )));
                        }
                        Err(e) => return Err(LoadError::Policy(e)),
                    }
                }
                p.source = Some(source);
                Ok(p)
            }
            Err(items) => Err(LoadError::Invalid(Diagnostics::new(Some(source), items))),
        }
    }

    /// Starts a pipeline in code.
    ///
    /// ```
    /// use orch_core::{Pipeline, PhaseId, PhaseSpec, RunSpec};
    /// let p = Pipeline::builder("demo", ".")
    ///     .phase(PhaseSpec::command(PhaseId::new("hello")?, RunSpec::Argv(vec!["true".into()])))
    ///     .build()?;
    /// assert_eq!(p.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(name: impl Into<String>, base_dir: impl Into<PathBuf>) -> PipelineBuilder {
        PipelineBuilder {
            spec: PipelineSpec::new(name, base_dir),
            registry: Registry::with_builtins(),
            custom: IdMap::default(),
            policy: None,
        }
    }

    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Number of phases.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no phases.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The declaration: name, jobs, vars, agents, directories. Its `phases` are empty once
    /// validated: each phase's declaration moved into its [`Node`] (see [`Pipeline::nodes`]),
    /// so a pipeline of 100k phases does not keep two copies.
    pub fn spec(&self) -> &PipelineSpec {
        &self.spec
    }

    /// The phases, in declaration order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// A phase's index by id.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The agents phases run on.
    pub fn agents(&self) -> &[AgentSpec] {
        &self.agents
    }

    /// The registry the pipeline was built with.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The compiled `[policy]`, when there is one.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        self.policy.as_ref()
    }

    /// Sets (or removes) the policy every run of this pipeline is held to.
    pub fn set_policy(&mut self, policy: Option<Arc<Policy>>) {
        self.policy = policy;
    }

    /// The file the pipeline came from, if any.
    pub fn source_path(&self) -> Option<&Path> {
        self.spec.source_path.as_deref()
    }

    /// The state directory, resolved against the pipeline's directory.
    pub fn state_dir(&self) -> PathBuf {
        self.spec.base_dir.join(&self.spec.state_dir)
    }

    /// The DAG as a petgraph graph: node weights are phase indices, edges go from a phase
    /// to the phases that need it.
    pub fn graph(&self) -> DiGraph<usize, ()> {
        let mut g = DiGraph::with_capacity(self.nodes.len(), 0);
        for i in 0..self.nodes.len() {
            g.add_node(i);
        }
        for (i, n) in self.nodes.iter().enumerate() {
            for &d in &n.needs {
                g.add_edge(NodeIndex::new(d as usize), NodeIndex::new(i), ());
            }
        }
        g
    }
}

/// Builds a pipeline in code, with the registry's kinds or your own [`Phase`]s.
pub struct PipelineBuilder {
    spec: PipelineSpec,
    registry: Registry,
    custom: IdMap<Arc<dyn Phase>>,
    policy: Option<Arc<Policy>>,
}

impl PipelineBuilder {
    /// Sets the job limit.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.spec.jobs = Some(jobs.max(1));
        self
    }

    /// Sets the state directory (relative to the base dir).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spec.state_dir = dir.into();
        self
    }

    /// Adds a var.
    pub fn var(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.spec.vars.insert(k.into(), v.into());
        self
    }

    /// Uses this registry for kinds and agent types.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Adds an agent.
    pub fn agent(mut self, agent: AgentSpec) -> Self {
        self.spec.agents.insert(agent.name.clone(), agent);
        self
    }

    /// Adds a phase of a registered kind.
    pub fn phase(mut self, spec: PhaseSpec) -> Self {
        self.spec.phases.push(spec);
        self
    }

    /// Adds a phase with its own implementation; `spec.kind` is free-form (shown in plans
    /// and records) and the phase runs on `spec.agent` or the local agent.
    pub fn custom(mut self, spec: PhaseSpec, phase: Arc<dyn Phase>) -> Self {
        self.custom.insert(spec.id.clone(), phase);
        self.spec.phases.push(spec);
        self
    }

    /// Holds every run to `policy` (see [`crate::policy`]).
    pub fn policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Pipeline, LoadError> {
        let mut p = validate(self.spec, None, &self.registry, Vec::new(), &self.custom)
            .map_err(|items| LoadError::Invalid(Diagnostics::new(None, items)))?;
        p.policy = self.policy;
        Ok(p)
    }
}

fn span_of(
    spans: Option<&FileSpans>,
    i: usize,
    f: impl Fn(&PhaseSpans) -> Option<std::ops::Range<usize>>,
) -> Option<std::ops::Range<usize>> {
    spans.and_then(|s| s.phases.get(i)).and_then(f)
}

/// Every template string of a phase, with where it stands.
fn templates(p: &PhaseSpec) -> Vec<String> {
    let mut out = Vec::new();
    match &p.run {
        Some(RunSpec::Shell(s)) => out.push(s.clone()),
        Some(RunSpec::Argv(v)) => out.extend(v.iter().cloned()),
        None => {}
    }
    out.extend(p.env.values().cloned());
    out.extend(p.cwd.iter().cloned());
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            toml::Value::Table(t) => t.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    for v in p.with.table().values() {
        walk(v, &mut out);
    }
    out
}

fn validate(
    mut spec: PipelineSpec,
    spans: Option<&FileSpans>,
    registry: &Registry,
    mut diags: Vec<Diagnostic>,
    custom: &IdMap<Arc<dyn Phase>>,
) -> Result<Pipeline, Vec<Diagnostic>> {
    // Phases run in their own working directories: every path the engine hands them
    // (ORCH_OUTPUT, the run dir, resolved settings) must not depend on where orch started.
    if let Ok(abs) = std::path::absolute(&spec.base_dir) {
        spec.base_dir = abs;
    }
    // The file's walk checks these ranges at their positions; pipelines built in code come
    // through here only.
    if let Some(j) = spec.jobs
        && !(1..=MAX_JOBS).contains(&j)
    {
        diags.push(Diagnostic::at(
            None,
            format!("`jobs` must be between 1 and {MAX_JOBS}, not {j}"),
        ));
    }
    for (i, p) in spec.phases.iter().enumerate() {
        if p.retries > MAX_RETRIES {
            diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.id.clone()),
                format!(
                    "phase `{}`: `retries` must be at most {MAX_RETRIES}, not {}",
                    p.id, p.retries
                ),
            ));
        }
    }
    let mut index = IdMap::with_capacity_and_hasher(spec.phases.len(), Default::default());
    for (i, p) in spec.phases.iter().enumerate() {
        if index.insert(p.id.clone(), i).is_some() {
            diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.id.clone()),
                format!("phase `{}` is declared twice", p.id),
            ));
        }
    }
    let ids: Vec<&str> = spec.phases.iter().map(|p| p.id.as_str()).collect();

    // Agents: declared ones, then implied ones per type.
    let jobs = spec.jobs.unwrap_or_else(default_jobs);
    let mut agents: Vec<AgentSpec> = spec.agents.values().cloned().collect();
    for a in &agents {
        if !registry.has_agent_type(&a.agent_type) {
            let span = spans
                .and_then(|s| s.agents.get(&a.name))
                .and_then(|s| s.0.clone());
            let mut d = Diagnostic::at(
                span,
                format!("agent `{}` has unknown type `{}`", a.name, a.agent_type),
            );
            if let Some(h) = did_you_mean(&a.agent_type, registry.agent_types()) {
                d = d.with_help(h);
            }
            diags.push(d);
        } else if let Err(e) = registry.build_agent(a, jobs) {
            let span = e.span.clone().or_else(|| {
                spans
                    .and_then(|s| s.agents.get(&a.name))
                    .and_then(|s| s.0.clone())
            });
            diags.push(Diagnostic::at(
                span,
                format!("agent `{}`: {}", a.name, e.message),
            ));
        }
    }

    let mut nodes: Vec<Node> = Vec::with_capacity(spec.phases.len());
    let mut phase_agents = Vec::with_capacity(spec.phases.len());
    for (i, p) in spec.phases.iter().enumerate() {
        // needs
        let mut needs = Vec::with_capacity(p.needs.len());
        for (j, n) in p.needs.iter().enumerate() {
            match index.get(n) {
                Some(&k) if k == i => diags.push(Diagnostic::at(
                    span_of(spans, i, |s| s.needs.get(j).cloned()),
                    format!("phase `{}` needs itself", p.id),
                )),
                Some(&k) => needs.push(k as u32),
                None => {
                    let mut d = Diagnostic::at(
                        span_of(spans, i, |s| s.needs.get(j).cloned()),
                        format!("phase `{}` needs `{n}`, which is not a phase", p.id),
                    );
                    if let Some(h) = did_you_mean(n.as_str(), ids.iter().copied()) {
                        d = d.with_help(h);
                    }
                    diags.push(d);
                }
            }
        }
        needs.sort_unstable();
        needs.dedup();

        // kind (phases built in code bring their own implementation)
        let custom_phase = custom.get(&p.id);
        let kind_entry = registry.kind(&p.kind);
        let phase = match kind_entry {
            _ if custom_phase.is_some() => custom_phase.cloned(),
            None => {
                let mut d = Diagnostic::at(
                    span_of(spans, i, |s| s.kind.clone().or_else(|| s.id.clone())),
                    format!("phase `{}` has unknown kind `{}`", p.id, p.kind),
                );
                let kinds: Vec<&str> = registry
                    .kinds()
                    .map(|(k, _)| k)
                    .filter(|k| !k.starts_with('\u{0}'))
                    .collect();
                d = d.with_help(
                    did_you_mean(&p.kind, kinds.iter().copied())
                        .unwrap_or_else(|| format!("known kinds: {}", kinds.join(", "))),
                );
                diags.push(d);
                None
            }
            Some(_) => match registry.build_phase(p) {
                Ok(ph) => Some(ph),
                Err(e) => {
                    let span = e.span.clone().or_else(|| {
                        span_of(spans, i, |s| {
                            s.with
                                .clone()
                                .or_else(|| s.run.clone())
                                .or_else(|| s.id.clone())
                        })
                    });
                    diags.push(Diagnostic::at(
                        span,
                        format!("phase `{}` ({}): {}", p.id, p.kind, e.message),
                    ));
                    None
                }
            },
        };

        // agent
        let agent_type = kind_entry
            .filter(|_| custom_phase.is_none())
            .map(|k| k.agent_type.clone())
            .unwrap_or_else(|| "local".into());
        let agent = match &p.agent {
            Some(name) => match agents.iter().position(|a| &a.name == name) {
                Some(ai)
                    if agents[ai].agent_type == agent_type
                        || kind_entry.is_none()
                        || custom_phase.is_some() =>
                {
                    Some(ai)
                }
                Some(ai) => {
                    diags.push(Diagnostic::at(
                        span_of(spans, i, |s| s.agent.clone()),
                        format!("phase `{}` ({}) runs on {agent_type} agents, but agent `{name}` is a {} agent", p.id, p.kind, agents[ai].agent_type),
                    ));
                    None
                }
                None => {
                    let mut d = Diagnostic::at(
                        span_of(spans, i, |s| s.agent.clone()),
                        format!(
                            "phase `{}` names agent `{name}`, which is not declared",
                            p.id
                        ),
                    );
                    if let Some(h) = did_you_mean(name, agents.iter().map(|a| a.name.as_str())) {
                        d = d.with_help(h);
                    }
                    diags.push(d);
                    None
                }
            },
            // The implicit `local` agent serves local kinds unless one is declared under
            // that name; other types go to the first declared agent of their type.
            None => Some(
                match agents.iter().position(|a| {
                    a.agent_type == agent_type && (agent_type != "local" || a.name == "local")
                }) {
                    Some(ai) => ai,
                    None => {
                        agents.push(AgentSpec {
                            name: agent_type.clone(),
                            agent_type: agent_type.clone(),
                            capacity: None,
                            with: WithTable::default(),
                            breaker: if agent_type == "local" {
                                BreakerSpec {
                                    failures: 0,
                                    ..BreakerSpec::default()
                                }
                            } else {
                                BreakerSpec::default()
                            },
                            unavailable: Unavailable::Fail,
                        });
                        agents.len() - 1
                    }
                },
            ),
        };
        phase_agents.push(agent.unwrap_or(0));

        // expressions
        if let Some(w) = &p.when
            && let Err(e) = expr::check(w)
        {
            diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.when.clone()),
                format!("phase `{}`: {e}", p.id),
            ));
        }
        if !p.assert.is_empty() && p.kind != "gate" {
            diags.push(Diagnostic::at(
                span_of(spans, i, |s| s.assert.clone()),
                format!("phase `{}`: `assert` is for `gate` phases", p.id),
            ));
        }

        if let Some(phase) = phase {
            nodes.push(Node {
                spec: PhaseSpec::new(p.id.clone(), String::new()),
                phase,
                agent: 0,
                needs,
                dependents: Vec::new(),
            });
        } else {
            nodes.push(Node {
                spec: PhaseSpec::new(p.id.clone(), String::new()),
                phase: Arc::new(crate::command::CommandPhase::new(RunSpec::Argv(vec![
                    "false".into(),
                ]))),
                agent: 0,
                needs,
                dependents: Vec::new(),
            });
        }
    }
    for (n, a) in nodes.iter_mut().zip(phase_agents) {
        n.agent = a;
    }
    for i in 0..nodes.len() {
        for k in nodes[i].needs.clone() {
            nodes[k as usize].dependents.push(i as u32);
        }
    }

    // Cycles, each reported once with its whole path.
    for cycle in find_cycles(&nodes) {
        let first = cycle[0];
        let path: Vec<&str> = cycle
            .iter()
            .chain(std::iter::once(&first))
            .map(|&i| nodes[i].spec.id.as_str())
            .collect();
        let need_pos = spec.phases[first]
            .needs
            .iter()
            .position(|n| n.as_str() == nodes[cycle[1 % cycle.len()]].spec.id.as_str());
        let span = span_of(spans, first, |s| {
            need_pos
                .and_then(|j| s.needs.get(j).cloned())
                .or_else(|| s.id.clone())
        });
        // The DAG edge is need -> dependent; print the cycle in "needs" direction.
        diags.push(
            Diagnostic::at(
                span,
                format!("the needs form a cycle: {}", path.join(" -> ")),
            )
            .with_help("remove one of these needs"),
        );
    }

    // Templates: vars exist, outputs come from phases the phase (transitively) needs.
    let ancestors_of = |i: usize| -> Vec<bool> {
        let mut seen = vec![false; nodes.len()];
        let mut stack: Vec<usize> = nodes[i].needs.iter().map(|&k| k as usize).collect();
        while let Some(k) = stack.pop() {
            if !std::mem::replace(&mut seen[k], true) {
                stack.extend(nodes[k].needs.iter().map(|&x| x as usize));
            }
        }
        seen
    };
    for (i, p) in spec.phases.iter().enumerate() {
        let mut ancestors: Option<Vec<bool>> = None;
        let mut check_refs = |text: &str, diags: &mut Vec<Diagnostic>| match interpolate::references(
            text,
        ) {
            Err(e) => diags.push(Diagnostic::at(
                span_of(spans, i, |s| {
                    s.run
                        .clone()
                        .or_else(|| s.with.clone())
                        .or_else(|| s.env.clone())
                        .or_else(|| s.id.clone())
                }),
                format!("phase `{}`: {e}", p.id),
            )),
            Ok(refs) => {
                for r in refs {
                    match &r {
                        Reference::Var(k) if !spec.vars.contains_key(k) => {
                            let mut d = Diagnostic::at(
                                span_of(spans, i, |s| {
                                    s.run
                                        .clone()
                                        .or_else(|| s.with.clone())
                                        .or_else(|| s.env.clone())
                                        .or_else(|| s.id.clone())
                                }),
                                format!(
                                    "phase `{}` reads `${{{{ vars.{k} }}}}`, but [vars] has no `{k}`",
                                    p.id
                                ),
                            );
                            if let Some(h) = did_you_mean(k, spec.vars.keys().map(String::as_str)) {
                                d = d.with_help(h);
                            }
                            diags.push(d);
                        }
                        Reference::Output { phase, .. } => match index.get(phase.as_str()) {
                            None => {
                                let mut d = Diagnostic::at(
                                    span_of(spans, i, |s| {
                                        s.run
                                            .clone()
                                            .or_else(|| s.with.clone())
                                            .or_else(|| s.id.clone())
                                    }),
                                    format!(
                                        "phase `{}` reads outputs of `{phase}`, which is not a phase",
                                        p.id
                                    ),
                                );
                                if let Some(h) = did_you_mean(phase, ids.iter().copied()) {
                                    d = d.with_help(h);
                                }
                                diags.push(d);
                            }
                            Some(&k) => {
                                let anc = ancestors.get_or_insert_with(|| ancestors_of(i));
                                if !anc[k] {
                                    diags.push(Diagnostic::at(span_of(spans, i, |s| s.run.clone().or_else(|| s.with.clone()).or_else(|| s.id.clone())), format!("phase `{}` reads outputs of `{phase}` but does not need it", p.id)).with_help(format!("add \"{phase}\" to its `needs`")));
                                }
                            }
                        },
                        _ => {}
                    }
                }
            }
        };
        for t in templates(p) {
            check_refs(&t, &mut diags);
        }
        // CEL `when` and `assert` read outputs as `phases.ID.outputs.KEY`.
        let exprs = p
            .when
            .iter()
            .map(|w| (w, span_of(spans, i, |s| s.when.clone())))
            .chain(
                p.assert
                    .iter()
                    .map(|a| (a, span_of(spans, i, |s| s.assert.clone()))),
            );
        for (text, span) in exprs {
            for id in expr::phase_refs(text) {
                match index.get(id.as_str()) {
                    None => {
                        let mut d = Diagnostic::at(
                            span.clone(),
                            format!(
                                "phase `{}`: `{text}` reads phase `{id}`, which is not a phase",
                                p.id
                            ),
                        );
                        if let Some(h) = did_you_mean(&id, ids.iter().copied()) {
                            d = d.with_help(h);
                        }
                        diags.push(d);
                    }
                    Some(&k) => {
                        let anc = ancestors.get_or_insert_with(|| ancestors_of(i));
                        if !anc[k] {
                            diags.push(
                                Diagnostic::at(
                                    span.clone(),
                                    format!(
                                        "phase `{}`: `{text}` reads outputs of `{id}` but does not need it",
                                        p.id
                                    ),
                                )
                                .with_help(format!("add \"{id}\" to its `needs`")),
                            );
                        }
                    }
                }
            }
        }
    }

    if !diags.is_empty() {
        return Err(diags);
    }
    // Each node owns its declaration from here on.
    for (node, phase) in nodes.iter_mut().zip(std::mem::take(&mut spec.phases)) {
        node.spec = phase;
    }
    spec.agents = agents.iter().map(|a| (a.name.clone(), a.clone())).collect();
    Ok(Pipeline {
        spec,
        nodes,
        index: Arc::new(index),
        agents,
        registry: registry.clone(),
        source: None,
        policy: None,
    })
}

/// The default job limit: the number of CPUs.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Finds cycles: for each strongly connected component with more than one phase, one
/// cycle through it, starting at its earliest-declared phase and following `needs`.
fn find_cycles(nodes: &[Node]) -> Vec<Vec<usize>> {
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(nodes.len(), 0);
    for _ in nodes {
        g.add_node(());
    }
    for (i, n) in nodes.iter().enumerate() {
        for &k in &n.needs {
            g.add_edge(NodeIndex::new(i), NodeIndex::new(k as usize), ());
        }
    }
    let mut cycles = Vec::new();
    for scc in petgraph::algo::tarjan_scc(&g) {
        if scc.len() < 2 {
            continue;
        }
        let members: std::collections::HashSet<usize> = scc.iter().map(|n| n.index()).collect();
        let start = *members.iter().min().unwrap_or(&0);
        // Walk needs inside the component until we come back; BFS for the shortest loop.
        let mut prev = vec![usize::MAX; nodes.len()];
        let mut queue = std::collections::VecDeque::from([start]);
        let mut found = None;
        'bfs: while let Some(u) = queue.pop_front() {
            for &k in &nodes[u].needs {
                let k = k as usize;
                if !members.contains(&k) {
                    continue;
                }
                if k == start {
                    found = Some(u);
                    break 'bfs;
                }
                if prev[k] == usize::MAX {
                    prev[k] = u;
                    queue.push_back(k);
                }
            }
        }
        if let Some(mut last) = found {
            let mut path = vec![last];
            while last != start {
                last = prev[last];
                path.push(last);
            }
            path.reverse();
            cycles.push(path);
        }
    }
    cycles.sort();
    cycles
}
