//! A service's deployment state: `STATE_DIR/deploy/SERVICE/state.json`, beside the proxy's
//! config (`haproxy.cfg`), runtime socket (`haproxy.sock`) and pid file (`haproxy.pid`).
//!
//! The state says what serves (`current`) and what stands by for an instant rollback
//! (`previous`, its containers running with no traffic). It is written atomically after
//! every change that users could see, so a later run (or `orch deploy status`) finds the
//! service as it is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::StateError;
use crate::settings::{Health, check_service_name};

/// Version of the state file's format.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// One container of a release, as the proxy reaches it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Container name (also the proxy's server name).
    pub name: String,
    /// Container id.
    pub id: String,
    /// Port on 127.0.0.1 where the engine publishes the container's port.
    pub host_port: u16,
}

/// One deployed version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The image as the pipeline named it.
    pub image: String,
    /// The engine's image id (`sha256:...`).
    pub image_id: String,
    /// Repository digests of the image (`repo@sha256:...`), when it came from a registry.
    #[serde(default)]
    pub digests: Vec<String>,
    /// Short version label (the tag, or the digest's first 12 hex digits).
    pub version: String,
    /// The container port it serves (0 in states written before it was recorded: the
    /// service's `port`).
    #[serde(default)]
    pub port: u16,
    /// Its containers.
    pub containers: Vec<Instance>,
    /// When it started serving (RFC 3339).
    pub deployed_at: String,
    /// The run that deployed it.
    #[serde(default)]
    pub run_id: String,
}

impl Release {
    /// The container port of this release.
    pub fn port_or(&self, service_port: u16) -> u16 {
        if self.port == 0 {
            service_port
        } else {
            self.port
        }
    }
}

/// One line of the service's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When (RFC 3339).
    pub at: String,
    /// `deployed`, `rolled_back` or `rollback` (an `orch rollback`).
    pub event: String,
    /// The image concerned.
    pub image: String,
    /// Why, for rollbacks.
    #[serde(default)]
    pub reason: String,
}

/// A service deployed as a Swarm service (strategy `rolling`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmService {
    /// The manager's endpoint.
    pub endpoint: String,
    /// The Swarm service id.
    pub id: String,
    /// The Swarm service name.
    pub name: String,
}

/// Everything orch knows about a deployed service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// [`STATE_FORMAT_VERSION`].
    pub format_version: u32,
    /// The service.
    pub service: String,
    /// The strategy of its last deployment.
    pub strategy: String,
    /// The proxy's frontend (`HOST:PORT`); empty for Swarm services.
    pub listen: String,
    /// The container port.
    pub port: u16,
    /// The health check of the proxy's servers.
    pub health: Health,
    /// Deployments started so far (names new containers).
    pub generation: u64,
    /// What serves.
    pub current: Option<Release>,
    /// What stands by for `orch rollback`.
    pub previous: Option<Release>,
    /// The Docker engine the containers run on.
    #[serde(default)]
    pub engine: String,
    /// The proxy's pid, when orch started one.
    #[serde(default)]
    pub proxy_pid: Option<i32>,
    /// Set for `rolling` deployments.
    #[serde(default)]
    pub swarm: Option<SwarmService>,
    /// Recent deployments and rollbacks, oldest first (at most 50).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

impl ServiceState {
    /// A state for a service deployed for the first time.
    pub fn new(service: &str, listen: &str, port: u16, health: Health) -> Self {
        Self {
            format_version: STATE_FORMAT_VERSION,
            service: service.to_owned(),
            strategy: String::new(),
            listen: listen.to_owned(),
            port,
            health,
            generation: 0,
            current: None,
            previous: None,
            engine: String::new(),
            proxy_pid: None,
            swarm: None,
            history: Vec::new(),
        }
    }

    /// Appends a history line (keeping the last 50).
    pub fn record(&mut self, event: &str, image: &str, reason: &str) {
        self.history.push(HistoryEntry {
            at: now(),
            event: event.to_owned(),
            image: image.to_owned(),
            reason: reason.to_owned(),
        });
        let extra = self.history.len().saturating_sub(50);
        self.history.drain(..extra);
    }
}

/// The current time, RFC 3339 (seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Where a state dir keeps its deployments.
pub fn deploy_root(state_dir: &Path) -> PathBuf {
    state_dir.join("deploy")
}

