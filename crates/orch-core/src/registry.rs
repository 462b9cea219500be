//! The registry of phase kinds and agent types: maps a kind name and its settings to a
//! [`Phase`], and an agent type and its settings to an [`Agent`].
//!
//! A kind is registered with [`Registry::add_kind`]: its name, one line of summary, the
//! agent type that serves it (the local agent unless [`Kind::agent_type`] says otherwise)
//! and a function that builds a phase from its declaration and its `with` table, already
//! parsed into the kind's settings type:
//!
//! ```
//! use orch_core::registry::{Kind, Registry};
//! use orch_core::{Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PlanContext};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     greeting: String,
//! }
//!
//! struct Hello(String);
//!
//! #[async_trait::async_trait]
//! impl Phase for Hello {
//!     fn describe(&self, _: &PlanContext<'_>) -> Description {
//!         Description::new(format!("say {}", self.0))
//!     }
//!     async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
//!         ctx.log(&self.0);
//!         Ok(PhaseOutcome::default())
//!     }
//! }
//!
//! let mut registry = Registry::with_builtins();
//! registry.add_kind(Kind::new("hello", "say hello"), |spec, s: Settings| {
//!     if s.greeting.is_empty() {
//!         return Err(spec.with.error("`greeting` is empty"));
//!     }
//!     Ok(Hello(s.greeting))
//! })?;
//! // A second kind under the same name is refused.
//! assert!(registry.add_kind(Kind::new("hello", "again"), |_, s: Settings| Ok(Hello(s.greeting))).is_err());
//! # Ok::<(), orch_core::errors::RegistryError>(())
//! ```

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::agent::{Agent, LocalAgent};
use crate::errors::{KindError, RegistryError};
use crate::phase::Phase;
use crate::spec::{AgentSpec, BreakerSpec, PhaseSpec, Unavailable, WithTable};

/// Builds a phase from its declaration. Called when a pipeline is loaded, so settings are
/// checked before anything runs; templates in settings are rendered later, at run time.
type PhaseFactory = Arc<dyn Fn(&PhaseSpec) -> Result<Arc<dyn Phase>, KindError> + Send + Sync>;

/// Builds an agent from its declaration. `jobs` is the run's job limit, the default
/// capacity of local agents.
pub type AgentFactory =
    Arc<dyn Fn(&AgentSpec, usize) -> Result<Arc<dyn Agent>, KindError> + Send + Sync>;

/// A phase kind to register: its name, a summary, and the agent type that serves it.
#[derive(Clone, Debug)]
pub struct Kind {
    name: String,
    summary: String,
    agent_type: String,
}

impl Kind {
    /// A kind served by the local agent, with one line for `orch schema` and help.
    pub fn new(name: impl Into<String>, summary: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            summary: summary.into(),
            agent_type: LocalAgent::TYPE.to_owned(),
        }
    }

    /// Served by agents of `agent_type` instead (`docker`, `git`, ...).
    pub fn agent_type(mut self, agent_type: impl Into<String>) -> Self {
        self.agent_type = agent_type.into();
        self
    }
}

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
    factory: PhaseFactory,
}

impl KindEntry {
    /// Whether a phase of this kind may run on an agent of `agent_type`.
    pub fn runs_on(&self, agent_type: &str) -> bool {
        self.agent_type == agent_type || self.also_on.iter().any(|t| t == agent_type)
    }
}

/// How the engine treats the agents of a type where the pipeline does not say.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgentTypeDefaults {
    /// The circuit breaker of an agent of this type that declares none.
    pub breaker: BreakerSpec,
    /// Whether a phase that names no agent goes to the first declared agent of this type
    /// (`true`), or only to the agent named after the type (`false`: declared agents of
    /// the type are opt-in, as `local` agents with their own capacity are).
    pub first_declared_serves: bool,
}

impl Default for AgentTypeDefaults {
    fn default() -> Self {
        Self {
            breaker: BreakerSpec::default(),
            first_declared_serves: true,
        }
    }
}

#[derive(Clone)]
struct AgentTypeEntry {
    defaults: AgentTypeDefaults,
    factory: AgentFactory,
}

