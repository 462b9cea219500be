//! Building an attempt: the checks before it (`when`, done in an earlier run, `[policy]`,
//! the circuit breaker, attempt numbers), its `PhaseContext` (env, secrets, cwd, log,
//! run snapshot) and the future that runs it under its timeout, the run's abort and its
//! agent's health check.

use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;

use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::MIN_SECRET_LEN;
use super::engine::{Ending, Engine, Msg, Outcome, St, Starting};
use crate::audit::Event as AuditEvent;
use crate::events::RunEvent;
use crate::expr;
use crate::ids::PhaseId;
use crate::journal::{Entry, StartedRef};
use crate::phase::{AttemptLog, EnvParts, PhaseContext, PhaseOutcome, SnapshotFn};
use crate::policy::PhaseInput;
use crate::record::{AuditHead, PhaseStatus, PolicyVerdict, Reason, RunStatus, Timestamp};

impl Engine {
    pub(super) fn dispatch(&mut self, i: usize) {
        let node = &self.p.nodes()[i];
        let ai = node.agent;
        // `when`: evaluated once the phases it reads have finished.
        if let Some(cond) = &node.spec.when {
            match expr::eval(cond, &*self.scope) {
                Ok(v) if v.value => {}
                Ok(_) => {
                    let reason = Reason::WhenFalse {
                        condition: cond.clone(),
                    };
                    self.finish(
                        i,
                        PhaseStatus::Skipped,
                        Some(reason),
                        PhaseOutcome::default(),
                    );
                    return;
                }
                Err(e) => {
                    self.fail(
                        i,
                        PhaseStatus::Failed,
                        e.to_string(),
                        PhaseOutcome::default(),
                    );
                    return;
                }
            }
        }
        // Resume: a phase whose success is journaled, with the same definition and inputs,
        // is not run again.
        if self.journal.is_some() {
            // Once per phase: what it reads is final before it first starts, so a retry
            // has the same fingerprint.
            let fp = self.fingerprints[i].get_or_insert_with(|| {
                crate::resume::fingerprint(&node.spec, &node.spec.needs, &*self.scope)
            });
            if self.done[i].as_ref().is_some_and(|d| d.fingerprint == *fp)
                && let Some(done) = self.done[i].take()
            {
                let reason = Reason::DoneInRun {
                    run: done.run.clone(),
                };
                let outcome = PhaseOutcome {
                    outputs: done.outputs,
                    artifacts: done.artifacts,
                    exit_code: done.exit_code,
                };
                self.finish_inner(
                    i,
                    Ending {
                        done_in: Some(done.run),
                        ..Ending::new(PhaseStatus::Skipped, Some(reason), outcome)
                    },
                );
                return;
            }
        }
        // `[policy]`: decided once per phase, before its first attempt in this run.
        if self.policy.is_some() && self.states[i].first_start.is_none() {
            let admitted = self.admit(i);
            // Evaluating the policy takes time of its own.
            self.time_passes();
            if !admitted {
                return;
            }
        }
        let node = &self.p.nodes()[i];
        // Circuit breaker.
        let b = &mut self.agents[ai].breaker;
        if let Some(until) = b.open_until {
            if Instant::now() < until || b.probing {
                let reason = format!(
                    "agent `{}` is not taking work: its circuit breaker opened after {} consecutive failures",
                    self.agents[ai].agent.name(),
                    self.agents[ai].breaker.consecutive
                );
                self.fail(i, PhaseStatus::Failed, reason, PhaseOutcome::default());
                return;
            }
            // Half-open: let this one through and check health again.
            b.probing = true;
            self.agents[ai].health = Arc::new(OnceCell::new());
        }
        // Secrets this phase declares must be set.
        // The `ORCH_*` variables are added when the phase first reads its environment.
        let mut env = Vec::with_capacity(node.spec.env.len() + node.spec.secrets.len());
        // Attempt numbers never repeat, and never wrap: past the last one, the phase fails.
        let Some(attempt) = self.states[i]
            .attempts
            .checked_add(1)
            .filter(|&a| a <= crate::journal::MAX_ATTEMPT)
        else {
            let message = format!(
                "no attempt number left: {} attempts are already journaled",
                self.states[i].attempts
            );
            self.fail(i, PhaseStatus::Failed, message, PhaseOutcome::default());
            return;
        };
        for (k, v) in &node.spec.env {
            match crate::interpolate::render(v, &*self.scope) {
                Ok(v) => env.push((k.clone(), v)),
                Err(e) => {
                    self.fail(
                        i,
                        PhaseStatus::Failed,
                        format!("cannot render env `{k}`: {e}"),
                        PhaseOutcome::default(),
                    );
                    return;
                }
            }
        }
        // A missing secret fails the attempt once the agent is known to be healthy, so an
        // agent that is unavailable (and set to skip) skips its phases instead.
        let mut missing_secret = None;
        for name in &node.spec.secrets {
            match std::env::var(name) {
                Ok(v) if v.len() < MIN_SECRET_LEN => {
                    missing_secret = Some(format!(
                        "secret `{name}` is too short to redact safely ({} characters; use at least {MIN_SECRET_LEN})",
                        v.chars().count()
                    ));
                    break;
                }
                Ok(v) => env.push((name.clone(), v)),
                Err(std::env::VarError::NotPresent) => {
                    missing_secret = Some(format!("secret `{name}` is not set in the environment"));
                    break;
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    missing_secret = Some(format!(
                        "secret `{name}` is set but its value is not valid UTF-8; orch passes secrets as UTF-8 text (encode binary values, for example as base64)"
                    ));
                    break;
                }
            }
        }
        let workdir = match &node.spec.cwd {
            None => None,
            Some(c) => match crate::interpolate::render(c, &*self.scope) {
                Ok(c) => Some(self.p.spec().base_dir.join(c)),
                Err(e) => {
                    self.fail(
                        i,
                        PhaseStatus::Failed,
                        format!("cannot render `cwd`: {e}"),
                        PhaseOutcome::default(),
                    );
                    return;
                }
            },
        };

        // `mono_now`, on the field (`node` borrows the pipeline).
        let mono = *self.last_read.get_or_insert_with(Instant::now);
        let now = (self.wall(mono), mono);
        let st = &mut self.states[i];
        st.st = St::Running;
        st.attempts = attempt;
        st.first_start.get_or_insert(mono);
        self.running += 1;
        self.agents[ai].running += 1;

        // Made when the phase first writes; an earlier attempt's goes on.
        let log = AttemptLog::Lazy {
            log: self.logs[i]
                .clone()
                .map_or_else(OnceLock::new, OnceLock::from),
            i,
        };
        let snapshot: Option<SnapshotFn> = node.phase.wants_run_snapshot().then(|| {
            let records = self.records.clone();
            let mut base = self.record_header(RunStatus::Running);
            // The audit chain as far as it goes when the report starts.
            base.audit = self.audit.as_ref().map(|a| {
                let (seq, hash) = a.head();
                AuditHead {
                    seq,
                    hash: hash.to_owned(),
                }
            });
            let ids: Vec<PhaseId> = self.p.nodes().iter().map(|n| n.spec.id.clone()).collect();
            Arc::new(move || {
                let mut r = base.clone();
                let recs = records.lock().unwrap_or_else(|p| p.into_inner());
                for id in &ids {
                    if let Some(rec) = recs.get(id) {
                        r.phases.insert(id.clone(), rec.clone());
                    }
                }
                r
            }) as SnapshotFn
        });
        let ctx = PhaseContext {
            run: self.shared.clone(),
            phase_id: node.spec.id.clone(),
            attempt,
            workdir,
            env: OnceLock::new(),
            env_parts: Mutex::new(Some(EnvParts { extra: env })),
            agent: ai,
            log,
            snapshot,
        };
        // Journaled before anything starts (see `start_queued`), so attempt numbers never
        // repeat after a crash.
        if let Some(j) = &mut self.journal {
            j.queue(&StartedRef {
                phase: node.spec.id.as_str(),
                attempt,
                at: Timestamp::new(now.0).as_str(),
            });
        }
        if let Some(a) = &mut self.audit {
            a.queue_at(
                now.0,
                &AuditEvent::PhaseStarted {
                    run: self.run_id.as_str(),
                    phase: node.spec.id.as_str(),
                    attempt,
                },
            );
        }
        let phase = node.phase.clone();
        let timeout = node.spec.timeout;
        // Most agents need no health check: their attempts hold no reference to it.
        let health = ctx
            .agent()
            .needs_health_check()
            .then(|| self.agents[ai].health.clone());
        let attempt_fut = async move {
            if let Some(health) = health
                && let Err(e) = health
                    .get_or_init(|| async { ctx.agent().health().await })
                    .await
            {
                return Msg::Attempt {
                    i,
                    outcome: Outcome::Unavailable(e.clone()),
                };
            }
            if let Some(message) = missing_secret {
                return Msg::Attempt {
                    i,
                    outcome: Outcome::NotStarted(message),
                };
            }
            let fut = phase.run(&ctx);
            let mut run = std::pin::pin!(async {
                match timeout {
                    Some(t) => match tokio::time::timeout(t, fut).await {
                        Ok(r) => Outcome::Done(r),
                        Err(_) => Outcome::TimedOut(t),
                    },
                    None => Outcome::Done(fut.await),
                }
            });
            // Like a biased select of the abort and the attempt, except that the first
            // poll checks the abort without registering with its token (each registration
            // takes the token's lock twice): an attempt that ends at once (an in-process
            // phase) never registers. Each is polled once per wake-up, as in a select.
            let abort = &ctx.run.abort;
            let mut aborted = std::pin::pin!(abort.cancelled());
            let mut waiting = false;
            let outcome = if abort.is_cancelled() {
                Outcome::Aborted
            } else {
                std::future::poll_fn(|cx| {
                    if waiting && aborted.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Outcome::Aborted);
                    }
                    if let Poll::Ready(outcome) = run.as_mut().poll(cx) {
                        return Poll::Ready(outcome);
                    }
                    if !waiting {
                        // From now on the abort wakes this attempt.
                        waiting = true;
                        if aborted.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Outcome::Aborted);
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            ctx.flush_output();
            Msg::Attempt { i, outcome }
        };
        self.starting.push(Starting {
            i,
            attempt,
            at: now.0,
            fut: Box::pin(attempt_fut),
        });
    }

    /// Asks the policy whether phase `i` may start; a denied phase fails without running.
    pub(super) fn admit(&mut self, i: usize) -> bool {
        let Some(gate) = &mut self.policy else {
            return true;
        };
        let mut input = serde_json::Map::with_capacity(3);
        input.insert(
            "phase".into(),
            serde_json::to_value(PhaseInput::of(&self.p, i)).unwrap_or_default(),
        );
        input.insert("run".into(), gate.run.clone());
        if let Some(git) = &gate.git {
            input.insert("git".into(), git.clone());
        }
        let id = &self.p.nodes()[i].spec.id;
        let redact = |s: String| self.shared.redactor.redact(&s).into_owned();
        let (verdict, reason) = match gate.eval.decide(&serde_json::Value::Object(input)) {
            Ok(d) => {
                let reason = (!d.permits()).then(|| redact(d.reason()));
                let verdict = PolicyVerdict {
                    allowed: d.permits(),
                    deny: d.deny.into_iter().map(redact).collect(),
                    error: None,
                };
                (verdict, reason)
            }
            Err(e) => {
                let error = redact(format!("evaluation for phase `{id}` failed: {e}"));
                let reason = format!("denied by policy: {error}");
                let verdict = PolicyVerdict {
                    allowed: false,
                    deny: Vec::new(),
                    error: Some(error),
                };
                (verdict, Some(reason))
            }
        };
        if let Some(j) = &mut self.journal {
            j.queue(&Entry::Policy {
                phase: id.to_string(),
                verdict: verdict.clone(),
            });
        }
        if let Some(a) = &mut self.audit {
            a.queue(&AuditEvent::Policy {
                run: self.run_id.as_str(),
                phase: id.as_str(),
                verdict: &verdict,
            });
        }
        self.bus.emit(RunEvent::PolicyDecision {
            phase: id.clone(),
            verdict: verdict.clone(),
            reason: reason.clone(),
        });
        gate.verdicts[i] = Some(verdict);
        match reason {
            None => true,
            Some(reason) => {
                self.fail(i, PhaseStatus::Failed, reason, PhaseOutcome::default());
                false
            }
        }
    }
}
