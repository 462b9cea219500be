//! Run events as JSON: what the SSE stream and `events.jsonl` carry.
//!
//! Every event is one JSON object with an `id` (1, 2, 3, ... in the order the engine
//! emitted them) and a `type`: `run_started`, `policy_decision`, `phase_started`,
//! `phase_output`, `phase_retrying`, `phase_finished`, `run_finished`, or `run_error` (the
//! server could not start the run). Secrets are already redacted by the engine in every field.

use std::path::Path;

use orch_core::record::rfc3339;
use orch_core::{Event, RunEvent, RunRecord};
use serde_json::{Value, json};

/// File in a run directory holding the events the server streamed, one JSON object a line.
pub const EVENTS_FILE: &str = "events.jsonl";

/// The JSON form of an engine event (without its `id`), or `None` for kinds this version
/// does not know. The envelope's time is the `at` of every kind but output lines and
/// retries.
pub(crate) fn to_json(e: &Event) -> Option<Value> {
    // Formatted only for the kinds that print it (not for every output line).
    let at = || rfc3339(e.at);
    Some(match &e.kind {
        RunEvent::RunStarted {
            run_id,
            pipeline,
            phases,
            to_run,
            resumed_from,
        } => json!({
            "type": "run_started", "run_id": run_id, "pipeline": pipeline, "phases": phases,
            "to_run": to_run, "at": at(), "resumed_from": resumed_from,
        }),
        RunEvent::PolicyDecision {
            phase,
            verdict,
            reason,
        } => json!({
            "type": "policy_decision", "phase": phase, "allowed": verdict.allowed,
            "deny": verdict.deny, "error": verdict.error, "reason": reason, "at": at(),
        }),
        RunEvent::PhaseStarted { phase, attempt } => json!({
            "type": "phase_started", "phase": phase, "attempt": attempt, "at": at(),
        }),
        RunEvent::PhaseOutput {
            phase,
            stream,
            line,
        } => json!({ "type": "phase_output", "phase": phase, "stream": stream, "line": line }),
        RunEvent::PhaseRetrying {
            phase,
            attempt,
            error,
            delay,
        } => json!({
            "type": "phase_retrying", "phase": phase, "attempt": attempt, "error": error,
            "delay_ms": delay.as_millis() as u64,
        }),
        RunEvent::PhaseFinished {
            phase,
            status,
            attempts,
            duration,
            exit_code,
            reason,
            cause,
            allowed_failure,
            outputs,
            warnings,
        } => json!({
            "type": "phase_finished", "phase": phase, "status": status, "attempts": attempts,
            "duration_ms": duration.as_millis() as u64, "exit_code": exit_code,
            "reason": reason, "cause": cause, "allowed_failure": allowed_failure,
            "outputs": &**outputs,
            "warnings": warnings, "at": at(),
        }),
        RunEvent::RunFinished {
            run_id,
            status,
            duration,
        } => json!({
            "type": "run_finished", "run_id": run_id, "status": status,
            "duration_ms": duration.as_millis() as u64, "at": at(),
        }),
        _ => return None,
    })
}

/// Gives `event` its `id` and serializes it (the `id` first, for readers of the file).
pub(crate) fn with_id(id: u64, event: Value) -> String {
    stamp(id, &event.to_string())
}

/// `{"id":ID,...}` from an event serialized without its id (`{...}`): cheap enough to do
/// while the event log is locked.
pub(crate) fn stamp(id: u64, body: &str) -> String {
    match body.strip_prefix('{') {
        Some("}") | None => format!("{{\"id\":{id}}}"),
        Some(rest) => format!("{{\"id\":{id},{rest}"),
    }
}

/// The SSE frame of an event: `id: ID`, its JSON on one `data:` line, a blank line.
pub(crate) fn frame(id: u64, json: &str) -> String {
    format!("id: {id}\ndata: {json}\n\n")
}

/// The JSON of a frame made by [`frame`].
pub(crate) fn frame_json(frame: &str) -> &str {
    frame
        .split_once("\ndata: ")
        .map_or("", |(_, rest)| rest.trim_end_matches('\n'))
}

/// The events of a finished run that the server did not stream (one run by `orch run`),
/// rebuilt from its record and logs: start, then each phase (start, log lines, end) in
/// the order phases started, then the end.
pub(crate) fn from_record(record: &RunRecord, run_dir: &Path) -> Vec<String> {
    let mut out: Vec<Value> = Vec::new();
    let to_run = record
        .phases
        .values()
        .filter(|p| p.started_at.is_some())
        .count();
    out.push(json!({
        "type": "run_started", "run_id": record.run_id, "pipeline": record.pipeline,
        "phases": record.phases.len(), "to_run": to_run, "at": record.started_at,
        "resumed_from": record.resumed_from,
    }));
    let mut phases: Vec<_> = record.phases.iter().collect();
    // Stable: phases that never started keep declaration order at the end.
    phases.sort_by_key(|(_, p)| p.started_at.is_none());
    phases.sort_by(|(_, a), (_, b)| match (&a.started_at, &b.started_at) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    });
    for (id, p) in phases {
        if let Some(at) = &p.started_at {
            out.push(json!({
                "type": "phase_started", "phase": id, "attempt": p.attempts.max(1), "at": at,
            }));
        }
        if let Some(log) = &p.log
            && let Ok(text) = std::fs::read_to_string(run_dir.join(log))
        {
            for line in text.lines() {
                out.push(json!({
                    "type": "phase_output", "phase": id, "stream": "log", "line": line,
                }));
            }
        }
        out.push(json!({
            "type": "phase_finished", "phase": id, "status": p.status, "attempts": p.attempts,
            "duration_ms": p.duration_ms.unwrap_or(0), "exit_code": p.exit_code,
            "reason": p.reason, "cause": p.cause, "allowed_failure": p.allowed_failure,
            "outputs": p.outputs,
            "at": p.finished_at.as_deref().unwrap_or(&record.started_at),
        }));
    }
    out.push(json!({
        "type": "run_finished", "run_id": record.run_id, "status": record.status,
        "duration_ms": record.duration_ms.unwrap_or(0),
        "at": record.finished_at.as_deref().unwrap_or(&record.started_at),
    }));
    out.into_iter()
        .enumerate()
        .map(|(i, e)| with_id(i as u64 + 1, e))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use orch_core::events::EventBus;
    use orch_core::{PhaseId, Stream};

    use super::*;

    #[test]
    fn the_envelope_time_is_the_at_of_the_kinds_that_print_one() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
        let bus = EventBus::default();
        let phase = PhaseId::new("build").unwrap();
        let started = to_json(&bus.stamp_at(
            at,
            RunEvent::PhaseStarted {
                phase: phase.clone(),
                attempt: 2,
            },
        ))
        .unwrap();
        assert_eq!(
            started.to_string(),
            r#"{"type":"phase_started","phase":"build","attempt":2,"at":"2026-09-21T14:13:20.123Z"}"#
        );
        let line = to_json(&bus.stamp_at(
            at,
            RunEvent::PhaseOutput {
                phase,
                stream: Stream::Stdout,
                line: "hi".into(),
            },
        ))
        .unwrap();
        assert_eq!(
            line.to_string(),
            r#"{"type":"phase_output","phase":"build","stream":"stdout","line":"hi"}"#
        );
    }
}
