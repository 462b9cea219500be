//! JUnit XML: one test suite for the run (a test case per phase), plus the test suites of
//! the JUnit files that phases point at.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use orch_core::{PhaseRecord, PhaseStatus, RunRecord};
use quick_junit::{
    FlakyOrRerun, NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite,
};
use serde::Serialize;

use crate::errors::ReportError;
use crate::{ReportOptions, logs, sources, time};

/// A JUnit file a phase pointed at, parsed.
#[derive(Clone, Debug)]
pub(crate) struct TestFile {
    /// The phase.
    pub phase: String,
    /// The path as published.
    pub path: String,
    /// Whether the phase succeeded (a missing file is then an error worth reporting).
    pub phase_succeeded: bool,
    /// The parsed report, or why it could not be read.
    pub report: Result<Report, String>,
}

/// Test counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct TestCounts {
    /// Test cases.
    pub tests: usize,
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failures: usize,
    /// Errored.
    pub errors: usize,
    /// Skipped.
    pub skipped: usize,
}

impl TestCounts {
    fn add_case(&mut self, case: &TestCase) {
        self.tests += 1;
        match &case.status {
            TestCaseStatus::Success { .. } => self.passed += 1,
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Failure,
                ..
            } => self.failures += 1,
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Error,
                ..
            } => self.errors += 1,
            TestCaseStatus::Skipped { .. } => self.skipped += 1,
        }
    }

    /// Adds another count.
    pub fn add(&mut self, other: Self) {
        self.tests += other.tests;
        self.passed += other.passed;
        self.failures += other.failures;
        self.errors += other.errors;
        self.skipped += other.skipped;
    }
}

impl TestFile {
    /// Counts of its test cases (recomputed from the cases, not the file's attributes).
    pub fn counts(&self) -> TestCounts {
        let mut c = TestCounts::default();
        if let Ok(report) = &self.report {
            for suite in &report.test_suites {
                for case in &suite.test_cases {
                    c.add_case(case);
                }
            }
        }
        c
    }

    /// Failed and errored test cases: suite, name and message.
    pub fn failing(&self) -> Vec<FailingCase> {
        let mut out = Vec::new();
        if let Ok(report) = &self.report {
            for suite in &report.test_suites {
                for case in &suite.test_cases {
                    if let TestCaseStatus::NonSuccess { kind, message, .. } = &case.status {
                        out.push(FailingCase {
                            phase: self.phase.clone(),
                            suite: suite.name.as_str().to_owned(),
                            name: match &case.classname {
                                Some(c) => format!("{}::{}", c.as_str(), case.name.as_str()),
                                None => case.name.as_str().to_owned(),
                            },
                            kind: match kind {
                                NonSuccessKind::Failure => "failure",
                                NonSuccessKind::Error => "error",
                            },
                            message: message
                                .as_ref()
                                .map(|m| sources::truncate(m.as_str(), 300))
                                .unwrap_or_default(),
                        });
                    }
                }
            }
        }
        out
    }
}

/// A test case that did not pass, for display.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FailingCase {
    /// The phase whose file it is in.
    pub phase: String,
    /// Its suite.
    pub suite: String,
    /// `classname::name`.
    pub name: String,
    /// `failure` or `error`.
    pub kind: &'static str,
    /// Its message.
    pub message: String,
}

/// Reads every JUnit file the run's phases point at.
pub(crate) fn collect(record: &RunRecord, run_dir: &Path) -> Vec<TestFile> {
    let mut files = Vec::new();
    for (id, phase) in &record.phases {
        for path in sources::junit_paths(phase) {
            let resolved = sources::resolve(record, run_dir, &path);
            let report = sources::read_capped(&resolved).and_then(|bytes| parse(&bytes));
            files.push(TestFile {
                phase: id.to_string(),
                path,
                phase_succeeded: phase.status == PhaseStatus::Succeeded,
                report,
            });
        }
    }
    files
}

/// Parses JUnit XML, accepting a `<testsuites>` root or a single `<testsuite>` root.
///
/// Files from other tools may carry timestamps without a time zone (Surefire, older
/// pytest) or times with thousands separators; when the strict reader refuses a file, it is
/// read again without the `timestamp` and `time` attributes it could not read.
pub(crate) fn parse(bytes: &[u8]) -> Result<Report, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not utf-8: {e}"))?;
    parse_text(text).or_else(|first| {
        let lenient = lenient(text);
        if lenient == text {
            Err(first)
        } else {
            parse_text(&lenient).map_err(|_| first)
        }
    })
}

