//! The registry of phase kinds and agent types: maps a kind name and its settings to a
//! [`Phase`], and an agent type and its settings to an [`Agent`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::agent::{Agent, LocalAgent};
use crate::errors::KindError;
use crate::phase::Phase;
use crate::spec::{AgentSpec, PhaseSpec};

/// Builds a phase from its declaration. Called when a pipeline is loaded, so settings are
/// checked before anything runs; templates in settings are rendered later, at run time.
pub type PhaseFactory = Arc<dyn Fn(&PhaseSpec) -> Result<Arc<dyn Phase>, KindError> + Send + Sync>;

/// Builds an agent from its declaration. `jobs` is the run's job limit, the default
/// capacity of local agents.
pub type AgentFactory =
    Arc<dyn Fn(&AgentSpec, usize) -> Result<Arc<dyn Agent>, KindError> + Send + Sync>;

/// A registered phase kind.
#[derive(Clone)]
pub struct KindEntry {
    /// The agent type that serves it (and that a phase of this kind runs on when it names
    /// no agent).
    pub agent_type: String,
    /// Other agent types a phase of this kind may name (`docker.run` on a `swarm` agent).
    pub also_on: Vec<String>,
    /// One line for `orch schema` and help.
    pub summary: String,
    pub(crate) factory: PhaseFactory,
}

/// Phase kinds and agent types known to a run.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, KindEntry>,
    agent_types: BTreeMap<String, AgentFactory>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .field("agent_types", &self.agent_types.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KindEntry {
    /// Whether a phase of this kind may run on an agent of `agent_type`.
    pub fn runs_on(&self, agent_type: &str) -> bool {
        self.agent_type == agent_type || self.also_on.iter().any(|t| t == agent_type)
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in kinds (`command`, `gate`) and the `local` agent type.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register_agent_type(
            "local",
            Arc::new(|spec: &AgentSpec, jobs: usize| {
                Ok(Arc::new(LocalAgent::new(
                    spec.name.clone(),
                    spec.capacity.unwrap_or(jobs),
                )) as Arc<dyn Agent>)
            }),
        );
        crate::command::register(&mut r);
        crate::gate::register(&mut r);
        r
    }

    /// Registers a phase kind served by agents of `agent_type`.
    pub fn register_kind(
        &mut self,
        kind: impl Into<String>,
        agent_type: impl Into<String>,
        summary: impl Into<String>,
        factory: PhaseFactory,
    ) {
        self.kinds.insert(
            kind.into(),
            KindEntry {
                agent_type: agent_type.into(),
                also_on: Vec::new(),
                summary: summary.into(),
                factory,
            },
        );
    }

    /// Lets phases of `kind` (already registered) run on agents of `agent_type` too, when
    /// they name such an agent. Does nothing for an unknown kind.
    pub fn allow_agent_type(&mut self, kind: &str, agent_type: impl Into<String>) {
        if let Some(entry) = self.kinds.get_mut(kind) {
            let agent_type = agent_type.into();
            if entry.agent_type != agent_type && !entry.also_on.contains(&agent_type) {
                entry.also_on.push(agent_type);
            }
        }
    }

    /// Registers an agent type.
    pub fn register_agent_type(&mut self, agent_type: impl Into<String>, factory: AgentFactory) {
        self.agent_types.insert(agent_type.into(), factory);
    }

    /// The entry of a kind.
    pub fn kind(&self, kind: &str) -> Option<&KindEntry> {
        self.kinds.get(kind)
    }

    /// Every kind, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = (&str, &KindEntry)> {
        self.kinds.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Every agent type, sorted.
    pub fn agent_types(&self) -> impl Iterator<Item = &str> {
        self.agent_types.keys().map(String::as_str)
    }

    /// Builds a phase from its declaration.
    pub fn build_phase(&self, spec: &PhaseSpec) -> Result<Arc<dyn Phase>, KindError> {
        let entry = self
            .kinds
            .get(&spec.kind)
            .ok_or_else(|| KindError::new(format!("unknown phase kind `{}`", spec.kind)))?;
        (entry.factory)(spec)
    }

    /// Builds an agent from its declaration.
    pub fn build_agent(&self, spec: &AgentSpec, jobs: usize) -> Result<Arc<dyn Agent>, KindError> {
        let factory = self
            .agent_types
            .get(&spec.agent_type)
            .ok_or_else(|| KindError::new(format!("unknown agent type `{}`", spec.agent_type)))?;
        factory(spec, jobs)
    }

    /// Whether an agent type is known.
    pub fn has_agent_type(&self, agent_type: &str) -> bool {
        self.agent_types.contains_key(agent_type)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::pipeline::{LoadOptions, Pipeline};

    /// A registry with kind `job` served by agents of type `engine`, and types `engine`,
    /// `cluster` and `other`.
    fn registry() -> Registry {
        let mut r = Registry::with_builtins();
        for t in ["engine", "cluster", "other"] {
            r.register_agent_type(
                t,
                Arc::new(|spec: &AgentSpec, _| {
                    Ok(Arc::new(LocalAgent::new(spec.name.clone(), 1)) as Arc<dyn Agent>)
                }),
            );
        }
        r.register_kind(
            "job",
            "engine",
            "a job",
            Arc::new(|_: &PhaseSpec| Ok(Arc::new(Noop) as Arc<dyn Phase>)),
        );
        r
    }

    struct Noop;

    #[async_trait::async_trait]
    impl Phase for Noop {
        fn describe(&self, _: &crate::phase::PlanContext<'_>) -> crate::phase::Description {
            crate::phase::Description::new("nothing")
        }
        async fn run(
            &self,
            _: &crate::phase::PhaseContext,
        ) -> Result<crate::phase::PhaseOutcome, crate::phase::PhaseError> {
            Ok(crate::phase::PhaseOutcome::default())
        }
    }

    fn load(r: &Registry, agent_type: &str) -> Result<Pipeline, String> {
        let text = format!(
            "[pipeline]\nname = \"p\"\n[agents.a]\ntype = \"{agent_type}\"\n\
             [phases.j]\nkind = \"job\"\nagent = \"a\"\n"
        );
        Pipeline::from_str(&text, Path::new("orch.toml"), r, &LoadOptions::default())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_kind_runs_on_the_agent_types_it_allows() {
        let mut r = registry();
        let refused = load(&r, "cluster").expect_err("not allowed yet");
        assert!(
            refused.contains(
                "phase `j` (job) runs on engine agents, but agent `a` is a cluster agent"
            ),
            "{refused}"
        );
        r.allow_agent_type("job", "cluster");
        r.allow_agent_type("job", "cluster");
        r.allow_agent_type("unknown", "cluster");
        assert_eq!(r.kind("job").map(|k| k.also_on.len()), Some(1));
        load(&r, "cluster").expect("allowed");
        load(&r, "engine").expect("its own type");
        assert!(load(&r, "other").is_err());
    }
}
