//! JUnit XML: one test suite for the run (a test case per phase), plus the test suites of
//! the JUnit files that phases point at.

use std::borrow::Cow;
use std::path::Path;

use orch_core::{PhaseRecord, PhaseStatus, RunRecord};
use quick_junit::{
    NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite, XmlString,
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

/// Most `rerunFailure` elements written for one phase (the latest attempts).
const RERUNS_LISTED: u32 = 20;

/// How a phase reads as a test case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// It succeeded.
    Passed,
    /// It failed (a `<failure>`).
    Failure,
    /// It was interrupted while running (an `<error>`).
    Error,
    /// It did not run, or it was allowed to fail (a `<skipped>`).
    Skipped,
}

fn outcome(phase: &PhaseRecord) -> Outcome {
    match phase.status {
        PhaseStatus::Succeeded => Outcome::Passed,
        PhaseStatus::Failed | PhaseStatus::TimedOut if phase.allowed_failure => Outcome::Skipped,
        PhaseStatus::Failed | PhaseStatus::TimedOut => Outcome::Failure,
        PhaseStatus::Cancelled if phase.started_at.is_some() => Outcome::Error,
        PhaseStatus::Cancelled
        | PhaseStatus::Skipped
        | PhaseStatus::Blocked
        | PhaseStatus::Running => Outcome::Skipped,
    }
}

/// `text` as quick-junit keeps a string (`XmlString`): ANSI escape sequences and control
/// characters other than newline removed. Text without an escape or control character (C0
/// other than newline, C1) is kept as it is: the stripper would print every character of
/// it, and checking for that is a scan instead of a terminal parser.
fn clean(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let plain = !b.iter().enumerate().any(|(i, &c)| {
        (c < 0x20 && c != b'\n')
            // U+0080..U+009F are C2 80..C2 9F; C2 is never a continuation byte.
            || (c == 0xC2 && b.get(i + 1).is_some_and(|&n| n <= 0x9F))
    });
    if plain {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(XmlString::new(text).into_string())
    }
}

/// Appends `text` escaped as quick-xml escapes text and attribute values (`<`, `>`, `&`,
/// `'` and `"`).
fn push_escaped(out: &mut String, text: &str) {
    let mut start = 0;
    for (i, b) in text.bytes().enumerate() {
        let entity = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'&' => "&amp;",
            b'\'' => "&apos;",
            b'"' => "&quot;",
            _ => continue,
        };
        out.push_str(&text[start..i]);
        out.push_str(entity);
        start = i + 1;
    }
    out.push_str(&text[start..]);
}

/// XML written the way quick-junit writes it (quick-xml's writer, indenting by four spaces),
/// into a buffer: the run's test cases are written one after another without building the
/// report first. Each element starts on a new line, except one that follows text.
struct Xml {
    buf: String,
    depth: usize,
    line_break: bool,
}

impl Xml {
    fn new() -> Self {
        Self {
            buf: String::with_capacity(64 * 1024),
            depth: 0,
            line_break: false,
        }
    }

    fn declaration(&mut self) {
        self.buf
            .push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        self.line_break = true;
    }

    fn new_line(&mut self) {
        if self.line_break {
            self.buf.push('\n');
            for _ in 0..self.depth {
                self.buf.push_str("    ");
            }
        }
    }

    /// Starts tag `name`: attributes follow, then [`Self::open`] or [`Self::empty`].
    fn tag(&mut self, name: &str) -> &mut Self {
        self.new_line();
        self.buf.push('<');
        self.buf.push_str(name);
        self
    }

    /// An attribute whose value quick-junit keeps as an `XmlString` (cleaned).
    fn attr(&mut self, name: &str, value: &str) -> &mut Self {
        self.buf.push(' ');
        self.buf.push_str(name);
        self.buf.push_str("=\"");
        push_escaped(&mut self.buf, &clean(value));
        self.buf.push('"');
        self
    }

    /// A count.
    fn count(&mut self, name: &str, value: usize) -> &mut Self {
        use std::fmt::Write as _;
        let _ = write!(self.buf, " {name}=\"{value}\"");
        self
    }

    /// A `timestamp` attribute, when `text` is a time.
    fn timestamp(&mut self, text: Option<&str>) -> &mut Self {
        if let Some(text) = text {
            let at = self.buf.len();
            self.buf.push_str(" timestamp=\"");
            if time::push_junit(&mut self.buf, text) {
                self.buf.push('"');
            } else {
                self.buf.truncate(at);
            }
        }
        self
    }

