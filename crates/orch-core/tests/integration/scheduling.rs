//! The scheduler's rules, in process and on paused tokio time: declaration order, blocking,
//! fail-fast and keep-going, retries with their backoff, the circuit breaker and timeouts.
//! Phases are in-process; time only moves when every task waits, so a backoff of minutes
//! or a phase that would hang for an hour takes no real time, and every instant is exact.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orch_core::spec::{Backoff, BreakerSpec, Unavailable};
use orch_core::{
    AgentSpec, Description, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec,
    PhaseStatus, Pipeline, PlanContext, Reason, RunControl, RunOptions, RunRecord, RunStatus,
    Runner, Stop, WithTable,
};
use tokio::time::Instant;

/// What the phases of one run saw: `(phase, attempt, started at, in whole seconds since the
/// run began)`, in start order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(String, u32, u64)>>>);

impl Log {
    fn starts(&self) -> Vec<(String, u32, u64)> {
        self.0.lock().unwrap().clone()
    }

    fn order(&self) -> Vec<String> {
        self.starts().into_iter().map(|(p, _, _)| p).collect()
    }
}

/// An in-process phase: works for `work` (virtual time), then fails its first `fails`
/// attempts.
struct Step {
    log: Log,
    epoch: Instant,
    work: Duration,
    fails: u32,
}

#[async_trait]
impl Phase for Step {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("step")
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let at = self.epoch.elapsed().as_secs();
        self.log
            .0
            .lock()
            .unwrap()
            .push((ctx.phase_id().to_string(), ctx.attempt(), at));
        tokio::time::sleep(self.work).await;
        if ctx.attempt() <= self.fails {
            return Err(PhaseError::failed(format!(
                "attempt {} broke",
                ctx.attempt()
            )));
        }
        Ok(PhaseOutcome::default())
    }
}

/// A pipeline built phase by phase: `(id, needs, fails)`, each working for a second.
struct Shape {
    log: Log,
    epoch: Instant,
    builder: Option<orch_core::PipelineBuilder>,
}

impl Shape {
    fn new(jobs: usize) -> Self {
        Self {
            log: Log::default(),
            epoch: Instant::now(),
            builder: Some(Pipeline::builder("scheduling", ".").jobs(jobs)),
        }
    }

    fn phase(self, id: &str, needs: &[&str], fails: u32) -> Self {
        self.with(id, needs, fails, |_| {})
    }

    fn with(self, id: &str, needs: &[&str], fails: u32, edit: impl FnOnce(&mut PhaseSpec)) -> Self {
        self.working(id, needs, fails, Duration::from_secs(1), edit)
    }

    fn working(
        mut self,
        id: &str,
        needs: &[&str],
        fails: u32,
        work: Duration,
        edit: impl FnOnce(&mut PhaseSpec),
    ) -> Self {
        let mut spec = PhaseSpec::new(PhaseId::new(id).unwrap(), "step")
            .needs(needs.iter().map(|n| PhaseId::new(n).unwrap()));
        edit(&mut spec);
        let step = Step {
            log: self.log.clone(),
            epoch: self.epoch,
            work,
            fails,
        };
        self.builder = self.builder.map(|b| b.custom(spec, Arc::new(step)));
        self
    }

    fn agent(mut self, agent: AgentSpec) -> Self {
        self.builder = self.builder.map(|b| b.agent(agent));
        self
    }

    async fn run(mut self, keep_going: bool) -> (RunRecord, Log) {
        let p = Arc::new(self.builder.take().unwrap().build().unwrap());
        let options = RunOptions {
            keep_going,
            write_files: false,
            ..RunOptions::default()
        };
        let record = Runner::new(p, options)
            .run(RunControl::new())
            .await
            .unwrap();
        (record, self.log)
    }
}

fn status(r: &RunRecord, id: &str) -> (PhaseStatus, Option<Reason>) {
    let p = &r.phases[id];
    (p.status, p.cause.as_deref().cloned())
}