fn parse_text(text: &str) -> Result<Report, String> {
    let (name, at) = root_element(text).ok_or("not xml: no root element")?;
    let result = match name {
        "testsuites" => Report::deserialize_from_str(text),
        // Wrap a lone `<testsuite>` root.
        "testsuite" => {
            Report::deserialize_from_str(&format!("<testsuites>{}</testsuites>", &text[at..]))
        }
        other => return Err(format!("not junit xml: the root element is <{other}>")),
    };
    result.map_err(|e| format!("not junit xml: {e}"))
}

/// The text with `timestamp` attributes that are not RFC 3339 removed, and `time`
/// attributes fixed (thousands separators) or removed when they are not seconds.
fn lenient(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        rest = &rest[lt..];
        // Comments and CDATA are copied as they are.
        for (open, close) in [("<!--", "-->"), ("<![CDATA[", "]]>")] {
            if rest.starts_with(open) {
                let end = rest.find(close).map_or(rest.len(), |i| i + close.len());
                out.push_str(&rest[..end]);
                rest = &rest[end..];
            }
        }
        let Some(tag_end) = tag_end(rest) else {
            break;
        };
        out.push_str(&lenient_tag(&rest[..tag_end]));
        rest = &rest[tag_end..];
    }
    out.push_str(rest);
    out
}

/// The end of the tag `s` starts with (just past `>`), quotes respected.
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

fn lenient_tag(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len());
    let mut rest = tag;
    loop {
        // Copy up to the next attribute: whitespace, a name, `=`, a quoted value.
        let Some(ws) = rest.find(char::is_whitespace) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        let name_start = rest.len() - rest.trim_start().len();
        let after_ws = &rest[name_start..];
        let name_len = after_ws
            .find(|c: char| c == '=' || c.is_whitespace() || c == '>' || c == '/')
            .unwrap_or(after_ws.len());
        let name = &after_ws[..name_len];
        let after_name = &after_ws[name_len..];
        let Some(value_part) = after_name.strip_prefix('=') else {
            out.push_str(&rest[..name_start + name_len.max(1).min(after_ws.len())]);
            rest = &rest[name_start + name_len.max(1).min(after_ws.len())..];
            continue;
        };
        let Some(q) = value_part
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
        else {
            out.push_str(&rest[..name_start + name_len + 1]);
            rest = &rest[name_start + name_len + 1..];
            continue;
        };
        let Some(close) = value_part[1..].find(q) else {
            out.push_str(rest);
            return out;
        };
        let value = &value_part[1..=close];
        let attr_len = name_start + name_len + 1 + close + 2;
        match name {
            "timestamp" if time::parse(value).is_none() => {}
            "time" if value.parse::<f64>().is_err() => {
                let fixed = value.replace(',', "");
                if fixed.parse::<f64>().is_ok_and(|v| v >= 0.0) {
                    out.push_str(&format!(" time=\"{fixed}\""));
                }
            }
            _ => out.push_str(&rest[..attr_len]),
        }
        rest = &rest[attr_len..];
    }
}

/// The name and byte offset of the first element, after the declaration, comments and
/// doctype.
fn root_element(text: &str) -> Option<(&str, usize)> {
    let mut rest = 0;
    loop {
        let at = rest + text[rest..].find('<')?;
        let after = &text[at + 1..];
        if let Some(comment) = after.strip_prefix("!--") {
            rest = at + 4 + comment.find("-->")? + 3;
        } else if after.starts_with('?') || after.starts_with('!') {
            rest = at + 1 + after.find('>')? + 1;
        } else {
            let end = after
                .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
                .unwrap_or(after.len());
            return Some((&after[..end], at));
        }
    }
}

fn timestamp(text: Option<&str>) -> Option<DateTime<FixedOffset>> {
    text.and_then(time::parse)
}

/// Builds the JUnit report of a run.
/// Most `rerunFailure` elements written for one phase (the latest attempts).
const RERUNS_LISTED: u32 = 20;

