//! The `quality` kind: reads SARIF, coverage and JUnit files, computes measures and a
//! score, checks the conditions and the threshold, and writes `quality.json` and a merged
//! SARIF log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use orch_core::errors::RegistryError;
use orch_core::registry::Kind;
use orch_core::{
    Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext, Registry,
};
use serde::{Deserialize, Serialize};

use crate::coverage::{self, FileLines};
use crate::errors::QualityError;
use crate::measure::{
    self, ConditionResult, CoverageSource, InputSummary, MAX_FINDINGS, Measures,
    QUALITY_FORMAT_VERSION, QualityReport,
};
use crate::sarif::{self, Level};
use crate::util;
use crate::{inputs, junit};

/// One pattern or several.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Patterns {
    /// None.
    #[default]
    #[serde(skip)]
    None,
    /// One pattern.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Patterns {
    /// The patterns as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// The `with` table of a `quality` phase.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySettings {
    /// SARIF 2.1.0 files (globs, relative to the pipeline's directory).
    #[serde(default)]
    pub sarif: Patterns,
    /// Coverage reports: Cobertura XML or LCOV (globs).
    #[serde(default)]
    pub coverage: Patterns,
    /// JUnit XML files (globs).
    #[serde(default)]
    pub junit: Patterns,
    /// CEL expressions over the measures; every one must hold.
    #[serde(default)]
    pub conditions: Vec<String>,
    /// The lowest score (0-100) that passes.
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// The inputs of an evaluation, with templates rendered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// SARIF patterns.
    pub sarif: Vec<String>,
    /// Coverage patterns.
    pub coverage: Vec<String>,
    /// JUnit patterns.
    pub junit: Vec<String>,
    /// Conditions.
    pub conditions: Vec<String>,
    /// Threshold.
    pub threshold: Option<f64>,
}

/// What [`evaluate`] produces: the report and the merged SARIF log (when there was SARIF).
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The record (`quality.json`).
    pub report: QualityReport,
    /// The merged SARIF log.
    pub merged_sarif: Option<serde_json::Value>,
}