/// Phase kinds and agent types known to a run.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, KindEntry>,
    agent_types: BTreeMap<String, AgentTypeEntry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("kinds", &self.kinds.keys().collect::<Vec<_>>())
            .field("agent_types", &self.agent_types.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in kinds (`command`, `gate`) and the `local` agent type. Local agents
    /// have no breaker unless they declare one, and a phase runs on a declared local agent
    /// only when it names it.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register_agent_type_with(
            LocalAgent::TYPE,
            AgentTypeDefaults {
                breaker: BreakerSpec {
                    failures: 0,
                    ..BreakerSpec::default()
                },
                first_declared_serves: false,
            },
            Arc::new(|spec: &AgentSpec, jobs: usize| {
                Ok(Arc::new(LocalAgent::new(
                    spec.name.clone(),
                    spec.capacity.unwrap_or(jobs),
                )) as Arc<dyn Agent>)
            }),
        )
        .expect("an empty registry has no `local` agent type");
        crate::command::register(&mut r).expect("an empty registry has no `command` kind");
        crate::gate::register(&mut r).expect("an empty registry has no `gate` kind");
        r
    }

    /// Registers a phase kind. `build` makes a phase from its declaration and its `with`
    /// table parsed into `S` (use `#[serde(deny_unknown_fields)]`: errors then name the
    /// key and, for a table from a file, point at it); settings that parse but make no sense
    /// are its errors, best made with [`WithTable::error`] so they point at the table. It
    /// runs when a pipeline is loaded and does no I/O. A kind whose name is taken is
    /// refused.
    pub fn add_kind<S, P, F>(&mut self, kind: Kind, build: F) -> Result<(), RegistryError>
    where
        S: DeserializeOwned,
        P: Phase,
        F: Fn(&PhaseSpec, S) -> Result<P, KindError> + Send + Sync + 'static,
    {
        let slot = match self.kinds.entry(kind.name) {
            Entry::Occupied(e) => {
                return Err(RegistryError::DuplicateKind {
                    kind: e.key().clone(),
                });
            }
            Entry::Vacant(v) => v,
        };
        slot.insert(KindEntry {
            agent_type: kind.agent_type,
            also_on: Vec::new(),
            summary: kind.summary,
            factory: Arc::new(move |spec: &PhaseSpec| {
                let settings: S = spec.with.parse()?;
                Ok(Arc::new(build(spec, settings)?) as Arc<dyn Phase>)
            }),
        });
        Ok(())
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

    /// Registers an agent type with the usual defaults: a breaker
    /// ([`BreakerSpec::default`]), and phases that name no agent go to the first declared
    /// agent of the type.
    pub fn register_agent_type(
        &mut self,
        agent_type: impl Into<String>,
        factory: AgentFactory,
    ) -> Result<(), RegistryError> {
        self.register_agent_type_with(agent_type, AgentTypeDefaults::default(), factory)
    }

    /// Registers an agent type with its own defaults. A type whose name is taken is
    /// refused.
    pub fn register_agent_type_with(
        &mut self,
        agent_type: impl Into<String>,
        defaults: AgentTypeDefaults,
        factory: AgentFactory,
    ) -> Result<(), RegistryError> {
        match self.agent_types.entry(agent_type.into()) {
            Entry::Occupied(e) => Err(RegistryError::DuplicateAgentType {
                agent_type: e.key().clone(),
            }),
            Entry::Vacant(v) => {
                v.insert(AgentTypeEntry { defaults, factory });
                Ok(())
            }
        }
    }

    /// The defaults of an agent type (the usual ones for an unknown type).
    pub fn agent_type_defaults(&self, agent_type: &str) -> AgentTypeDefaults {
        self.agent_types
            .get(agent_type)
            .map(|e| e.defaults)
            .unwrap_or_default()
    }

    /// The agent a phase served by `agent_type` runs on when it names none and no declared
    /// agent serves it: one named after the type, with the type's defaults.
    pub fn implied_agent(&self, agent_type: &str) -> AgentSpec {
        AgentSpec {
            name: agent_type.to_owned(),
            agent_type: agent_type.to_owned(),
            capacity: None,
            with: WithTable::default(),
            breaker: Some(self.agent_type_defaults(agent_type).breaker),
            unavailable: Unavailable::Fail,
        }
    }

    /// Which of `agents` serves a phase of `agent_type` that names no agent: the first
    /// declared agent of the type, or (for types whose declared agents are opt-in) the one
    /// named after the type. `None`: the phase gets [`Registry::implied_agent`].
    pub fn serving_agent(&self, agents: &[AgentSpec], agent_type: &str) -> Option<usize> {
        let first = self.agent_type_defaults(agent_type).first_declared_serves;
        agents
            .iter()
            .position(|a| a.agent_type == agent_type && (first || a.name == agent_type))
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
            .get(spec.kind.as_str())
            .ok_or_else(|| KindError::new(format!("unknown phase kind `{}`", spec.kind)))?;
        (entry.factory)(spec)
    }

    /// Builds an agent from its declaration.
    pub fn build_agent(&self, spec: &AgentSpec, jobs: usize) -> Result<Arc<dyn Agent>, KindError> {
        let entry = self
            .agent_types
            .get(&spec.agent_type)
            .ok_or_else(|| KindError::new(format!("unknown agent type `{}`", spec.agent_type)))?;
        (entry.factory)(spec, jobs)
    }

    /// Whether an agent type is known.
    pub fn has_agent_type(&self, agent_type: &str) -> bool {
        self.agent_types.contains_key(agent_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PhaseId;
    use crate::pipeline::Pipeline;
    use crate::spec::{Defaults, RunSpec};

    fn agent(name: &str, agent_type: &str) -> AgentSpec {
        AgentSpec {
            name: name.into(),
            agent_type: agent_type.into(),
            capacity: None,
            with: WithTable::default(),
            breaker: None,
            unavailable: Unavailable::Fail,
        }
    }

    fn remote() -> Registry {
        let mut r = Registry::with_builtins();
        r.register_agent_type(
            "remote",
            Arc::new(|spec: &AgentSpec, _| {
                Ok(Arc::new(LocalAgent::new(spec.name.clone(), 1)) as Arc<dyn Agent>)
            }),
        )
        .unwrap();
        r.add_kind(
            Kind::new("remote.echo", "test kind").agent_type("remote"),
            |_, _: toml::Table| Ok(true_phase()),
        )
        .unwrap();
        r
    }

    fn true_phase() -> crate::command::CommandPhase {
        crate::command::CommandPhase::new(RunSpec::Argv(vec!["true".into()]))
    }

    #[test]
    fn a_name_is_registered_once() {
        let mut r = Registry::with_builtins();
        let again = r.add_kind(Kind::new("command", "again"), |_, _: toml::Table| {
            Ok(true_phase())
        });
        assert_eq!(
            again.map_err(|e| e.to_string()),
            Err("phase kind `command` is registered twice".into())
        );
        let again = r.register_agent_type(
            "local",
            Arc::new(|spec: &AgentSpec, _| {
                Ok(Arc::new(LocalAgent::new(spec.name.clone(), 1)) as Arc<dyn Agent>)
            }),
        );
        assert!(again.is_err());
        // The first registrations stand.
        assert_eq!(
            r.kind("command").map(|k| k.summary.as_str()),
            Some("run a shell script or an argv")
        );
    }

    #[test]
    fn settings_are_parsed_into_the_kinds_type_before_it_builds() {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Settings {
            #[allow(dead_code)]
            count: u32,
        }
        let mut r = Registry::with_builtins();
        r.add_kind(Kind::new("counted", "test kind"), |spec, s: Settings| {
            if s.count == 0 {
                return Err(spec.with.error("`count` is 0"));
            }
            Ok(true_phase())
        })
        .unwrap();
        let build = |with: &str| {
            let mut p = PhaseSpec::new(PhaseId::new("p").unwrap(), "counted");
            p.with = WithTable::new(toml::from_str(with).unwrap());
            r.build_phase(&p).map(drop).map_err(|e| e.message)
        };
        assert_eq!(build("count = 2"), Ok(()));
        assert_eq!(build("count = 0"), Err("`count` is 0".into()));
        let unknown = build("cuont = 2").unwrap_err();
        assert!(unknown.contains("unknown field `cuont`"), "{unknown}");
        let typed = build("count = \"two\"").unwrap_err();
        assert!(typed.contains("invalid type"), "{typed}");
    }

    fn phase(id: &str, kind: &str) -> PhaseSpec {
        let mut p = PhaseSpec::new(PhaseId::new(id).unwrap(), kind);
        if kind == "command" {
            p.run = Some(RunSpec::Argv(vec!["true".into()]));
        }
        p
    }

    /// Where each phase runs, and each agent's breaker threshold.
    fn placed(p: &Pipeline) -> (Vec<String>, Vec<String>) {
        let phases = p
            .nodes()
            .iter()
            .map(|n| format!("{}@{}", n.spec.id, p.agents()[n.agent].name))
            .collect();
        let agents = p
            .agents()
            .iter()
            .map(|a| format!("{}:{}", a.name, a.breaker.map_or(99, |b| b.failures)))
            .collect();
        (phases, agents)
    }

    #[test]
    fn the_agent_type_decides_where_unplaced_phases_go() {
        let p = Pipeline::builder("t", ".")
            .registry(remote())
            .agent(agent("serial", "local"))
            .agent(agent("r1", "remote"))
            .agent(agent("r2", "remote"))
            .phase(phase("a", "command"))
            .phase(phase("b", "remote.echo"))
            .build()
            .unwrap();
        // A declared local agent is opt-in; the first declared remote agent serves remote
        // kinds. Local agents have no breaker unless they declare one.
        assert_eq!(
            placed(&p),
            (
                vec!["a@local".into(), "b@r1".into()],
                vec![
                    "serial:0".into(),
                    "r1:5".into(),
                    "r2:5".into(),
                    "local:0".into()
                ]
            )
        );
        let p = Pipeline::builder("t", ".")
            .registry(remote())
            .phase(phase("b", "remote.echo"))
            .build()
            .unwrap();
        assert_eq!(
            placed(&p),
            (vec!["b@remote".into()], vec!["remote:5".into()])
        );
    }

    #[test]
    fn pipelines_built_in_code_take_their_defaults() {
        let defaults = Defaults {
            retries: Some(3),
            agent: Some("serial".into()),
            ..Defaults::default()
        };
        let p = Pipeline::builder("t", ".")
            .agent(agent("serial", "local"))
            .defaults(defaults)
            .phase(phase("a", "command"))
            .custom(phase("f", "python"), Arc::new(true_phase()))
            .build()
            .unwrap();
        assert_eq!(placed(&p).0, ["a@serial", "f@local"]);
        let retries: Vec<u32> = p.nodes().iter().map(|n| n.spec.retry_limit()).collect();
        assert_eq!(retries, [3, 3]);
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

    /// A registry with kind `job` served by agents of type `engine`, and types `engine`,
    /// `cluster` and `other`.
    fn job_registry() -> Registry {
        let mut r = Registry::with_builtins();
        for t in ["engine", "cluster", "other"] {
            r.register_agent_type(
                t,
                Arc::new(|spec: &AgentSpec, _| {
                    Ok(Arc::new(LocalAgent::new(spec.name.clone(), 1)) as Arc<dyn Agent>)
                }),
            )
            .unwrap();
        }
        r.add_kind(
            Kind::new("job", "a job").agent_type("engine"),
            |_, _: toml::Table| Ok(Noop),
        )
        .unwrap();
        r
    }

    fn load(r: &Registry, agent_type: &str) -> Result<Pipeline, String> {
        let text = format!(
            "[pipeline]\nname = \"p\"\n[agents.a]\ntype = \"{agent_type}\"\n\
             [phases.j]\nkind = \"job\"\nagent = \"a\"\n"
        );
        Pipeline::from_str(
            &text,
            std::path::Path::new("orch.toml"),
            r,
            &crate::pipeline::LoadOptions::default(),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_kind_runs_on_the_agent_types_it_allows() {
        let mut r = job_registry();
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
