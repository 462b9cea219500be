//! KPIs over the run history of a state directory (`orch stats`): per phase the runs,
//! success rate, duration percentiles, retries and flaky successes; per pipeline the success
//! rate, the mean time to recovery and the lead time.
//!
//! # Definitions
//!
//! Runs are the records under `STATE_DIR/runs/*/run.json` (or, for a run that did not write
//! its final record, its journal), ordered by start time; `since` keeps the runs that
//! started at or after it. A record that cannot be read is skipped with a warning
//! ([`Stats::skipped`]).
//!
//! - **Pipeline success rate**: succeeded runs over runs that succeeded or failed.
//!   Cancelled runs and runs that never ended (still running, or died) are counted apart
//!   and are in neither side.
//! - **Mean time to recovery (MTTR)**: the pipeline goes red at the end of a failed run that
//!   follows a succeeded one (or opens the window), and green again at the end of the next
//!   succeeded run; MTTR is the mean of these red spans. A failure that is not followed by
//!   a success in the window is not a recovery: it is shown as `failing_since`.
//! - **Lead time**: run records carry no commit time, so lead time is measured from what
//!   they do record: for each succeeded run, from the start of the first run that tried
//!   to deliver the same change to the succeeded run's end. The runs that tried are the
//!   succeeded run and the unsuccessful runs (failed or cancelled) right before it, back to
//!   the previous succeeded run. A run that succeeds at the first try has its own wall time
//!   as lead time; a failure fixed by a later run counts from the failed run's start.
//! - **Phase runs**: the runs in which a phase made at least one attempt and ended
//!   `succeeded`, `failed` or `timed_out` (skipped, blocked and interrupted phases are not
//!   runs; a phase the policy denied made no attempt and is counted as `denied`). Its
//!   **success rate** is succeeded over those runs; allowed failures are failures.
//! - **Duration percentiles** (p50, p95): nearest rank over the durations of those runs.
//! - **Retries**: attempts past the first, summed over every run of the phase (interrupted
//!   ones included). A **flaky success** is a success that took more than one attempt.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use orch_core::stats::{Stats, since};
//!
//! let dir = tempfile::tempdir()?;
//! let stats = Stats::collect(dir.path(), None)?;
//! assert!(stats.pipelines.is_empty());
//! let now = UNIX_EPOCH + Duration::from_secs(40 * 86_400);
//! assert_eq!(since("30d", now)?, UNIX_EPOCH + Duration::from_secs(10 * 86_400));
//! assert!(since("lots", now).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use indexmap::IndexMap;
use serde::Serialize;

use crate::errors::RunError;
use crate::ids::RunId;
use crate::record::{PhaseStatus, RunRecord, RunStatus};

/// The version of the JSON form of [`Stats`].
pub const STATS_FORMAT_VERSION: u32 = 1;

/// A `--since` value that is neither a duration nor a time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is neither a duration ago (`30d`, `12h`, `90m`) nor an RFC 3339 time \
     (`2026-01-02T03:04:05Z`)"
)]
pub struct SinceError {
    /// The value given.
    pub text: String,
}

/// Parses a `--since` value: a duration before `now` (`30d`, `1w`, `12h`; humantime units)
/// or an RFC 3339 time.
pub fn since(text: &str, now: SystemTime) -> Result<SystemTime, SinceError> {
    let t = text.trim();
    let err = || SinceError {
        text: text.to_owned(),
    };
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(at) = humantime::parse_rfc3339_weak(t) {
        return Ok(at);
    }
    let ago = humantime::parse_duration(t).map_err(|_| err())?;
    now.checked_sub(ago).ok_or_else(err)
}

/// A run left out of the numbers, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SkippedRun {
    /// The run's directory name.
    pub run: String,
    /// Why it was left out.
    pub why: String,
}

/// Distribution of a set of durations.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Durations {
    /// How many.
    pub count: u64,
    /// Their mean (ms), when there is any.
    pub mean_ms: Option<u64>,
    /// The median (ms, nearest rank).
    pub p50_ms: Option<u64>,
    /// The 95th percentile (ms, nearest rank).
    pub p95_ms: Option<u64>,
    /// Their sum (ms).
    pub sum_ms: u64,
}

impl Durations {
    fn of(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        let count = values.len() as u64;
        let sum_ms: u64 = values.iter().sum();
        Self {
            count,
            mean_ms: (count > 0).then(|| sum_ms / count),
            p50_ms: percentile(&values, 50),
            p95_ms: percentile(&values, 95),
            sum_ms,
        }
    }
}