    /// A `time` attribute (seconds), when there is a duration.
    fn time(&mut self, ms: Option<u64>) -> &mut Self {
        if let Some(ms) = ms {
            self.buf.push_str(" time=\"");
            time::push_seconds(&mut self.buf, ms);
            self.buf.push('"');
        }
        self
    }

    /// Ends the tag as a start tag: its children follow.
    fn open(&mut self) {
        self.buf.push('>');
        self.depth += 1;
        self.line_break = true;
    }

    /// Ends the tag as an empty element.
    fn empty(&mut self) {
        self.buf.push_str("/>");
        self.line_break = true;
    }

    fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.new_line();
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
        self.line_break = true;
    }

    /// Text content (cleaned, as an `XmlString`).
    fn text(&mut self, text: &str) {
        push_escaped(&mut self.buf, &clean(text));
        self.line_break = false;
    }

    fn property(&mut self, name: &str, value: &str) {
        self.tag("property")
            .attr("name", name)
            .attr("value", value)
            .empty();
    }

    /// A `<failure>`, `<error>` or `<skipped>` element.
    fn status(&mut self, name: &str, message: &str, ty: &str, description: Option<&str>) {
        self.tag(name).attr("message", message).attr("type", ty);
        match description {
            Some(text) => {
                self.open();
                self.text(text);
                self.close(name);
            }
            None => self.empty(),
        }
    }

    /// Moves what is written so far to `out`.
    fn flush(&mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(self.buf.as_bytes())?;
        self.buf.clear();
        Ok(())
    }
}

/// Renders the JUnit XML of a run: a test suite for the run (a test case per phase, written
/// as they are made), then the suites of the JUnit files phases point at (through
/// quick-junit). The bytes are the ones quick-junit writes for the same report.
pub(crate) fn render(
    record: &RunRecord,
    run_dir: &Path,
    options: &ReportOptions,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    let files = collect(record, run_dir);
    write(record, run_dir, options, &files, out).map_err(|source| ReportError::Junit { source })
}

fn write(
    record: &RunRecord,
    run_dir: &Path,
    options: &ReportOptions,
    files: &[TestFile],
    out: &mut dyn std::io::Write,
) -> Result<(), quick_junit::SerializeError> {
    // The run's suite counts its phases and the unreadable files of succeeded phases.
    let mut suite = TestCounts::default();
    for phase in record.phases.values() {
        suite.tests += 1;
        match outcome(phase) {
            Outcome::Passed => suite.passed += 1,
            Outcome::Failure => suite.failures += 1,
            Outcome::Error => suite.errors += 1,
            Outcome::Skipped => suite.skipped += 1,
        }
    }
    let unreadable = || {
        files.iter().filter_map(|f| {
            f.report
                .as_ref()
                .err()
                .filter(|_| f.phase_succeeded)
                .map(|e| (f, e))
        })
    };
    let n_unreadable = unreadable().count();
    suite.tests += n_unreadable;
    suite.errors += n_unreadable;
    let mut all = suite;
    for file in files {
        all.add(file.counts());
    }

    let started = Some(record.started_at.as_str());
    let mut xml = Xml::new();
    xml.declaration();
    xml.tag("testsuites")
        .attr("name", &record.pipeline)
        .count("tests", all.tests)
        .count("skipped", all.skipped)
        .count("failures", all.failures)
        .count("errors", all.errors)
        .timestamp(started)
        .time(record.duration_ms);
    xml.open();
    xml.tag("testsuite")
        .attr("name", &record.pipeline)
        .count("tests", suite.tests)
        .count("skipped", suite.skipped)
        .count("errors", suite.errors)
        .count("failures", suite.failures)
        .timestamp(started)
        .time(record.duration_ms);
    xml.open();
    xml.tag("properties").open();
    xml.property("orch.run_id", record.run_id.as_str());
    xml.property("orch.status", record.status.as_str());
    if let Some(from) = &record.resumed_from {
        xml.property("orch.resumed_from", from.as_str());
    }
    xml.close("properties");
    let mut scratch = String::new();
    for (id, phase) in &record.phases {
        phase_case(
            &mut xml,
            &mut scratch,
            record,
            run_dir,
            options,
            id.as_str(),
            phase,
        );
        if xml.buf.len() >= 32 * 1024 {
            xml.flush(out)?;
        }
    }
    for (file, message) in unreadable() {
        xml.tag("testcase")
            .attr("name", &format!("{} junit {}", file.phase, file.path))
            .attr("classname", &record.pipeline);
        xml.open();
        xml.tag("error")
            .attr(
                "message",
                &format!("cannot read junit file {}: {message}", file.path),
            )
            .attr("type", "junit_unreadable")
            .empty();
        xml.close("testcase");
    }
    xml.close("testsuite");
    xml.flush(out)?;

    for file in files {
        let Ok(parsed) = &file.report else { continue };
        for source in &parsed.test_suites {
            write_suite(merged_suite(file, source), out)?;
        }
    }
    xml.close("testsuites");
    // quick-junit ends the document with a line break.
    xml.buf.push('\n');
    xml.flush(out)?;
    Ok(())
}

