//! HTTP probes: the health check of new containers and the `http.check` kind's requests.

use std::time::Duration;

use bollard::Docker;

use crate::engine;
use crate::settings::Health;

/// The answer to one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An HTTP answer: status and body (at most 64 KiB).
    Answer(u16, String),
    /// No answer: refused, reset, timed out.
    NoAnswer(String),
}

/// A client for probes (no proxy, no redirects followed, no keep-alive reuse needed).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default()
}

/// `GET url` with a limit.
pub async fn get(client: &reqwest::Client, url: &str, timeout: Duration) -> Probe {
    let request = async {
        let response = client.get(url).timeout(timeout).send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        let body = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]).into_owned();
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(timeout + Duration::from_millis(100), request).await {
        Ok(Ok((status, body))) => Probe::Answer(status, body),
        Ok(Err(e)) => Probe::NoAnswer(reqwest_reason(&e)),
        Err(_) => Probe::NoAnswer(format!("no answer within {}", fmt_duration(timeout))),
    }
}

fn reqwest_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// A duration as `1.5s` or `250ms`.
pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Waits until a new container passes its health check `healthy` times in a row. Fails
/// when it answers outside 2xx/3xx `unhealthy` times in a row, when it stops running, or
/// when `within` passes; the error says which and what it answered last.
pub async fn wait_healthy(
    docker: &Docker,
    name: &str,
    host_port: u16,
    container_port: u16,
    health: &Health,
) -> Result<Duration, String> {
    let client = client();
    let url = format!("http://127.0.0.1:{host_port}{}", health.path);
    let started = tokio::time::Instant::now();
    let deadline = started + health.within;
    let mut passes = 0u32;
    let mut failures = 0u32;
    let mut last;
    loop {
        match get(&client, &url, health.timeout).await {
            Probe::Answer(status, _) if (200..400).contains(&status) => {
                passes += 1;
                failures = 0;
                last = format!("answered {status}");
                if passes >= health.healthy {
                    return Ok(started.elapsed());
                }
            }
            Probe::Answer(status, _) => {
                passes = 0;
                failures += 1;
                last = format!("answered {status}");
                if failures >= health.unhealthy {
                    return Err(format!(
                        "container {name} failed its health check: GET {} answered {status} {failures} times in a row",
                        health.path
                    ));
                }
            }
            Probe::NoAnswer(reason) => {
                passes = 0;
                last = format!("no answer ({reason})");
            }
        }
        match engine::status(docker, name, container_port).await {
            Ok(Some(s)) if !s.running => {
                return Err(format!(
                    "container {name} stopped before it was healthy (status {}, exit code {})",
                    s.status,
                    s.exit_code.map_or("none".into(), |c| c.to_string())
                ));
            }
            Ok(None) => {
                return Err(format!(
                    "container {name} disappeared before it was healthy"
                ));
            }
            _ => {}
        }
        if tokio::time::Instant::now() + health.interval > deadline {
            let hint = if last.starts_with("no answer") {
                format!(" (does the container serve HTTP on port {container_port}?)")
            } else {
                String::new()
            };
            return Err(format!(
                "container {name} did not pass its health check GET {} within {}: last probe {last}{hint}",
                health.path,
                fmt_duration(health.within)
            ));
        }
        tokio::time::sleep(health.interval).await;
    }
}
