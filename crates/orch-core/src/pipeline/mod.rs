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
use crate::file;
use crate::ids::PhaseId;
use crate::phase::Phase;
use crate::policy::{Policy, PolicyError};
use crate::registry::Registry;
use crate::spec::{AgentSpec, Defaults, PhaseSpec, PipelineSpec};

mod validate;

use validate::validate;

/// One phase of a validated pipeline.
pub struct Node {
    /// Its declaration.
    pub spec: PhaseSpec,
    /// Its implementation.
    pub phase: Arc<dyn Phase>,
    /// Index of its agent in [`Pipeline::agents`].
    pub agent: usize,
    /// Indices of the phases it needs.
    pub needs: Box<[u32]>,
    /// Indices of the phases that need it.
    pub dependents: Box<[u32]>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("spec", &self.spec)
            .field("agent", &self.agent)
            .field("needs", &self.needs)
            .field("dependents", &self.dependents)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node for `spec` before validation: `phase` stands in until the registry builds
    /// the phase (or is the phase's own implementation, for phases added in code).
    pub(crate) fn unbuilt(spec: PhaseSpec, phase: Arc<dyn Phase>) -> Self {
        Self {
            spec,
            phase,
            agent: 0,
            needs: Box::default(),
            dependents: Box::default(),
        }
    }
}

/// What an unbuilt node runs until validation builds its phase (never run: a phase the
/// registry cannot build fails validation).
pub(crate) fn unbuilt_phase() -> Arc<dyn Phase> {
    Arc::new(crate::command::CommandPhase::new(
        crate::spec::RunSpec::Argv(vec!["false".into()]),
    ))
}

