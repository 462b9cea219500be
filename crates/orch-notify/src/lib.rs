//! Notifications: a run's events posted to the pipeline's `[notify.NAME]` targets.
//!
//! A [`Notifier`] is an [`EventSink`]: subscribe it to a [`orch_core::Runner`], and after
//! the run call [`Notifier::finish`]. The engine never waits for a target: events are put
//! on a bounded queue per target and sent by a task of their own.
#![doc = include_str!("../README.md")]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orch_core::redact::Redactor;
use orch_core::spec::{NotifyFormat, NotifyTarget, NotifyUrl};
use orch_core::{Event, EventSink, PhaseStatus, Pipeline, RunEvent, RunStatus};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod hmac;

pub use hmac::hmac_sha256_hex;

/// The file of delivery records in a run's directory.
pub const RECORDS_FILE: &str = "notify.jsonl";
/// Header carrying the signature of a JSON body: `sha256=HEX`.
pub const SIGNATURE_HEADER: &str = "x-orch-signature";
/// Header carrying the Unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-orch-timestamp";
/// Header naming the event (`run.finished`, `phase.failed`...).
pub const EVENT_HEADER: &str = "x-orch-event";
/// Events waiting per target; more are dropped (and recorded as dropped).
pub const QUEUE: usize = 256;

/// One delivery waiting to be sent.
struct Job {
    event: &'static str,
    body: Arc<str>,
}

struct Target {
    spec: NotifyTarget,
    url: Result<String, String>,
    key: Result<Option<Vec<u8>>, String>,
    /// Events queued or being sent.
    pending: Mutex<Vec<&'static str>>,
}

#[derive(Default)]
struct RunState {
    run_id: Option<String>,
    run_dir: Option<PathBuf>,
    failed: Vec<String>,
}

struct Shared {
    pipeline: String,
    state_dir: PathBuf,
    targets: Vec<Target>,
    redactor: Redactor,
    run: Mutex<RunState>,
    deadline: Mutex<Option<Instant>>,
}