pub(crate) fn build(
    record: &RunRecord,
    run_dir: &Path,
    options: &ReportOptions,
    files: &[TestFile],
) -> Report {
    let mut report = Report::new(record.pipeline.as_str());
    if let Some(t) = time::parse(&record.started_at) {
        report.set_timestamp(t);
    }
    if let Some(ms) = record.duration_ms {
        report.set_time(Duration::from_millis(ms));
    }

    let mut suite = TestSuite::new(record.pipeline.as_str());
    if let Some(t) = time::parse(&record.started_at) {
        suite.set_timestamp(t);
    }
    if let Some(ms) = record.duration_ms {
        suite.set_time(Duration::from_millis(ms));
    }
    suite.add_property(Property::new("orch.run_id", record.run_id.as_str()));
    suite.add_property(Property::new("orch.status", record.status.as_str()));
    if let Some(from) = &record.resumed_from {
        suite.add_property(Property::new("orch.resumed_from", from.as_str()));
    }
    for (id, phase) in &record.phases {
        suite.add_test_case(phase_case(record, run_dir, options, id.as_str(), phase));
    }
    for file in files {
        if let Err(message) = &file.report
            && file.phase_succeeded
        {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_type("junit_unreadable");
            status.set_message(format!("cannot read junit file {}: {message}", file.path));
            let mut case = TestCase::new(format!("{} junit {}", file.phase, file.path), status);
            case.set_classname(record.pipeline.as_str());
            suite.add_test_case(case);
        }
    }
    report.add_test_suite(suite);

    for file in files {
        let Ok(parsed) = &file.report else { continue };
        for source in &parsed.test_suites {
            let mut merged = TestSuite::new(format!("{}/{}", file.phase, source.name.as_str()));
            merged.timestamp = source.timestamp;
            merged.time = source.time;
            merged.properties = source.properties.clone();
            merged.add_property(Property::new("orch.phase", file.phase.as_str()));
            merged.add_property(Property::new("orch.junit", file.path.as_str()));
            merged.system_out = source.system_out.clone();
            merged.system_err = source.system_err.clone();
            merged.extra = source.extra.clone();
            // Counts are recomputed from the cases.
            merged.add_test_cases(source.test_cases.iter().cloned());
            report.add_test_suite(merged);
        }
    }
    report
}

fn phase_case(
    record: &RunRecord,
    run_dir: &Path,
    options: &ReportOptions,
    id: &str,
    phase: &PhaseRecord,
) -> TestCase {
    let log_tail = || {
        logs::tail_lines(run_dir, id, phase, options.log_tail_lines).map(|t| {
            let text = t.text.trim_end_matches('\n');
            if t.truncated {
                format!("(last {} lines of {})\n{text}", t.lines, t.rel_path)
            } else {
                text.to_owned()
            }
        })
    };
    let reason = phase.reason.clone();
    let exit = phase
        .exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    // One rerun element per earlier attempt, the last [`RERUNS_LISTED`] of them: a record
    // rebuilt from a journal may count attempts in the billions.
    let earlier_attempts = phase.attempts.saturating_sub(1);
    let first_listed = earlier_attempts.saturating_sub(RERUNS_LISTED) + 1;
    let reruns = |kind: NonSuccessKind| {
        (first_listed..=earlier_attempts).map(move |n| {
            let mut r = TestRerun::new(kind);
            r.set_message(format!("attempt {n} of {} failed", phase.attempts));
            r
        })
    };

    let status = match phase.status {
        PhaseStatus::Succeeded => {
            let mut s = TestCaseStatus::success();
            s.add_reruns(reruns(NonSuccessKind::Failure));
            s
        }
        PhaseStatus::Failed | PhaseStatus::TimedOut if phase.allowed_failure => {
            // Like an expected failure (pytest's xfail): it did not fail the run.
            let mut s = TestCaseStatus::skipped();
            s.set_type("allowed_failure");
            s.set_message(format!(
                "{} (allowed to fail): {}{exit}",
                phase.status,
                reason.as_deref().unwrap_or("no reason recorded")
            ));
            if let Some(tail) = log_tail() {
                s.set_description(tail);
            }
            s
        }
        PhaseStatus::Failed | PhaseStatus::TimedOut => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_type(phase.status.as_str());
            s.set_message(format!(
                "{}{exit}",
                reason
                    .as_deref()
                    .unwrap_or(if phase.status == PhaseStatus::TimedOut {
                        "timed out"
                    } else {
                        "failed"
                    })
            ));
            if let Some(tail) = log_tail() {
                s.set_description(tail);
            }
            s.add_reruns(reruns(NonSuccessKind::Failure));
            s.set_rerun_kind(FlakyOrRerun::Rerun);
            s
        }
        PhaseStatus::Cancelled if phase.started_at.is_some() => {
            // It was running when the run was interrupted: it did not complete.
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
            s.set_type("cancelled");
            s.set_message(reason.clone().unwrap_or_else(|| "cancelled".to_owned()));
            if let Some(tail) = log_tail() {
                s.set_description(tail);
            }
            s
        }
        PhaseStatus::Cancelled
        | PhaseStatus::Skipped
        | PhaseStatus::Blocked
        | PhaseStatus::Running => {
            let mut s = TestCaseStatus::skipped();
            s.set_type(phase.status.as_str());
            s.set_message(match &reason {
                Some(r) => format!("{}: {r}", phase.status),
                None => phase.status.to_string(),
            });
            s
        }
    };

    let mut case = TestCase::new(id, status);
    case.set_classname(format!("{}.{}", record.pipeline, phase.kind));
    if let Some(t) = timestamp(phase.started_at.as_deref()) {
        case.set_timestamp(t);
    }
    if let Some(ms) = phase.duration_ms {
        case.set_time(Duration::from_millis(ms));
    }
    case.add_property(Property::new("orch.kind", phase.kind.as_str()));
    case.add_property(Property::new("orch.status", phase.status.as_str()));
    case.add_property(Property::new("orch.attempts", phase.attempts.to_string()));
    if let Some(code) = phase.exit_code {
        case.add_property(Property::new("orch.exit_code", code.to_string()));
    }
    case
}

