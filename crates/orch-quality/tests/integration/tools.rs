//! Files written by real tool runs on fixtures made here, read back and cross-checked
//! against each tool's own JSON summary.

use std::path::Path;

use orch_quality::quality::{Inputs, evaluate};
use orch_quality::sarif::Level;

use crate::support::{json, node_bin, node_tool, python_module, run_in, write};

const PY_LINT: &str = "import os\nimport subprocess\n\n\ndef run(cmd):\n    assert cmd\n    return subprocess.call(cmd, shell=True)\n\n\ndef same(x):\n    if x == None:\n        return True\n    return False\n";

fn sarif_inputs(files: &[&str]) -> Inputs {
    Inputs {
        sarif: files.iter().map(|s| (*s).to_owned()).collect(),
        ..Inputs::default()
    }
}

fn levels(report: &orch_quality::QualityReport) -> Vec<(String, Level)> {
    report
        .findings
        .iter()
        .map(|f| (f.rule.clone(), f.level))
        .collect()
}

#[test]
fn ruff_sarif_counts_as_ruff_does() {
    let Some(ruff) = python_module("ruff") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", PY_LINT);
    let mut sarif = python_module("ruff").unwrap();
    sarif.args([
        "check",
        "--select",
        "F,E",
        "--exit-zero",
        "--output-format",
        "sarif",
        "--output-file",
        "ruff.sarif",
        ".",
    ]);
    assert!(run_in(sarif, dir.path()).status.success());
    let mut as_json = ruff;
    as_json.args([
        "check",
        "--select",
        "F,E",
        "--exit-zero",
        "--output-format",
        "json",
        "--output-file",
        "ruff.json",
        ".",
    ]);
    assert!(run_in(as_json, dir.path()).status.success());
    let ruff_count = json(&dir.path().join("ruff.json"))
        .as_array()
        .unwrap()
        .len() as u64;

    let mut inputs = sarif_inputs(&["*.sarif"]);
    inputs.conditions = vec!["findings.error == 0".into(), "rules[\"F401\"] <= 1".into()];
    let report = evaluate(&inputs, dir.path(), "quality").unwrap().report;
    let f = report.measures.findings.unwrap();
    assert_eq!(f.total, ruff_count);
    assert_eq!(ruff_count, 2, "{:?}", levels(&report));
    assert_eq!(report.measures.rules["F401"], 1);
    assert_eq!(report.measures.rules["E711"], 1);
    assert!(!report.passed);
    assert_eq!(
        report.failures,
        ["`findings.error == 0` is false (findings.error = 2)"]
    );
    let first = &report.findings[0];
    assert_eq!(first.tool, "ruff");
    assert!(first.file.as_deref().unwrap().ends_with("app.py"));
    assert!(first.line.is_some());
}

#[test]
fn bandit_sarif_keeps_bandit_severities() {
    let Some(bandit) = python_module("bandit") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "src/app.py", PY_LINT);
    let mut sarif = python_module("bandit").unwrap();
    sarif.args([
        "-q",
        "-r",
        "src",
        "-f",
        "sarif",
        "-o",
        "bandit.sarif",
        "--exit-zero",
    ]);
    assert!(run_in(sarif, dir.path()).status.success());
    let mut as_json = bandit;
    as_json.args([
        "-q",
        "-r",
        "src",
        "-f",
        "json",
        "-o",
        "bandit.json",
        "--exit-zero",
    ]);
    assert!(run_in(as_json, dir.path()).status.success());
    let results = json(&dir.path().join("bandit.json"))["results"].clone();
    let high = results
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["issue_severity"] == "HIGH")
        .count() as u64;

    let report = evaluate(&sarif_inputs(&["bandit.sarif"]), dir.path(), "q")
        .unwrap()
        .report;
    let f = report.measures.findings.unwrap();
    assert_eq!(f.total, results.as_array().unwrap().len() as u64);
    assert_eq!(f.error, high);
    assert!(
        report.measures.rules.contains_key("B602"),
        "{:?}",
        report.measures.rules
    );
    assert!(report.measures.rules.contains_key("B101"));
    assert_eq!(report.findings[0].rule, "B602");
}

