//! The engine's loop: picks the next ready phase (declaration order, within the job limit
//! and each agent's capacity), handles what attempts report (retry with backoff, finish,
//! fail-fast, blocking), finishes phases and releases their dependents, and ends the run.

use std::cmp::Reverse;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures_util::{FutureExt, StreamExt};

use super::durability::durable_changed;
use super::engine::{Ending, Engine, Msg, Outcome, Pending, St};
use super::record::{StagedRecord, redact_artifacts, stage_record};
use crate::audit::AuditWriter;
use crate::audit::Event as AuditEvent;
use crate::errors::RunError;
use crate::events::RunEvent;
use crate::failpoint;
use crate::journal::{Entry, FinishedRef, JournalWriter};
use crate::phase::{PhaseError, PhaseOutcome};
use crate::record::{
    AuditHead, Outputs, PhaseRecord, PhaseStatus, Reason, RecordError, RunRecord, RunStatus, Stop,
    rfc3339,
};
use crate::spec::Unavailable;

fn fmt_secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

impl Engine {
    pub(super) fn make_ready(&mut self, i: usize) {
        self.states[i].st = St::Ready;
        let a = self.p.nodes()[i].agent;
        self.agents[a].ready.push(Reverse(i as u32));
    }

    /// The next phase to start: the earliest-declared ready phase whose agent has room.
    pub(super) fn pick(&mut self) -> Option<usize> {
        let mut best: Option<(u32, usize)> = None;
        for (ai, a) in self.agents.iter().enumerate() {
            if a.running >= a.capacity {
                continue;
            }
            if let Some(Reverse(i)) = a.ready.peek()
                && best.is_none_or(|(b, _)| *i < b)
            {
                best = Some((*i, ai));
            }
        }
        let (i, ai) = best?;
        self.agents[ai].ready.pop();
        Some(i as usize)
    }