/// The `p`th percentile of sorted `values`, nearest rank.
fn percentile(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    // ceil(p/100 * n), at least 1.
    let rank = (p * n).div_ceil(100).max(1);
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

/// The numbers of one phase of one pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseStats {
    /// The phase id.
    pub phase: String,
    /// Its kind in the newest run that has it.
    pub kind: String,
    /// Runs that ended `succeeded`, `failed` or `timed_out` after at least one attempt.
    pub runs: u64,
    /// Of those, succeeded.
    pub succeeded: u64,
    /// Of those, failed or timed out.
    pub failed: u64,
    /// Denied by the policy (no attempt made).
    pub denied: u64,
    /// `succeeded / runs`, when there is any run.
    pub success_rate: Option<f64>,
    /// Durations of its runs.
    pub duration: Durations,
    /// Attempts past the first, over every run of it.
    pub retries: u64,
    /// Successes that took more than one attempt.
    pub flaky: u64,
}

/// The numbers of one pipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PipelineStats {
    /// The pipeline's name.
    pub pipeline: String,
    /// Runs in the window.
    pub runs: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Runs that were interrupted.
    pub cancelled: u64,
    /// Runs that never ended (running now, or died).
    pub unfinished: u64,
    /// `succeeded / (succeeded + failed)`, when there is any.
    pub success_rate: Option<f64>,
    /// Spans from a failure to the next success (see the module docs).
    pub time_to_recovery: Durations,
    /// End of the first failed run of a failure not recovered in the window (RFC 3339).
    pub failing_since: Option<String>,
    /// Lead times of the succeeded runs (see the module docs).
    pub lead_time: Durations,
    /// Per phase, in the declaration order of the newest run (then phases only older runs
    /// had).
    pub phases: Vec<PhaseStats>,
}

/// KPIs over a state directory's runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Version of this format.
    pub format_version: u32,
    /// The window's start (RFC 3339), when one was given.
    pub since: Option<String>,
    /// Records read (in the window or not).
    pub runs_read: u64,
    /// Records left out because they could not be read.
    pub skipped: Vec<SkippedRun>,
    /// Per pipeline, by name.
    pub pipelines: Vec<PipelineStats>,
}

