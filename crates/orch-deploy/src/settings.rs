//! The `with` tables of `deploy`, `deploy.audit` and `deploy.rollback`, checked at load time
//! (no I/O). Each kind's table is a serde type that refuses unknown keys; the registry
//! parses it (errors name the key and point at it) and the kind checks what parses but
//! makes no sense.

use std::time::Duration;

use orch_core::{KindError, PhaseSpec};
use serde::Deserialize;

/// How a new version replaces the one serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// All traffic moves to the new containers at once, once they are healthy.
    BlueGreen,
    /// Traffic moves through `steps`; each step is analysed from the proxy's counters.
    Canary,
    /// A Swarm service update (on a `swarm` agent).
    Rolling,
}

impl Strategy {
    /// The name used in the pipeline file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlueGreen => "blue-green",
            Self::Canary => "canary",
            Self::Rolling => "rolling",
        }
    }
}

/// What a canary does with a step that saw too few requests to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Inconclusive {
    /// Roll back at once (the default: too little evidence never counts as a pass).
    #[default]
    Rollback,
    /// Keep the step for more windows, up to `analysis.max_windows`, then roll back.
    Extend,
}

/// The HTTP health check of each new container.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Path probed with `GET` (default `/health`); 2xx and 3xx answers pass.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Between probes (default 1s).
    #[serde(default, with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Limit of one probe (default 2s).
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Consecutive passes that make a container healthy (default 2).
    #[serde(default)]
    pub healthy: Option<u32>,
    /// Consecutive answers outside 2xx/3xx that make it unhealthy (default 3). Refused
    /// connections (the server still starting) only count against `within`.
    #[serde(default)]
    pub unhealthy: Option<u32>,
    /// How long a new container may take to become healthy (default 60s).
    #[serde(default, with = "opt_duration")]
    pub within: Option<Duration>,
}

fn default_health_path() -> String {
    "/health".into()
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval: None,
            timeout: None,
            healthy: None,
            unhealthy: None,
            within: None,
        }
    }
}

/// A health check with every default applied.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Health {
    /// Path probed.
    pub path: String,
    /// Between probes.
    #[serde(with = "ms")]
    pub interval: Duration,
    /// Limit of one probe.
    #[serde(with = "ms")]
    pub timeout: Duration,
    /// Consecutive passes needed.
    pub healthy: u32,
    /// Consecutive failed answers that fail it.
    pub unhealthy: u32,
    /// Time a container has to become healthy.
    #[serde(with = "ms")]
    pub within: Duration,
}

impl From<&HealthSettings> for Health {
    fn from(s: &HealthSettings) -> Self {
        Self {
            path: s.path.clone(),
            interval: s.interval.unwrap_or(Duration::from_secs(1)),
            timeout: s.timeout.unwrap_or(Duration::from_secs(2)),
            healthy: s.healthy.unwrap_or(2),
            unhealthy: s.unhealthy.unwrap_or(3),
            within: s.within.unwrap_or(Duration::from_secs(60)),
        }
    }
}

/// What makes a canary step pass.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSettings {
    /// Length of a step's window (default 5s).
    #[serde(default, with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Highest error rate (responses >= 500 and failed responses, over the new version's
    /// responses in the window) that passes (default 0.01).
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Responses of the new version a window needs to be judged (default 20).
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// What an inconclusive step does: `rollback` (default) or `extend`.
    #[serde(default)]
    pub inconclusive: Inconclusive,
    /// Windows an `extend`ed step may take in all (default 3).
    #[serde(default)]
    pub max_windows: Option<u32>,
}

/// Canary analysis with every default applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// Window of one step.
    pub interval: Duration,
    /// Highest passing error rate.
    pub max_error_rate: f64,
    /// Responses needed to judge.
    pub min_requests: u64,
    /// What an inconclusive step does.
    pub inconclusive: Inconclusive,
    /// Windows a step may take with `extend`.
    pub max_windows: u32,
}

/// The `with` table of `deploy`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// The deployed service (one state per service).
    pub service: String,
    /// The image (template).
    pub image: String,
    /// `blue-green`, `canary` or `rolling`.
    pub strategy: Strategy,
    /// Where users reach the service (the proxy's frontend), `HOST:PORT` (template).
    #[serde(default)]
    pub listen: Option<String>,
    /// The container port that serves HTTP.
    pub port: u16,
    /// Containers (or Swarm replicas) of the new version (default 1).
    #[serde(default)]
    pub replicas: Option<u32>,
    /// The HTTP check each new container passes before it gets traffic.
    #[serde(default)]
    pub health: Option<HealthSettings>,
    /// Canary: percentages of traffic for the new version, increasing, ending at 100.
    #[serde(default)]
    pub steps: Option<Vec<i64>>,
    /// Canary: what makes a step fail.
    #[serde(default)]
    pub analysis: Option<AnalysisSettings>,
    /// Blue-green and canary: how long the old version keeps its in-flight requests after
    /// the switch before the deployment ends (default 1s).
    #[serde(default, with = "opt_duration")]
    pub drain: Option<Duration>,
    /// Environment of the new containers (values are templates).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Rolling: update this many tasks at once (default 1).
    #[serde(default)]
    pub parallelism: Option<u64>,
    /// Rolling: how long Swarm watches each updated task before the next (default 5s).
    #[serde(default, with = "opt_duration")]
    pub monitor: Option<Duration>,
    /// Rolling: the published port on each node (`listen`'s port when not set).
    #[serde(default)]
    pub published_port: Option<u16>,
}