fn shown(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Reads the inputs (patterns relative to `base`) and evaluates them. Errors are about
/// inputs that cannot be read; a failing gate is a report with `passed = false`.
pub fn evaluate(inputs: &Inputs, base: &Path, phase: &str) -> Result<Evaluation, QualityError> {
    if inputs.sarif.is_empty() && inputs.coverage.is_empty() && inputs.junit.is_empty() {
        return Err(QualityError::NoInputs);
    }
    let sarif_files = inputs::expand("sarif", &inputs.sarif, base)?;
    let coverage_files = inputs::expand("coverage", &inputs.coverage, base)?;
    let junit_files = inputs::expand("junit", &inputs.junit, base)?;

    let mut summaries = Vec::new();
    let mut measures = Measures::default();
    let mut logs = Vec::new();
    for path in &sarif_files {
        let log = sarif::read(path)?;
        let mut by_tool: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &log.tools {
            by_tool.entry(t.as_str()).or_default();
        }
        for f in &log.findings {
            *by_tool.entry(f.tool.as_str()).or_default() += 1;
        }
        summaries.push(InputSummary {
            path: shown(path, base),
            format: "sarif".into(),
            summary: by_tool
                .iter()
                .map(|(t, n)| format!("{t}: {n} finding{}", if *n == 1 { "" } else { "s" }))
                .collect::<Vec<_>>()
                .join(", "),
        });
        logs.push(log);
    }
    let mut findings: Vec<sarif::Finding> = Vec::new();
    let mut suppressed = 0;
    for log in &logs {
        findings.extend(log.findings.iter().cloned());
        suppressed += log.suppressed;
    }
    let mut rules = Vec::new();
    if !logs.is_empty() {
        let (counts, by_rule) = measure::count_findings(&findings, suppressed);
        measures.findings = Some(counts);
        measures.rules = by_rule.iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.rule.clone()).or_default() += r.count;
            m
        });
        rules = by_rule;
    }

    let mut all_lines = FileLines::new();
    let mut coverage_sources = Vec::new();
    for path in &coverage_files {
        let report = coverage::read(path)?;
        let totals = coverage::totals(&report.files);
        summaries.push(InputSummary {
            path: shown(path, base),
            format: report.format.into(),
            summary: format!(
                "{} % of {} lines{}",
                totals.lines.percent,
                totals.lines.total,
                totals
                    .branches
                    .map(|b| format!(", {} % of {} branches", b.percent, b.total))
                    .unwrap_or_default()
            ),
        });
        coverage_sources.push(CoverageSource {
            name: coverage::source_name(path),
            path: shown(path, base),
            format: report.format.into(),
            totals,
        });
        // Reports of different services may name files alike (`app.py`): keep them apart.
        let scoped: FileLines = report
            .files
            .into_iter()
            .map(|(f, l)| (format!("{}\u{0}{f}", path.display()), l))
            .collect();
        coverage::merge_into(&mut all_lines, &scoped);
    }
    if !coverage_files.is_empty() {
        measures.coverage = Some(coverage::totals(&all_lines));
    }

    let mut failed_tests = Vec::new();
    if !junit_files.is_empty() {
        let mut counts = junit::TestCounts::default();
        for path in &junit_files {
            let r = junit::read(path)?;
            summaries.push(InputSummary {
                path: shown(path, base),
                format: "junit".into(),
                summary: format!(
                    "{} tests, {} failed, {} skipped",
                    r.counts.total, r.counts.failed, r.counts.skipped
                ),
            });
            counts.add(r.counts);
            failed_tests.extend(r.failed);
        }
        measures.tests = Some(counts);
    }
    failed_tests.truncate(MAX_FINDINGS);

    let score = measure::score(&measures);
    let conditions = measure::conditions(&inputs.conditions, &measures, score.value);
    let mut failures: Vec<String> = conditions
        .iter()
        .filter(|c| !c.passed)
        .map(ConditionResult::describe)
        .collect();
    if let Some(t) = inputs.threshold
        && score.value < t
    {
        let costs = score
            .parts
            .iter()
            .filter(|p| p.cost > 0.0)
            .map(|p| format!("{} -{}", p.dimension, p.cost))
            .collect::<Vec<_>>()
            .join(", ");
        failures.push(format!(
            "score {} is below the threshold {t}{}",
            score.value,
            if costs.is_empty() {
                String::new()
            } else {
                format!(" ({costs})")
            }
        ));
    }

    findings.retain(|f| f.level != Level::None);
    findings.sort_by(|a, b| {
        a.level
            .cmp(&b.level)
            .then_with(|| a.file.cmp(&b.file))
            .then_with(|| a.line.cmp(&b.line))
    });
    let omitted = findings.len().saturating_sub(MAX_FINDINGS) as u64;
    findings.truncate(MAX_FINDINGS);

    let merged_sarif = (!logs.is_empty()).then(|| sarif::merge(&logs));
    Ok(Evaluation {
        report: QualityReport {
            format_version: QUALITY_FORMAT_VERSION,
            phase: phase.to_owned(),
            passed: failures.is_empty(),
            failures,
            score,
            threshold: inputs.threshold,
            measures,
            conditions,
            coverage_sources,
            rules,
            findings,
            findings_omitted: omitted,
            failed_tests,
            inputs: summaries,
            sarif: None,
        },
        merged_sarif,
    })
}

/// Where a `quality` phase writes: `RUN_DIR/quality/PHASE/` (`quality.json`,
/// `quality.sarif`). Reports find it there even when the phase failed.
pub fn output_dir(run_dir: &Path, phase: &str) -> PathBuf {
    run_dir.join("quality").join(phase)
}

/// The `quality` phase.
#[derive(Clone, Debug)]
pub struct QualityPhase {
    settings: QualitySettings,
}

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new(
            "quality",
            "gate on SARIF findings, coverage and tests: conditions and a 0-100 score",
        ),
        |spec: &PhaseSpec, settings: QualitySettings| {
            let at = |message: String| spec.with.error(message);
            if matches!(settings.sarif, Patterns::None)
                && matches!(settings.coverage, Patterns::None)
                && matches!(settings.junit, Patterns::None)
            {
                return Err(at(QualityError::NoInputs.to_string()));
            }
            for c in &settings.conditions {
                orch_core::expr::check(c).map_err(|e| at(e.to_string()))?;
            }
            if let Some(t) = settings.threshold
                && !(0.0..=100.0).contains(&t)
            {
                return Err(at(format!("`threshold` is {t}, not between 0 and 100")));
            }
            Ok(QualityPhase { settings })
        },
    )
}

impl QualityPhase {
    fn render(&self, ctx: &PhaseContext) -> Result<Inputs, PhaseError> {
        let list = |key: &str, p: &Patterns| -> Result<Vec<String>, PhaseError> {
            p.to_vec()
                .iter()
                .map(|s| {
                    ctx.render(s)
                        .map_err(|e| PhaseError::failed(format!("cannot render `{key}`: {e}")))
                })
                .collect()
        };
        Ok(Inputs {
            sarif: list("sarif", &self.settings.sarif)?,
            coverage: list("coverage", &self.settings.coverage)?,
            junit: list("junit", &self.settings.junit)?,
            conditions: self.settings.conditions.clone(),
            threshold: self.settings.threshold,
        })
    }
}