/// A suite of a phase's JUnit file as the run's report lists it: named after the phase,
/// with the phase and the file as properties.
fn merged_suite(file: &TestFile, source: &TestSuite) -> TestSuite {
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
    merged
}

/// Writes one suite as quick-junit writes it inside a report: it is serialized alone in a
/// report, and the part between the report's `<testsuites ...>` tag and its end is the
/// suite, indented as inside any report.
fn write_suite(suite: TestSuite, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    const END: &[u8] = b"\n</testsuites>\n";
    let mut report = Report::unnamed();
    report.add_test_suite(suite);
    let mut bytes = Vec::new();
    report
        .serialize(&mut bytes)
        .map_err(std::io::Error::other)?;
    let start = bytes
        .windows(b"<testsuites".len())
        .position(|w| w == b"<testsuites")
        .and_then(|at| {
            bytes[at..]
                .iter()
                .position(|&b| b == b'>')
                .map(|end| at + end + 1)
        });
    match start {
        Some(start) if bytes.ends_with(END) && start <= bytes.len() - END.len() => {
            out.write_all(&bytes[start..bytes.len() - END.len()])
        }
        _ => Err(std::io::Error::other(
            "quick-junit wrote a report of an unexpected shape",
        )),
    }
}

/// Writes the test case of a phase.
fn phase_case(
    xml: &mut Xml,
    scratch: &mut String,
    record: &RunRecord,
    run_dir: &Path,
    options: &ReportOptions,
    id: &str,
    phase: &PhaseRecord,
) {
    use std::fmt::Write as _;
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
    let reason = phase.reason.as_deref();
    let exit = phase
        .exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    // One rerun element per earlier attempt, the last [`RERUNS_LISTED`] of them: a record
    // rebuilt from a journal may count attempts in the billions.
    let earlier_attempts = phase.attempts.saturating_sub(1);
    let first_listed = earlier_attempts.saturating_sub(RERUNS_LISTED) + 1;
    let reruns = |xml: &mut Xml, scratch: &mut String, name: &str| {
        for n in first_listed..=earlier_attempts {
            scratch.clear();
            let _ = write!(scratch, "attempt {n} of {} failed", phase.attempts);
            xml.tag(name).attr("message", scratch).open();
            xml.close(name);
        }
    };

    scratch.clear();
    let _ = write!(scratch, "{}.{}", record.pipeline, phase.kind);
    xml.tag("testcase")
        .attr("name", id)
        .attr("classname", scratch)
        .timestamp(phase.started_at.as_deref())
        .time(phase.duration_ms);
    xml.open();
    xml.tag("properties").open();
    xml.property("orch.kind", phase.kind.as_str());
    xml.property("orch.status", phase.status.as_str());
    scratch.clear();
    let _ = write!(scratch, "{}", phase.attempts);
    xml.property("orch.attempts", scratch);
    if let Some(code) = phase.exit_code {
        scratch.clear();
        let _ = write!(scratch, "{code}");
        xml.property("orch.exit_code", scratch);
    }
    xml.close("properties");

    match outcome(phase) {
        Outcome::Passed => reruns(xml, scratch, "flakyFailure"),
        Outcome::Failure => {
            let message = format!(
                "{}{exit}",
                reason.unwrap_or(if phase.status == PhaseStatus::TimedOut {
                    "timed out"
                } else {
                    "failed"
                })
            );
            xml.status(
                "failure",
                &message,
                phase.status.as_str(),
                log_tail().as_deref(),
            );
            reruns(xml, scratch, "rerunFailure");
        }
        // Like an expected failure (pytest's xfail): it did not fail the run.
        Outcome::Skipped if phase.status.is_failure() => {
            let message = format!(
                "{} (allowed to fail): {}{exit}",
                phase.status,
                reason.unwrap_or("no reason recorded")
            );
            xml.status(
                "skipped",
                &message,
                "allowed_failure",
                log_tail().as_deref(),
            );
        }
        // It was running when the run was interrupted: it did not complete.
        Outcome::Error => {
            xml.status(
                "error",
                reason.unwrap_or("cancelled"),
                "cancelled",
                log_tail().as_deref(),
            );
        }
        Outcome::Skipped => {
            let message = match reason {
                Some(r) => format!("{}: {r}", phase.status),
                None => phase.status.to_string(),
            };
            xml.status("skipped", &message, phase.status.as_str(), None);
        }
    }
    xml.close("testcase");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report as it was made before it was written directly: a `quick_junit::Report`
    /// of every phase, serialized by quick-junit. The direct writer must give its bytes.
    mod reference {
        use std::path::Path;
        use std::time::Duration;

        use chrono::{DateTime, FixedOffset};
        use orch_core::{PhaseRecord, PhaseStatus, RunRecord};
        use quick_junit::{
            FlakyOrRerun, NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun,
            TestSuite,
        };

        use super::super::{RERUNS_LISTED, TestFile};
        use crate::{ReportOptions, logs};

        /// Times read by chrono alone.
        fn parse(text: &str) -> Option<DateTime<FixedOffset>> {
            DateTime::parse_from_rfc3339(text.trim()).ok()
        }

        fn timestamp(text: Option<&str>) -> Option<DateTime<FixedOffset>> {
            text.and_then(parse)
        }

        /// The report as quick-junit builds it.
        pub(super) fn build(
            record: &RunRecord,
            run_dir: &Path,
            options: &ReportOptions,
            files: &[TestFile],
        ) -> Report {
            let mut report = Report::new(record.pipeline.as_str());
            if let Some(t) = parse(&record.started_at) {
                report.set_timestamp(t);
            }
            if let Some(ms) = record.duration_ms {
                report.set_time(Duration::from_millis(ms));
            }

            let mut suite = TestSuite::new(record.pipeline.as_str());
            if let Some(t) = parse(&record.started_at) {
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
                    let mut case =
                        TestCase::new(format!("{} junit {}", file.phase, file.path), status);
                    case.set_classname(record.pipeline.as_str());
                    suite.add_test_case(case);
                }
            }
            report.add_test_suite(suite);

            for file in files {
                let Ok(parsed) = &file.report else { continue };
                for source in &parsed.test_suites {
                    let mut merged =
                        TestSuite::new(format!("{}/{}", file.phase, source.name.as_str()));
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
    }

    /// Text that tests every rule of the writer: XML's special characters, ANSI colours
    /// and a cursor sequence, an OSC title, C0 and C1 controls, tab, DEL, non-ASCII.
    const TRICKY: &str = "a<b>&'\"c \u{1b}[1;31mred\u{1b}[0m \u{1b}]0;title\u{7} tab\there\r\nnul\0\u{85}c1\u{9b}2J del\u{7f} é 日本 🦀";

    fn old_bytes(record: &RunRecord, run_dir: &Path) -> Vec<u8> {
        let files = collect(record, run_dir);
        let mut xml = Vec::new();
        reference::build(record, run_dir, &ReportOptions::default(), &files)
            .serialize(&mut xml)
            .unwrap();
        xml
    }

    fn new_bytes(record: &RunRecord, run_dir: &Path) -> Vec<u8> {
        let mut xml = Vec::new();
        render(record, run_dir, &ReportOptions::default(), &mut xml).unwrap();
        xml
    }

    fn assert_same(record: &RunRecord, run_dir: &Path) {
        let old = String::from_utf8(old_bytes(record, run_dir)).unwrap();
        let new = String::from_utf8(new_bytes(record, run_dir)).unwrap();
        assert_eq!(new, old);
    }

    #[test]
    fn text_is_cleaned_as_quick_junit_cleans_it() {
        for text in [
            "",
            "plain",
            "line\nbreak\n",
            TRICKY,
            "\u{1b}",
            "ends with ESC[\u{1b}[",
            "\u{1b}P dcs \u{1b}\\ after",
            "\u{c2}\u{a0} nbsp and \u{9f}",
            "\r\r\n\t\u{b}\u{c}\u{1f}",
        ] {
            assert_eq!(clean(text), XmlString::new(text).as_str(), "{text:?}");
        }
        let mut escaped = String::new();
        push_escaped(&mut escaped, &clean(TRICKY));
        assert_eq!(escaped, quick_xml_escape(TRICKY));
    }

    /// `text` escaped and cleaned by quick-junit's writer: the text of a `<skipped>`.
    fn quick_xml_escape(text: &str) -> String {
        let mut status = TestCaseStatus::skipped();
        status.set_description(text);
        let mut suite = TestSuite::new("s");
        suite.add_test_case(TestCase::new("c", status));
        let mut report = Report::new("r");
        report.add_test_suite(suite);
        let xml = report.to_string().unwrap();
        let from = xml.find("<skipped>").unwrap() + "<skipped>".len();
        let to = xml.find("</skipped>").unwrap();
        xml[from..to].to_owned()
    }

    #[test]
    fn the_direct_writer_gives_quick_junits_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("broken.log"), format!("step 1\n{TRICKY}\nlast\n")).unwrap();
        std::fs::write(logs.join("long.log"), "x\n".repeat(100)).unwrap();
        std::fs::write(logs.join("stopped.log"), "\u{1b}[32mok\u{1b}[0m\n").unwrap();
        std::fs::write(logs.join("tolerated.log"), "tab\tseparated\n").unwrap();
        std::fs::write(
            dir.path().join("tests.xml"),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="unit &amp; more" tests="3" timestamp="2026-01-01T00:00:00+02:00" time="1.5" extra="x">
<properties><property name="k" value="v &lt;"/></properties>
<testcase name="ok" classname="C" time="0.1"/>
<testcase name="bad"><failure message="boom" type="Assert">trace
  at line 2</failure><system-out>out</system-out></testcase>
<testcase name="later"><skipped/></testcase>
<system-err>err &amp; more</system-err>
</testsuite><testsuite name="empty"/></testsuites>"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.xml"), "<html/>").unwrap();
        let record: RunRecord = serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": "20260101T000000Z-abcd", "pipeline": TRICKY,
            "status": "failed", "started_at": "2026-02-28T23:59:59.999Z",
            "duration_ms": 1_234_567, "resumed_from": "20251231T235959Z-0123",
            "phases": {
                "ok": { "status": "succeeded", "kind": "command", "attempts": 1, "exit_code": 0,
                        "started_at": "2026-01-01T00:00:00.000Z", "duration_ms": 5,
                        "outputs": { "junit": "tests.xml" } },
                "flaky": { "status": "succeeded", "kind": TRICKY, "attempts": 3,
                           "started_at": "2026-01-01T00:00:00.5+02:00", "duration_ms": 999 },
                "unreadable": { "status": "succeeded", "kind": "command", "attempts": 1,
                                "outputs": { "junit": "bad.xml missing.xml" } },
                "broken": { "status": "failed", "kind": "command", "attempts": 25,
                            "exit_code": -9, "reason": TRICKY,
                            "started_at": "2016-12-31T23:59:60.000Z", "duration_ms": 1_000_000_000_000_u64,
                            "outputs": { "junit": "bad.xml" } },
                "long": { "status": "timed_out", "kind": "command", "attempts": 2,
                          "started_at": "not a time", "duration_ms": 1_152_921_504_606_846_977_u64 },
                "tolerated": { "status": "failed", "kind": "command", "attempts": 1,
                               "allowed_failure": true, "started_at": "2026-13-01T00:00:00.000Z" },
                "lenient": { "status": "timed_out", "kind": "command", "attempts": 1,
                             "allowed_failure": true, "reason": "slow", "exit_code": 3,
                             "started_at": "2026-02-29T00:00:00.000Z" },
                "stopped": { "status": "cancelled", "kind": "command", "attempts": 1,
                             "started_at": " 2026-01-01T00:00:00.000Z " },
                "stopped2": { "status": "cancelled", "kind": "command", "attempts": 1,
                              "reason": "interrupted", "started_at": "2024-02-29t10:00:00z" },
                "never": { "status": "cancelled", "kind": "command", "attempts": 0 },
                "skip": { "status": "skipped", "kind": "command", "attempts": 0,
                          "reason": "when: false" },
                "blocked": { "status": "blocked", "kind": "command", "attempts": 0 },
                "running": { "status": "running", "kind": "command", "attempts": 1,
                             "started_at": "0000-01-01T00:00:00.000Z" },
                "max": { "status": "succeeded", "kind": "command", "attempts": 1,
                         "duration_ms": u64::MAX },
                "zero": { "status": "succeeded", "kind": "command", "attempts": 0,
                          "started_at": "9999-12-31T23:59:59.999Z", "duration_ms": 0 }
            }
        }))
        .unwrap();
        assert_same(&record, dir.path());
        let new = String::from_utf8(new_bytes(&record, dir.path())).unwrap();
        assert!(
            new.contains("<testsuite name=\"ok/unit &amp; more\""),
            "{new}"
        );
        assert!(new.contains("junit_unreadable"), "{new}");

        // A run with no phase, no duration and a start that is not a time.
        let empty: RunRecord = serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": "R0", "pipeline": "", "status": "succeeded",
            "started_at": "", "phases": {}
        }))
        .unwrap();
        assert_same(&empty, dir.path());
    }

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