/// Posts a run's events to the pipeline's notification targets. See the crate docs.
pub struct Notifier {
    shared: Arc<Shared>,
    senders: Mutex<Vec<Option<mpsc::Sender<Job>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Notifier {
    /// A notifier for `pipeline`'s targets, recording into `state_dir/runs/RUN_ID/`;
    /// `None` when the pipeline has none. URLs from `url_env`, HMAC keys and the values of
    /// the phases' secrets (masked in everything it sends or records) are read from the
    /// environment now. Must be called inside a Tokio runtime (it spawns one task per
    /// target).
    pub fn new(pipeline: &Pipeline, state_dir: &Path) -> Option<Arc<Self>> {
        let spec = pipeline.spec();
        if spec.notify.is_empty() {
            return None;
        }
        // The phases' declarations are in the nodes once the pipeline is validated.
        let mut secret_values: Vec<String> = pipeline
            .nodes()
            .iter()
            .flat_map(|n| n.spec.secrets.iter())
            .filter_map(|n| std::env::var(n).ok())
            .collect();
        let mut targets = Vec::new();
        for t in &spec.notify {
            let url = match &t.url {
                NotifyUrl::Literal(u) => Ok(u.clone()),
                NotifyUrl::Env(name) => match std::env::var(name) {
                    Ok(u) if !u.is_empty() => {
                        secret_values.push(u.clone());
                        Ok(u)
                    }
                    _ => Err(format!("`url_env` {name} is not set")),
                },
            };
            let key = match &t.secret {
                None => Ok(None),
                Some(name) => match std::env::var(name) {
                    Ok(k) if !k.is_empty() => {
                        secret_values.push(k.clone());
                        Ok(Some(k.into_bytes()))
                    }
                    _ => Err(format!(
                        "secret {name} is not set (nothing is sent unsigned)"
                    )),
                },
            };
            targets.push(Target {
                spec: t.clone(),
                url,
                key,
                pending: Mutex::new(Vec::new()),
            });
        }
        let shared = Arc::new(Shared {
            pipeline: spec.name.clone(),
            state_dir: state_dir.to_owned(),
            targets,
            redactor: Redactor::new(secret_values),
            run: Mutex::new(RunState::default()),
            deadline: Mutex::new(None),
        });
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for i in 0..shared.targets.len() {
            let (tx, rx) = mpsc::channel(QUEUE);
            senders.push(Some(tx));
            workers.push(tokio::spawn(worker(shared.clone(), i, rx)));
        }
        Some(Arc::new(Self {
            shared,
            senders: Mutex::new(senders),
            workers: Mutex::new(workers),
        }))
    }

    /// Waits for pending deliveries, at most the largest target `timeout`; what is still
    /// pending then is given up and recorded so.
    pub async fn finish(&self) {
        let grace = self
            .shared
            .targets
            .iter()
            .map(|t| t.spec.timeout)
            .max()
            .unwrap_or_default();
        *lock(&self.shared.deadline) = Some(Instant::now() + grace);
        lock(&self.senders).clear();
        let mut workers = std::mem::take(&mut *lock(&self.workers));
        let mut done = 0;
        let all = async {
            while let Some(w) = workers.get_mut(done) {
                let _ = w.await;
                done += 1;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            // Stopped at their next await; a worker writing its record finishes the line
            // first, so nothing is cut short when the process exits.
            let rest = workers.split_off(done);
            for w in &rest {
                w.abort();
            }
            for w in rest {
                let _ = w.await;
            }
            let msg = format!("given up at the run's end after {}", humanize(grace));
            for t in &self.shared.targets {
                let pending = std::mem::take(&mut *lock(&t.pending));
                for event in pending {
                    self.shared
                        .record(t, event, 0, "abandoned", None, Some(&msg));
                }
            }
        }
    }

    fn enqueue(&self, event: &'static str, body_of: impl Fn(NotifyFormat) -> Value) {
        let senders = lock(&self.senders);
        let mut json_body = None;
        let mut slack_body = None;
        for (i, t) in self.shared.targets.iter().enumerate() {
            if !t.spec.on.iter().any(|e| e == event) {
                continue;
            }
            let Some(Some(tx)) = senders.get(i) else {
                continue;
            };
            let cache = match t.spec.format {
                NotifyFormat::Json => &mut json_body,
                NotifyFormat::Slack => &mut slack_body,
            };
            let body = cache
                .get_or_insert_with(|| {
                    let mut v = body_of(t.spec.format);
                    self.shared.redact(&mut v);
                    Arc::<str>::from(v.to_string())
                })
                .clone();
            lock(&t.pending).push(event);
            if tx.try_send(Job { event, body }).is_err() {
                t.done(event);
                self.shared.record(
                    t,
                    event,
                    0,
                    "dropped",
                    None,
                    Some("the target's queue is full"),
                );
            }
        }
    }
}

impl EventSink for Notifier {
    fn on_event(&self, event: &Event) {
        let s = &self.shared;
        let at = event.at;
        match &event.kind {
            RunEvent::RunStarted {
                run_id, pipeline, ..
            } => {
                {
                    let mut run = lock(&s.run);
                    run.run_id = Some(run_id.to_string());
                    run.run_dir = Some(s.state_dir.join("runs").join(run_id.as_str()));
                    run.failed.clear();
                }
                let run_id = run_id.to_string();
                self.enqueue("run.started", |f| match f {
                    NotifyFormat::Json => json!({
                        "event": "run.started", "run_id": run_id, "pipeline": pipeline,
                        "at": unix(at),
                    }),
                    NotifyFormat::Slack => json!({
                        "text": format!("orch: run {run_id} of {pipeline} started"),
                    }),
                });
            }
            RunEvent::PhaseStarted { phase, attempt } => {
                let run_id = s.run_id();
                self.enqueue("phase.started", |f| match f {
                    NotifyFormat::Json => json!({
                        "event": "phase.started", "run_id": run_id, "pipeline": s.pipeline,
                        "phase": phase.as_str(), "attempt": attempt, "at": unix(at),
                    }),
                    NotifyFormat::Slack => json!({
                        "text": format!("orch: phase {phase} of {} (run {run_id}) started, attempt {attempt}", s.pipeline),
                    }),
                });
            }
            RunEvent::PhaseRetrying {
                phase,
                attempt,
                error,
                delay,
            } => {
                let run_id = s.run_id();
                self.enqueue("phase.retrying", |f| match f {
                    NotifyFormat::Json => json!({
                        "event": "phase.retrying", "run_id": run_id, "pipeline": s.pipeline,
                        "phase": phase.as_str(), "attempt": attempt, "error": error,
                        "delay_ms": delay.as_millis() as u64,
                    }),
                    NotifyFormat::Slack => json!({
                        "text": format!("orch: phase {phase} of {} (run {run_id}) attempt {attempt} failed: {error}; retrying in {}", s.pipeline, humanize(*delay)),
                    }),
                });
            }
            RunEvent::PhaseFinished {
                phase,
                status,
                attempts,
                duration,
                exit_code,
                reason,
                allowed_failure,
                ..
            } => {
                let failed = matches!(status, PhaseStatus::Failed | PhaseStatus::TimedOut)
                    && !allowed_failure;
                if failed {
                    lock(&s.run).failed.push(phase.to_string());
                }
                let run_id = s.run_id();
                let body = |event: &str, f: NotifyFormat| match f {
                    NotifyFormat::Json => json!({
                        "event": event, "run_id": run_id, "pipeline": s.pipeline,
                        "phase": phase.as_str(), "status": status.as_str(),
                        "attempts": attempts, "duration_ms": duration.as_millis() as u64,
                        "exit_code": exit_code, "reason": reason,
                        "allowed_failure": allowed_failure, "at": unix(at),
                    }),
                    NotifyFormat::Slack => {
                        let mut text = format!(
                            "orch: phase {phase} of {} (run {run_id}) {} after {} ({attempts} attempt{})",
                            s.pipeline,
                            status.as_str(),
                            humanize(*duration),
                            if *attempts == 1 { "" } else { "s" },
                        );
                        if let Some(r) = reason {
                            text.push_str(": ");
                            text.push_str(r);
                        }
                        json!({ "text": text })
                    }
                };
                self.enqueue("phase.finished", |f| body("phase.finished", f));
                if failed {
                    self.enqueue("phase.failed", |f| body("phase.failed", f));
                }
            }
            RunEvent::RunFinished {
                run_id,
                status,
                duration,
            } => {
                let failed = lock(&s.run).failed.clone();
                let run_id = run_id.to_string();
                let body = |event: &str, f: NotifyFormat| match f {
                    NotifyFormat::Json => json!({
                        "event": event, "run_id": run_id, "pipeline": s.pipeline,
                        "status": status.as_str(), "duration_ms": duration.as_millis() as u64,
                        "failed_phases": failed, "at": unix(at),
                    }),
                    NotifyFormat::Slack => {
                        let mut text = format!(
                            "orch: run {run_id} of {} {} in {}",
                            s.pipeline,
                            status.as_str(),
                            humanize(*duration)
                        );
                        if !failed.is_empty() {
                            text.push_str(&format!("\nfailed phases: {}", failed.join(", ")));
                        }
                        json!({ "text": text })
                    }
                };
                self.enqueue("run.finished", |f| body("run.finished", f));
                if *status == RunStatus::Failed {
                    self.enqueue("run.failed", |f| body("run.failed", f));
                }
            }
            _ => {}
        }
    }
}

impl Shared {
    fn run_id(&self) -> String {
        lock(&self.run).run_id.clone().unwrap_or_default()
    }

    fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }

    /// Masks every secret in every string of `v`.
    fn redact(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let std::borrow::Cow::Owned(r) = self.redactor.redact(s) {
                    *s = r;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.redact(x)),
            _ => {}
        }
    }

