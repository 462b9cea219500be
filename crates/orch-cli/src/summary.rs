//! The summary after a run: a table of phases, the critical path, wall time against the
//! time spent in phases, and where the record, logs and reports are.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orch_core::{PhaseId, PhaseRecord, PhaseStatus, RunRecord, RunStatus};

use crate::style::{Style, fmt_duration, one_line};

/// Above this many phases the table lists only those that did not succeed.
const FULL_TABLE_LIMIT: usize = 40;
/// Longest note shown in the table.
const NOTE_CHARS: usize = 100;
/// Failed phases whose log paths are listed.
const LOGS_LISTED: usize = 5;
/// Record errors listed one per line (the rest are counted).
const RECORD_ERRORS_LISTED: usize = 5;
/// Longest critical path shown whole; a longer one shows its first and last steps.
const PATH_SHOWN: usize = 8;
/// Steps shown at each end of a shortened critical path.
const PATH_ENDS: usize = 3;

/// Where the run's files are, as shown to the user (paths relative to the working
/// directory when they are under it).
pub struct Locations {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The reports written after the run.
    pub reports: Vec<PathBuf>,
}

/// The final table and status lines. `quiet` (`-q`): a run that succeeded gets its
/// verdict line alone.
pub fn summary(record: &RunRecord, at: &Locations, style: Style, quiet: bool) -> String {
    let mut s = String::new();
    if quiet && record.status == RunStatus::Succeeded && record.record_errors.is_empty() {
        verdict_line(&mut s, record, style);
        return s;
    }
    let all = record.phases.len() <= FULL_TABLE_LIMIT;
    let rows: Vec<(&PhaseId, &PhaseRecord)> = record
        .phases
        .iter()
        .filter(|(_, p)| all || p.status != PhaseStatus::Succeeded || !p.warnings.is_empty())
        .collect();
    if !rows.is_empty() {
        let width = rows
            .iter()
            .map(|(id, _)| id.as_str().len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            s,
            "\n{:<width$}  {:<10} {:>8} {:>8}  note",
            "phase", "status", "attempts", "time"
        );
        for (id, p) in &rows {
            let time = p
                .duration_ms
                .map(|ms| fmt_duration(Duration::from_millis(ms)))
                .unwrap_or_else(|| "-".into());
            let status = if p.allowed_failure {
                format!("{}*", p.status)
            } else {
                p.status.to_string()
            };
            let status = style.status_padded(&status, p.status, p.allowed_failure, 10);
            let row = format!(
                "{id:<width$}  {status} {:>8} {time:>8}  {}",
                p.attempts,
                note(p)
            );
            let _ = writeln!(s, "{}", row.trim_end());
        }
    }
    if !all {
        let ok = record.phases.len() - rows.len();
        let _ = writeln!(
            s,
            "({ok} succeeded phase{} not listed: orch runs show {})",
            plural(ok),
            record.run_id
        );
    }
    if record.phases.values().any(|p| p.allowed_failure) {
        s.push_str("(* failed, allowed to fail)\n");
    }

    s.push('\n');
    let path = critical_path(record);
    if !path.is_empty() {
        let _ = writeln!(s, "critical path: {}", critical_path_text(&path));
    }
    let summed: u64 = record.phases.values().filter_map(|p| p.duration_ms).sum();
    let wall = record.duration_ms.map(fmt_ms).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        s,
        "time: {wall} wall, {} summed over phases",
        fmt_ms(summed)
    );
    verdict_line(&mut s, record, style);

    let run_dir = &at.run_dir;
    unrecorded_lines(&mut s, record, style);
    match record.record_errors.iter().find(|e| e.file == "run.json") {
        Some(e) => {
            let _ = writeln!(
                s,
                "record: {} NOT WRITTEN: {}",
                run_dir.join("run.json").display(),
                one_line(&e.message, false)
            );
        }
        None => {
            let _ = writeln!(s, "record: {}", run_dir.join("run.json").display());
        }
    }
    let mut failed_logs = record
        .phases
        .iter()
        .filter(|(_, p)| p.status.is_failure() && !p.allowed_failure)
        .filter_map(|(id, p)| Some((id, p.log.as_deref()?)));
    let listed: Vec<_> = failed_logs.by_ref().take(LOGS_LISTED).collect();
    if listed.is_empty() {
        if record.phases.values().any(|p| p.log.is_some()) {
            let _ = writeln!(s, "logs:   {}/", run_dir.join("logs").display());
        }
    } else {
        for (id, log) in listed {
            let _ = writeln!(s, "log of {id}: {}", run_dir.join(log).display());
        }
        let more = failed_logs.count();
        if more > 0 {
            let _ = writeln!(
                s,
                "logs of {more} more failure{}: {}/",
                plural(more),
                run_dir.join("logs").display()
            );
        }
    }
    if let Some(html) = at
        .reports
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "html"))
    {
        let _ = writeln!(s, "report: {}", shown(html, run_dir).display());
    }
    s
}