/// A run with its parsed times.
struct Timed {
    record: RunRecord,
    start: SystemTime,
    end: Option<SystemTime>,
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

impl Stats {
    /// Reads every run of `state_dir` and computes the numbers over those that started at or
    /// after `since`. A state directory without runs gives empty stats.
    pub fn collect(state_dir: &Path, since: Option<SystemTime>) -> Result<Self, RunError> {
        let runs = state_dir.join("runs");
        let dir = match std::fs::read_dir(&runs) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::compute(Vec::new(), Vec::new(), since));
            }
            Err(source) => return Err(RunError::State { path: runs, source }),
        };
        let mut names: Vec<String> = dir
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect();
        names.sort();
        let mut records = Vec::new();
        let mut skipped = Vec::new();
        for name in names {
            if RunId::parse(&name).is_err() {
                continue;
            }
            match crate::history::load(state_dir, &name) {
                Ok(r) => records.push(r),
                Err(e) => skipped.push(SkippedRun {
                    why: match e {
                        RunError::Record { path, message } => format!(
                            "{}: {message}",
                            path.strip_prefix(state_dir).unwrap_or(&path).display()
                        ),
                        other => other.to_string(),
                    },
                    run: name,
                }),
            }
        }
        Ok(Self::compute(records, skipped, since))
    }

    /// The numbers over `records` (in any order); `skipped` is carried into the result.
    pub fn compute(
        records: Vec<RunRecord>,
        mut skipped: Vec<SkippedRun>,
        since: Option<SystemTime>,
    ) -> Self {
        let runs_read = records.len() as u64;
        let mut timed = Vec::new();
        for record in records {
            let Some(start) = parse_time(&record.started_at) else {
                skipped.push(SkippedRun {
                    run: record.run_id.to_string(),
                    why: format!("no valid start time (`{}`)", record.started_at),
                });
                continue;
            };
            if since.is_some_and(|s| start < s) {
                continue;
            }
            let end = record
                .finished_at
                .as_deref()
                .and_then(parse_time)
                .or_else(|| record.duration_ms.map(|d| start + Duration::from_millis(d)));
            timed.push(Timed { record, start, end });
        }
        timed.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then_with(|| a.record.run_id.cmp(&b.record.run_id))
        });
        let mut by_pipeline: std::collections::BTreeMap<String, Vec<Timed>> =
            std::collections::BTreeMap::new();
        for t in timed {
            by_pipeline
                .entry(t.record.pipeline.clone())
                .or_default()
                .push(t);
        }
        Self {
            format_version: STATS_FORMAT_VERSION,
            since: since.map(crate::record::rfc3339),
            runs_read,
            skipped,
            pipelines: by_pipeline
                .into_iter()
                .map(|(name, runs)| pipeline_stats(name, &runs))
                .collect(),
        }
    }

    /// The text of `orch stats`.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let window = self
            .since
            .as_deref()
            .map_or_else(|| "all runs".to_owned(), |s| format!("runs since {s}"));
        let _ = write!(out, "{window}: {} read", self.runs_read);
        if !self.skipped.is_empty() {
            let _ = write!(out, ", {} skipped (unreadable)", self.skipped.len());
        }
        out.push('\n');
        if self.pipelines.is_empty() {
            out.push_str("no runs to measure\n");
        }
        for p in &self.pipelines {
            out.push('\n');
            let _ = writeln!(
                out,
                "pipeline {}: {} run{} ({} succeeded, {} failed, {} cancelled, {} unfinished)",
                p.pipeline,
                p.runs,
                if p.runs == 1 { "" } else { "s" },
                p.succeeded,
                p.failed,
                p.cancelled,
                p.unfinished
            );
            let _ = writeln!(out, "  success rate      {}", percent(p.success_rate));
            let mttr = match p.time_to_recovery.mean_ms {
                Some(ms) => format!(
                    "{} (mean of {} recover{})",
                    human_ms(ms),
                    p.time_to_recovery.count,
                    if p.time_to_recovery.count == 1 {
                        "y"
                    } else {
                        "ies"
                    }
                ),
                None => "- (no recovery)".to_owned(),
            };
            let _ = writeln!(out, "  time to recovery  {mttr}");
            if let Some(since) = &p.failing_since {
                let _ = writeln!(out, "  failing since     {since}");
            }
            let lead = match (p.lead_time.mean_ms, p.lead_time.p50_ms, p.lead_time.p95_ms) {
                (Some(mean), Some(p50), Some(p95)) => format!(
                    "mean {}, p50 {}, p95 {} ({} succeeded run{})",
                    human_ms(mean),
                    human_ms(p50),
                    human_ms(p95),
                    p.lead_time.count,
                    if p.lead_time.count == 1 { "" } else { "s" }
                ),
                _ => "- (no succeeded run)".to_owned(),
            };
            let _ = writeln!(out, "  lead time         {lead}");
            out.push('\n');
            let rows: Vec<[String; 8]> = p
                .phases
                .iter()
                .map(|ph| {
                    let mut runs = ph.runs.to_string();
                    if ph.denied > 0 {
                        let _ = write!(runs, " (+{} denied)", ph.denied);
                    }
                    [
                        ph.phase.clone(),
                        ph.kind.clone(),
                        runs,
                        percent(ph.success_rate),
                        ph.duration.p50_ms.map_or_else(|| "-".into(), human_ms),
                        ph.duration.p95_ms.map_or_else(|| "-".into(), human_ms),
                        ph.retries.to_string(),
                        ph.flaky.to_string(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "PHASE", "KIND", "RUNS", "SUCCESS", "P50", "P95", "RETRIES", "FLAKY",
                ],
                &rows,
            ));
        }
        out
    }

    /// The numbers as Prometheus text exposition (format 0.0.4): gauges and summaries in
    /// seconds, one `# HELP` and `# TYPE` per family, label values escaped.
    pub fn render_prometheus(&self) -> String {
        let mut m = Metrics::default();
        let pl = |p: &PipelineStats| vec![("pipeline", p.pipeline.clone())];
        let ph = |p: &PipelineStats, s: &PhaseStats| {
            vec![("pipeline", p.pipeline.clone()), ("phase", s.phase.clone())]
        };
        m.family(
            "orch_stats_skipped_runs",
            "gauge",
            "Run records left out because they could not be read.",
        );
        m.sample("", &[], self.skipped.len() as f64);
        m.family(
            "orch_pipeline_runs",
            "gauge",
            "Runs of the pipeline in the window, by status.",
        );
        for p in &self.pipelines {
            for (status, n) in [
                ("succeeded", p.succeeded),
                ("failed", p.failed),
                ("cancelled", p.cancelled),
                ("unfinished", p.unfinished),
            ] {
                let mut labels = pl(p);
                labels.push(("status", status.to_owned()));
                m.sample("", &labels, n as f64);
            }
        }
        m.family(
            "orch_pipeline_success_ratio",
            "gauge",
            "Succeeded runs over succeeded and failed runs.",
        );
        for p in &self.pipelines {
            if let Some(r) = p.success_rate {
                m.sample("", &pl(p), r);
            }
        }
        m.family(
            "orch_pipeline_time_to_recovery_seconds",
            "summary",
            "Time from a failed run to the next succeeded run (mean time to recovery is sum over count).",
        );
        for p in &self.pipelines {
            m.summary(&pl(p), &p.time_to_recovery);
        }
        m.family(
            "orch_pipeline_lead_time_seconds",
            "summary",
            "Time from the start of the first run that tried a change to the end of the run that delivered it.",
        );
        for p in &self.pipelines {
            m.summary(&pl(p), &p.lead_time);
        }
        m.family(
            "orch_phase_runs",
            "gauge",
            "Runs of the phase that ended after at least one attempt, by result.",
        );
        for p in &self.pipelines {
            for s in &p.phases {
                for (result, n) in [("succeeded", s.succeeded), ("failed", s.failed)] {
                    let mut labels = ph(p, s);
                    labels.push(("result", result.to_owned()));
                    m.sample("", &labels, n as f64);
                }
            }
        }
        m.family(
            "orch_phase_denied",
            "gauge",
            "Times the policy denied the phase.",
        );
        for p in &self.pipelines {
            for s in &p.phases {
                m.sample("", &ph(p, s), s.denied as f64);
            }
        }
        m.family(
            "orch_phase_success_ratio",
            "gauge",
            "Succeeded runs of the phase over its runs.",
        );
        for p in &self.pipelines {
            for s in &p.phases {
                if let Some(r) = s.success_rate {
                    m.sample("", &ph(p, s), r);
                }
            }
        }
        m.family(
            "orch_phase_duration_seconds",
            "summary",
            "Wall time of the phase's runs (nearest-rank quantiles).",
        );
        for p in &self.pipelines {
            for s in &p.phases {
                m.summary(&ph(p, s), &s.duration);
            }
        }
        m.family(
            "orch_phase_retries",
            "gauge",
            "Attempts past the first, over the phase's runs.",
        );
        for p in &self.pipelines {
            for s in &p.phases {
                m.sample("", &ph(p, s), s.retries as f64);
            }
        }
        m.family(
            "orch_phase_flaky_successes",
            "gauge",
            "Successes of the phase that took more than one attempt.",
        );
        for p in &self.pipelines {
            for s in &p.phases {
                m.sample("", &ph(p, s), s.flaky as f64);
            }
        }
        m.out
    }
}

