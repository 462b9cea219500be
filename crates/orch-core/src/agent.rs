//! The [`Agent`] trait: *who* runs a phase. Agents have a type, a capacity and a health
//! check; the engine keeps a circuit breaker for each.

use std::any::Any;

use async_trait::async_trait;

use crate::errors::AgentError;

/// A named executor of phases.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
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
    /// Checks that it can take work. Called before the first phase is sent to it and when
    /// its circuit breaker half-opens.
    async fn health(&self) -> Result<(), AgentError> {
        Ok(())
    }
    /// For phases that need the concrete agent ([`crate::PhaseContext::agent_as`]).
    fn as_any(&self) -> &dyn Any;
}

/// Runs phases as local processes or in-process code.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    name: String,
    capacity: usize,
}

impl LocalAgent {
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
        "local"
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn endpoint(&self) -> String {
        "this machine".to_owned()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