/// The files of one service.
#[derive(Clone, Debug)]
pub struct ServiceDir {
    /// `STATE_DIR/deploy/SERVICE`.
    pub dir: PathBuf,
    /// The service.
    pub service: String,
}

impl ServiceDir {
    /// The directory of `service` under `state_dir`.
    pub fn new(state_dir: &Path, service: &str) -> Self {
        Self {
            dir: deploy_root(state_dir).join(service),
            service: service.to_owned(),
        }
    }

    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// `haproxy.cfg`.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }

    /// `haproxy.sock`.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("haproxy.sock")
    }

    /// `haproxy.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("haproxy.pid")
    }

    /// Reads the state; `None` when the service was never deployed here.
    pub fn load(&self) -> Result<Option<ServiceState>, StateError> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let damaged = |line: usize, column: usize, message: String| StateError::Damaged {
            path: path.clone(),
            line,
            column,
            message,
            service: self.service.clone(),
        };
        let state: ServiceState = serde_json::from_str(&text)
            .map_err(|e| damaged(e.line(), e.column(), e.to_string()))?;
        if state.format_version != STATE_FORMAT_VERSION {
            return Err(damaged(
                1,
                1,
                format!(
                    "format_version {} is not {STATE_FORMAT_VERSION}",
                    state.format_version
                ),
            ));
        }
        if state.service != self.service {
            return Err(damaged(
                1,
                1,
                format!(
                    "it names service `{}`, but lives in the directory of `{}`",
                    state.service, self.service
                ),
            ));
        }
        for release in state.current.iter().chain(state.previous.iter()) {
            for c in &release.containers {
                if check_container_name(&c.name).is_err() || c.host_port == 0 {
                    return Err(damaged(
                        1,
                        1,
                        format!(
                            "container `{}` (port {}) is not a container orch made",
                            c.name, c.host_port
                        ),
                    ));
                }
            }
        }
        Ok(Some(state))
    }

    /// Writes the state atomically (a temporary file renamed over the old one).
    pub fn save(&self, state: &ServiceState) -> Result<(), StateError> {
        let io = |path: PathBuf, source| StateError::Io {
            action: "write",
            path,
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(self.dir.clone(), e))?;
        let path = self.state_file();
        let tmp = self.dir.join(".state.json.tmp");
        let mut text = serde_json::to_string_pretty(state).unwrap_or_default();
        text.push('\n');
        std::fs::write(&tmp, text).map_err(|e| io(tmp.clone(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(path, e))
    }
}

/// Names of the services deployed under a state dir, sorted.
pub fn services(state_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(deploy_root(state_dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| check_service_name(n).is_ok())
        .collect();
    names.sort();
    names
}

/// Checks a container or proxy server name (`[A-Za-z0-9_.-]`, 1 to 120 characters).
pub fn check_container_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 120
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(())
    } else {
        Err(format!("`{name}` is not a container name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::HealthSettings;

    fn state() -> ServiceState {
        let mut s = ServiceState::new(
            "web",
            "127.0.0.1:8080",
            8080,
            Health::from(&HealthSettings::default()),
        );
        s.current = Some(Release {
            image: "web:1".into(),
            image_id: "sha256:ab".into(),
            digests: vec![],
            version: "1".into(),
            port: 8080,
            containers: vec![Instance {
                name: "web-1-g1-1".into(),
                id: "c1".into(),
                host_port: 32768,
            }],
            deployed_at: now(),
            run_id: "r".into(),
        });
        s
    }

    #[test]
    fn state_round_trips_and_damage_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let sd = ServiceDir::new(dir.path(), "web");
        assert!(sd.load().unwrap().is_none());
        sd.save(&state()).unwrap();
        assert_eq!(sd.load().unwrap().unwrap(), state());
        assert_eq!(services(dir.path()), ["web"]);

        let text = std::fs::read_to_string(sd.state_file()).unwrap();
        std::fs::write(
            sd.state_file(),
            text.replace("\"port\": 8080", "\"port\": \"x\""),
        )
        .unwrap();
        let e = sd.load().unwrap_err().to_string();
        assert!(e.contains("state.json:") && e.contains("damaged"), "{e}");
        assert!(e.contains("orch deploy stop web"), "{e}");

        std::fs::write(sd.state_file(), text.replace("web-1-g1-1", "../etc")).unwrap();
        let e = sd.load().unwrap_err().to_string();
        assert!(e.contains("not a container orch made"), "{e}");
    }
}
