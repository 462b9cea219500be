//! The `docker` agent: one Docker engine, reached over a Unix socket or TCP.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bollard::{API_DEFAULT_VERSION, Docker};
use orch_core::{Agent, AgentError, AgentSpec, KindError};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::errors::ConnectError;

/// One line for a bollard error: its message and its sources, without repeats.
pub(crate) use orch_core::errors::chain as describe;

/// Phases a `docker` agent runs at once when its `capacity` is not set.
pub const DEFAULT_CAPACITY: usize = 2;

/// The socket used when neither the agent nor `DOCKER_HOST` names one.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Limit for the version handshake and the health check.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Limit for an engine response to start. Builds and `wait` can take long before the
/// first byte; the phase's own timeout is the real limit.
const RESPONSE_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// Where an engine listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A Unix socket (`unix:///var/run/docker.sock`).
    Unix(PathBuf),
    /// A TCP address without TLS (`tcp://host:2375`), as `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path`, `tcp://host:port` or `http://host:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(Self::Unix(PathBuf::from(path)));
            }
            return Err(format!(
                "`{text}`: a unix endpoint needs an absolute path (`unix:///var/run/docker.sock`)"
            ));
        }
        for scheme in ["tcp://", "http://"] {
            if let Some(addr) = text.strip_prefix(scheme) {
                let addr = addr.trim_end_matches('/');
                if addr.is_empty() || addr.contains('/') {
                    return Err(format!("`{text}`: expected `{scheme}HOST:PORT`"));
                }
                return Ok(Self::Tcp(addr.to_owned()));
            }
        }
        Err(format!(
            "`{text}`: the docker host must be `unix:///PATH` or `tcp://HOST:PORT` (TLS and ssh are not supported)"
        ))
    }

    /// `DOCKER_HOST` when set (and valid), else the default socket.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("DOCKER_HOST") {
            Ok(v) if !v.trim().is_empty() => {
                Self::parse(v.trim()).map_err(|e| format!("DOCKER_HOST: {e}"))
            }
            _ => Ok(Self::Unix(PathBuf::from(DEFAULT_SOCKET))),
        }
    }

    /// Connects and negotiates the API version (so old engines such as dockerd 20.10,
    /// API 1.41, and current ones both work).
    pub async fn connect(&self) -> Result<Docker, ConnectError> {
        let err = |message: String| ConnectError {
            endpoint: self.to_string(),
            message,
        };
        let client = match self {
            Self::Unix(path) => {
                if !path.exists() {
                    return Err(err(format!(
                        "no socket at {} (is the engine running?)",
                        path.display()
                    )));
                }
                Docker::connect_with_unix(
                    &path.to_string_lossy(),
                    RESPONSE_TIMEOUT_SECS,
                    API_DEFAULT_VERSION,
                )
            }
            Self::Tcp(addr) => Docker::connect_with_http(
                &format!("tcp://{addr}"),
                RESPONSE_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            ),
        }
        .map_err(|e| err(describe(&e)))?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, client.negotiate_version()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(err(describe(&e))),
            Err(_) => Err(err(format!(
                "no answer within {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The `with` table of a `docker` agent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSettings {
    /// `unix:///path` or `tcp://host:port`.
    host: Option<String>,
}

/// A Docker engine that runs phases.
///
/// Building one does no I/O; the connection is made (and the API version negotiated) on
/// first use and kept.
pub struct DockerAgent {
    name: String,
    capacity: usize,
    endpoint: Endpoint,
    client: OnceCell<Docker>,
}

impl std::fmt::Debug for DockerAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerAgent")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl DockerAgent {
    /// An agent for an endpoint.
    pub fn new(name: impl Into<String>, endpoint: Endpoint, capacity: usize) -> Self {
        Self {
            name: name.into(),
            capacity: capacity.max(1),
            endpoint,
            client: OnceCell::new(),
        }
    }

    /// An agent for `DOCKER_HOST`, or the default socket.
    pub fn from_env(name: impl Into<String>) -> Result<Self, KindError> {
        let endpoint = Endpoint::from_env().map_err(KindError::new)?;
        Ok(Self::new(name, endpoint, DEFAULT_CAPACITY))
    }

    /// An agent from its declaration: `with = { host = "unix:///..." | "tcp://..." }`,
    /// else `DOCKER_HOST`, else the default socket; `capacity` defaults to 2.
    pub fn from_spec(spec: &AgentSpec) -> Result<Self, KindError> {
        let settings: AgentSettings = spec.with.parse()?;
        let endpoint = match settings.host {
            Some(h) => Endpoint::parse(&h).map_err(|message| KindError {
                message: format!("agent `{}`: {message}", spec.name),
                span: spec.with.span(),
            })?,
            None => Endpoint::from_env()
                .map_err(|e| KindError::new(format!("agent `{}`: {e}", spec.name)))?,
        };
        Ok(Self::new(
            spec.name.clone(),
            endpoint,
            spec.capacity.unwrap_or(DEFAULT_CAPACITY),
        ))
    }

    /// The engine's endpoint.
    pub fn docker_endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A client with the negotiated API version (connected on first call; a failed
    /// connection is tried again on the next call).
    pub async fn client(&self) -> Result<Docker, ConnectError> {
        self.client
            .get_or_try_init(|| self.endpoint.connect())
            .await
            .cloned()
    }
}

#[async_trait]
impl Agent for DockerAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn agent_type(&self) -> &str {
        "docker"
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn endpoint(&self) -> String {
        self.endpoint.to_string()
    }

    async fn health(&self) -> Result<(), AgentError> {
        let unavailable = |message: String| AgentError {
            agent: self.name.clone(),
            endpoint: self.endpoint.to_string(),
            message,
        };
        let client = self.client().await.map_err(|e| unavailable(e.message))?;
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, client.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(format!("ping failed: {}", describe(&e)))),
            Err(_) => Err(unavailable(format!(
                "ping got no answer within {}s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_print() {
        for (text, shown) in [
            ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
            ("tcp://127.0.0.1:2375", "tcp://127.0.0.1:2375"),
            ("http://engine:2375/", "tcp://engine:2375"),
        ] {
            assert_eq!(Endpoint::parse(text).unwrap().to_string(), shown);
        }
        for bad in [
            "unix://relative.sock",
            "ssh://host",
            "tcp://",
            "/var/run/docker.sock",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
