//! Measures, the score and conditions: what the `quality` kind computes from its inputs,
//! and `quality.json`, the record of it that reports read.
//!
//! # The score (0-100)
//!
//! The score starts at 100; each measured dimension costs points, up to its cap:
//!
//! | dimension | cost | cap |
//! |---|---|---|
//! | findings | 10 per `error`, 2 per `warning`, 0.5 per `note` | 40 |
//! | coverage | 0.3 per point of line coverage under 100; with branch data, 0.2 per line point and 0.1 per branch point | 30 |
//! | tests | 30 × failed / (passed + failed) | 30 |
//!
//! A dimension with no input (no `sarif`, `coverage` or `junit`) costs nothing and is
//! shown as "not measured". The score is `100 - sum of costs`, rounded to one decimal.
//! Documentation and duplication are not scored: none of the formats read here carries
//! them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::coverage::{CoverageTotals, Ratio};
use crate::junit::{FailedTest, TestCounts};
use crate::sarif::{Finding, Level};

/// The version of the `quality.json` format written by this build.
pub const QUALITY_FORMAT_VERSION: u32 = 1;

/// Points per finding, by level.
pub const FINDING_COST: [(Level, f64); 3] = [
    (Level::Error, 10.0),
    (Level::Warning, 2.0),
    (Level::Note, 0.5),
];
/// The most findings can cost.
pub const FINDINGS_CAP: f64 = 40.0;
/// The most coverage can cost.
pub const COVERAGE_CAP: f64 = 30.0;
/// The most failed tests can cost.
pub const TESTS_CAP: f64 = 30.0;

/// Findings by level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingCounts {
    /// `error` findings.
    pub error: u64,
    /// `warning` findings.
    pub warning: u64,
    /// `note` findings.
    pub note: u64,
    /// `none` results (informational; not counted in `total`).
    pub none: u64,
    /// `error + warning + note`.
    pub total: u64,
    /// Results the logs mark suppressed (not counted).
    pub suppressed: u64,
}

/// Everything measured, by dimension. A dimension is `None` when it had no input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measures {
    /// Findings by level (from `sarif`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub findings: Option<FindingCounts>,
    /// Findings by rule id (from `sarif`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, u64>,
    /// Coverage (from `coverage`), all reports merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<CoverageTotals>,
    /// Tests (from `junit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestCounts>,
}

impl Measures {
    /// The values conditions see, as CEL variables:
    ///
    /// | name | value |
    /// |---|---|
    /// | `score` | the score, 0-100 |
    /// | `findings` | `{error, warning, note, none, total, suppressed}` |
    /// | `rules` | findings by rule id: `rules["S101"]` |
    /// | `coverage` | line coverage, percent |
    /// | `branch_coverage` | branch coverage, percent (only when the reports have branches) |
    /// | `lines`, `branches` | `{covered, total}` |
    /// | `tests` | `{total, passed, failed, errors, skipped}` |
    ///
    /// A dimension without input is absent, so a condition on it fails to evaluate instead
    /// of reading a zero.
    pub fn variables(&self, score: f64) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("score".into(), serde_json::json!(score));
        if let Some(f) = &self.findings {
            m.insert("findings".into(), serde_json::json!(f));
            m.insert("rules".into(), serde_json::json!(self.rules));
        }
        if let Some(c) = &self.coverage {
            m.insert("coverage".into(), serde_json::json!(c.lines.percent));
            m.insert(
                "lines".into(),
                serde_json::json!({"covered": c.lines.covered, "total": c.lines.total}),
            );
            if let Some(b) = &c.branches {
                m.insert("branch_coverage".into(), serde_json::json!(b.percent));
                m.insert(
                    "branches".into(),
                    serde_json::json!({"covered": b.covered, "total": b.total}),
                );
            }
        }
        if let Some(t) = &self.tests {
            m.insert("tests".into(), serde_json::json!(t));
        }
        m
    }
}

/// What one dimension cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScorePart {
    /// `findings`, `coverage` or `tests`.
    pub dimension: String,
    /// Whether it had input.
    pub measured: bool,
    /// Points it cost.
    pub cost: f64,
    /// The most it can cost.
    pub cap: f64,
    /// How the cost was reached (`2 error × 10 + 3 warning × 2 = 26`).
    pub explanation: String,
}