fn pipeline_stats(name: String, runs: &[Timed]) -> PipelineStats {
    let mut p = PipelineStats {
        pipeline: name,
        runs: runs.len() as u64,
        ..PipelineStats::default()
    };
    let mut recoveries = Vec::new();
    let mut leads = Vec::new();
    // When the pipeline went red (end of the first failed run), and the start of the first
    // run since the last success.
    let mut red_since: Option<SystemTime> = None;
    let mut trying_since: Option<SystemTime> = None;
    for t in runs {
        match t.record.status {
            RunStatus::Succeeded => {
                p.succeeded += 1;
                let end = t.end.unwrap_or(t.start);
                if let Some(red) = red_since.take() {
                    recoveries.push(millis(end, red));
                }
                let first = trying_since.take().unwrap_or(t.start);
                leads.push(millis(end, first));
            }
            RunStatus::Failed => {
                p.failed += 1;
                red_since.get_or_insert(t.end.unwrap_or(t.start));
                trying_since.get_or_insert(t.start);
            }
            RunStatus::Cancelled => {
                p.cancelled += 1;
                trying_since.get_or_insert(t.start);
            }
            RunStatus::Running => p.unfinished += 1,
        }
    }
    p.failing_since = red_since.map(crate::record::rfc3339);
    p.success_rate = ratio(p.succeeded, p.succeeded + p.failed);
    p.time_to_recovery = Durations::of(recoveries);
    p.lead_time = Durations::of(leads);

    // Phases: the newest run's order first.
    let mut phases: IndexMap<String, (PhaseStats, Vec<u64>)> = IndexMap::new();
    for t in runs.iter().rev() {
        for (id, rec) in &t.record.phases {
            let (s, durations) = phases.entry(id.to_string()).or_insert_with(|| {
                (
                    PhaseStats {
                        phase: id.to_string(),
                        kind: rec.kind.to_string(),
                        ..PhaseStats::default()
                    },
                    Vec::new(),
                )
            });
            if s.kind.is_empty() {
                rec.kind.as_str().clone_into(&mut s.kind);
            }
            if rec.denied_by_policy() {
                s.denied += 1;
                continue;
            }
            if rec.attempts == 0 {
                continue;
            }
            s.retries += u64::from(rec.attempts - 1);
            let ended = match rec.status {
                PhaseStatus::Succeeded => {
                    s.succeeded += 1;
                    if rec.attempts > 1 {
                        s.flaky += 1;
                    }
                    true
                }
                PhaseStatus::Failed | PhaseStatus::TimedOut => {
                    s.failed += 1;
                    true
                }
                _ => false,
            };
            if ended {
                s.runs += 1;
                if let Some(d) = rec.duration_ms {
                    durations.push(d);
                }
            }
        }
    }
    p.phases = phases
        .into_values()
        .map(|(mut s, d)| {
            s.success_rate = ratio(s.succeeded, s.runs);
            s.duration = Durations::of(d);
            s
        })
        .collect();
    p
}

