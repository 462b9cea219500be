//! Pieces shared by the phase kinds.

use bollard::Docker;
use orch_core::{PhaseContext, PhaseError};
use serde::Deserialize;

use crate::agent::{DockerAgent, Endpoint, describe};

/// A setting that takes one string or an array of strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// Not set.
    #[default]
    #[serde(skip)]
    None,
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, in order.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }

    /// Whether the setting was given.
    pub fn is_set(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// The engine a phase runs on: its agent's, or `DOCKER_HOST`/the default socket when the
/// phase runs on another kind of agent (embedding, tests).
pub(crate) async fn engine(ctx: &PhaseContext) -> Result<(Docker, Endpoint), PhaseError> {
    match ctx.agent_as::<DockerAgent>() {
        Some(agent) => {
            let docker = agent
                .client()
                .await
                .map_err(|e| PhaseError::failed(e.to_string()))?;
            Ok((docker, agent.docker_endpoint().clone()))
        }
        None => {
            let endpoint = Endpoint::from_env().map_err(PhaseError::failed)?;
            let docker = endpoint
                .connect()
                .await
                .map_err(|e| PhaseError::failed(e.to_string()))?;
            Ok((docker, endpoint))
        }
    }
}

/// A failure of an engine call, naming what was being done and the engine.
pub(crate) fn engine_error(
    endpoint: &Endpoint,
    what: &str,
    error: &bollard::errors::Error,
) -> PhaseError {
    PhaseError::failed(format!(
        "cannot {what}: {} (engine at {endpoint})",
        server_message(error)
    ))
}

/// The engine's own words for server errors; the full chain otherwise.
pub(crate) fn server_message(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("the engine answered {status_code}: {}", message.trim()),
        bollard::errors::Error::DockerStreamError { error } => error.trim().to_owned(),
        other => describe(other),
    }
}

/// Renders a string setting, naming it in the error.
pub(crate) fn render(ctx: &PhaseContext, key: &str, value: &str) -> Result<String, PhaseError> {
    ctx.render(value)
        .map_err(|e| PhaseError::failed(format!("cannot render `{key}`: {e}")))
}

/// A container name for a phase attempt: `orch-RUN-PHASE-ATTEMPT-RANDOM`, within the
/// engine's name rules.
pub(crate) fn container_name(ctx: &PhaseContext) -> String {
    let raw = format!(
        "orch-{}-{}-{}-{}",
        ctx.run_id(),
        ctx.phase_id(),
        ctx.attempt(),
        crate::context::hex(&fastrand::u32(..).to_le_bytes()[..3])
    );
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