/// The score and how it was reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// 0-100, one decimal.
    pub value: f64,
    /// Each dimension's cost.
    pub parts: Vec<ScorePart>,
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Computes the score of measures (see the module docs for the formula).
pub fn score(m: &Measures) -> Score {
    let mut parts = Vec::new();
    parts.push(match &m.findings {
        Some(f) => {
            let mut terms = Vec::new();
            let mut raw = 0.0;
            for (level, cost) in FINDING_COST {
                let n = match level {
                    Level::Error => f.error,
                    Level::Warning => f.warning,
                    _ => f.note,
                };
                if n > 0 {
                    terms.push(format!("{n} {} × {cost}", level.as_str()));
                    raw += n as f64 * cost;
                }
            }
            let cost = raw.min(FINDINGS_CAP);
            let explanation = if terms.is_empty() {
                "no findings".to_owned()
            } else if raw > FINDINGS_CAP {
                format!("{} = {raw}, capped at {FINDINGS_CAP}", terms.join(" + "))
            } else {
                format!("{} = {}", terms.join(" + "), round2(raw))
            };
            ScorePart {
                dimension: "findings".into(),
                measured: true,
                cost: round2(cost),
                cap: FINDINGS_CAP,
                explanation,
            }
        }
        None => not_measured("findings", FINDINGS_CAP, "no `sarif` input"),
    });
    parts.push(match &m.coverage {
        Some(c) => {
            let line_gap = 100.0 - c.lines.percent;
            let (cost, explanation) = match &c.branches {
                Some(b) => {
                    let branch_gap = 100.0 - b.percent;
                    (
                        0.2 * line_gap + 0.1 * branch_gap,
                        format!(
                            "0.2 × {} line points + 0.1 × {} branch points under 100",
                            round2(line_gap),
                            round2(branch_gap)
                        ),
                    )
                }
                None => (
                    0.3 * line_gap,
                    format!("0.3 × {} line points under 100", round2(line_gap)),
                ),
            };
            ScorePart {
                dimension: "coverage".into(),
                measured: true,
                cost: round2(cost.clamp(0.0, COVERAGE_CAP)),
                cap: COVERAGE_CAP,
                explanation,
            }
        }
        None => not_measured("coverage", COVERAGE_CAP, "no `coverage` input"),
    });
    parts.push(match &m.tests {
        Some(t) => {
            let ran = t.passed + t.failed;
            let (cost, explanation) = if ran == 0 {
                (0.0, format!("no test ran ({} skipped)", t.skipped))
            } else {
                (
                    TESTS_CAP * t.failed as f64 / ran as f64,
                    format!("{TESTS_CAP} × {} failed / {ran} run", t.failed),
                )
            };
            ScorePart {
                dimension: "tests".into(),
                measured: true,
                cost: round2(cost),
                cap: TESTS_CAP,
                explanation,
            }
        }
        None => not_measured("tests", TESTS_CAP, "no `junit` input"),
    });
    let total: f64 = parts.iter().map(|p| p.cost).sum();
    Score {
        value: round1((100.0 - total).max(0.0)),
        parts,
    }
}

fn not_measured(dimension: &str, cap: f64, why: &str) -> ScorePart {
    ScorePart {
        dimension: dimension.into(),
        measured: false,
        cost: 0.0,
        cap,
        explanation: format!("not measured: {why}"),
    }
}

/// A condition and its verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConditionResult {
    /// The CEL expression.
    pub expr: String,
    /// Whether it held.
    pub passed: bool,
    /// The measures it read, as `(name, value)`.
    pub seen: Vec<(String, String)>,
    /// Why it could not be evaluated (then `passed` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ConditionResult {
    /// One line: `coverage >= 80 is false (coverage = 71.3)`.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("`{}` could not be evaluated: {e}", self.expr);
        }
        let seen = self
            .seen
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "`{}` is {}{}",
            self.expr,
            self.passed,
            if seen.is_empty() {
                String::new()
            } else {
                format!(" ({seen})")
            }
        )
    }
}

