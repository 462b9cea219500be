//! The run as reports show it: times made relative and readable, statuses labelled,
//! outputs and artifacts flattened. Shared by the Markdown, HTML and compliance renderers.

use std::borrow::Cow;

use orch_core::{PhaseId, PhaseRecord, RunRecord, RunStatus};
use serde::Serialize;

use crate::sources::truncate;
use crate::time;

/// The longest output value shown, in characters.
pub(crate) const MAX_OUTPUT_CHARS: usize = 300;

/// A run for display. Its phases borrow what they show as recorded from the record: a
/// report of 10,000 phases made a copy of every id, kind and need (3 MB).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct RunView<'a> {
    pub run_id: String,
    pub pipeline: String,
    pub status: &'static str,
    pub started: String,
    pub finished: Option<String>,
    pub duration: Option<String>,
    pub pipeline_file: Option<String>,
    pub resumed_from: Option<String>,
    pub vars: Vec<(String, String)>,
    /// Phases per status, in a fixed order, only statuses that occur.
    pub counts: Vec<CountView>,
    pub total: usize,
    /// Not given to templates as part of the run (they get the phases they show).
    #[serde(skip)]
    pub phases: Vec<PhaseView<'a>>,
    /// Time axis of the timeline: its length in milliseconds and tick marks.
    pub span_ms: u64,
    pub ticks: Vec<Tick>,
}

/// How many phases ended one way.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CountView {
    /// The status class (a status, or `allowed` for allowed failures).
    pub class: &'static str,
    /// `timed out`, `allowed to fail`, ...
    pub label: &'static str,
    pub count: usize,
}

/// A mark on the time axis.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Tick {
    pub left: String,
    pub label: String,
}

/// A phase for display.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PhaseView<'a> {
    pub index: usize,
    pub id: &'a str,
    pub kind: &'a str,
    /// The status as recorded.
    pub status: &'static str,
    /// CSS class and legend key: the status, or `allowed` for an allowed failure.
    pub class: &'static str,
    /// `failed`, `failed (allowed)`, ...
    pub label: Cow<'static, str>,
    pub attempts: u32,
    pub retries: u32,
    pub exit_code: Option<i32>,
    pub started: Option<Shown<'a>>,
    pub finished: Option<Shown<'a>>,
    pub duration: Option<Took>,
    pub duration_ms: Option<u64>,
    pub reason: Option<&'a str>,
    pub allowed_failure: bool,
    pub description: Option<&'a str>,
    pub needs: &'a [PhaseId],
    pub tags: &'a [String],
    pub outputs: Vec<(String, String)>,
    pub artifacts: Vec<ArtifactView>,
    /// Whether it started.
    pub ran: bool,
    /// Start offset from the run's start, in milliseconds.
    pub offset_ms: u64,
    /// Timeline bar position and width, in percent of the axis.
    pub left: Percent,
    pub width: Percent,
}

/// A recorded time as reports show it (`2026-01-01 12:00:00 UTC`), formatted when it is
/// shown (and serialized as that text): a view of 10,000 phases held 20,000 such strings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shown<'a>(&'a str);

impl Shown<'_> {
    /// Appends the time as shown.
    pub(crate) fn push(self, out: &mut String) {
        time::push_display(out, self.0);
    }
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&time::display(self.0))
    }
}

impl Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration as reports show it (`950ms`, `1.5s`, `2m 05s`), formatted when it is shown
/// (and serialized as that text).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Took(u64);

impl Took {
    /// Appends the duration as shown.
    pub(crate) fn push(self, out: &mut String) {
        time::push_duration(out, self.0);
    }
}

impl std::fmt::Display for Took {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&time::duration(self.0))
    }
}