/// What could not be written: `not recorded: logs/build.log: incomplete: ...`, a few
/// lines and a count of the rest.
fn unrecorded_lines(s: &mut String, record: &RunRecord, style: Style) {
    let errors = &record.record_errors;
    if errors.is_empty() {
        return;
    }
    let word = style.verdict("not recorded", false);
    for e in errors.iter().take(RECORD_ERRORS_LISTED) {
        let _ = writeln!(s, "{word}: {}: {}", e.file, one_line(&e.message, false));
    }
    if errors.len() > RECORD_ERRORS_LISTED {
        let _ = writeln!(
            s,
            "{word}: {} more (orch run --format json lists them)",
            errors.len() - RECORD_ERRORS_LISTED
        );
    }
}

/// `run ID succeeded in 5.4s: 3 succeeded`.
fn verdict_line(s: &mut String, record: &RunRecord, style: Style) {
    let wall = record.duration_ms.map(fmt_ms).unwrap_or_else(|| "-".into());
    let counts = record.counts();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let verdict = match record.status {
        RunStatus::Succeeded => style.verdict("succeeded", true),
        RunStatus::Failed => style.verdict("FAILED", false),
        RunStatus::Cancelled => style.verdict("CANCELLED", false),
        RunStatus::Running => "running".to_owned(),
    };
    let unrecorded = if record.record_errors.is_empty() {
        ""
    } else {
        "; NOT FULLY RECORDED"
    };
    let _ = writeln!(
        s,
        "run {} {verdict} in {wall}: {}{unrecorded}",
        record.run_id,
        parts.join(", ")
    );
}

/// A critical path as one line: `a (1s) -> b (2s) = 3s`. A chain longer than
/// [`PATH_SHOWN`] steps shows its first and last [`PATH_ENDS`] steps and how many are
/// left out between them; the total counts every step.
pub fn critical_path_text(path: &[(String, u64)]) -> String {
    let total: u64 = path.iter().map(|(_, ms)| ms).sum();
    let step = |(id, ms): &(String, u64)| format!("{id} ({})", fmt_ms(*ms));
    let chain = if path.len() > PATH_SHOWN {
        let mut parts: Vec<String> = path[..PATH_ENDS].iter().map(step).collect();
        parts.push(format!("... {} more ...", path.len() - 2 * PATH_ENDS));
        parts.extend(path[path.len() - PATH_ENDS..].iter().map(step));
        parts
    } else {
        path.iter().map(step).collect()
    };
    format!("{} = {}", chain.join(" -> "), fmt_ms(total))
}