    /// Appends one line to `RUN_DIR/notify.jsonl`; on a failure, also warns on stderr.
    fn record(
        &self,
        t: &Target,
        event: &str,
        attempt: u32,
        outcome: &str,
        status: Option<u16>,
        error: Option<&str>,
    ) {
        let error = error.map(|e| self.redactor.redact(e).into_owned());
        if outcome != "delivered" && outcome != "retrying" {
            eprintln!(
                "orch: notification `{}` ({event}) {outcome}{}",
                t.spec.name,
                error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        let Some(dir) = lock(&self.run).run_dir.clone() else {
            return;
        };
        let line = json!({
            "at": unix(SystemTime::now()), "target": t.spec.name, "event": event,
            "attempt": attempt, "outcome": outcome, "status": status, "error": error,
        });
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(RECORDS_FILE))?;
            // One write(2) of the whole line: O_APPEND keeps lines whole for readers.
            f.write_all(format!("{line}\n").as_bytes())
        });
        if let Err(e) = written {
            eprintln!(
                "orch: cannot record notification `{}` in {}: {e}",
                t.spec.name,
                dir.display()
            );
        }
    }
}

async fn worker(shared: Arc<Shared>, i: usize, mut rx: mpsc::Receiver<Job>) {
    let Some(t) = shared.targets.get(i) else {
        return;
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build();
    while let Some(job) = rx.recv().await {
        match &client {
            Ok(c) => deliver(&shared, t, c, &job).await,
            Err(e) => shared.record(
                t,
                job.event,
                0,
                "failed",
                None,
                Some(&format!("cannot build an HTTP client: {e}")),
            ),
        }
        t.done(job.event);
    }
}

impl Target {
    fn done(&self, event: &str) {
        let mut p = lock(&self.pending);
        if let Some(i) = p.iter().position(|e| *e == event) {
            p.remove(i);
        }
    }
}

/// Delay before attempt `attempt + 1`: 250 ms doubling, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.saturating_sub(1).min(5)))
        .min(Duration::from_secs(5))
}

