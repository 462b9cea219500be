//! JUnit XML: orch's own `junit.xml`, pytest's `--junitxml`, Node's test runner, Maven
//! Surefire, nextest. Test cases are counted from the `<testcase>` elements (a root
//! `<testsuites>` or `<testsuite>`, suites nested at any depth), not from summary
//! attributes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::errors::InputError;
use crate::inputs;

/// Test counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    /// Test cases.
    pub total: u64,
    /// Neither failed nor skipped.
    pub passed: u64,
    /// With a `<failure>` or an `<error>`.
    pub failed: u64,
    /// Of those, with an `<error>` (the test could not run to an assertion).
    pub errors: u64,
    /// With `<skipped>`.
    pub skipped: u64,
}

impl TestCounts {
    /// Adds counts.
    pub fn add(&mut self, other: TestCounts) {
        self.total += other.total;
        self.passed += other.passed;
        self.failed += other.failed;
        self.errors += other.errors;
        self.skipped += other.skipped;
    }
}

/// A failed test case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedTest {
    /// `classname.name` (or `name`).
    pub name: String,
    /// The failure's `message`, cut to 200 characters.
    pub message: String,
}

/// A JUnit file that was read.
#[derive(Clone, Debug, PartialEq)]
pub struct JunitReport {
    /// The file.
    pub path: PathBuf,
    /// Its counts.
    pub counts: TestCounts,
    /// Failed cases, in file order.
    pub failed: Vec<FailedTest>,
}

/// Reads a JUnit XML file.
pub fn read(path: &Path) -> Result<JunitReport, InputError> {
    let text = inputs::read(path, "JUnit XML")?;
    parse(&text, path)
}

/// Parses JUnit XML (`path` is for messages). A file with no test case is an error: it
/// means no test ran (pytest writes such a file when it collects nothing).
pub fn parse(text: &str, path: &Path) -> Result<JunitReport, InputError> {
    let doc = roxmltree::Document::parse(text).map_err(|e| {
        let (line, column) = inputs::xml_error_pos(text, &e);
        InputError::Malformed {
            path: path.to_owned(),
            format: "JUnit XML",
            line,
            column,
            message: e.to_string(),
        }
    })?;
    let root = doc.root_element();
    let fault = |message: String| InputError::Malformed {
        path: path.to_owned(),
        format: "JUnit XML",
        line: 1,
        column: 1,
        message,
    };
    if !matches!(root.tag_name().name(), "testsuites" | "testsuite") {
        let pos = doc.text_pos_at(root.range().start);
        return Err(InputError::Malformed {
            path: path.to_owned(),
            format: "JUnit XML",
            line: pos.row as usize,
            column: pos.col as usize,
            message: format!(
                "the root element is <{}>, not <testsuites> or <testsuite>",
                root.tag_name().name()
            ),
        });
    }
    let mut counts = TestCounts::default();
    let mut failed = Vec::new();
    for case in root.descendants().filter(|n| n.has_tag_name("testcase")) {
        counts.total += 1;
        let child = |tag: &str| case.children().find(|n| n.has_tag_name(tag));
        let failure = child("failure");
        let error = child("error");
        if failure.is_some() || error.is_some() {
            counts.failed += 1;
            if failure.is_none() {
                counts.errors += 1;
            }
            let name = match (case.attribute("classname"), case.attribute("name")) {
                (Some(c), Some(n)) if !c.is_empty() => format!("{c}.{n}"),
                (_, Some(n)) => n.to_owned(),
                (Some(c), None) => c.to_owned(),
                (None, None) => "(unnamed)".to_owned(),
            };
            let node = failure.or(error);
            let message = node
                .and_then(|n| {
                    n.attribute("message")
                        .map(str::to_owned)
                        .or_else(|| n.text().map(str::to_owned))
                })
                .unwrap_or_default();
            let message = message.lines().next().unwrap_or_default().trim().to_owned();
            failed.push(FailedTest {
                name,
                message: match message.char_indices().nth(200) {
                    Some((i, _)) => format!("{}…", &message[..i]),
                    None => message,
                },
            });
        } else if child("skipped").is_some() {
            counts.skipped += 1;
        } else {
            counts.passed += 1;
        }
    }
    if counts.total == 0 {
        return Err(fault("no <testcase>: no test ran".to_owned()));
    }
    Ok(JunitReport {
        path: path.to_owned(),
        counts,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cases_in_nested_suites() {
        let text = r#"<?xml version="1.0"?>
<testsuites><testsuite name="a"><testsuite name="b">
  <testcase name="ok"/>
  <testcase classname="m" name="bad"><failure message="boom">trace</failure></testcase>
  <testcase name="err"><error>oops
more</error></testcase>
  <testcase name="skip"><skipped/></testcase>
</testsuite></testsuite></testsuites>"#;
        let r = parse(text, Path::new("j.xml")).unwrap();
        assert_eq!(
            r.counts,
            TestCounts {
                total: 4,
                passed: 1,
                failed: 2,
                errors: 1,
                skipped: 1
            }
        );
        assert_eq!(r.failed[0].name, "m.bad");
        assert_eq!(r.failed[1].message, "oops");
    }

    #[test]
    fn empty_and_broken_files_are_errors() {
        let e = parse("<testsuites/>", Path::new("j.xml")).unwrap_err();
        assert!(e.to_string().contains("no test ran"), "{e}");
        let e = parse("<testsuite>\n<testcase>", Path::new("j.xml")).unwrap_err();
        assert!(e.to_string().starts_with("j.xml:2:"), "{e}");
        let e = parse("<html/>", Path::new("j.xml")).unwrap_err();
        assert!(e.to_string().contains("<html>"), "{e}");
    }
}