#[test]
fn eslint_sarif_has_errors_and_warnings() {
    let Some(eslint) = node_tool("eslint") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.js",
        "'use strict';\nfunction add(a, b) {\n  const unused = 1;\n  if (a == b) {\n    return a * 2;\n  }\n  return a + b;\n}\nmodule.exports = { add };\n",
    );
    write(
        dir.path(),
        "eslint.config.js",
        "module.exports = [{ files: ['**/*.js'], languageOptions: { ecmaVersion: 2022, sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable' } }, rules: { 'no-unused-vars': 'error', eqeqeq: 'warn' } }];\n",
    );
    let formatter = node_bin().join("../@microsoft/eslint-formatter-sarif/sarif.js");
    let mut cmd = eslint;
    cmd.env("ESLINT_USE_FLAT_CONFIG", "true")
        .args(["-f"])
        .arg(&formatter)
        .args(["-o", "eslint.sarif", "m.js"]);
    // eslint exits 1 when it found errors; the SARIF is written either way.
    assert_eq!(run_in(cmd, dir.path()).status.code(), Some(1));

    let mut inputs = sarif_inputs(&["eslint.sarif"]);
    inputs.threshold = Some(90.0);
    let report = evaluate(&inputs, dir.path(), "q").unwrap().report;
    assert_eq!(
        levels(&report),
        [
            ("no-unused-vars".to_owned(), Level::Error),
            ("eqeqeq".to_owned(), Level::Warning)
        ]
    );
    assert_eq!(report.findings[0].line, Some(3));
    assert_eq!(report.score.value, 88.0);
    assert_eq!(
        report.failures,
        ["score 88 is below the threshold 90 (findings -12)"]
    );
}

fn pytest_fixture(dir: &Path) {
    write(
        dir,
        "calc.py",
        "def div(a, b):\n    if b == 0:\n        raise ZeroDivisionError(\"b\")\n    return a / b\n\n\ndef sign(x):\n    if x > 0:\n        return 1\n    elif x < 0:\n        return -1\n    return 0\n",
    );
    write(
        dir,
        "test_calc.py",
        "import pytest\n\nfrom calc import div, sign\n\n\ndef test_div():\n    assert div(6, 3) == 2\n\n\ndef test_sign_fails():\n    assert sign(5) == -1\n\n\n@pytest.mark.skip(reason=\"not yet\")\ndef test_skipped():\n    pass\n",
    );
}

#[test]
fn coverage_py_cobertura_and_pytest_junit_match_their_own_totals() {
    let Some(mut cov) = python_module("coverage") else {
        return;
    };
    if python_module("pytest").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    pytest_fixture(dir.path());
    cov.args([
        "run",
        "--branch",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--junitxml=junit/pytest.xml",
    ]);
    // One test fails on purpose.
    assert_eq!(run_in(cov, dir.path()).status.code(), Some(1));
    let mut xml = python_module("coverage").unwrap();
    xml.args(["xml", "-o", "cov/calc.xml"]);
    assert!(run_in(xml, dir.path()).status.success());
    let mut js = python_module("coverage").unwrap();
    js.args(["json", "-o", "cov.json"]);
    assert!(run_in(js, dir.path()).status.success());
    let totals = json(&dir.path().join("cov.json"))["totals"].clone();

    let inputs = Inputs {
        coverage: vec!["cov/*.xml".into()],
        junit: vec!["junit/*.xml".into()],
        conditions: vec!["tests.failed == 0".into(), "branch_coverage >= 30".into()],
        ..Inputs::default()
    };
    let report = evaluate(&inputs, dir.path(), "q").unwrap().report;
    let c = report.measures.coverage.unwrap();
    assert_eq!(c.lines.total, totals["num_statements"].as_u64().unwrap());
    assert_eq!(c.lines.covered, totals["covered_lines"].as_u64().unwrap());
    let b = c.branches.unwrap();
    assert_eq!(b.total, totals["num_branches"].as_u64().unwrap());
    assert_eq!(b.covered, totals["covered_branches"].as_u64().unwrap());
    assert_eq!(report.coverage_sources[0].name, "calc");

    let t = report.measures.tests.unwrap();
    assert_eq!((t.total, t.passed, t.failed, t.skipped), (3, 1, 1, 1));
    assert_eq!(report.failed_tests[0].name, "test_calc.test_sign_fails");
    assert_eq!(
        report.failures,
        ["`tests.failed == 0` is false (tests.failed = 1)"]
    );
    assert!(report.conditions[1].passed, "{:?}", report.conditions[1]);
}

