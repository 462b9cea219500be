//! Plain terminal output: one line per finished phase, then a summary table.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use orch_core::{EventSink, PhaseStatus, RunEvent, RunRecord, RunStatus, Stream};

/// Prints one line per event worth seeing, to stderr.
pub struct PlainProgress {
    verbose: bool,
    quiet: bool,
    out: Mutex<std::io::Stderr>,
}

impl PlainProgress {
    pub fn new(verbose: bool, quiet: bool) -> Self {
        Self {
            verbose,
            quiet,
            out: Mutex::new(std::io::stderr()),
        }
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn mark(status: PhaseStatus, allowed: bool) -> &'static str {
    match status {
        PhaseStatus::Succeeded => "ok",
        PhaseStatus::Failed | PhaseStatus::TimedOut if allowed => "FAIL (allowed)",
        PhaseStatus::Failed => "FAIL",
        PhaseStatus::TimedOut => "TIMEOUT",
        PhaseStatus::Cancelled => "CANCEL",
        PhaseStatus::Skipped => "skip",
        PhaseStatus::Blocked => "BLOCKED",
    }
}

impl EventSink for PlainProgress {
    fn on_event(&self, event: &RunEvent) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = match event {
            RunEvent::RunStarted {
                run_id,
                pipeline,
                to_run,
                phases,
                ..
            } if !self.quiet => writeln!(
                out,
                "orch: running `{pipeline}` ({to_run} of {phases} phases), run {run_id}"
            ),
            RunEvent::PhaseOutput {
                phase,
                stream,
                line,
            } if self.verbose => {
                let tag = match stream {
                    Stream::Stderr => "!",
                    _ => "|",
                };
                writeln!(out, "{phase} {tag} {line}")
            }
            RunEvent::PhaseRetrying {
                phase,
                attempt,
                error,
                delay,
            } if !self.quiet => writeln!(
                out,
                "  retry   {phase}: attempt {attempt} failed ({error}); next in {}",
                fmt_duration(*delay)
            ),
            RunEvent::PhaseFinished {
                phase,
                status,
                attempts,
                duration,
                reason,
                allowed_failure,
                ..
            } => {
                let failure = status.is_failure() || *status == PhaseStatus::Blocked;
                if self.quiet && !failure {
                    return;
                }
                if *status == PhaseStatus::Skipped
                    && duration.is_zero()
                    && !self.verbose
                    && reason.as_deref().is_some_and(|r| {
                        r.starts_with("not selected") || r.starts_with("before --from")
                    })
                {
                    return;
                }
                let mut line = format!(
                    "  {:<8}{phase} ({})",
                    mark(*status, *allowed_failure),
                    fmt_duration(*duration)
                );
                if *attempts > 1 {
                    line.push_str(&format!(" after {attempts} attempts"));
                }
                if let Some(r) = reason {
                    line.push_str(": ");
                    line.push_str(r);
                }
                writeln!(out, "{line}")
            }
            _ => Ok(()),
        };
    }
}

/// The final table and status line.
pub fn summary(record: &RunRecord, run_dir: &std::path::Path) -> String {
    let mut s = String::new();
    let width = record
        .phases
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(5)
        .max(5);
    s.push_str(&format!(
        "\n{:<width$}  {:<10} {:>8} {:>8}  {}\n",
        "phase", "status", "attempts", "time", "note"
    ));
    for (id, p) in &record.phases {
        let time = p
            .duration_ms
            .map(|ms| fmt_duration(Duration::from_millis(ms)))
            .unwrap_or_else(|| "-".into());
        let status = if p.allowed_failure {
            format!("{}*", p.status)
        } else {
            p.status.to_string()
        };
        let note = p.reason.as_deref().unwrap_or("");
        let note: String = note.chars().take(100).collect();
        s.push_str(&format!(
            "{id:<width$}  {status:<10} {:>8} {time:>8}  {note}\n",
            p.attempts
        ));
    }
    let counts = record.counts();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let verdict = match record.status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "FAILED",
        RunStatus::Cancelled => "CANCELLED",
        RunStatus::Running => "running",
    };
    let wall = record
        .duration_ms
        .map(|ms| fmt_duration(Duration::from_millis(ms)))
        .unwrap_or_default();
    s.push_str(&format!(
        "\nrun {} {verdict} in {wall}: {}\n",
        record.run_id,
        parts.join(", ")
    ));
    if record.phases.values().any(|p| p.allowed_failure) {
        s.push_str("(* failed, allowed to fail)\n");
    }
    s.push_str(&format!("record: {}\n", run_dir.join("run.json").display()));
    s
}
