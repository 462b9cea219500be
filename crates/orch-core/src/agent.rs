//! The [`Agent`] trait: *who* runs a phase. Agents have a type, a capacity and a health
//! check; the engine keeps a circuit breaker for each.

use std::any::Any;

use async_trait::async_trait;

use crate::errors::AgentError;

/// A named executor of phases.
///
/// An agent is [`Any`]: a phase that needs its concrete type gets it with
/// [`crate::PhaseContext::agent_as`].
#[async_trait]
pub trait Agent: Any + Send + Sync {
    /// The agent's name.
    fn name(&self) -> &str;
    /// Its type (`local`, `docker`, `git`, `python`, ...).
    fn agent_type(&self) -> &str;
    /// Phases it runs at once.
    fn capacity(&self) -> usize;
    /// What it talks to, for messages (`unix:///var/run/docker.sock`, a path, `local`).
    fn endpoint(&self) -> String {
        self.agent_type().to_owned()
    }
    /// Whether the engine checks [`Agent::health`] before it sends the agent work (the
    /// default). An agent that is always there, as the local one, says no and saves the
    /// check.
    fn needs_health_check(&self) -> bool {
        true
    }
    /// Checks that it can take work. Called before the first phase is sent to it and when
    /// its circuit breaker half-opens.
    async fn health(&self) -> Result<(), AgentError> {
        Ok(())
    }
}

/// Runs phases as local processes or in-process code.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    name: String,
    capacity: usize,
}

impl LocalAgent {
    /// The agent type of local agents, which run the built-in kinds and phases made in
    /// code.
    pub const TYPE: &'static str = "local";

    /// A local agent with a capacity.
    pub fn new(name: impl Into<String>, capacity: usize) -> Self {
        Self {
            name: name.into(),
            capacity: capacity.max(1),
        }
    }
}

#[async_trait]
impl Agent for LocalAgent {
    fn name(&self) -> &str {
        &self.name
    }
    fn agent_type(&self) -> &str {
        Self::TYPE
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn endpoint(&self) -> String {
        "this machine".to_owned()
    }
    fn needs_health_check(&self) -> bool {
        false
    }
}