/// A validated pipeline, ready to plan or run.
pub struct Pipeline {
    pub(crate) spec: PipelineSpec,
    pub(crate) nodes: Vec<Node>,
    pub(crate) index: Arc<IdMap<usize>>,
    pub(crate) agents: Vec<AgentSpec>,
    pub(crate) registry: Registry,
    /// The SHA-256 of the file's text, for the audit log, when it came from a file. The text
    /// itself is not kept for the run (a 10,000-phase file is 0.6 MB).
    pub(crate) source_sha256: Option<String>,
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
        // One copy of the text, shared by the parse and the diagnostics.
        Self::from_text(Arc::from(text), path, registry, options)
    }

    /// Validates pipeline text as if read from `path`.
    pub fn from_str(
        text: &str,
        path: &Path,
        registry: &Registry,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        Self::from_text(Arc::from(text), path, registry, options)
    }

    fn from_text(
        text: Arc<str>,
        path: &Path,
        registry: &Registry,
        options: &LoadOptions,
    ) -> Result<Self, LoadError> {
        let source = Source {
            path: path.to_owned(),
            text,
        };
        let (mut spec, nodes, spans, mut diags) = match file::parse(&source.text, path) {
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
        match validate(spec, nodes, &[], Some(&spans), registry, diags) {
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
                p.source_sha256 = Some(crate::audit::sha256_hex(source.text.as_bytes()));
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
            nodes: Vec::new(),
            custom: Vec::new(),
            unbuilt: unbuilt_phase(),
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
    /// The phases added so far, each in the node it keeps (a pipeline of 100k phases
    /// built in code never holds a second list of them).
    nodes: Vec<Node>,
    /// Whether each node brings its own implementation.
    custom: Vec<bool>,
    /// What the nodes of registered kinds hold until they are built.
    unbuilt: Arc<dyn Phase>,
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

    /// Sets the `[defaults]` that phases leave to them (applied when the pipeline is
    /// built, to every phase: see [`PhaseSpec::apply_defaults`]).
    pub fn defaults(mut self, defaults: Defaults) -> Self {
        self.spec.defaults = defaults;
        self
    }

    /// Adds a phase of a registered kind: the registry builds it, and it runs on the agent
    /// it names, else the one its kind's agent type implies.
    pub fn phase(mut self, spec: PhaseSpec) -> Self {
        self.nodes.push(Node::unbuilt(spec, self.unbuilt.clone()));
        self.custom.push(false);
        self
    }

    /// Adds a phase with its own implementation; `spec.kind` is free-form (shown in plans
    /// and records) and the phase runs on `spec.agent` or the local agent. Of `[defaults]`
    /// it takes `timeout`, `retries` and `backoff`, not `agent` or `env`.
    pub fn custom(mut self, spec: PhaseSpec, phase: Arc<dyn Phase>) -> Self {
        self.nodes.push(Node::unbuilt(spec, phase));
        self.custom.push(true);
        self
    }

    /// Holds every run to `policy` (see [`crate::policy`]).
    pub fn policy(mut self, policy: Arc<Policy>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Validates and builds.
    pub fn build(mut self) -> Result<Pipeline, LoadError> {
        // The list grew by doubling: give back the room it did not fill.
        self.nodes.shrink_to_fit();
        let mut p = validate(
            self.spec,
            self.nodes,
            &self.custom,
            None,
            &self.registry,
            Vec::new(),
        )
        .map_err(|items| LoadError::Invalid(Diagnostics::new(None, items)))?;
        p.policy = self.policy;
        Ok(p)
    }
}

/// The default job limit: the number of CPUs.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RunSpec;

    fn id(s: &str) -> PhaseId {
        PhaseId::new(s).expect("valid id")
    }

    fn command(name: &str, needs: &[&str]) -> PhaseSpec {
        PhaseSpec::command(id(name), RunSpec::Argv(vec!["true".into()]))
            .needs(needs.iter().map(|n| id(n)))
    }

    fn errors(b: PipelineBuilder) -> Vec<(String, Option<String>)> {
        match b.build() {
            Err(LoadError::Invalid(d)) => {
                d.items.into_iter().map(|i| (i.message, i.help)).collect()
            }
            Err(e) => panic!("not a validation error: {e}"),
            Ok(_) => panic!("a pipeline with mistakes was built"),
        }
    }

    #[test]
    fn a_pipeline_built_in_code_links_its_phases_and_keeps_lists_sized_to_what_they_hold() {
        let noop: Arc<dyn Phase> =
            Arc::new(crate::command::CommandPhase::new(RunSpec::Argv(vec![
                "true".into(),
            ])));
        let p = Pipeline::builder("p", ".")
            .phase(command("a", &[]))
            .custom(PhaseSpec::new(id("b"), "mine").needs([id("a")]), noop)
            .phase(command("c", &["a", "b", "a"]))
            .build()
            .expect("valid");
        let n = p.nodes();
        assert_eq!(n.len(), 3);
        assert_eq!(
            (&*n[2].needs, &*n[0].dependents),
            (&[0, 1][..], &[1, 2][..])
        );
        assert_eq!(&*n[1].dependents, &[2]);
        // The needs as declared, each the needed phase's own id.
        let c = &n[2].spec;
        assert_eq!(c.needs, [id("a"), id("b"), id("a")]);
        assert!(c.needs.iter().all(|need| {
            let own = &n[p.index_of(need.as_str()).expect("a phase")].spec.id;
            std::ptr::eq(need.as_str(), own.as_str())
        }));
        assert_eq!(n[1].spec.kind, "mine");
    }

    #[test]
    fn mistakes_in_a_pipeline_built_in_code_are_each_reported_with_the_phase_they_are_in() {
        let got = errors(
            Pipeline::builder("p", ".")
                .phase(command("build", &[]))
                .phase(command("lint", &["biuld"]))
                .phase(command("x", &["y"]))
                .phase(command("y", &["x"]))
                .phase(PhaseSpec::new(id("odd"), "no-such-kind")),
        );
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[0],
            (
                "phase `lint` needs `biuld`, which is not a phase".to_owned(),
                Some("did you mean `build`?".to_owned())
            )
        );
        assert_eq!(got[1].0, "phase `odd` has unknown kind `no-such-kind`");
        assert_eq!(
            got[2],
            (
                "the needs form a cycle: x -> y -> x".to_owned(),
                Some("remove one of these needs".to_owned())
            )
        );
    }
}
