//! The `http.check` kind: smoke tests over HTTP. Each URL must answer the expected status
//! (and contain the expected text, when given) within its retries.

use std::time::Duration;

use async_trait::async_trait;
use orch_core::record::Outputs;
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
};
use serde::Deserialize;

use crate::health::{Probe, client, fmt_duration, get};

/// One URL or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    /// One URL.
    One(String),
    /// Several, checked in order.
    Many(Vec<String>),
}

/// The `with` table of `http.check`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSettings {
    /// `http://` URLs (templates).
    pub urls: Urls,
    /// Expected status (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    /// Text the body must contain (template).
    #[serde(default)]
    pub body: Option<String>,
    /// Extra attempts per URL after a failed one (default 3).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Between attempts (default 1s).
    #[serde(default, with = "crate::check::duration")]
    pub interval: Option<Duration>,
    /// Limit of one request (default 5s).
    #[serde(default, with = "crate::check::duration")]
    pub timeout: Option<Duration>,
}

/// The `http.check` kind.
#[derive(Clone, Debug)]
pub struct CheckPhase {
    urls: Vec<String>,
    status: u16,
    body: Option<String>,
    retries: u32,
    interval: Duration,
    timeout: Duration,
}

impl CheckPhase {
    /// Checks the settings of a declaration; an error points at its `with` table.
    pub fn from_settings(spec: &PhaseSpec, s: CheckSettings) -> Result<Self, KindError> {
        let bad = |message: String| spec.with.error(message);
        let urls = match s.urls {
            Urls::One(u) => vec![u],
            Urls::Many(v) => v,
        };
        if urls.is_empty() {
            return Err(bad("`urls` is empty".into()));
        }
        for u in &urls {
            if !u.contains("${{") && !u.starts_with("http://") {
                return Err(bad(format!(
                    "`{u}` is not an http:// URL (https is not supported by http.check)"
                )));
            }
        }
        let status = s.status.unwrap_or(200);
        if !(100..=599).contains(&status) {
            return Err(bad(format!("`status` = {status} is not an HTTP status")));
        }
        let retries = s.retries.unwrap_or(3);
        if retries > 100 {
            return Err(bad(format!("`retries` = {retries}: at most 100")));
        }
        Ok(Self {
            urls,
            status,
            body: s.body,
            retries,
            interval: s.interval.unwrap_or(Duration::from_secs(1)),
            timeout: s.timeout.unwrap_or(Duration::from_secs(5)),
        })
    }
}

/// The first 120 characters of a body, on one line.
fn excerpt(body: &str) -> String {
    let one: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}…", one.chars().take(120).collect::<String>())
    } else {
        one
    }
}

#[async_trait]
impl Phase for CheckPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let urls: Vec<String> = self.urls.iter().map(|u| ctx.render(u)).collect();
        let mut d = Description::new(format!(
            "GET {} and expect {}",
            urls.join(", "),
            self.status
        ));
        if let Some(b) = &self.body {
            d = d.detail("body contains", ctx.render(b));
        }
        d.detail(
            "retries",
            format!("{} every {}", self.retries, fmt_duration(self.interval)),
        )
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let render = |key: &str, v: &str| {
            ctx.render(v)
                .map_err(|e| PhaseError::failed(format!("cannot render `{key}`: {e}")))
        };
        let body = match &self.body {
            Some(b) => Some(render("body", b)?),
            None => None,
        };
        let client = client();
        let mut last_status = 0u16;
        for raw in &self.urls {
            let url = render("urls", raw)?;
            if !url.starts_with("http://") {
                return Err(PhaseError::failed(format!("`{url}` is not an http:// URL")));
            }
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let probe = tokio::select! {
                    biased;
                    () = ctx.cancelled().cancelled() => return Err(PhaseError::Cancelled),
                    probe = get(&client, &url, self.timeout) => probe,
                };
                let problem = match probe {
                    Probe::Answer(status, text) => {
                        last_status = status;
                        let missing = body.as_ref().filter(|b| !text.contains(b.as_str()));
                        if status != self.status {
                            Some(format!(
                                "answered {status}, expected {} (body: {})",
                                self.status,
                                excerpt(&text)
                            ))
                        } else if let Some(b) = missing {
                            Some(format!(
                                "answered {status} without `{b}` in its body (body: {})",
                                excerpt(&text)
                            ))
                        } else {
                            ctx.log(format!("GET {url}: {status} (attempt {attempt})"));
                            None
                        }
                    }
                    Probe::NoAnswer(reason) => Some(format!("no answer: {reason}")),
                };
                let Some(problem) = problem else { break };
                ctx.log(format!("GET {url}: {problem} (attempt {attempt})"));
                if attempt > self.retries {
                    return Err(PhaseError::failed(format!(
                        "GET {url} {problem}, after {attempt} attempt{}",
                        if attempt == 1 { "" } else { "s" }
                    )));
                }
                tokio::time::sleep(self.interval).await;
            }
        }
        Ok(PhaseOutcome {
            outputs: Outputs::from([
                ("checked".to_owned(), self.urls.len().to_string()),
                ("status".to_owned(), last_status.to_string()),
            ]),
            ..PhaseOutcome::default()
        })
    }
}

pub(crate) mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration: {e}")))
    }
}

/// Registers `http.check`.
pub(crate) fn register(
    registry: &mut orch_core::Registry,
) -> Result<(), orch_core::errors::RegistryError> {
    registry.add_kind(
        orch_core::registry::Kind::new(
            "http.check",
            "probe URLs: expected status and body, with retries",
        ),
        CheckPhase::from_settings,
    )
}