/// `deploy` settings, checked, with defaults.
#[derive(Clone, Debug)]
pub struct DeployPlan {
    /// Service name.
    pub service: String,
    /// Image template.
    pub image: String,
    /// Strategy.
    pub strategy: Strategy,
    /// Listen template.
    pub listen: String,
    /// Container port.
    pub port: u16,
    /// New containers.
    pub replicas: u32,
    /// Health check.
    pub health: Health,
    /// Canary steps (empty for other strategies).
    pub steps: Vec<u8>,
    /// Canary analysis.
    pub analysis: Analysis,
    /// Drain after a switch.
    pub drain: Duration,
    /// Container environment (templates).
    pub env: Vec<(String, String)>,
    /// Rolling: tasks updated at once.
    pub parallelism: u64,
    /// Rolling: monitor window.
    pub monitor: Duration,
    /// Rolling: published port.
    pub published_port: Option<u16>,
}

/// Whether a service name can name containers, proxy sections and state files.
pub fn check_service_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "service `{name}` must be 1 to 48 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit"
        ))
    }
}

impl DeployPlan {
    /// Checks the settings of a declaration; an error points at its `with` table.
    pub fn from_settings(spec: &PhaseSpec, settings: DeploySettings) -> Result<Self, KindError> {
        Self::new(settings).map_err(|message| spec.with.error(message))
    }

    /// Checks settings.
    pub fn new(s: DeploySettings) -> Result<Self, String> {
        check_service_name(&s.service)?;
        if s.image.trim().is_empty() {
            return Err("`image` is empty".into());
        }
        if s.port == 0 {
            return Err("`port` must be 1 to 65535".into());
        }
        let replicas = s.replicas.unwrap_or(1);
        if !(1..=20).contains(&replicas) {
            return Err(format!("`replicas` must be 1 to 20, not {replicas}"));
        }
        let listen = match (&s.listen, s.strategy) {
            (Some(l), _) => {
                if !l.contains("${{") {
                    check_listen(l)?;
                }
                l.clone()
            }
            (None, Strategy::Rolling) => String::new(),
            (None, _) => {
                return Err(format!(
                    "strategy `{}` needs `listen` (where users reach the service, e.g. \"127.0.0.1:8080\")",
                    s.strategy.as_str()
                ));
            }
        };
        let steps = match (s.strategy, &s.steps) {
            (Strategy::Canary, None) => vec![10, 50, 100],
            (Strategy::Canary, Some(steps)) => check_steps(steps)?,
            (_, Some(_)) => {
                return Err(format!(
                    "`steps` is for strategy `canary`, not `{}`",
                    s.strategy.as_str()
                ));
            }
            (_, None) => Vec::new(),
        };
        if s.analysis.is_some() && s.strategy != Strategy::Canary {
            return Err(format!(
                "`analysis` is for strategy `canary`, not `{}`",
                s.strategy.as_str()
            ));
        }
        let a = s.analysis.clone().unwrap_or(AnalysisSettings {
            interval: None,
            max_error_rate: None,
            min_requests: None,
            inconclusive: Inconclusive::Rollback,
            max_windows: None,
        });
        let analysis = Analysis {
            interval: a.interval.unwrap_or(Duration::from_secs(5)),
            max_error_rate: a.max_error_rate.unwrap_or(0.01),
            min_requests: a.min_requests.unwrap_or(20),
            inconclusive: a.inconclusive,
            max_windows: a.max_windows.unwrap_or(3),
        };
        if !(0.0..=1.0).contains(&analysis.max_error_rate) {
            return Err(format!(
                "`analysis.max_error_rate` is a fraction from 0 to 1, not {}",
                analysis.max_error_rate
            ));
        }
        if analysis.interval < Duration::from_millis(100) {
            return Err("`analysis.interval` must be at least 100ms".into());
        }
        if analysis.max_windows == 0 {
            return Err("`analysis.max_windows` must be at least 1".into());
        }
        let health = Health::from(&s.health.clone().unwrap_or_default());
        if !health.path.starts_with('/') {
            return Err(format!(
                "`health.path` must start with `/`, not `{}`",
                health.path
            ));
        }
        if health
            .path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("`health.path` must not contain spaces or control characters".into());
        }
        if health.healthy == 0 || health.unhealthy == 0 {
            return Err("`health.healthy` and `health.unhealthy` must be at least 1".into());
        }
        if health.interval < Duration::from_millis(50) || health.timeout.is_zero() {
            return Err(
                "`health.interval` must be at least 50ms and `health.timeout` more than 0".into(),
            );
        }
        let parallelism = s.parallelism.unwrap_or(1);
        if parallelism == 0 {
            return Err("`parallelism` must be at least 1".into());
        }
        if s.strategy != Strategy::Rolling
            && (s.parallelism.is_some() || s.monitor.is_some() || s.published_port.is_some())
        {
            return Err(
                "`parallelism`, `monitor` and `published_port` are for strategy `rolling`".into(),
            );
        }
        for k in s.env.keys() {
            if k.is_empty() || k.contains('=') {
                return Err(format!("`env`: `{k}` is not a variable name"));
            }
        }
        Ok(Self {
            service: s.service,
            image: s.image,
            strategy: s.strategy,
            listen,
            port: s.port,
            replicas,
            health,
            steps,
            analysis,
            drain: s.drain.unwrap_or(Duration::from_secs(1)),
            env: s.env.into_iter().collect(),
            parallelism,
            monitor: s.monitor.unwrap_or(Duration::from_secs(5)),
            published_port: s.published_port,
        })
    }
}

