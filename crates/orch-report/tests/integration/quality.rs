//! The quality section, read from the `quality.json` (format 1) a `quality` phase leaves in
//! `RUN_DIR/quality/PHASE/`, also when the gate failed and published no outputs.

use orch_core::{PhaseStatus, RunStatus};
use orch_report::Format;

use crate::fixtures::Builder;
use crate::{html_text, redacted, render_text};

const QUALITY_JSON: &str = r#"{
  "format_version": 1,
  "phase": "quality",
  "passed": false,
  "failures": ["`findings.error == 0` is false (findings.error = 1)"],
  "score": { "value": 82.5, "parts": [
    { "dimension": "findings", "measured": true, "cost": 10.0, "cap": 40.0, "explanation": "1 error × 10 = 10" },
    { "dimension": "coverage", "measured": true, "cost": 7.5, "cap": 30.0, "explanation": "0.3 × 25 line points under 100" },
    { "dimension": "tests", "measured": false, "cost": 0.0, "cap": 30.0, "explanation": "not measured: no `junit` input" }
  ] },
  "threshold": 50.0,
  "measures": { "findings": { "error": 1, "warning": 0, "note": 0, "none": 0, "total": 1, "suppressed": 0 },
                "coverage": { "lines": { "covered": 3, "total": 4, "percent": 75.0 }, "files": 1 } },
  "conditions": [
    { "expr": "findings.error == 0", "passed": false, "seen": [["findings.error", "1"]] },
    { "expr": "coverage >= 50", "passed": true, "seen": [["coverage", "75.0"]] }
  ],
  "coverage_sources": [ { "name": "gateway", "path": "gateway/coverage/lcov.info", "format": "lcov",
                          "totals": { "lines": { "covered": 3, "total": 4, "percent": 75.0 }, "files": 1 } } ],
  "rules": [],
  "findings": [ { "tool": "orch-secrets", "rule": "github-token", "level": "error",
                  "message": "a GitHub token (fingerprint 0123456789abcdef); the value is not shown",
                  "file": "src/release.sh", "line": 3, "column": 26 } ],
  "findings_omitted": 0,
  "failed_tests": [],
  "inputs": [],
  "sarif": "/runs/r/quality/quality/quality.sarif"
}"#;

#[test]
fn a_failed_gate_shows_its_score_conditions_coverage_and_findings() {
    let mut b = Builder::new("gated", RunStatus::Failed);
    b.phase("quality", "quality", PhaseStatus::Failed)
        .ran(0.0, 1.0)
        .reason("quality gate failed: `findings.error == 0` is false (findings.error = 1)")
        .add();
    b.phase("later", "quality", PhaseStatus::Failed)
        .ran(1.0, 1.0)
        .reason("`coverage` pattern `cov/*.info` matches no file")
        .add();
    b.phase("future", "quality", PhaseStatus::Succeeded)
        .ran(2.0, 1.0)
        .output("report", "quality/future/quality.json")
        .add();
    let dir = b.run_dir().join("quality/quality");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("quality.json"), QUALITY_JSON).unwrap();
    let future = b.run_dir().join("quality/future");
    std::fs::create_dir_all(&future).unwrap();
    std::fs::write(
        future.join("quality.json"),
        QUALITY_JSON.replace("\"format_version\": 1", "\"format_version\": 2"),
    )
    .unwrap();
    let fx = b.finish(3.0);

    for format in [Format::Html, Format::ComplianceHtml] {
        let text = html_text(&render_text(&fx, format));
        for needle in [
            "Score 82.5 / 100 (threshold 50): failed",
            "findings | 10 | 40 | 1 error × 10 = 10",
            "findings.error == 0 | fails | findings.error = 1",
            "coverage >= 50 | holds | coverage = 75.0",
            "gateway | gateway/coverage/lcov.info | 3 / 4 | 75 %",
            "error | orch-secrets | github-token | src/release.sh:3",
            "no quality.json: `coverage` pattern `cov/*.info` matches no file",
            "quality.json format 2 is not one this build reads (1)",
        ] {
            assert!(text.contains(needle), "{format}: lacks {needle:?}\n{text}");
        }
    }
}

#[test]
fn the_markdown_summary_has_the_quality_section() {
    let mut b = Builder::new("gated", RunStatus::Failed);
    b.phase("quality", "quality", PhaseStatus::Failed)
        .ran(0.0, 1.0)
        .reason("quality gate failed: `findings.error == 0` is false (findings.error = 1)")
        .add();
    b.phase("later", "quality", PhaseStatus::Failed)
        .ran(1.0, 1.0)
        .reason("`coverage` pattern `cov/*.info` matches no file")
        .add();
    let dir = b.run_dir().join("quality/quality");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("quality.json"), QUALITY_JSON).unwrap();
    let fx = b.finish(3.0);
    let md = render_text(&fx, Format::Markdown);
    let start = md
        .find("### ❌ Quality: `quality`")
        .expect("a quality section");
    redacted(&fx).bind(|| insta::assert_snapshot!(&md[start..]));
}