/// Renders the JUnit XML of a run.
pub(crate) fn render(
    record: &RunRecord,
    run_dir: &Path,
    options: &ReportOptions,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    let files = collect(record, run_dir);
    build(record, run_dir, options, &files)
        .serialize(out)
        .map_err(|source| ReportError::Junit { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_attempt_count_lists_only_the_last_reruns() {
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": "R0", "pipeline": "p", "status": "failed",
            "started_at": "2026-01-01T00:00:00.000Z",
            "phases": { "flaky": {
                "status": "failed", "kind": "command", "attempts": u32::MAX - 1,
                "reason": "no attempt number left", "outputs": {}
            } }
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut xml = Vec::new();
        render(&record, dir.path(), &ReportOptions::default(), &mut xml).unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert_eq!(
            xml.matches("<rerunFailure").count(),
            RERUNS_LISTED as usize,
            "{xml}"
        );
        assert!(xml.contains(&format!("attempt {} of {}", u32::MAX - 2, u32::MAX - 1)));
    }

    #[test]
    fn files_with_unreadable_times_are_read_without_them() {
        let xml = r#"<?xml version="1.0"?>
<!-- time="x" in a comment stays -->
<testsuite name="surefire" time="1,234.5" timestamp="2024-01-01T12:00:00" tests='1'>
<testcase name="a" classname="C" time="abc"><failure message='time="x"'>time="y"</failure></testcase>
</testsuite>"#;
        assert!(parse_text(xml).is_err(), "the strict reader refuses it");
        let fixed = lenient(xml);
        assert!(
            fixed.contains("<!-- time=\"x\" in a comment stays -->"),
            "{fixed}"
        );
        assert!(
            fixed.contains(r#"<testsuite name="surefire" time="1234.5" tests='1'>"#),
            "{fixed}"
        );
        assert!(
            fixed.contains(
                r#"<testcase name="a" classname="C"><failure message='time="x"'>time="y"</failure>"#
            ),
            "{fixed}"
        );
        let r = parse(xml.as_bytes()).unwrap();
        let suite = &r.test_suites[0];
        assert_eq!(
            suite.time,
            Some(std::time::Duration::from_millis(1_234_500))
        );
        assert_eq!(suite.timestamp, None);
        assert_eq!(suite.test_cases.len(), 1);
    }

    #[test]
    fn a_lone_testsuite_root_is_accepted() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="pytest" tests="2"><testcase classname="t" name="a"/><testcase name="b"><failure message="boom"/></testcase></testsuite>"#;
        let r = parse(xml.as_bytes()).unwrap();
        assert_eq!(r.test_suites.len(), 1);
        assert_eq!(r.test_suites[0].test_cases.len(), 2);
        assert_eq!(
            parse(b"<?xml version='1.0'?><!-- x --><html/>").unwrap_err(),
            "not junit xml: the root element is <html>"
        );
        assert_eq!(
            parse(
                b"<!DOCTYPE x><!-- <testsuite> --><testsuites><testsuite name=\"a\"/></testsuites>"
            )
            .unwrap()
            .test_suites
            .len(),
            1
        );
        assert!(parse(b"\xff").is_err());
    }
}
