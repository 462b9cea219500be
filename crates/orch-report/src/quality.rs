//! The quality section: what `quality` phases recorded in their `quality.json` (format
//! version 1, written by orch-quality; read here as JSON, without depending on that crate)
//! and what `secrets.scan` phases found.

use std::path::Path;

use orch_core::RunRecord;
use serde::{Deserialize, Serialize};

use crate::sources::{read_capped, resolve, truncate};

/// The `quality.json` format version this build reads.
pub(crate) const QUALITY_FORMAT_VERSION: u64 = 1;

/// Findings and failed tests shown per quality phase.
const TOP: usize = 10;

#[derive(Deserialize)]
struct Doc {
    format_version: u64,
    passed: bool,
    #[serde(default)]
    failures: Vec<String>,
    score: DocScore,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    measures: DocMeasures,
    #[serde(default)]
    conditions: Vec<DocCondition>,
    #[serde(default)]
    coverage_sources: Vec<DocCoverageSource>,
    #[serde(default)]
    findings: Vec<DocFinding>,
    #[serde(default)]
    findings_omitted: u64,
    #[serde(default)]
    failed_tests: Vec<DocFailedTest>,
    #[serde(default)]
    sarif: Option<String>,
}

#[derive(Deserialize)]
struct DocScore {
    value: f64,
    #[serde(default)]
    parts: Vec<DocScorePart>,
}

#[derive(Deserialize, Default)]
struct DocMeasures {
    #[serde(default)]
    findings: Option<serde_json::Value>,
    #[serde(default)]
    coverage: Option<DocCoverage>,
    #[serde(default)]
    tests: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct DocRatio {
    covered: u64,
    total: u64,
    percent: f64,
}

#[derive(Deserialize)]
struct DocCoverage {
    lines: DocRatio,
    #[serde(default)]
    branches: Option<DocRatio>,
}

#[derive(Deserialize)]
struct DocCondition {
    expr: String,
    passed: bool,
    #[serde(default)]
    seen: Vec<(String, String)>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct DocCoverageSource {
    name: String,
    path: String,
    totals: DocCoverage,
}

#[derive(Deserialize)]
struct DocFinding {
    tool: String,
    rule: String,
    level: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    line: Option<u64>,
}

#[derive(Deserialize)]
struct DocFailedTest {
    name: String,
    #[serde(default)]
    message: String,
}

/// What one dimension cost (as recorded).
#[derive(Clone, Debug, Deserialize)]
struct DocScorePart {
    dimension: String,
    measured: bool,
    cost: f64,
    cap: f64,
    explanation: String,
}

/// What one dimension cost, for display (numbers as Rust prints them: `31.5`, `40`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ScorePartView {
    pub dimension: String,
    pub measured: bool,
    pub cost: String,
    pub cap: String,
    pub explanation: String,
}

/// A condition and its verdict, for display.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ConditionView {
    pub expr: String,
    pub passed: bool,
    /// `findings.error = 0, coverage = 81.2`, or why it could not be evaluated.
    pub detail: String,
}

/// Coverage of one report (one service).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct CoverageRow {
    pub name: String,
    pub path: String,
    pub lines: String,
    pub percent: String,
    pub branches: Option<String>,
}

/// A finding, for display.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FindingView {
    pub level: String,
    pub tool: String,
    pub rule: String,
    pub at: String,
    pub message: String,
}

/// A quality phase's section.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct QualityView {
    pub phase: String,
    pub status: &'static str,
    pub class: &'static str,
    pub path: String,
    /// Why `quality.json` could not be read.
    pub error: Option<String>,
    pub passed: bool,
    /// Numbers as Rust prints them (`82.5`, `50`).
    pub score: Option<String>,
    pub threshold: Option<String>,
    pub failures: Vec<String>,
    pub parts: Vec<ScorePartView>,
    pub conditions: Vec<ConditionView>,
    /// `(label, value)`: findings by level, coverage, tests.
    pub measures: Vec<(String, String)>,
    pub coverage: Vec<CoverageRow>,
    pub findings: Vec<FindingView>,
    pub findings_more: u64,
    pub failed_tests: Vec<(String, String)>,
    pub sarif: Option<String>,
}

/// A `secrets.scan` phase.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct SecretsView {
    pub phase: String,
    pub status: &'static str,
    pub class: &'static str,
    pub findings: Option<String>,
    pub files: Option<String>,
    pub report: Option<String>,
    pub reason: Option<String>,
}