/// A report path under the run directory, written the way the run directory is.
fn shown(path: &Path, run_dir: &Path) -> PathBuf {
    path.file_name()
        .filter(|_| {
            path.parent()
                .is_some_and(|p| p.ends_with(run_dir) || run_dir.ends_with(p))
        })
        .map(|name| run_dir.join(name))
        .unwrap_or_else(|| path.to_path_buf())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn fmt_ms(ms: u64) -> String {
    fmt_duration(Duration::from_millis(ms))
}

/// The note column: why a phase ended this way, or that its result came from a cache.
fn note(p: &PhaseRecord) -> String {
    let mut note = p.reason.as_deref().map(|r| one_line(r, false).into_owned());
    if p.outputs.get("cached").is_some_and(|c| c == "true") {
        note = Some(match note {
            Some(n) => format!("cached; {n}"),
            None => "cached".into(),
        });
    }
    for w in &p.warnings {
        let w = format!("warning: {}", one_line(w, false));
        note = Some(match note {
            Some(n) => format!("{n}; {w}"),
            None => w,
        });
    }
    note.unwrap_or_default().chars().take(NOTE_CHARS).collect()
}

/// The chain through `needs` with the longest summed duration, among phases that ran,
/// from its first phase to its last. Equal times go to the chain of more phases (a gate
/// that took 0 ms still ends the path), then to the phase declared first.
pub fn critical_path(record: &RunRecord) -> Vec<(String, u64)> {
    let ids: Vec<&PhaseId> = record.phases.keys().collect();
    let index: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let ran: Vec<bool> = ids
        .iter()
        .map(|id| {
            let p = &record.phases[id.as_str()];
            p.started_at.is_some() && p.duration_ms.is_some()
        })
        .collect();
    // best[i]: the longest chain ending at i: (milliseconds, phases) and the phase before.
    type Chain = ((u64, usize), Option<usize>);
    let mut best: Vec<Option<Chain>> = vec![None; ids.len()];
    // Depth-first over needs without recursion (records of valid pipelines have no cycles;
    // a phase met again on the stack is cut off rather than followed).
    let mut on_stack = vec![false; ids.len()];
    for start in 0..ids.len() {
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if best[i].is_some() {
                continue;
            }
            let p = &record.phases[ids[i].as_str()];
            let needs = p
                .needs
                .iter()
                .filter_map(|n| index.get(n.as_str()).copied());
            if !expanded {
                on_stack[i] = true;
                stack.push((i, true));
                let next: Vec<usize> = needs
                    .filter(|&n| best[n].is_none() && !on_stack[n])
                    .collect();
                stack.extend(next.into_iter().rev().map(|n| (n, false)));
                continue;
            }
            on_stack[i] = false;
            let mut prev: Option<((u64, usize), usize)> = None;
            for n in needs {
                if let Some((key, _)) = best[n]
                    && ran[n]
                    && prev.is_none_or(|(k, _)| key > k)
                {
                    prev = Some((key, n));
                }
            }
            best[i] = Some(if ran[i] {
                let (ms, count) = prev.map_or((0, 0), |(k, _)| k);
                (
                    (ms + p.duration_ms.unwrap_or(0), count + 1),
                    prev.map(|(_, n)| n),
                )
            } else {
                ((0, 0), None)
            });
        }
    }
    let mut end: Option<((u64, usize), usize)> = None;
    for (i, b) in best.iter().enumerate() {
        if let Some((key, _)) = b
            && ran[i]
            && end.is_none_or(|(k, _)| *key > k)
        {
            end = Some((*key, i));
        }
    }
    let mut path = Vec::new();
    let mut at = end.map(|(_, i)| i);
    while let Some(i) = at {
        let p = &record.phases[ids[i].as_str()];
        path.push((ids[i].to_string(), p.duration_ms.unwrap_or(0)));
        at = best[i].and_then(|(_, prev)| prev);
    }
    path.reverse();
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phases: &[(&str, u64, &[&str])]) -> RunRecord {
        let mut phases_json = serde_json::Map::new();
        for (id, ms, needs) in phases {
            phases_json.insert(
                (*id).to_owned(),
                serde_json::json!({
                    "status": "succeeded", "kind": "command", "attempts": 1,
                    "started_at": "2026-01-01T00:00:00Z", "duration_ms": ms,
                    "needs": needs,
                }),
            );
        }
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": "20260101T000000Z-abcd", "pipeline": "p",
            "status": "succeeded", "started_at": "2026-01-01T00:00:00Z",
            "phases": phases_json,
        }))
        .unwrap_or_else(|e| panic!("record: {e}"))
    }

    fn ids(path: &[(String, u64)]) -> Vec<&str> {
        path.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn the_critical_path_follows_the_longest_chain() {
        // a -> b -> d is 1+5+1 = 7; a -> c -> d is 1+2+1 = 4.
        let r = record(&[
            ("a", 1, &[]),
            ("b", 5, &["a"]),
            ("c", 2, &["a"]),
            ("d", 1, &["b", "c"]),
            ("lone", 6, &[]),
        ]);
        assert_eq!(ids(&critical_path(&r)), ["a", "b", "d"]);
    }

    #[test]
    fn a_phase_declared_before_what_it_needs_is_fine() {
        let r = record(&[("late", 3, &["early"]), ("early", 2, &[])]);
        assert_eq!(ids(&critical_path(&r)), ["early", "late"]);
    }

    #[test]
    fn a_single_long_phase_is_its_own_path() {
        let r = record(&[("a", 1, &[]), ("b", 1, &["a"]), ("lone", 9, &[])]);
        assert_eq!(ids(&critical_path(&r)), ["lone"]);
    }

    #[test]
    fn equal_times_go_to_the_longer_chain() {
        let r = record(&[("a", 5, &[]), ("b", 3, &[]), ("gate", 0, &["a", "b"])]);
        assert_eq!(ids(&critical_path(&r)), ["a", "gate"]);
    }

    #[test]
    fn a_long_critical_path_shows_its_ends_and_a_count() {
        let path: Vec<(String, u64)> = (0..100).map(|i| (format!("p{i}"), 10)).collect();
        assert_eq!(
            critical_path_text(&path),
            "p0 (10ms) -> p1 (10ms) -> p2 (10ms) -> ... 94 more ... -> p97 (10ms) -> p98 (10ms) -> p99 (10ms) = 1.0s"
        );
        // Up to the limit, every step is shown.
        let short = &path[..PATH_SHOWN];
        assert_eq!(
            critical_path_text(short).matches(" -> ").count(),
            PATH_SHOWN - 1
        );
        assert!(!critical_path_text(short).contains("more"));
    }

    #[test]
    fn an_empty_record_has_no_path() {
        assert!(critical_path(&record(&[])).is_empty());
    }
}