impl Serialize for Took {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A position or width on the timeline, in percent of its axis: shown (and serialized) with
/// three decimals, `12.500`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Percent(f64);

impl Percent {
    /// Appends the percentage as shown.
    pub(crate) fn push(self, out: &mut String) {
        match thousandths(self.0) {
            // `{:.3}`'s digits, without formatting a float.
            Some(n) => {
                time::push_u64(out, n / 1000);
                out.push('.');
                time::push_three_digits(out, n % 1000);
            }
            None => {
                use std::fmt::Write as _;
                let _ = write!(out, "{:.3}", self.0);
            }
        }
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::with_capacity(8);
        self.push(&mut text);
        f.write_str(&text)
    }
}

/// `v` rounded to thousandths, as `{:.3}` rounds it, when that is certain without the
/// exact decimal expansion: `v` is not negative and not huge, and `v * 1000` is not within
/// a thousandth of halfway between two integers (the product's rounding error is below
/// 1e-10 there). `None`: format the float.
fn thousandths(v: f64) -> Option<u64> {
    if v.is_sign_negative() || !(0.0..1e9).contains(&v) {
        return None;
    }
    let scaled = v * 1000.0;
    let floor = scaled.floor();
    let frac = scaled - floor;
    if (frac - 0.5).abs() < 1e-3 {
        return None;
    }
    // `floor` is an integer below 10^12.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = floor as u64;
    Some(if frac > 0.5 { n + 1 } else { n })
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An artifact for display.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ArtifactView {
    pub phase: String,
    pub kind: String,
    pub name: String,
    pub path: Option<String>,
    pub digest: Option<String>,
    pub size: Option<String>,
    pub details: Vec<(String, String)>,
}

/// The order status classes are listed in, with their labels.
pub(crate) const CLASS_ORDER: [(&str, &str); 7] = [
    ("failed", "failed"),
    ("timed_out", "timed out"),
    ("allowed", "allowed to fail"),
    ("cancelled", "cancelled"),
    ("blocked", "blocked"),
    ("succeeded", "succeeded"),
    ("skipped", "skipped"),
];

/// The label and CSS class of a phase's status.
pub(crate) fn status_class(p: &PhaseRecord) -> &'static str {
    if p.allowed_failure && p.status.is_failure() {
        "allowed"
    } else {
        p.status.as_str()
    }
}

fn status_label(p: &PhaseRecord) -> Cow<'static, str> {
    let status = p.status.as_str();
    let allowed = p.allowed_failure && p.status.is_failure();
    if !status.contains('_') && !p.denied_by_policy() && !allowed {
        return Cow::Borrowed(status);
    }
    let mut status = status.replace('_', " ");
    if p.denied_by_policy() {
        status.push_str(", denied by policy");
    }
    if allowed {
        Cow::Owned(format!("{status}, allowed"))
    } else {
        Cow::Owned(status)
    }
}

/// Whether the run ended well.
pub(crate) fn run_ok(status: RunStatus) -> bool {
    status == RunStatus::Succeeded
}

fn pct(part: u64, whole: u64) -> f64 {
    // Precision loss is irrelevant for layout percentages.
    #[allow(clippy::cast_precision_loss)]
    let v = part as f64 * 100.0 / whole.max(1) as f64;
    v
}

