//! Light phases (`Phase::is_light`): attempts that wait for work done on another thread are
//! polled by the engine loop instead of a task of their own. They must run, pass outputs,
//! time out, retry and stop like any other phase.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orch_core::{
    Description, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec, PhaseStatus,
    Pipeline, PlanContext, RunControl, RunOptions, RunRecord, RunStatus, Runner,
};
use tokio::sync::{Notify, oneshot};

/// Hands its work to a thread of its own and waits for the answer: publishes
/// `v = ID(<IN>)`. With `hang`, no answer ever comes (the sender is kept, unused) and
/// `waiting` is notified once the attempt waits; `dropped` counts attempts that were
/// dropped before their answer came.
struct Remote {
    hang: bool,
    unanswered: Mutex<Vec<oneshot::Sender<String>>>,
    waiting: Arc<Notify>,
    dropped: Arc<AtomicUsize>,
}

struct CountDrop {
    armed: bool,
    dropped: Arc<AtomicUsize>,
}

impl Drop for CountDrop {
    fn drop(&mut self) {
        if self.armed {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Phase for Remote {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("remote")
    }

    fn is_light(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let (tx, rx) = oneshot::channel::<String>();
        let value = format!("{}({})", ctx.phase_id(), ctx.env_var("IN").unwrap_or(""));
        if self.hang {
            self.unanswered.lock().unwrap().push(tx);
            self.waiting.notify_one();
        } else {
            std::thread::spawn(move || {
                // Some work, so the attempt is still waiting when the engine first polls it.
                std::thread::sleep(Duration::from_millis(5));
                let _ = tx.send(value);
            });
        }
        let mut guard = CountDrop {
            armed: true,
            dropped: self.dropped.clone(),
        };
        let answer = tokio::select! {
            r = rx => r.map_err(|_| PhaseError::failed("the worker went away")),
            () = ctx.cancelled().cancelled() => Err(PhaseError::Cancelled),
        };
        guard.armed = false;
        Ok(PhaseOutcome::with_outputs([("v", answer?)]))
    }
}

/// a -> b, c -> d (needs b and c); the phases in `hang` never get an answer, and have
/// `timeout` and one retry; `waiting` is notified as each of their attempts waits.
fn diamond(
    dir: &std::path::Path,
    hang: &[&str],
    timeout: Duration,
    waiting: &Arc<Notify>,
    dropped: &Arc<AtomicUsize>,
) -> Arc<Pipeline> {
    let shape: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])];
    let mut b = Pipeline::builder("light", dir).jobs(2);
    for (id, needs) in shape {
        let mut spec = PhaseSpec::new(PhaseId::new(id).unwrap(), "remote")
            .needs(needs.iter().map(|n| PhaseId::new(n).unwrap()));
        let input: Vec<String> = needs
            .iter()
            .map(|n| format!("${{{{ phases.{n}.outputs.v }}}}"))
            .collect();
        spec.env.insert("IN".into(), input.join(","));
        if hang.contains(id) {
            spec.timeout = Some(timeout);
            spec.retries = Some(1);
        }
        let phase = Remote {
            hang: hang.contains(id),
            unanswered: Mutex::default(),
            waiting: waiting.clone(),
            dropped: dropped.clone(),
        };
        b = b.custom(spec, Arc::new(phase));
    }
    Arc::new(b.build().unwrap())
}

/// The timeout of the phases that hang, when the test waits for it.
const SHORT: Duration = Duration::from_millis(100);

async fn run(p: Arc<Pipeline>, control: RunControl) -> RunRecord {
    let options = RunOptions {
        write_files: false,
        ..RunOptions::default()
    };
    // A light attempt the loop forgot to poll would hang the run.
    tokio::time::timeout(
        Duration::from_secs(30),
        Runner::new(p, options).run(control),
    )
    .await
    .expect("the run finished")
    .unwrap()
}

#[tokio::test]
async fn light_phases_run_and_pass_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let dropped = Arc::default();
    let p = diamond(dir.path(), &[], SHORT, &Arc::default(), &dropped);
    let r = run(p, RunControl::new()).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(r.phases["d"].outputs["v"], "d(b(a()),c(a()))");
    assert_eq!(dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_light_attempt_that_times_out_is_dropped_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let dropped = Arc::default();
    let p = diamond(dir.path(), &["b"], SHORT, &Arc::default(), &dropped);
    let r = run(p, RunControl::new()).await;
    assert_eq!(r.status, RunStatus::Failed);
    let b = &r.phases["b"];
    assert_eq!(b.status, PhaseStatus::TimedOut);
    assert_eq!(b.attempts, 2);
    assert_eq!(r.phases["c"].status, PhaseStatus::Succeeded);
    assert_eq!(r.phases["d"].status, PhaseStatus::Blocked);
    // Both attempts were dropped while they waited.
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stopping_a_run_reaches_waiting_light_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let dropped = Arc::default();
    // A timeout far beyond the stop: the stop, not the timeout, must end the attempt,
    // however slowly the machine runs the test.
    let waiting = Arc::new(Notify::new());
    let p = diamond(
        dir.path(),
        &["a"],
        Duration::from_secs(600),
        &waiting,
        &dropped,
    );
    let control = RunControl::new();
    let stopper = control.clone();
    tokio::spawn(async move {
        waiting.notified().await;
        stopper.stop();
    });
    let r = run(p, control).await;
    assert_eq!(r.status, RunStatus::Cancelled);
    assert_eq!(r.phases["a"].status, PhaseStatus::Cancelled);
    assert_eq!(r.phases["a"].attempts, 1);
}
