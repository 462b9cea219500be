//! The JUnit XML read back by a JUnit consumer (quick-junit's reader).

use orch_report::Format;
use quick_junit::{NonSuccessKind, Report, TestCaseStatus};

use crate::fixtures;
use crate::render_text;

fn parse(xml: &str) -> Report {
    Report::deserialize_from_str(xml).unwrap_or_else(|e| panic!("{e}\n{xml}"))
}

fn case<'a>(r: &'a Report, suite: &str, name: &str) -> &'a quick_junit::TestCase {
    r.test_suites
        .iter()
        .find(|s| s.name.as_str() == suite)
        .unwrap_or_else(|| panic!("no suite {suite}"))
        .test_cases
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

#[test]
fn merged_junit_files_count_real_tests() {
    let fx = fixtures::succeeded();
    let xml = render_text(&fx, Format::Junit);
    let r = parse(&xml);
    let names: Vec<&str> = r.test_suites.iter().map(|s| s.name.as_str()).collect();
    // The run's suite, then the suites of the files the phases pointed at.
    assert_eq!(names, ["nexus-cos", "unit/api-unit", "api-tests/pytest"]);
    assert_eq!(r.test_suites[0].tests, fx.record.phases.len());
    assert_eq!(r.test_suites[1].tests, 3);
    assert_eq!(r.test_suites[2].tests, 4);
    assert_eq!(r.test_suites[2].failures, 1);
    assert_eq!(r.test_suites[2].skipped, 1);
    // Totals count the real tests.
    assert_eq!(r.tests, fx.record.phases.len() + 3 + 4);
    assert_eq!(r.failures, 1);
    assert_eq!(r.skipped, 1);
    let refund = case(&r, "api-tests/pytest", "test_refund");
    match &refund.status {
        TestCaseStatus::NonSuccess {
            kind: NonSuccessKind::Failure,
            message,
            description,
            ..
        } => {
            assert_eq!(
                message.as_ref().unwrap().as_str(),
                "AssertionError: assert 402 == 200"
            );
            assert!(description.as_ref().unwrap().as_str().contains("> "));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn phases_become_test_cases_with_messages_and_log_tails() {
    let fx = fixtures::failed();
    let xml = render_text(&fx, Format::Junit);
    let r = parse(&xml);
    assert_eq!(r.test_suites.len(), 1);
    let suite = &r.test_suites[0];
    assert_eq!(suite.tests, 6);
    assert_eq!(suite.failures, 2, "unit failed, integration timed out");
    assert_eq!(suite.skipped, 3, "docs allowed to fail, two blocked");
    assert_eq!(suite.errors, 0);
    assert_eq!(
        suite.time,
        Some(std::time::Duration::from_millis(32_100)),
        "run duration"
    );

    let unit = case(&r, "nexus-cos", "unit");
    assert_eq!(unit.time, Some(std::time::Duration::from_millis(6_400)));
    match &unit.status {
        TestCaseStatus::NonSuccess {
            kind: NonSuccessKind::Failure,
            message,
            ty,
            description,
            reruns,
        } => {
            assert_eq!(
                message.as_ref().unwrap().as_str(),
                "exit status 101 <b>after 3 attempts</b> (exit code 101)"
            );
            assert_eq!(ty.as_ref().unwrap().as_str(), "failed");
            let d = description.as_ref().unwrap().as_str();
            assert!(d.starts_with("(last 30 lines of logs/unit.log)\n"), "{d}");
            assert!(d.contains("<script>document.title='pwned'</script>"));
            assert_eq!(reruns.runs.len(), 2, "two earlier attempts");
        }
        other => panic!("{other:?}"),
    }
    match &case(&r, "nexus-cos", "integration").status {
        TestCaseStatus::NonSuccess { ty, message, .. } => {
            assert_eq!(ty.as_ref().unwrap().as_str(), "timed_out");
            assert_eq!(message.as_ref().unwrap().as_str(), "timed out after 30s");
        }
        other => panic!("{other:?}"),
    }
    match &case(&r, "nexus-cos", "docs").status {
        TestCaseStatus::Skipped { ty, message, .. } => {
            assert_eq!(ty.as_ref().unwrap().as_str(), "allowed_failure");
            assert!(
                message
                    .as_ref()
                    .unwrap()
                    .as_str()
                    .contains("allowed to fail")
            );
        }
        other => panic!("{other:?}"),
    }
    match &case(&r, "nexus-cos", "image").status {
        TestCaseStatus::Skipped { ty, message, .. } => {
            assert_eq!(ty.as_ref().unwrap().as_str(), "blocked");
            assert_eq!(
                message.as_ref().unwrap().as_str(),
                "blocked: blocked by unit"
            );
        }
        other => panic!("{other:?}"),
    }
    // Reading it back and writing it again gives the same document.
    assert_eq!(r.to_string().unwrap(), xml);
}

#[test]
fn retries_and_cancellations_are_visible() {
    let r = parse(&render_text(&fixtures::retried(), Format::Junit));
    match &case(&r, "flaky", "fetch").status {
        TestCaseStatus::Success { flaky_runs } => assert_eq!(flaky_runs.len(), 2),
        other => panic!("{other:?}"),
    }
    let r = parse(&render_text(&fixtures::cancelled(), Format::Junit));
    assert!(matches!(
        case(&r, "interrupted", "long").status,
        TestCaseStatus::NonSuccess {
            kind: NonSuccessKind::Error,
            ..
        }
    ));
    assert!(matches!(
        case(&r, "interrupted", "after").status,
        TestCaseStatus::Skipped { .. }
    ));
}

#[test]
fn unreadable_junit_files_of_succeeded_phases_are_errors() {
    let mut b = fixtures::Builder::new("p", orch_core::RunStatus::Succeeded);
    b.file("bad.xml", "<testsuites><testsuite name=\"x\">");
    b.phase("t", "command", orch_core::PhaseStatus::Succeeded)
        .ran(0.0, 1.0)
        .output("junit", "bad.xml, missing.xml")
        .add();
    b.phase("f", "command", orch_core::PhaseStatus::Failed)
        .ran(0.0, 1.0)
        .output("junit", "also-missing.xml")
        .add();
    let fx = b.finish(1.0);
    let r = parse(&render_text(&fx, Format::Junit));
    let suite = &r.test_suites[0];
    let errors: Vec<&str> = suite
        .test_cases
        .iter()
        .filter(|c| {
            matches!(
                c.status,
                TestCaseStatus::NonSuccess {
                    kind: NonSuccessKind::Error,
                    ..
                }
            )
        })
        .map(|c| c.name.as_str())
        .collect();
    // A failed phase that wrote no file is not reported twice.
    assert_eq!(errors, ["t junit bad.xml", "t junit missing.xml"]);
}
