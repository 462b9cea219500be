//! The `git` agent type: who runs git phases.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use orch_core::errors::AgentError;
use orch_core::{Agent, AgentSpec, KindError};
use serde::Deserialize;

/// Runs git phases in-process. Its capacity defaults to 1, so two phases sent to one agent
/// never write one repository at once (on top of that, this crate serialises phases of one
/// process that open the same repository).
///
/// Declared as `[agents.NAME] type = "git"`, optionally with `with = { repo = "PATH" }`:
/// phases that run on it and set no `repo` of their own then work on that repository
/// (relative paths are relative to the pipeline's directory). Without a declaration, the
/// implied agent `git` serves every git phase and `repo` defaults to the pipeline's
/// directory.
#[derive(Debug, Clone)]
pub struct GitAgent {
    name: String,
    capacity: usize,
    repo: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSettings {
    repo: Option<String>,
}

impl GitAgent {
    /// An agent with this name and capacity (at least 1), for no particular repository.
    pub fn new(name: impl Into<String>, capacity: usize) -> Self {
        Self {
            name: name.into(),
            capacity: capacity.max(1),
            repo: None,
        }
    }

    /// Sets the repository its phases default to (builder style).
    pub fn with_repo(mut self, repo: impl Into<PathBuf>) -> Self {
        self.repo = Some(repo.into());
        self
    }

    /// The repository its phases default to, as declared (maybe relative to the pipeline's
    /// directory).
    pub fn repo(&self) -> Option<&Path> {
        self.repo.as_deref()
    }

    /// Builds an agent from its declaration: capacity defaults to 1, `with` takes `repo`.
    pub fn from_spec(spec: &AgentSpec) -> Result<Self, KindError> {
        let settings: AgentSettings = spec.with.parse()?;
        let mut agent = Self::new(spec.name.clone(), spec.capacity.unwrap_or(1));
        if let Some(repo) = settings.repo {
            if repo.trim().is_empty() {
                return Err(KindError {
                    message: "`repo` of a git agent is empty".into(),
                    span: spec.with.span(),
                });
            }
            agent = agent.with_repo(repo);
        }
        Ok(agent)
    }
}

/// The factory registered for the `git` agent type.
pub(crate) fn factory(spec: &AgentSpec, _jobs: usize) -> Result<Arc<dyn Agent>, KindError> {
    Ok(Arc::new(GitAgent::from_spec(spec)?))
}

#[async_trait]
impl Agent for GitAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn agent_type(&self) -> &str {
        "git"
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// The repository path, or `the pipeline's repository` for the implied agent.
    fn endpoint(&self) -> String {
        match &self.repo {
            Some(p) => p.display().to_string(),
            None => "the pipeline's repository".to_owned(),
        }
    }

    /// Opens the declared repository when its path is absolute (a relative path is only
    /// known relative to the pipeline, which the agent does not see; it is checked when a
    /// phase runs).
    async fn health(&self) -> Result<(), AgentError> {
        let Some(repo) = self.repo.clone().filter(|p| p.is_absolute()) else {
            return Ok(());
        };
        let opened = tokio::task::spawn_blocking(move || git2::Repository::discover(&repo))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map(drop).map_err(|e| e.message().to_owned()));
        opened.map_err(|message| AgentError {
            agent: self.name.clone(),
            endpoint: self.endpoint(),
            message: format!("cannot open the repository: {message}"),
        })
    }
}