fn millis(later: SystemTime, earlier: SystemTime) -> u64 {
    later
        .duration_since(earlier)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ratio(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

/// `850ms`, `12.3s`, `4m 5s`, `2h 3m`, `3d 4h`.
fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m {}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h {}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}d {}h", s / 86_400, s / 3600 % 24)
    }
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut width = head.map(str::len);
    for r in rows {
        for (k, c) in r.iter().enumerate() {
            width[k] = width[k].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::from("  ");
        for (k, c) in cells.iter().enumerate() {
            let _ = write!(l, "{c:<w$}  ", w = width[k]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head);
    for r in rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// Prometheus text, written family by family.
#[derive(Default)]
struct Metrics {
    out: String,
    name: &'static str,
}

impl Metrics {
    fn family(&mut self, name: &'static str, kind: &str, help: &str) {
        self.name = name;
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, suffix: &str, labels: &[(&str, String)], value: f64) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (k, (name, v)) in labels.iter().enumerate() {
                if k > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{name}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A summary in seconds: the p50 and p95 quantiles (when there are values), the sum and
    /// the count.
    fn summary(&mut self, labels: &[(&str, String)], d: &Durations) {
        for (q, v) in [("0.5", d.p50_ms), ("0.95", d.p95_ms)] {
            if let Some(v) = v {
                let mut l = labels.to_vec();
                l.push(("quantile", q.to_owned()));
                self.sample("", &l, v as f64 / 1000.0);
            }
        }
        self.sample("_sum", labels, d.sum_ms as f64 / 1000.0);
        self.sample("_count", labels, d.count as f64);
    }
}

/// A sample value: integers without a fraction, others as Rust prints them (shortest
/// round-trip form), which Prometheus parses.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Label values: `\`, `"` and line feeds escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// HELP text: `\` and line feeds escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', r"\\").replace('\n', r"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let check = |v: &[u64], p: u64, want: Option<u64>| {
            assert_eq!(percentile(v, p), want, "p{p} of {v:?}");
        };
        check(&[], 50, None);
        check(&[7], 50, Some(7));
        check(&[7], 95, Some(7));
        check(&[1, 2, 3, 4], 50, Some(2));
        check(&[1, 2, 3, 4], 95, Some(4));
        let hundred: Vec<u64> = (1..=100).collect();
        check(&hundred, 50, Some(50));
        check(&hundred, 95, Some(95));
    }

    #[test]
    fn labels_and_help_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
        assert_eq!(escape_help("a\\b\nc\"d"), r#"a\\b\nc"d"#);
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(100 * 86_400);
        let day = Duration::from_secs(86_400);
        assert_eq!(since("30d", now), Ok(now - 30 * day));
        assert_eq!(since("1w", now), Ok(now - 7 * day));
        assert_eq!(since(" 12h ", now), Ok(now - day / 2));
        assert_eq!(
            since("1970-01-02T00:00:00Z", now),
            Ok(std::time::UNIX_EPOCH + day)
        );
        for bad in ["", "lots", "30", "-3d", "30 days ago", "2026-13-01"] {
            let e = since(bad, now).expect_err(bad);
            assert!(e.to_string().contains("neither a duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_345), "12.3s");
        assert_eq!(human_ms(245_000), "4m 5s");
        assert_eq!(human_ms(7_380_000), "2h 3m");
        assert_eq!(human_ms(273_600_000), "3d 4h");
    }
}