impl<'a> RunView<'a> {
    /// Builds the view of a record.
    pub fn new(record: &'a RunRecord) -> Self {
        let run_start = time::parse(&record.started_at);
        // The axis starts at the earliest known time.
        let origin = record
            .phases
            .values()
            .filter_map(|p| p.started_at.as_deref().and_then(time::parse))
            .chain(run_start)
            .min();
        // Each phase's start and end on the axis (from the origin), its times read once.
        let on_axis = |p: &PhaseRecord| -> (Option<u64>, Option<u64>) {
            let Some(start) = origin.as_ref().and_then(|o| {
                Some(time::millis_between(
                    o,
                    &time::parse(p.started_at.as_deref()?)?,
                ))
            }) else {
                return (None, None);
            };
            let end = p
                .finished_at
                .as_deref()
                .and_then(time::parse)
                .zip(origin.as_ref())
                .map(|(f, o)| time::millis_between(o, &f))
                .or_else(|| p.duration_ms.map(|d| start.saturating_add(d)))
                .map(|end| end.max(start));
            (Some(start), end)
        };
        let axis: Vec<(Option<u64>, Option<u64>)> = record.phases.values().map(on_axis).collect();
        let mut span_ms = axis.iter().filter_map(|&(_, end)| end).max().unwrap_or(0);
        if let (Some(o), Some(f)) = (
            origin.as_ref(),
            record.finished_at.as_deref().and_then(time::parse),
        ) {
            span_ms = span_ms.max(time::millis_between(o, &f));
        }
        if let (Some(o), Some(s), Some(d)) =
            (origin.as_ref(), run_start.as_ref(), record.duration_ms)
        {
            // Durations come from records (and journals) as written: never overflow.
            span_ms = span_ms.max(time::millis_between(o, s).saturating_add(d));
        }
        let span_ms = span_ms.max(1);

        let phases = record
            .phases
            .iter()
            .enumerate()
            .zip(&axis)
            .map(|((index, (id, p)), &(start, end))| {
                let (left, width) = match (start, end) {
                    (Some(s), Some(e)) => (pct(s, span_ms), pct(e - s, span_ms).max(0.15)),
                    (Some(s), None) => (pct(s, span_ms), 0.15),
                    _ => (0.0, 0.0),
                };
                let duration_ms = p.duration_ms.or_else(|| Some(end? - start?));
                PhaseView {
                    index,
                    id: id.as_str(),
                    kind: &p.kind,
                    status: p.status.as_str(),
                    class: status_class(p),
                    label: status_label(p),
                    attempts: p.attempts,
                    retries: p.attempts.saturating_sub(1),
                    exit_code: p.exit_code,
                    started: p.started_at.as_deref().map(Shown),
                    finished: p.finished_at.as_deref().map(Shown),
                    duration: duration_ms.map(Took),
                    duration_ms,
                    reason: p.reason.as_deref(),
                    allowed_failure: p.allowed_failure,
                    description: p.description.as_deref(),
                    needs: &p.needs,
                    tags: &p.tags,
                    outputs: p
                        .outputs
                        .iter()
                        .map(|(k, v)| (k.clone(), truncate(v, MAX_OUTPUT_CHARS)))
                        .collect(),
                    artifacts: p
                        .artifacts
                        .iter()
                        .map(|a| ArtifactView {
                            phase: id.to_string(),
                            kind: a.kind.clone(),
                            name: a.name.clone(),
                            path: a.path.clone(),
                            digest: a.digest.clone(),
                            size: a.size.map(time::size),
                            details: a
                                .details
                                .iter()
                                .map(|(k, v)| {
                                    let text = match v {
                                        serde_json::Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    };
                                    (k.clone(), truncate(&text, MAX_OUTPUT_CHARS))
                                })
                                .collect(),
                        })
                        .collect(),
                    ran: start.is_some(),
                    offset_ms: start.unwrap_or(0),
                    left: Percent(left),
                    width: Percent(width),
                }
            })
            .collect();

        let counts = CLASS_ORDER
            .iter()
            .filter_map(|&(class, label)| {
                let count = record
                    .phases
                    .values()
                    .filter(|p| status_class(p) == class)
                    .count();
                (count > 0).then_some(CountView {
                    class,
                    label,
                    count,
                })
            })
            .collect();

        let ticks = (0..=4u64)
            .map(|i| Tick {
                left: format!("{}", i * 25),
                label: time::duration(span_ms / 4 * i + span_ms % 4 * i / 4),
            })
            .collect();

        Self {
            run_id: record.run_id.to_string(),
            pipeline: record.pipeline.clone(),
            status: record.status.as_str(),
            started: time::display(&record.started_at),
            finished: record.finished_at.as_deref().map(time::display),
            duration: record.duration_ms.map(time::duration),
            pipeline_file: record.pipeline_file.clone(),
            resumed_from: record.resumed_from.as_ref().map(ToString::to_string),
            vars: record
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), truncate(v, MAX_OUTPUT_CHARS)))
                .collect(),
            counts,
            total: record.phases.len(),
            phases,
            span_ms,
            ticks,
        }
    }

    /// Every artifact, in phase order.
    pub fn artifacts(&self) -> Vec<ArtifactView> {
        self.phases
            .iter()
            .flat_map(|p| p.artifacts.iter().cloned())
            .collect()
    }

    /// A one-line summary of the counts: `3 succeeded, 1 failed`.
    pub fn counts_line(&self) -> String {
        self.counts
            .iter()
            .map(|c| format!("{} {}", c.count, c.label))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_written_as_format_writes_them() {
        let mut values = vec![
            0.0,
            0.15,
            0.0005,
            0.0625,
            0.1875,
            1.0005,
            2.5,
            99.9995,
            100.0,
            12.3455,
            1e9,
            -0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            5e-324,
            999_999_999.999_5,
        ];
        for whole in [1u64, 3, 7, 16, 1000, 3_600_000, 86_400_123] {
            for part in (0..=whole).step_by(usize::try_from(whole / 997 + 1).unwrap()) {
                values.push(pct(part, whole));
            }
        }
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f64::from_bits(x >> 2) % 200.0);
            #[allow(clippy::cast_precision_loss)]
            values.push((x % 100_000_000) as f64 / 1e6);
        }
        for v in values {
            assert_eq!(Percent(v).to_string(), format!("{v:.3}"), "{v:e}");
        }
    }

    /// Where a phase is on the timeline: left, width, duration, whether it ran, offset.
    type Placed = (String, String, Option<u64>, bool, u64);

    /// The timeline as it was worked out before each phase's times were read once: every
    /// phase's times read again for the span and for the phase.
    fn reference_axis(record: &RunRecord) -> (u64, Vec<Placed>) {
        let run_start = time::parse(&record.started_at);
        let origin = record
            .phases
            .values()
            .filter_map(|p| p.started_at.as_deref().and_then(time::parse))
            .chain(run_start)
            .min();
        let phase_end = |p: &PhaseRecord| -> Option<u64> {
            let origin = origin.as_ref()?;
            let start = time::millis_between(origin, &time::parse(p.started_at.as_deref()?)?);
            let end = p
                .finished_at
                .as_deref()
                .and_then(time::parse)
                .map(|f| time::millis_between(origin, &f))
                .or_else(|| p.duration_ms.map(|d| start.saturating_add(d)))?;
            Some(end.max(start))
        };
        let mut span_ms = record
            .phases
            .values()
            .filter_map(phase_end)
            .max()
            .unwrap_or(0);
        if let (Some(o), Some(f)) = (
            origin.as_ref(),
            record.finished_at.as_deref().and_then(time::parse),
        ) {
            span_ms = span_ms.max(time::millis_between(o, &f));
        }
        if let (Some(o), Some(s), Some(d)) =
            (origin.as_ref(), run_start.as_ref(), record.duration_ms)
        {
            span_ms = span_ms.max(time::millis_between(o, s).saturating_add(d));
        }
        let span_ms = span_ms.max(1);
        let phases = record
            .phases
            .values()
            .map(|p| {
                let start = origin.as_ref().and_then(|o| {
                    Some(time::millis_between(
                        o,
                        &time::parse(p.started_at.as_deref()?)?,
                    ))
                });
                let end = phase_end(p);
                let (left, width) = match (start, end) {
                    (Some(s), Some(e)) => (pct(s, span_ms), pct(e - s, span_ms).max(0.15)),
                    (Some(s), None) => (pct(s, span_ms), 0.15),
                    _ => (0.0, 0.0),
                };
                let duration_ms = p.duration_ms.or_else(|| Some(end? - start?));
                (
                    Percent(left).to_string(),
                    Percent(width).to_string(),
                    duration_ms,
                    start.is_some(),
                    start.unwrap_or(0),
                )
            })
            .collect();
        (span_ms, phases)
    }

    #[test]
    fn each_phases_times_are_read_once_with_the_same_timeline() {
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": "R0", "pipeline": "p", "status": "failed",
            "started_at": "2026-01-01T00:00:05.000Z", "finished_at": "2026-01-01T00:10:00.000Z",
            "duration_ms": 1_000,
            "phases": {
                "early": { "status": "succeeded", "kind": "command", "attempts": 1,
                           "started_at": "2026-01-01T00:00:00.250Z",
                           "finished_at": "2026-01-01T00:00:03.000Z", "duration_ms": 2_000 },
                "no_end": { "status": "running", "kind": "command", "attempts": 1,
                            "started_at": "2026-01-01T02:00:00+02:00" },
                "duration_only": { "status": "failed", "kind": "command", "attempts": 1,
                                   "started_at": "2026-01-01T00:01:00.000Z", "duration_ms": 90_000 },
                "ends_first": { "status": "succeeded", "kind": "command", "attempts": 1,
                                "started_at": "2026-01-01T00:02:00.000Z",
                                "finished_at": "2026-01-01T00:01:00.000Z" },
                "bad_end": { "status": "succeeded", "kind": "command", "attempts": 1,
                             "started_at": "2026-01-01T00:03:00.000Z", "finished_at": "soon",
                             "duration_ms": u64::MAX },
                "bad_start": { "status": "succeeded", "kind": "command", "attempts": 1,
                               "started_at": "later", "finished_at": "2026-01-01T00:04:00.000Z",
                               "duration_ms": 7 },
                "never": { "status": "skipped", "kind": "command", "attempts": 0 }
            }
        }))
        .unwrap();
        let mut no_origin = record.clone();
        no_origin.started_at = "not a time".to_owned();
        for (_, p) in no_origin.phases.iter_mut() {
            p.started_at = None;
        }
        for record in [record, no_origin] {
            let view = RunView::new(&record);
            let (span_ms, phases) = reference_axis(&record);
            assert_eq!(view.span_ms, span_ms);
            let ours: Vec<_> = view
                .phases
                .iter()
                .map(|p| {
                    (
                        p.left.to_string(),
                        p.width.to_string(),
                        p.duration_ms,
                        p.ran,
                        p.offset_ms,
                    )
                })
                .collect();
            assert_eq!(ours, phases);
        }
    }

    #[test]
    fn durations_at_the_top_of_the_range_do_not_overflow() {
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": "R0", "pipeline": "p", "status": "failed",
            "started_at": "2026-01-01T00:00:00.000Z", "duration_ms": u64::MAX,
            "phases": { "a": {
                "status": "failed", "kind": "command", "attempts": 1,
                "started_at": "2026-01-01T00:00:01.000Z", "duration_ms": u64::MAX,
                "outputs": {}
            } }
        }))
        .unwrap();
        let view = RunView::new(&record);
        assert_eq!(view.phases.len(), 1);
    }
}