#[async_trait]
impl Phase for QualityPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let mut d = Description::new("measure findings, coverage and tests; check the gate");
        for (key, p) in [
            ("sarif", &self.settings.sarif),
            ("coverage", &self.settings.coverage),
            ("junit", &self.settings.junit),
        ] {
            let v = p.to_vec();
            if !v.is_empty() {
                d = d.detail(
                    key,
                    v.iter()
                        .map(|s| ctx.render(s))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
        }
        for c in &self.settings.conditions {
            d = d.detail("condition", c.clone());
        }
        if let Some(t) = self.settings.threshold {
            d = d.detail("threshold", t.to_string());
        }
        d.detail(
            "report",
            format!("RUN_DIR/quality/{}/quality.json", ctx.phase_id()),
        )
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let inputs = self.render(ctx)?;
        let base = ctx.base_dir().to_owned();
        let phase = ctx.phase_id().to_string();
        let dir = output_dir(ctx.run_dir(), &phase);
        let evaluation = util::blocking(ctx, move || evaluate(&inputs, &base, &phase))
            .await?
            .map_err(|e| PhaseError::from_error(&e))?;
        let Evaluation {
            mut report,
            merged_sarif,
        } = evaluation;
        let mut artifacts = Vec::new();
        if let Some(merged) = &merged_sarif {
            let path = dir.join("quality.sarif");
            let (size, digest) =
                util::write_json(&path, merged).map_err(|e| PhaseError::from_error(&e))?;
            report.sarif = Some(path.display().to_string());
            artifacts.push(util::artifact(
                "sarif",
                "quality.sarif",
                &path,
                size,
                digest,
            ));
        }
        let json = dir.join("quality.json");
        let (size, digest) =
            util::write_json(&json, &report).map_err(|e| PhaseError::from_error(&e))?;
        artifacts.push(util::artifact(
            "report",
            "quality.json",
            &json,
            size,
            digest,
        ));

        for line in log_lines(&report) {
            ctx.log(line);
        }
        if !report.passed {
            return Err(PhaseError::failed(format!(
                "quality gate failed: {}",
                report.failures.join("; ")
            )));
        }
        let m = &report.measures;
        let f = m.findings.unwrap_or_default();
        let mut outputs = vec![
            ("score", report.score.value.to_string()),
            ("passed", "true".to_owned()),
            ("findings", f.total.to_string()),
            ("findings_error", f.error.to_string()),
            ("findings_warning", f.warning.to_string()),
            ("report", json.display().to_string()),
        ];
        if let Some(c) = &m.coverage {
            outputs.push(("coverage", c.lines.percent.to_string()));
            if let Some(b) = &c.branches {
                outputs.push(("branch_coverage", b.percent.to_string()));
            }
        }
        if let Some(t) = &m.tests {
            outputs.push(("tests", t.total.to_string()));
            outputs.push(("tests_failed", t.failed.to_string()));
        }
        if let Some(s) = &report.sarif {
            outputs.push(("sarif", s.clone()));
        }
        let mut outcome = PhaseOutcome::with_outputs(outputs);
        outcome.artifacts = artifacts;
        Ok(outcome)
    }
}

/// What the phase log shows: the measures, the score by dimension, each condition.
fn log_lines(r: &QualityReport) -> Vec<String> {
    let mut out = Vec::new();
    for i in &r.inputs {
        out.push(format!("{} ({}): {}", i.path, i.format, i.summary));
    }
    let parts = r
        .score
        .parts
        .iter()
        .map(|p| {
            if p.measured {
                format!("{} -{} ({})", p.dimension, p.cost, p.explanation)
            } else {
                format!("{} not measured", p.dimension)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    out.push(format!("score {}: {parts}", r.score.value));
    for c in &r.conditions {
        out.push(format!(
            "{} {}",
            if c.passed { "pass" } else { "FAIL" },
            c.describe()
        ));
    }
    if let Some(t) = r.threshold {
        out.push(format!(
            "{} score {} >= threshold {t}",
            if r.score.value >= t { "pass" } else { "FAIL" },
            r.score.value
        ));
    }
    for f in r.findings.iter().take(20) {
        let at = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("{file}:{line}"),
            (Some(file), None) => file.clone(),
            _ => "(no location)".to_owned(),
        };
        out.push(format!("{} {}/{} {at}", f.level.as_str(), f.tool, f.rule));
    }
    out
}