#[tokio::test(start_paused = true)]
async fn ready_phases_start_in_declaration_order() {
    // Declared z, a, m (no needs), then b needing z: with one job the order is the
    // file's, whatever the ids.
    let (r, log) = Shape::new(1)
        .phase("z", &[], 0)
        .phase("a", &[], 0)
        .phase("b", &["z"], 0)
        .phase("m", &[], 0)
        .run(false)
        .await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(log.order(), ["z", "a", "b", "m"]);
    // One at a time, a second each.
    let at: Vec<u64> = log.starts().iter().map(|s| s.2).collect();
    assert_eq!(at, [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_phase_starts_once_everything_it_needs_succeeded() {
    let (r, log) = Shape::new(4)
        .phase("a", &[], 0)
        .phase("b", &[], 0)
        .phase("c", &["a", "b"], 0)
        .run(false)
        .await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(
        log.starts(),
        [("a".into(), 1, 0), ("b".into(), 1, 0), ("c".into(), 1, 1)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_blocks_its_dependents_and_stops_the_run() {
    let (r, log) = Shape::new(1)
        .phase("a", &[], 1)
        .phase("b", &["a"], 0)
        .phase("c", &["b"], 0)
        .phase("d", &[], 0)
        .run(false)
        .await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(log.order(), ["a"]);
    assert_eq!(
        status(&r, "a"),
        (
            PhaseStatus::Failed,
            Some(Reason::Error {
                message: "attempt 1 broke".into()
            })
        )
    );
    // Blocked transitively, each naming the phase it needs.
    assert_eq!(
        status(&r, "b"),
        (
            PhaseStatus::Blocked,
            Some(Reason::Blocked { by: "a".into() })
        )
    );
    assert_eq!(
        status(&r, "c"),
        (
            PhaseStatus::Blocked,
            Some(Reason::Blocked { by: "b".into() })
        )
    );
    // Fail-fast: what does not depend on it never starts.
    let fail_fast = Stop::FailFast {
        after: "a".into(),
        timed_out: false,
    };
    assert_eq!(
        status(&r, "d"),
        (
            PhaseStatus::Cancelled,
            Some(Reason::NotStarted { stop: fail_fast })
        )
    );
    assert_eq!(
        r.phases["d"].reason.as_deref(),
        Some("not started: the run stopped after `a` failed")
    );
}

#[tokio::test(start_paused = true)]
async fn keep_going_runs_what_does_not_depend_on_a_failure() {
    let (r, log) = Shape::new(1)
        .phase("a", &[], 1)
        .phase("b", &["a"], 0)
        .phase("d", &[], 0)
        .run(true)
        .await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(log.order(), ["a", "d"]);
    assert_eq!(status(&r, "b").0, PhaseStatus::Blocked);
    assert_eq!(status(&r, "d"), (PhaseStatus::Succeeded, None));
}

#[tokio::test(start_paused = true)]
async fn retries_wait_their_backoff() {
    // 10 s, then 20 s (factor 2), capped at 25 s: attempts at 0, 1+10, 12+20, 33+25.
    let backoff = Backoff {
        initial: Duration::from_secs(10),
        factor: 2.0,
        max: Duration::from_secs(25),
        jitter: false,
    };
    let (r, log) = Shape::new(1)
        .with("a", &[], 3, |s| {
            s.retries = Some(3);
            s.backoff = Some(Box::new(backoff));
        })
        .run(false)
        .await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(r.phases["a"].attempts, 4);
    let starts: Vec<(u32, u64)> = log.starts().iter().map(|s| (s.1, s.2)).collect();
    assert_eq!(starts, [(1, 0), (2, 11), (3, 32), (4, 58)]);
}

#[tokio::test(start_paused = true)]
async fn a_phase_out_of_retries_fails_with_its_last_error() {
    let (r, log) = Shape::new(1)
        .with("a", &[], 5, |s| {
            s.retries = Some(1);
            s.backoff = Some(Box::new(Backoff {
                initial: Duration::from_secs(1),
                ..Backoff::default()
            }));
        })
        .run(false)
        .await;
    assert_eq!(log.order(), ["a", "a"]);
    assert_eq!(
        status(&r, "a"),
        (
            PhaseStatus::Failed,
            Some(Reason::Error {
                message: "attempt 2 broke".into()
            })
        )
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_timeout_is_dropped_and_retried() {
    let (r, log) = Shape::new(1)
        .with("slow", &[], 0, |s| {
            // Each attempt works for a second; the limit is half of that.
            s.timeout = Some(Duration::from_millis(500));
            s.retries = Some(1);
            s.backoff = Some(Box::new(Backoff {
                initial: Duration::from_secs(2),
                ..Backoff::default()
            }));
        })
        .phase("after", &["slow"], 0)
        .run(true)
        .await;
    let starts: Vec<(u32, u64)> = log.starts().iter().map(|s| (s.1, s.2)).collect();
    // The second attempt starts 0.5 s (timeout) + 2 s (backoff) after the first.
    assert_eq!(starts, [(1, 0), (2, 2)]);
    assert_eq!(status(&r, "slow").0, PhaseStatus::TimedOut);
    assert_eq!(r.phases["slow"].attempts, 2);
    assert_eq!(
        status(&r, "after"),
        (
            PhaseStatus::Blocked,
            Some(Reason::Blocked { by: "slow".into() })
        )
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_after_consecutive_failures_and_half_opens_after_its_cooldown() {
    let agent = AgentSpec {
        name: "flaky".into(),
        agent_type: "local".into(),
        capacity: Some(1),
        with: WithTable::default(),
        breaker: Some(BreakerSpec {
            failures: 2,
            cooldown: Duration::from_secs(60),
        }),
        unavailable: Unavailable::Fail,
    };
    let on_flaky = |s: &mut PhaseSpec| s.agent = Some("flaky".into());
    let (r, log) = Shape::new(1)
        .agent(agent)
        .with("a", &[], 1, on_flaky)
        .with("b", &[], 1, on_flaky)
        // Refused at once: the breaker is open.
        .with("c", &[], 0, on_flaky)
        // Seventy seconds of other work let the cooldown pass; then one phase goes
        // through (half-open), succeeds and closes the breaker for the next.
        .working("pause", &[], 0, Duration::from_secs(70), |_| {})
        .with("d", &["pause"], 0, on_flaky)
        .with("e", &["d"], 0, on_flaky)
        .run(true)
        .await;
    assert_eq!(
        log.starts(),
        [
            ("a".into(), 1, 0),
            ("b".into(), 1, 1),
            ("pause".into(), 1, 2),
            ("d".into(), 1, 72),
            ("e".into(), 1, 73)
        ]
    );
    let c = &r.phases["c"];
    assert_eq!(c.status, PhaseStatus::Failed);
    assert_eq!(c.attempts, 0);
    assert!(
        c.reason
            .as_deref()
            .is_some_and(|m| m.contains("circuit breaker opened after 2 consecutive failures")),
        "{:?}",
        c.reason
    );
    assert_eq!(status(&r, "d"), (PhaseStatus::Succeeded, None));
    assert_eq!(status(&r, "e"), (PhaseStatus::Succeeded, None));
}

/// Logs a line and succeeds; with `fail_first`, fails its first attempt without writing
/// anything first.
struct Logs {
    fail_first: bool,
}

#[async_trait]
impl Phase for Logs {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("logs a line")
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        if self.fail_first && ctx.attempt() == 1 {
            return Err(PhaseError::failed("first attempt broke"));
        }
        ctx.log(format!("attempt {} here", ctx.attempt()));
        Ok(PhaseOutcome::default())
    }
}

#[tokio::test(start_paused = true)]
async fn a_phase_has_a_log_once_it_writes_and_a_silent_phase_has_none() {
    let state = tempfile::tempdir().unwrap();
    let mut retried = PhaseSpec::new(PhaseId::new("retried").unwrap(), "step");
    retried.retries = Some(1);
    // After `retried`: its log is made after every other.
    let chatty = PhaseSpec::new(PhaseId::new("chatty").unwrap(), "step")
        .needs([PhaseId::new("retried").unwrap()]);
    let silent = PhaseSpec::new(PhaseId::new("silent").unwrap(), "step");
    let step = Step {
        log: Log::default(),
        epoch: Instant::now(),
        work: Duration::ZERO,
        fails: 0,
    };
    let p = Pipeline::builder("logs", state.path())
        .custom(retried, Arc::new(Logs { fail_first: true }))
        .custom(chatty, Arc::new(Logs { fail_first: false }))
        .custom(silent, Arc::new(step))
        .build()
        .unwrap();
    let options = RunOptions {
        state_dir: Some(state.path().to_owned()),
        journal: Some(orch_core::JournalMode::Off),
        ..RunOptions::default()
    };
    let r = Runner::new(Arc::new(p), options)
        .run(RunControl::new())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Succeeded);
    // The retry's line and the second attempt's go to one log, named in the record.
    assert_eq!(r.phases["retried"].log.as_deref(), Some("logs/retried.log"));
    let run_dir = state.path().join("runs").join(r.run_id.as_str());
    let text = std::fs::read_to_string(run_dir.join("logs/retried.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("attempt 1 failed: first attempt broke; retrying in"),
        "{text}"
    );
    assert_eq!(lines[1], "attempt 2 here");
    assert_eq!(r.phases["chatty"].log.as_deref(), Some("logs/chatty.log"));
    let text = std::fs::read_to_string(run_dir.join("logs/chatty.log")).unwrap();
    assert_eq!(text, "attempt 1 here\n");
    // A phase that wrote nothing has no log, and no file.
    assert_eq!(r.phases["silent"].log, None);
    assert!(!run_dir.join("logs/silent.log").exists());
}

/// Ready on its third poll; a second after its first, the waker of its latest poll is
/// woken. An attempt is polled once where it is dispatched and once more when it moves to
/// a task (to register a real waker): a third poll comes only from that wake-up.
#[derive(Default)]
struct WokenLater {
    polls: u32,
    waker: Arc<Mutex<Option<std::task::Waker>>>,
}

impl std::future::Future for WokenLater {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.polls += 1;
        if self.polls == 3 {
            return std::task::Poll::Ready(());
        }
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.polls == 1 {
            let waker = self.waker.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Some(w) = waker.lock().unwrap().take() {
                    w.wake();
                }
            });
        }
        std::task::Poll::Pending
    }
}

struct WaitsForItsWake;

#[async_trait]
impl Phase for WaitsForItsWake {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("waits to be woken")
    }

    async fn run(&self, _: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        WokenLater::default().await;
        Ok(PhaseOutcome::default())
    }
}

#[tokio::test(start_paused = true)]
async fn a_pending_attempt_is_polled_again_only_once_woken() {
    let p = Pipeline::builder("woken", ".")
        .custom(
            PhaseSpec::new(PhaseId::new("waits").unwrap(), "step"),
            Arc::new(WaitsForItsWake),
        )
        .build()
        .unwrap();
    let options = RunOptions {
        write_files: false,
        ..RunOptions::default()
    };
    let r = Runner::new(Arc::new(p), options)
        .run(RunControl::new())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Succeeded);
    // Polled again before its wake-up, it would have ended at once.
    assert_eq!(r.phases["waits"].duration_ms, Some(1000));
}

#[tokio::test(start_paused = true)]
async fn a_selection_skips_what_it_leaves_out_and_the_run_counts_what_it_runs() {
    let shape = Shape::new(2)
        .phase("a", &[], 0)
        .phase("b", &["a"], 0)
        .phase("c", &[], 0)
        .phase("d", &["c"], 0);
    let log = shape.log.clone();
    let p = Arc::new(shape.builder.unwrap().build().unwrap());
    for (selection, ran, to_run) in [
        (orch_core::Selection::default(), vec!["a", "c", "b", "d"], 4),
        (
            orch_core::Selection {
                only: vec![orch_core::Selector::parse("b")],
                ..Default::default()
            },
            vec!["a", "b"],
            2,
        ),
    ] {
        log.0.lock().unwrap().clear();
        let options = RunOptions {
            write_files: false,
            selection: selection.clone(),
            ..RunOptions::default()
        };
        let counted = Arc::new(Mutex::new(None));
        let mut runner = Runner::new(p.clone(), options);
        let c = counted.clone();
        runner.subscribe(Arc::new(move |e: &orch_core::Event| {
            if let orch_core::RunEvent::RunStarted { to_run, .. } = &e.kind {
                *c.lock().unwrap() = Some(*to_run);
            }
        }));
        let r = runner.run(RunControl::new()).await.unwrap();
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(log.order(), ran);
        assert_eq!(*counted.lock().unwrap(), Some(to_run));
        for id in ["a", "b", "c", "d"] {
            let expected = if ran.contains(&id) {
                (PhaseStatus::Succeeded, None)
            } else {
                (PhaseStatus::Skipped, Some(Reason::NotSelected))
            };
            assert_eq!(status(&r, id), expected, "{id} with {selection:?}");
        }
    }
}

/// Works on the engine's thread for 60 ms in its first poll (real time: a blocking phase),
/// then ends.
struct BusyAtOnce;

#[async_trait]
impl Phase for BusyAtOnce {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("works before its first poll returns")
    }

    async fn run(&self, _: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        std::thread::sleep(Duration::from_millis(60));
        Ok(PhaseOutcome::default())
    }
}

#[tokio::test]
async fn a_phase_that_ends_in_its_first_poll_is_timed_from_its_start_to_its_end() {
    let busy = Arc::new(BusyAtOnce);
    let p = Pipeline::builder("busy", ".")
        .custom(
            PhaseSpec::new(PhaseId::new("a").unwrap(), "busy"),
            busy.clone(),
        )
        .custom(
            PhaseSpec::new(PhaseId::new("b").unwrap(), "busy")
                .needs(vec![PhaseId::new("a").unwrap()]),
            busy,
        )
        .build()
        .unwrap();
    let options = RunOptions {
        write_files: false,
        ..RunOptions::default()
    };
    let r = Runner::new(Arc::new(p), options)
        .run(RunControl::new())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Succeeded);
    // The engine reads its clock once for what happens between two polls: each phase's
    // own 60 ms still count, from its start to its end, and the second starts after the
    // first ended.
    for id in ["a", "b"] {
        let ms = r.phases[id].duration_ms.unwrap();
        assert!((60..1000).contains(&ms), "{id} took {ms} ms");
    }
    assert!(r.phases["b"].started_at >= r.phases["a"].finished_at);
}

/// Ends at once.
struct Noop;

#[async_trait]
impl Phase for Noop {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("nothing")
    }

    async fn run(&self, _: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        Ok(PhaseOutcome::default())
    }
}

#[tokio::test]
async fn a_record_shares_its_phase_s_kind_and_needs_with_the_pipeline() {
    let busy = Arc::new(Noop);
    let p = Arc::new(
        Pipeline::builder("shared", ".")
            .custom(
                PhaseSpec::new(PhaseId::new("a").unwrap(), "noop"),
                busy.clone(),
            )
            .custom(
                PhaseSpec::new(PhaseId::new("b").unwrap(), "noop")
                    .needs(vec![PhaseId::new("a").unwrap()]),
                busy,
            )
            .build()
            .unwrap(),
    );
    let options = RunOptions {
        write_files: false,
        ..RunOptions::default()
    };
    let r = Runner::new(p.clone(), options)
        .run(RunControl::new())
        .await
        .unwrap();
    // A run of 100,000 phases makes no copy of their kinds and needs for its record.
    let b = &p.nodes()[1].spec;
    assert_eq!(r.phases["b"].needs, [PhaseId::new("a").unwrap()]);
    assert!(std::ptr::eq(r.phases["b"].needs.as_ptr(), b.needs.as_ptr()));
    assert!(std::ptr::eq(r.phases["b"].kind.as_ptr(), b.kind.as_ptr()));
}
