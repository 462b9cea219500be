//! Reports of real runs: pipeline files run by orch-core's engine, with real processes,
//! logs, JUnit files and a `report` phase reading the run as it stands.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orch_core::{
    LoadOptions, PhaseStatus, Pipeline, Registry, RunControl, RunOptions, RunRecord, RunStatus,
    Runner,
};
use orch_report::{Format, render, write_default_reports};

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    orch_report::register(&mut r).expect("the kinds register once");
    r
}

async fn run(dir: &Path, toml: &str, keep_going: bool) -> (RunRecord, PathBuf) {
    let file = dir.join("orch.toml");
    std::fs::write(&file, toml).unwrap();
    let pipeline = Pipeline::load(&file, &registry(), &LoadOptions::default()).unwrap();
    let state_dir = pipeline.state_dir();
    let options = RunOptions {
        keep_going,
        ..RunOptions::default()
    };
    let record = Runner::new(Arc::new(pipeline), options)
        .run(RunControl::new())
        .await
        .unwrap();
    let run_dir = state_dir.join("runs").join(record.run_id.as_str());
    assert!(run_dir.join("run.json").is_file());
    (record, run_dir)
}

const JUNIT: &str = r#"<testsuite name="shell-tests" tests="2"><testcase classname="sh" name="adds"/><testcase classname="sh" name="subtracts"><failure message="expected 1, got 2"/></testcase></testsuite>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_phase_reports_the_run_so_far() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junit-src.xml"), JUNIT).unwrap();
    let toml = r#"
[pipeline]
name = "e2e"
jobs = 2

[vars]
version = "1.0.0"

[phases.build]
run = "echo building ${{ vars.version }}; echo artifact=app-1.0.0.tar >> \"$ORCH_OUTPUT\""

[phases.test]
run = "cp junit-src.xml \"$ORCH_RUN_ID-junit.xml\" && echo junit=$PWD/$ORCH_RUN_ID-junit.xml >> \"$ORCH_OUTPUT\" && echo 2 tests"
needs = ["build"]

[phases.check]
kind = "gate"
assert = ["phases.build.outputs.artifact == 'app-1.0.0.tar'"]
needs = ["build"]

[phases.reports]
kind = "report"
needs = ["test", "check"]
with = { formats = ["md", "junit", "html", "compliance", "json"], output = "out" }
"#;
    let (record, run_dir) = run(dir.path(), toml, false).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:#?}");
    let reports = &record.phases["reports"];
    let paths: Vec<String> = serde_json::from_str(&reports.outputs["paths"]).unwrap();
    let out = dir.path().join("out");
    assert_eq!(
        paths,
        [
            "report.md",
            "junit.xml",
            "report.html",
            "compliance.html",
            "report.json"
        ]
        .map(|n| out.join(n).display().to_string())
    );
    assert_eq!(reports.artifacts.len(), 5);
    assert!(reports.artifacts.iter().all(|a| a.kind == "report"));

    // The phase saw the phases that finished before it, and not itself.
    let snapshot: RunRecord =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(snapshot.run_id, record.run_id);
    assert_eq!(snapshot.status, RunStatus::Running);
    let seen: Vec<&str> = snapshot
        .phases
        .keys()
        .map(orch_core::PhaseId::as_str)
        .collect();
    assert_eq!(seen, ["build", "test", "check"]);

    // The JUnit merged the file the test phase pointed at.
    let xml = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!(parsed.tests, 3 + 2);
    assert_eq!(parsed.failures, 1);
    assert_eq!(parsed.test_suites[1].name.as_str(), "test/shell-tests");

    let compliance = std::fs::read_to_string(out.join("compliance.html")).unwrap();
    assert!(
        compliance.contains("<strong>passed</strong>"),
        "the gate's verdict"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| ✅ | `build` | command | succeeded |"),
        "{md}"
    );
    assert!(
        md.contains("| `build` | `artifact` | `app-1.0.0.tar` |"),
        "{md}"
    );

    // After the run, the default reports of the whole run.
    let written = write_default_reports(&record, &run_dir).unwrap();
    assert_eq!(written.len(), 3);
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("4 phases: 4 succeeded"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_reports_its_logs() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
[pipeline]
name = "e2e-failed"
jobs = 2

[phases.flaky]
run = "echo attempt $ORCH_ATTEMPT; test $ORCH_ATTEMPT -ge 2"
retries = 2
backoff = { initial = "10ms", factor = 1.0, max = "10ms" }

[phases.unit]
run = "echo \"<script>document.title='pwned'</script>\"; echo 'tests failed' >&2; exit 3"

[phases.deploy]
run = "echo deploying"
needs = ["unit"]
"#;
    let (record, run_dir) = run(dir.path(), toml, true).await;
    assert_eq!(record.status, RunStatus::Failed);
    assert_eq!(record.phases["flaky"].status, PhaseStatus::Succeeded);
    assert_eq!(record.phases["flaky"].attempts, 2);
    assert_eq!(record.phases["unit"].status, PhaseStatus::Failed);
    assert_eq!(record.phases["deploy"].status, PhaseStatus::Blocked);

    write_default_reports(&record, &run_dir).unwrap();
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        md.contains("| ❌ | `unit` | command | failed (exit 3) |"),
        "{md}"
    );
    assert!(
        md.contains("| ✅ | `flaky` | command | succeeded |"),
        "{md}"
    );
    assert!(md.contains("| 2 (1 retry) |"), "{md}");
    // Both streams are in the log (in the order the engine read them).
    let fence = &md[md.find("```text\n").unwrap()..];
    assert!(
        fence.contains("<script>document.title='pwned'</script>\n"),
        "{md}"
    );
    assert!(fence.contains("tests failed\n"), "{md}");

    let xml = String::from_utf8(render(&record, &run_dir, Format::Junit).unwrap()).unwrap();
    let parsed = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    assert_eq!((parsed.tests, parsed.failures, parsed.skipped), (3, 1, 1));

    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;&#x2f;script&gt;"));
    assert_eq!(html.matches("class=\"tl-bar ").count(), 3);
}