    pub(super) async fn run(mut self) -> Result<RunRecord, RunError> {
        let mut stop_seen = false;
        loop {
            if !stop_seen && self.control.is_stopped() {
                // Interrupted before the loop could see it (e.g. while taking the lock).
                stop_seen = true;
                if self.stopping.is_none() {
                    self.stopping = Some(Stop::Interrupted);
                }
            }
            if self.stopping.is_none() {
                while self.running < self.jobs {
                    let Some(i) = self.pick() else { break };
                    self.dispatch(i);
                    if self.stopping.is_some() {
                        break;
                    }
                }
                self.start_queued();
            }
            if !self.inline_done.is_empty() {
                // The buffer is kept for the next turn (handling starts no attempt).
                let mut done = std::mem::take(&mut self.inline_done);
                for msg in done.drain(..) {
                    self.handle(msg);
                }
                self.inline_done = done;
                continue;
            }
            // Events still waiting for the disk are reported after the loop.
            if self.running == 0 && (self.backoffs == 0 || self.stopping.is_some()) {
                break;
            }
            // What this turn queued is written before the loop waits.
            self.flush_journal();
            let journal_wait = !self.pending.is_empty() && self.durable_rx.is_some();
            self.time_passes();
            let msg = tokio::select! {
                biased;
                () = self.control.stop.cancelled(), if !stop_seen => {
                    stop_seen = true;
                    if self.stopping.is_none() {
                        self.stopping = Some(Stop::Interrupted);
                    }
                    continue;
                }
                changed = durable_changed(&mut self.durable_rx), if journal_wait => {
                    if !changed {
                        let e = self.journal.as_ref().and_then(JournalWriter::error);
                        self.journal_failed(e.unwrap_or_else(|| "the journal sync thread stopped".into()));
                    }
                    self.flush_pending();
                    continue;
                }
                done = self.light.next(), if !self.light.is_empty() => match done {
                    Some(Ok(msg)) => msg,
                    Some(Err(_)) => {
                        tracing::error!("a phase attempt panicked");
                        continue;
                    }
                    None => continue,
                },
                joined = self.tasks.join_next(), if !self.tasks.is_empty() => match joined {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        tracing::error!("a phase task panicked: {e}");
                        continue;
                    }
                    None => continue,
                },
                else => break,
            };
            self.handle(msg);
            // Attempts that finished meanwhile are handled in this turn too: their
            // records share its journal write.
            while let Some(joined) = self.tasks.try_join_next() {
                // It may have ended after the clock was last read.
                self.time_passes();
                match joined {
                    Ok(msg) => self.handle(msg),
                    Err(e) => tracing::error!("a phase task panicked: {e}"),
                }
            }
            // (Polling here leaves a no-op waker registered; the select above registers
            // the loop's own again before it waits.)
            while let Some(Some(done)) = self.light.next().now_or_never() {
                self.time_passes();
                match done {
                    Ok(msg) => self.handle(msg),
                    Err(_) => tracing::error!("a phase attempt panicked"),
                }
            }
        }
        // Anything left never started.
        let interrupted = self.control.is_stopped();
        for i in 0..self.p.len() {
            if self.states[i].st == St::Backoff
                && let Some((status, error)) = self.states[i].last_error.take().map(|e| *e)
            {
                // It ran and failed; the stop only kept it from retrying.
                let reason = match self.stopping.clone() {
                    Some(stop) => Reason::NotRetried { error, stop },
                    None => Reason::Error { message: error },
                };
                let allowed = self.p.nodes()[i].spec.allow_failure;
                self.finish_inner(
                    i,
                    Ending {
                        allowed,
                        ..Ending::new(status, Some(reason), PhaseOutcome::default())
                    },
                );
                self.failed |= !allowed;
            } else if self.states[i].st != St::Done {
                let reason = self
                    .stopping
                    .clone()
                    .map(|stop| Reason::NotStarted { stop });
                self.finish(i, PhaseStatus::Cancelled, reason, PhaseOutcome::default());
            }
        }
        self.tasks.abort_all();
        self.light.clear();
        // Nothing of the run may survive it: what is left in its cgroups, ...
        if let Some(cg) = &self.shared.cgroup {
            cg.remove().await;
        }
        if self.opts.write_files && (interrupted || self.failed) {
            // ... whatever left its process group, ...
            crate::process::kill_marked(self.run_id.as_str(), None, Duration::from_secs(2)).await;
        }
        // ... and orphans re-parented to this process (when it adopts them).
        let watchdog_pid = self.watchdog.as_ref().map(|w| w.pid());
        crate::process::kill_orphans(watchdog_pid.as_slice());
        if let Some(w) = self.watchdog.take() {
            w.finish();
        }
        // Every phase is durable before the run reports its end.
        self.sync_journal().await;
        self.flush_pending();
        let status = if interrupted {
            RunStatus::Cancelled
        } else if self.failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        self.journal_append(&Entry::RunFinished {
            status,
            finished_at: rfc3339(SystemTime::now()),
            duration_ms: self.started.1.elapsed().as_millis() as u64,
        });
        if let Some(a) = &mut self.audit {
            a.queue(&AuditEvent::RunFinished {
                run: self.run_id.as_str(),
                status,
                duration_ms: self.started.1.elapsed().as_millis() as u64,
            });
        }
        // The journal's last record and the audit log's are synced at the same time, and
        // run.json is written meanwhile beside its place, where it goes once they are durable.
        if let Some(Err(e)) = self.journal.as_mut().map(JournalWriter::sync_now) {
            self.journal_failed(e);
        }
        let audit_written = self.audit.as_mut().map(AuditWriter::sync_now);
        let audit_head = |a: &AuditWriter| {
            let (seq, hash) = a.head();
            AuditHead {
                seq,
                hash: hash.to_owned(),
            }
        };
        let mut record = self.record(status);
        record.audit = self.audit.as_ref().map(audit_head);
        let run_dir = self.run_dir.clone();
        let stage = |record: &RunRecord| {
            failpoint::hit(failpoint::Failpoint::BeforeRunRecord);
            stage_record(&run_dir, record)
        };
        let mut staged = self.opts.write_files.then(|| stage(&record));
        let audit_synced = match (&mut self.journal, &mut self.audit) {
            (Some(j), Some(a)) => {
                let (journal, audit) = tokio::join!(j.wait_all(), a.wait_all());
                if let Err(e) = journal {
                    self.journal_failed(e);
                }
                Some(audit)
            }
            (None, Some(a)) => Some(a.wait_all().await),
            (_, None) => {
                self.sync_journal().await;
                None
            }
        };
        if let Some(j) = self.journal.take() {
            j.close();
        }
        // Attempts remove their own private files; this clears what an attempt that could
        // not end cleanly left.
        crate::orch_output::remove_private_dir(&self.run_dir);
        let mut audit_lost = false;
        if let Some(a) = self.audit.take() {
            if let Some(Err(e)) = audit_written.filter(Result::is_err).or(audit_synced) {
                tracing::error!("{e}");
                record.audit = None;
                audit_lost = true;
            }
            a.close();
        }
        if record.record_errors.len() != self.record_errors.len() || audit_lost {
            // The journal failed meanwhile (or the audit log): the record says so.
            record.record_errors.clone_from(&self.record_errors);
            // (The first is removed before the second is written in its place.)
            if let Some(first) = staged.take() {
                drop(first);
                staged = Some(stage(&record));
            }
        }
        if let Some(staged) = staged {
            // The run happened: a record that cannot be written is reported with it (the
            // caller still gets every result), never in its place.
            if let Err(e) = staged.and_then(StagedRecord::commit) {
                let message = match &e {
                    RunError::State { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                record
                    .record_errors
                    .push(RecordError::new(e.file(&self.run_dir), message));
            }
            failpoint::hit(failpoint::Failpoint::AfterRunRecord);
        }
        self.bus.emit(RunEvent::RunFinished {
            run_id: self.run_id.clone(),
            status,
            duration: self.started.1.elapsed(),
        });
        Ok(record)
    }

    /// Starts the attempts `dispatch` queued, once their `Started` records are written
    /// (one write for them and whatever else was queued).
    pub(super) fn start_queued(&mut self) {
        if self.starting.is_empty() {
            return;
        }
        if let Some(j) = &mut self.journal
            && let Err(e) = j.flush()
        {
            // The attempts are not started: the run stops.
            self.journal_failed(format!("cannot write the journal: {e}"));
            for s in std::mem::take(&mut self.starting) {
                let ai = self.p.nodes()[s.i].agent;
                self.running -= 1;
                self.agents[ai].running -= 1;
                let reason = self.stopping.clone().map(|stop| Reason::Stopped { stop });
                self.finish(s.i, PhaseStatus::Cancelled, reason, PhaseOutcome::default());
            }
            return;
        }
        // Their `phase_started` audit entries are written before they start too.
        if let Some(a) = &mut self.audit
            && let Err(e) = a.flush()
        {
            let path = a.path().display().to_string();
            self.audit = None;
            self.journal_failed(format!("cannot write the audit log {path}: {e}"));
        }
        let mut starting = std::mem::take(&mut self.starting);
        // Events are built only for someone to read them.
        let listened = !self.bus.is_empty();
        for s in starting.drain(..) {
            if listened {
                self.bus.emit_at(
                    s.at,
                    RunEvent::PhaseStarted {
                        phase: self.p.nodes()[s.i].spec.id.clone(),
                        attempt: s.attempt,
                    },
                );
            }
            // Poll once here: an attempt that finishes at once (in-process phases, a failed
            // spawn) is handled without a task and without waking another thread. One that
            // is pending moves to a task, whose first poll registers the real wakers.
            let mut fut = s.fut;
            match fut
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            {
                Poll::Ready(msg) => self.inline_done.push(msg),
                Poll::Pending if self.p.nodes()[s.i].phase.is_light() => {
                    self.light.push(AssertUnwindSafe(fut).catch_unwind());
                }
                Poll::Pending => {
                    self.tasks.spawn(fut);
                }
            }
            failpoint::hit(failpoint::Failpoint::AfterPhaseStart);
        }
        // Phase code ran: the time when they ended is read anew.
        self.time_passes();
        // The buffer is kept for the next turn.
        self.starting = starting;
    }

    pub(super) fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Retry(i) => {
                self.backoffs -= 1;
                if self.stopping.is_some() {
                    let reason = self.stopping.clone().map(|stop| Reason::Stopped { stop });
                    self.finish(i, PhaseStatus::Cancelled, reason, PhaseOutcome::default());
                } else {
                    self.make_ready(i);
                }
            }
            Msg::Attempt { i, outcome } => self.on_attempt(i, outcome),
        }
    }

    pub(super) fn on_attempt(&mut self, i: usize, outcome: Outcome) {
        let ai = self.p.nodes()[i].agent;
        self.running -= 1;
        self.agents[ai].running -= 1;
        let (status, message, result) = match outcome {
            Outcome::NotStarted(message) => {
                self.fail(i, PhaseStatus::Failed, message, PhaseOutcome::default());
                return;
            }
            Outcome::Done(Ok(out)) => {
                self.breaker_success(ai);
                self.finish(i, PhaseStatus::Succeeded, None, out);
                return;
            }
            Outcome::Done(Err(PhaseError::Skip { reason })) => {
                self.breaker_success(ai);
                self.finish(
                    i,
                    PhaseStatus::Skipped,
                    Some(Reason::Skipped { message: reason }),
                    PhaseOutcome::default(),
                );
                return;
            }
            Outcome::Done(Err(PhaseError::Cancelled)) | Outcome::Aborted => {
                let reason = self
                    .stopping
                    .clone()
                    .map_or(Reason::Cancelled, |stop| Reason::Stopped { stop });
                self.finish(
                    i,
                    PhaseStatus::Cancelled,
                    Some(reason),
                    PhaseOutcome::default(),
                );
                return;
            }
            Outcome::Unavailable(e) => {
                if self.agents[ai].unavailable == Unavailable::Skip {
                    self.finish(
                        i,
                        PhaseStatus::Skipped,
                        Some(Reason::Skipped {
                            message: e.to_string(),
                        }),
                        PhaseOutcome::default(),
                    );
                    return;
                }
                self.breaker_failure(ai);
                (PhaseStatus::Failed, e.to_string(), PhaseOutcome::default())
            }
            Outcome::Done(Err(PhaseError::Failed { message, exit_code })) => {
                self.breaker_failure(ai);
                (
                    PhaseStatus::Failed,
                    message,
                    PhaseOutcome {
                        exit_code,
                        ..PhaseOutcome::default()
                    },
                )
            }
            Outcome::Done(Err(PhaseError::FailedWithOutputs { message, outputs })) => {
                self.breaker_failure(ai);
                (
                    PhaseStatus::Failed,
                    message,
                    PhaseOutcome {
                        outputs,
                        ..PhaseOutcome::default()
                    },
                )
            }
            Outcome::TimedOut(t) => {
                self.breaker_failure(ai);
                (
                    PhaseStatus::TimedOut,
                    format!("timed out after {}", fmt_secs(t)),
                    PhaseOutcome::default(),
                )
            }
        };
        let message = self.shared.redactor.redact(&message).into_owned();
        let node = &self.p.nodes()[i];
        let attempt = self.states[i].attempts;
        self.states[i].failures = self.states[i].failures.saturating_add(1);
        let failures = self.states[i].failures;
        if failures <= node.spec.retry_limit() && self.stopping.is_none() {
            let delay = node.spec.retry_backoff().delay_jittered(failures);
            // Written with the next turn's records (before the retry starts).
            if let Some(j) = &mut self.journal {
                j.queue(&Entry::AttemptFailed {
                    phase: node.spec.id.to_string(),
                    attempt,
                    error: message.clone(),
                });
            }
            let node = &self.p.nodes()[i];
            self.bus.emit(RunEvent::PhaseRetrying {
                phase: node.spec.id.clone(),
                attempt,
                error: message.clone(),
                delay,
            });
            let line = format!(
                "attempt {attempt} failed: {message}; retrying in {}\n",
                fmt_secs(delay)
            );
            self.log_of(i).push_log(&line);
            self.states[i].st = St::Backoff;
            self.states[i].last_error = Some(Box::new((status, message.clone())));
            self.backoffs += 1;
            self.tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                Msg::Retry(i)
            });
            return;
        }
        self.fail(i, status, message, result);
    }

    /// A phase ended in failure: record it and apply fail-fast and blocking.
    pub(super) fn fail(
        &mut self,
        i: usize,
        status: PhaseStatus,
        message: String,
        outcome: PhaseOutcome,
    ) {
        let node = &self.p.nodes()[i];
        let allowed = node.spec.allow_failure;
        let id = node.spec.id.clone();
        self.finish_inner(
            i,
            Ending {
                allowed,
                ..Ending::new(status, Some(Reason::Error { message }), outcome)
            },
        );
        if allowed {
            return;
        }
        self.failed = true;
        if !self.opts.keep_going && self.stopping.is_none() {
            self.stopping = Some(Stop::FailFast {
                after: id.to_string(),
                timed_out: status == PhaseStatus::TimedOut,
            });
        }
        // Block everything downstream that has not started.
        let mut stack: Vec<(usize, usize)> = self.p.nodes()[i]
            .dependents
            .iter()
            .map(|&d| (d as usize, i))
            .collect();
        while let Some((d, via)) = stack.pop() {
            if self.states[d].st == St::Done || self.states[d].st == St::Running {
                continue;
            }
            let reason = Reason::Blocked {
                by: self.p.nodes()[via].spec.id.to_string(),
            };
            self.finish_inner(
                d,
                Ending::new(PhaseStatus::Blocked, Some(reason), PhaseOutcome::default()),
            );
            stack.extend(
                self.p.nodes()[d]
                    .dependents
                    .iter()
                    .map(|&x| (x as usize, d)),
            );
        }
    }

    pub(super) fn finish(
        &mut self,
        i: usize,
        status: PhaseStatus,
        cause: Option<Reason>,
        outcome: PhaseOutcome,
    ) {
        self.finish_inner(i, Ending::new(status, cause, outcome));
    }

    /// Records how phase `i` ended (once: a phase that is done stays as it was), journals
    /// and reports it, and releases its dependents when it lets them run.
    pub(super) fn finish_inner(&mut self, i: usize, end: Ending) {
        let Ending {
            status,
            cause,
            outcome,
            allowed,
            done_in,
        } = end;
        let was = self.states[i].st;
        if was == St::Done {
            return;
        }
        if was == St::Ready {
            // Still in its agent's queue: drop it there lazily (see `pick`); simpler to
            // rebuild the queue, which is rare (blocking, fail-fast).
            let a = self.p.nodes()[i].agent;
            let q = std::mem::take(&mut self.agents[a].ready);
            self.agents[a].ready = q
                .into_iter()
                .filter(|Reverse(x)| *x as usize != i)
                .collect();
        }
        self.states[i].st = St::Done;
        // One clock read for when it ended and how long it took; both times are taken
        // as durations after the engine's clock was read.
        let since = self.mono_now().saturating_duration_since(self.clock.1);
        let now = self.clock.0 + since;
        let (started, duration) = match self.states[i].first_start {
            Some(first) => {
                let started = first.saturating_duration_since(self.clock.1);
                (Some(started), since.saturating_sub(started))
            }
            None => (None, Duration::ZERO),
        };
        // The one place outputs are redacted, keys and values, before they reach the
        // scope, the journal, the record and every event.
        let outputs: Outputs = if self.shared.redactor.is_empty() {
            outcome.outputs
        } else {
            self.shared.redactor.redact_map(outcome.outputs)
        };
        // Most phases publish nothing: they share one empty map.
        let outputs = if outputs.is_empty() {
            self.no_outputs.clone()
        } else {
            Arc::new(outputs)
        };
        self.take_made_logs();
        let node = &self.p.nodes()[i];
        // The phase is done: its log state goes (the file stays). A log that could not be
        // written in full is a warning on the phase and a record error of the run.
        let mut warnings = Vec::new();
        let log = match self.logs[i].take() {
            Some(l) => {
                let file = format!("logs/{}.log", node.spec.id);
                if let Some(problem) = l.close() {
                    warnings.push(format!("log {problem}"));
                    self.record_errors
                        .push(RecordError::new(file.clone(), problem));
                }
                l.wrote_file().then_some(file)
            }
            None => None,
        };
        let artifacts = redact_artifacts(&self.shared.redactor, outcome.artifacts);
        let allowed_failure = allowed && status.is_failure();
        let lets_run = status.lets_dependents_run() || allowed;
        if lets_run {
            self.outputs.set(i, outputs.clone());
        }
        let finished_at = self.timestamp(since);
        let reason = cause.as_ref().map(ToString::to_string);
        let mut record = PhaseRecord {
            status,
            kind: node.spec.kind.clone(),
            attempts: self.states[i].attempts,
            exit_code: outcome.exit_code,
            started_at: started.map(|s| self.timestamp(s)),
            finished_at: None,
            duration_ms: started.map(|_| duration.as_millis() as u64),
            reason: reason.clone(),
            cause: cause.clone().map(Box::new),
            allowed_failure,
            outputs: (*outputs).clone(),
            artifacts,
            needs: node.spec.needs.clone(),
            tags: node.spec.tags.clone(),
            description: node.spec.description.clone(),
            log,
            policy: self
                .policy
                .as_mut()
                .and_then(|g| g.verdicts[i].take())
                .map(Box::new),
            warnings: warnings.clone(),
        };
        let seq = match &mut self.journal {
            Some(j) => {
                // A phase's success counts for resume only with the fingerprint of what
                // ran. Written with the rest of this turn's records, before the loop waits
                // or starts an attempt.
                let fingerprint = self.fingerprints[i].take();
                j.queue(&FinishedRef {
                    phase: node.spec.id.as_str(),
                    kind: &record.kind,
                    status,
                    attempts: record.attempts,
                    exit_code: record.exit_code,
                    // The words are the cause's: the journal keeps the cause only.
                    cause: record.cause.as_deref(),
                    allowed_failure,
                    outputs: &record.outputs,
                    artifacts: &record.artifacts,
                    fingerprint: fingerprint.as_deref(),
                    done_in: done_in.as_ref(),
                    started_at: record.started_at.as_deref(),
                    finished_at: &finished_at,
                    duration_ms: record.duration_ms,
                })
            }
            None => 0,
        };
        if let Some(a) = &mut self.audit {
            a.queue_at(
                now,
                &AuditEvent::PhaseFinished {
                    run: self.run_id.as_str(),
                    phase: node.spec.id.as_str(),
                    status,
                    attempts: record.attempts,
                    outputs_sha256: crate::audit::outputs_digest(&record.outputs).as_deref(),
                    reason: record.reason.as_deref(),
                },
            );
        }
        if started.is_some() {
            record.finished_at = Some(finished_at);
        }
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.spec.id.clone(), record);
        // Phases mostly end in the order they are declared: the record is then sorted
        // already (see `record`).
        self.records_sorted &= self.last_finished.is_none_or(|l| l < i);
        self.last_finished = Some(i);
        // Reported once its record is durable (to whoever listens: without a sink, the
        // event is not even built). Scheduling does not wait for the disk: dependents are
        // released now, and since their records come after this one in the journal, no
        // crash can keep a dependent's and lose this one's.
        if !self.bus.is_empty() {
            let event = self.bus.stamp_at(
                now,
                RunEvent::PhaseFinished {
                    phase: node.spec.id.clone(),
                    status,
                    attempts: self.states[i].attempts,
                    duration,
                    exit_code: outcome.exit_code,
                    reason,
                    cause,
                    allowed_failure,
                    outputs,
                    warnings,
                },
            );
            if self.durable_rx.is_none() && self.pending.is_empty() {
                // Nothing waits for the disk: reported now.
                self.publish(Pending { seq, event });
            } else {
                self.pending.push_back(Pending { seq, event });
                self.flush_pending();
            }
        }
        if lets_run {
            for k in 0..self.p.nodes()[i].dependents.len() {
                let d = self.p.nodes()[i].dependents[k] as usize;
                let s = &mut self.states[d];
                s.remaining -= 1;
                if s.remaining == 0 && s.st == St::Waiting {
                    self.make_ready(d);
                }
            }
        }
    }
}