/// Every `quality` phase's section, from its `quality.json`: the `report` output, or
/// `RUN_DIR/quality/PHASE/quality.json` (where a failed gate's record is).
pub(crate) fn sections(record: &RunRecord, run_dir: &Path) -> Vec<QualityView> {
    record
        .phases
        .iter()
        .filter(|(_, p)| p.kind == "quality")
        .map(|(id, p)| {
            let path = p.outputs.get("report").cloned().unwrap_or_else(|| {
                run_dir
                    .join("quality")
                    .join(id.as_str())
                    .join("quality.json")
                    .display()
                    .to_string()
            });
            let mut view = QualityView {
                phase: id.to_string(),
                status: p.status.as_str(),
                class: crate::view::status_class(p),
                path: path.clone(),
                error: None,
                passed: false,
                score: None,
                threshold: None,
                failures: Vec::new(),
                parts: Vec::new(),
                conditions: Vec::new(),
                measures: Vec::new(),
                coverage: Vec::new(),
                findings: Vec::new(),
                findings_more: 0,
                failed_tests: Vec::new(),
                sarif: None,
            };
            let resolved = resolve(record, run_dir, &path);
            if !resolved.exists() {
                view.error = Some(match &p.reason {
                    Some(r) => format!("no quality.json: {}", truncate(r, 300)),
                    None => "no quality.json (the phase did not get to write it)".to_owned(),
                });
                return view;
            }
            match read_capped(&resolved).and_then(|b| {
                serde_json::from_slice::<Doc>(&b).map_err(|e| format!("not a quality.json: {e}"))
            }) {
                Ok(doc) if doc.format_version != QUALITY_FORMAT_VERSION => {
                    view.error = Some(format!(
                        "quality.json format {} is not one this build reads ({QUALITY_FORMAT_VERSION})",
                        doc.format_version
                    ));
                }
                Ok(doc) => fill(&mut view, doc),
                Err(e) => view.error = Some(e),
            }
            view
        })
        .collect()
}

fn fill(view: &mut QualityView, doc: Doc) {
    view.passed = doc.passed;
    view.score = Some(doc.score.value.to_string());
    view.threshold = doc.threshold.map(|t| t.to_string());
    view.failures = doc.failures;
    view.parts = doc
        .score
        .parts
        .into_iter()
        .map(|p| ScorePartView {
            dimension: p.dimension,
            measured: p.measured,
            cost: p.cost.to_string(),
            cap: p.cap.to_string(),
            explanation: p.explanation,
        })
        .collect();
    view.conditions = doc
        .conditions
        .into_iter()
        .map(|c| ConditionView {
            detail: match c.error {
                Some(e) => format!("could not be evaluated: {e}"),
                None => c
                    .seen
                    .iter()
                    .map(|(k, v)| format!("{k} = {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            expr: c.expr,
            passed: c.passed,
        })
        .collect();
    if let Some(f) = &doc.measures.findings {
        let n = |k: &str| f.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        view.measures.push((
            "findings".into(),
            format!(
                "{} ({} error, {} warning, {} note; {} suppressed)",
                n("total"),
                n("error"),
                n("warning"),
                n("note"),
                n("suppressed")
            ),
        ));
    }
    if let Some(c) = &doc.measures.coverage {
        view.measures.push((
            "coverage".into(),
            format!(
                "{} % of {} lines ({} covered)",
                c.lines.percent, c.lines.total, c.lines.covered
            ),
        ));
        if let Some(b) = &c.branches {
            view.measures.push((
                "branch coverage".into(),
                format!("{} % of {} branches", b.percent, b.total),
            ));
        }
    }
    if let Some(t) = &doc.measures.tests {
        let n = |k: &str| t.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        view.measures.push((
            "tests".into(),
            format!(
                "{} ({} passed, {} failed, {} skipped)",
                n("total"),
                n("passed"),
                n("failed"),
                n("skipped")
            ),
        ));
    }
    view.coverage = doc
        .coverage_sources
        .into_iter()
        .map(|s| CoverageRow {
            lines: format!("{} / {}", s.totals.lines.covered, s.totals.lines.total),
            percent: s.totals.lines.percent.to_string(),
            branches: s
                .totals
                .branches
                .map(|b| format!("{} % ({} / {})", b.percent, b.covered, b.total)),
            name: s.name,
            path: s.path,
        })
        .collect();
    let shown = doc.findings.len().min(TOP);
    view.findings_more = (doc.findings.len() - shown) as u64 + doc.findings_omitted;
    view.findings = doc
        .findings
        .into_iter()
        .take(TOP)
        .map(|f| FindingView {
            at: match (&f.file, f.line) {
                (Some(file), Some(line)) => format!("{file}:{line}"),
                (Some(file), None) => file.clone(),
                _ => String::new(),
            },
            level: f.level,
            tool: f.tool,
            rule: f.rule,
            message: truncate(&f.message, 200),
        })
        .collect();
    view.failed_tests = doc
        .failed_tests
        .into_iter()
        .take(TOP)
        .map(|t| (t.name, truncate(&t.message, 200)))
        .collect();
    view.sarif = doc.sarif;
}

/// Every `secrets.scan` phase, from its outputs.
pub(crate) fn secrets(record: &RunRecord) -> Vec<SecretsView> {
    record
        .phases
        .iter()
        .filter(|(_, p)| p.kind == "secrets.scan")
        .map(|(id, p)| SecretsView {
            phase: id.to_string(),
            status: p.status.as_str(),
            class: crate::view::status_class(p),
            findings: p.outputs.get("findings").cloned(),
            files: p.outputs.get("files").cloned(),
            report: p.outputs.get("report").cloned(),
            reason: p.reason.clone(),
        })
        .collect()
}