/// Evaluates conditions against measures and a score.
pub fn conditions(conditions: &[String], m: &Measures, score: f64) -> Vec<ConditionResult> {
    let vars = m.variables(score);
    conditions
        .iter()
        .map(|expr| match orch_core::expr::eval_values(expr, &vars) {
            Ok(v) => ConditionResult {
                expr: expr.clone(),
                passed: v.value,
                seen: v.seen,
                error: None,
            },
            Err(e) => {
                let mut message = match &e {
                    orch_core::expr::ExprError::Eval { message, .. }
                    | orch_core::expr::ExprError::Parse { message, .. } => message.clone(),
                    orch_core::expr::ExprError::NotBool { value, .. } => {
                        format!("it is {value}, not a boolean")
                    }
                };
                let missing: Vec<&str> = [
                    ("findings", "sarif"),
                    ("rules", "sarif"),
                    ("coverage", "coverage"),
                    ("lines", "coverage"),
                    ("tests", "junit"),
                ]
                .into_iter()
                .filter(|(name, _)| !vars.contains_key(*name) && expr.contains(name))
                .map(|(_, input)| input)
                .collect();
                if !missing.is_empty() {
                    message.push_str(&format!(
                        " (not measured: no `{}` input)",
                        missing.join("`, `")
                    ));
                } else if (expr.contains("branch_coverage") || expr.contains("branches"))
                    && !vars.contains_key("branch_coverage")
                {
                    message.push_str(" (the coverage reports have no branch data)");
                }
                ConditionResult {
                    expr: expr.clone(),
                    passed: false,
                    seen: Vec::new(),
                    error: Some(message),
                }
            }
        })
        .collect()
}

/// A finding for the report: what [`Finding`] holds, with the input it came from.
pub type ReportFinding = Finding;

/// Findings of one rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleCount {
    /// The tool.
    pub tool: String,
    /// The rule id.
    pub rule: String,
    /// The most severe level seen for it.
    pub level: Level,
    /// How many findings.
    pub count: u64,
}

/// One input file and what it gave.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputSummary {
    /// The file, relative to the pipeline's directory when it is below it.
    pub path: String,
    /// `sarif`, `cobertura`, `lcov`, `junit`.
    pub format: String,
    /// One line: `ruff: 3 findings`, `87.5 % of 120 lines`, `14 tests, 1 failed`.
    pub summary: String,
}

/// Coverage of one report (one service, by convention one report per service).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CoverageSource {
    /// Its name ([`crate::coverage::source_name`]).
    pub name: String,
    /// The file.
    pub path: String,
    /// `cobertura` or `lcov`.
    pub format: String,
    /// Its totals.
    pub totals: CoverageTotals,
}

/// The record of a `quality` evaluation: `quality.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// [`QUALITY_FORMAT_VERSION`].
    pub format_version: u32,
    /// The phase that wrote it.
    pub phase: String,
    /// Whether every condition held and the score reached the threshold.
    pub passed: bool,
    /// Why it did not pass (one line per reason), empty when it passed.
    pub failures: Vec<String>,
    /// The score and its parts.
    pub score: Score,
    /// The threshold, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The measures.
    pub measures: Measures,
    /// The conditions and their verdicts.
    pub conditions: Vec<ConditionResult>,
    /// Coverage per report.
    pub coverage_sources: Vec<CoverageSource>,
    /// Findings by rule, most severe and most frequent first.
    pub rules: Vec<RuleCount>,
    /// Findings, most severe first (at most [`MAX_FINDINGS`]).
    pub findings: Vec<ReportFinding>,
    /// How many findings were left out of `findings`.
    pub findings_omitted: u64,
    /// Failed tests (at most [`MAX_FINDINGS`]).
    pub failed_tests: Vec<FailedTest>,
    /// Every input file.
    pub inputs: Vec<InputSummary>,
    /// The merged SARIF log, when there were SARIF inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sarif: Option<String>,
}

/// The most findings (and failed tests) kept in `quality.json`.
pub const MAX_FINDINGS: usize = 500;

/// Counts findings by level and rule.
pub fn count_findings(findings: &[Finding], suppressed: u64) -> (FindingCounts, Vec<RuleCount>) {
    let mut c = FindingCounts {
        suppressed,
        ..FindingCounts::default()
    };
    let mut rules: BTreeMap<(String, String), (Level, u64)> = BTreeMap::new();
    for f in findings {
        match f.level {
            Level::Error => c.error += 1,
            Level::Warning => c.warning += 1,
            Level::Note => c.note += 1,
            Level::None => {
                c.none += 1;
                continue;
            }
        }
        let e = rules
            .entry((f.tool.clone(), f.rule.clone()))
            .or_insert((f.level, 0));
        e.0 = e.0.min(f.level);
        e.1 += 1;
    }
    c.total = c.error + c.warning + c.note;
    let mut rules: Vec<RuleCount> = rules
        .into_iter()
        .map(|((tool, rule), (level, count))| RuleCount {
            tool,
            rule,
            level,
            count,
        })
        .collect();
    rules.sort_by(|a, b| a.level.cmp(&b.level).then(b.count.cmp(&a.count)));
    (c, rules)
}

/// Ratio helper re-exported for callers building measures by hand.
pub fn ratio(covered: u64, total: u64) -> Ratio {
    Ratio::new(covered, total)
}