/// Checks `HOST:PORT` (an IPv4 or `[IPv6]` address, or `localhost`).
pub fn check_listen(listen: &str) -> Result<std::net::SocketAddr, String> {
    let text = listen.trim();
    let text = text
        .strip_prefix("localhost:")
        .map(|p| format!("127.0.0.1:{p}"))
        .unwrap_or_else(|| text.to_owned());
    match text.parse::<std::net::SocketAddr>() {
        Ok(a) if a.port() != 0 => Ok(a),
        Ok(_) => Err(format!("`listen` = \"{listen}\" needs a port other than 0")),
        Err(_) => Err(format!(
            "`listen` = \"{listen}\" is not HOST:PORT with an IP address (e.g. \"127.0.0.1:8080\")"
        )),
    }
}

/// Checks canary steps: percentages from 1 to 100, strictly increasing, ending at 100.
pub fn check_steps(steps: &[i64]) -> Result<Vec<u8>, String> {
    if steps.is_empty() {
        return Err("`steps` is empty: give percentages ending at 100, e.g. [10, 50, 100]".into());
    }
    let mut out = Vec::with_capacity(steps.len());
    let mut last = 0i64;
    for (i, &p) in steps.iter().enumerate() {
        if !(1..=100).contains(&p) {
            return Err(format!(
                "`steps[{i}]` = {p}: a step is a percentage of traffic from 1 to 100"
            ));
        }
        if p <= last {
            return Err(format!(
                "`steps` must increase: `steps[{i}]` = {p} follows {last}"
            ));
        }
        last = p;
        out.push(u8::try_from(p).unwrap_or(100));
    }
    if last != 100 {
        return Err(format!(
            "`steps` must end at 100 (all traffic on the new version), not {last}"
        ));
    }
    Ok(out)
}

/// The `with` table of `deploy.audit`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The service.
    pub service: String,
    /// Fail the phase when drift is found (default true).
    #[serde(default)]
    pub fail_on_drift: Option<bool>,
}

/// The `with` table of `deploy.rollback`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackSettings {
    /// The service switched back.
    pub service: String,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration like \"500ms\", \"2s\" or \"1m\": {e}"
                ))
            })
    }
}

pub(crate) mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_checked() {
        assert_eq!(check_steps(&[10, 50, 100]).unwrap(), vec![10, 50, 100]);
        for (bad, says) in [
            (&[50, 10, 100][..], "must increase"),
            (&[10, 10, 100][..], "must increase"),
            (&[10, 50][..], "must end at 100"),
            (&[0, 100][..], "from 1 to 100"),
            (&[10, 150][..], "from 1 to 100"),
            (&[][..], "is empty"),
        ] {
            let e = check_steps(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn listen_addresses_are_checked() {
        assert!(check_listen("127.0.0.1:8080").is_ok());
        assert!(check_listen("localhost:8080").is_ok());
        assert!(check_listen("[::1]:80").is_ok());
        for bad in ["8080", "127.0.0.1", "127.0.0.1:0", "example.invalid:80"] {
            assert!(check_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_names_are_checked() {
        assert!(check_service_name("shop-web").is_ok());
        for bad in ["", "Shop", "-x", "a/b", "a b"] {
            assert!(check_service_name(bad).is_err(), "{bad}");
        }
    }
}