#[test]
fn c8_lcov_matches_c8_own_summary() {
    let Some(mut c8) = node_tool("c8") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "m.js",
        "'use strict';\nfunction add(a, b) {\n  if (a === b) {\n    return a * 2;\n  }\n  return a + b;\n}\nfunction never() {\n  return 0;\n}\nmodule.exports = { add, never };\n",
    );
    write(
        dir.path(),
        "t.js",
        "'use strict';\nconst { add } = require('./m.js');\nif (add(1, 2) !== 3) throw new Error('add');\n",
    );
    c8.args([
        "--reporter=lcovonly",
        "--reporter=json-summary",
        "--report-dir",
        "gateway/coverage",
        "node",
        "t.js",
    ]);
    assert!(run_in(c8, dir.path()).status.success());
    let summary = json(&dir.path().join("gateway/coverage/coverage-summary.json"))["total"].clone();

    let inputs = Inputs {
        coverage: vec!["gateway/coverage/lcov.info".into()],
        conditions: vec!["coverage >= 95".into()],
        ..Inputs::default()
    };
    let report = evaluate(&inputs, dir.path(), "q").unwrap().report;
    let c = report.measures.coverage.unwrap();
    assert_eq!(c.lines.total, summary["lines"]["total"].as_u64().unwrap());
    assert_eq!(
        c.lines.covered,
        summary["lines"]["covered"].as_u64().unwrap()
    );
    let b = c.branches.unwrap();
    assert_eq!(b.total, summary["branches"]["total"].as_u64().unwrap());
    assert_eq!(b.covered, summary["branches"]["covered"].as_u64().unwrap());
    assert_eq!(report.coverage_sources[0].name, "gateway");
    assert_eq!(report.coverage_sources[0].format, "lcov");
    assert!(!report.passed);
    assert!(
        report.failures[0].starts_with("`coverage >= 95` is false (coverage = "),
        "{:?}",
        report.failures
    );
}

#[test]
fn broken_copies_of_real_files_fail_with_their_position() {
    let Some(mut ruff) = python_module("ruff") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.py", PY_LINT);
    ruff.args([
        "check",
        "--select",
        "F",
        "--exit-zero",
        "--output-format",
        "sarif",
        "--output-file",
        "ruff.sarif",
        ".",
    ]);
    assert!(run_in(ruff, dir.path()).status.success());
    let text = std::fs::read_to_string(dir.path().join("ruff.sarif")).unwrap();

    // Cut short: the fault is at the end of what is there.
    let cut = &text[..text.len() / 2];
    write(dir.path(), "bad/cut.sarif", cut);
    let err = evaluate(&sarif_inputs(&["bad/cut.sarif"]), dir.path(), "q").unwrap_err();
    let lines = cut.lines().count();
    assert!(
        err.to_string().starts_with(&format!(
            "{}:{lines}:",
            dir.path().join("bad/cut.sarif").display()
        )),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("malformed SARIF: EOF while parsing"),
        "{err}"
    );

    // Another version.
    let v2 = text.replace("\"version\": \"2.1.0\"", "\"version\": \"2.0.0\"");
    assert_ne!(v2, text);
    write(dir.path(), "bad/v2.sarif", &v2);
    let err = evaluate(&sarif_inputs(&["bad/v2.sarif"]), dir.path(), "q").unwrap_err();
    assert!(
        err.to_string()
            .ends_with("v2.sarif: SARIF version 2.0.0 is not supported: only SARIF 2.1.0 is read"),
        "{err}"
    );

    // A result without its required message: the typed model says where.
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["runs"][0]["results"][0]
        .as_object_mut()
        .unwrap()
        .remove("message");
    write(
        dir.path(),
        "bad/nomsg.sarif",
        &serde_json::to_string_pretty(&doc).unwrap(),
    );
    let err = evaluate(&sarif_inputs(&["bad/nomsg.sarif"]), dir.path(), "q").unwrap_err();
    assert!(err.to_string().contains("missing field `message`"), "{err}");

    // Empty files and globs that match nothing are errors, never zeros.
    write(dir.path(), "empty/lcov.info", "");
    let inputs = Inputs {
        coverage: vec!["empty/lcov.info".into()],
        ..Inputs::default()
    };
    let err = evaluate(&inputs, dir.path(), "q").unwrap_err();
    assert!(
        err.to_string()
            .ends_with("lcov.info is empty: no coverage to read"),
        "{err}"
    );
    let inputs = Inputs {
        junit: vec!["junit/*.xml".into()],
        ..Inputs::default()
    };
    let err = evaluate(&inputs, dir.path(), "q").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("`junit` pattern `junit/*.xml` matches no file"),
        "{err}"
    );
    let err = evaluate(&Inputs::default(), dir.path(), "q").unwrap_err();
    assert_eq!(
        err.to_string(),
        "nothing to measure: set at least one of `sarif`, `coverage`, `junit`"
    );
}