async fn deliver(shared: &Shared, t: &Target, client: &reqwest::Client, job: &Job) {
    let url = match &t.url {
        Ok(u) => u,
        Err(e) => return shared.record(t, job.event, 0, "failed", None, Some(e)),
    };
    let key = match &t.key {
        Ok(k) => k,
        Err(e) => return shared.record(t, job.event, 0, "failed", None, Some(e)),
    };
    let attempts = t.spec.retries + 1;
    for attempt in 1..=attempts {
        let mut limit = t.spec.timeout;
        if let Some(d) = shared.deadline() {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return shared.record(
                    t,
                    job.event,
                    attempt,
                    "abandoned",
                    None,
                    Some("the run ended and its notification time is up"),
                );
            }
            limit = limit.min(left);
        }
        let mut req = client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("orch/", env!("CARGO_PKG_VERSION")))
            .header(EVENT_HEADER, job.event)
            .body(job.body.to_string());
        if let Some(k) = key {
            let ts = unix(SystemTime::now()).to_string();
            let mut signed = Vec::with_capacity(ts.len() + 1 + job.body.len());
            signed.extend_from_slice(ts.as_bytes());
            signed.push(b'.');
            signed.extend_from_slice(job.body.as_bytes());
            req = req.header(TIMESTAMP_HEADER, ts).header(
                SIGNATURE_HEADER,
                format!("sha256={}", hmac_sha256_hex(k, &signed)),
            );
        }
        let (status, error, retryable) = match tokio::time::timeout(limit, req.send()).await {
            Ok(Ok(resp)) => {
                let code = resp.status();
                if code.is_success() {
                    return shared.record(
                        t,
                        job.event,
                        attempt,
                        "delivered",
                        Some(code.as_u16()),
                        None,
                    );
                }
                let retry = code.is_server_error() || code.as_u16() == 429 || code.as_u16() == 408;
                (
                    Some(code.as_u16()),
                    format!("the receiver answered {code}"),
                    retry,
                )
            }
            Ok(Err(e)) => (None, error_text(e), true),
            Err(_) => (None, format!("no answer within {}", humanize(limit)), true),
        };
        if !retryable || attempt == attempts {
            return shared.record(t, job.event, attempt, "failed", status, Some(&error));
        }
        shared.record(t, job.event, attempt, "retrying", status, Some(&error));
        let mut wait = backoff(attempt);
        if let Some(d) = shared.deadline() {
            wait = wait.min(d.saturating_duration_since(Instant::now()));
        }
        tokio::time::sleep(wait).await;
    }
}

/// A request error without its URL (a webhook URL can be a credential).
fn error_text(e: reqwest::Error) -> String {
    orch_core::errors::chain(&e.without_url())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn humanize(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use orch_core::{LoadOptions, Pipeline, Registry};

    use super::Notifier;

    #[test]
    fn the_phases_secrets_are_masked_in_what_it_sends() {
        // `PATH` stands for a secret: set in every test's environment, long enough to mask.
        let path = std::env::var("PATH").expect("PATH is set");
        let text = r#"
[pipeline]
name = "ship"
[notify.chat]
url = "http://127.0.0.1:9/hook"
[phases.deploy]
run = "true"
secrets = ["PATH"]
"#;
        let pipeline = Pipeline::from_str(
            text,
            Path::new("orch.toml"),
            &Registry::with_builtins(),
            &LoadOptions::default(),
        )
        .expect("valid pipeline");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _entered = rt.enter();
        let notifier = Notifier::new(&pipeline, &std::env::temp_dir()).expect("a target");
        let sent = format!("token {path}");
        assert_eq!(notifier.shared.redactor.redact(&sent), "token ***");
    }
}
