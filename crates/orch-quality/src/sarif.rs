//! SARIF 2.1.0 logs (ruff, bandit, eslint, semgrep, clippy-sarif, gitleaks, `secrets.scan`)
//! read with the typed `serde-sarif` model, and merged into one log for code scanning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_sarif::sarif;

use crate::errors::InputError;
use crate::inputs;

/// The SARIF version this build reads and writes.
pub const SARIF_VERSION: &str = "2.1.0";

/// The schema URI written into SARIF logs.
pub const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The severity of a finding (SARIF `level`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `error`: a problem that must be fixed.
    Error,
    /// `warning` (the SARIF default when nothing says otherwise).
    Warning,
    /// `note`: worth knowing.
    Note,
    /// `none`: not a problem (informational results).
    None,
}

impl Level {
    /// The SARIF name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Note => "note",
            Self::None => "none",
        }
    }

    fn from_sarif(level: sarif::ResultLevel) -> Self {
        match level {
            sarif::ResultLevel::Error => Self::Error,
            sarif::ResultLevel::Warning => Self::Warning,
            sarif::ResultLevel::Note => Self::Note,
            sarif::ResultLevel::None => Self::None,
        }
    }

    fn from_value(v: &serde_json::Value) -> Option<Self> {
        match v.as_str()? {
            "error" => Some(Self::Error),
            "warning" => Some(Self::Warning),
            "note" => Some(Self::Note),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

/// One result of a SARIF log that counts as a finding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// The tool that reported it (`tool.driver.name`).
    pub tool: String,
    /// The rule id (`(no rule)` when the result names none).
    pub rule: String,
    /// Its level, after SARIF's defaulting (result, then the rule's default, then warning).
    pub level: Level,
    /// The message text, cut to 300 characters.
    pub message: String,
    /// The file, as the log gives its URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// 1-based column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
}

/// What one SARIF file holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SarifSummary {
    /// The file.
    pub path: PathBuf,
    /// The tools of its runs.
    pub tools: Vec<String>,
    /// Findings (results of kind `fail`, not suppressed).
    pub findings: Vec<Finding>,
    /// Results suppressed in the log (an accepted `suppressions` entry).
    pub suppressed: u64,
    /// The log itself, as JSON (for the merged log).
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    version: Option<serde_json::Value>,
}

fn malformed(path: &Path, e: &serde_json::Error) -> InputError {
    let message = e.to_string();
    // serde_json appends " at line L column C"; keep the message without it.
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(m, _)| m)
        .to_owned();
    InputError::Malformed {
        path: path.to_owned(),
        format: "SARIF",
        line: e.line().max(1),
        column: e.column().max(1),
        message,
    }
}

/// Reads a SARIF file: JSON syntax, version 2.1.0, then the typed SARIF model.
pub fn read(path: &Path) -> Result<SarifSummary, InputError> {
    let text = inputs::read(path, "SARIF")?;
    parse(&text, path)
}

/// Parses SARIF text (`path` is for messages).
pub fn parse(text: &str, path: &Path) -> Result<SarifSummary, InputError> {
    let head: Head = serde_json::from_str(text).map_err(|e| malformed(path, &e))?;
    match head.version {
        Some(serde_json::Value::String(v)) if v == SARIF_VERSION => {}
        Some(other) => {
            return Err(InputError::SarifVersion {
                path: path.to_owned(),
                found: match other {
                    serde_json::Value::String(s) => s,
                    v => v.to_string(),
                },
            });
        }
        None => {
            return Err(InputError::Malformed {
                path: path.to_owned(),
                format: "SARIF",
                line: 1,
                column: 1,
                message: "no `version`: not a SARIF log".to_owned(),
            });
        }
    }
    let log: sarif::Sarif = serde_json::from_str(text).map_err(|e| malformed(path, &e))?;
    let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| malformed(path, &e))?;
    if log.runs.is_empty() {
        return Err(InputError::Malformed {
            path: path.to_owned(),
            format: "SARIF",
            line: 1,
            column: 1,
            message: "the log has no runs: the tool reported nothing it analysed".to_owned(),
        });
    }
    let mut summary = SarifSummary {
        path: path.to_owned(),
        raw,
        ..SarifSummary::default()
    };
    for run in &log.runs {
        let driver = &run.tool.driver;
        summary.tools.push(driver.name.clone());
        let rules = driver.rules.as_deref().unwrap_or_default();
        for result in run.results.as_deref().unwrap_or_default() {
            if result
                .kind
                .as_ref()
                .is_some_and(|k| !matches!(k, sarif::ResultKind::Fail))
            {
                continue;
            }
            if is_suppressed(result) {
                summary.suppressed += 1;
                continue;
            }
            let rule_desc = result
                .rule_index
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| rules.get(i))
                .or_else(|| {
                    let id = result.rule_id.as_deref()?;
                    rules.iter().find(|r| r.id == id)
                });
            let rule = result
                .rule_id
                .clone()
                .or_else(|| result.rule.as_ref().and_then(|r| r.id.clone()))
                .or_else(|| rule_desc.map(|r| r.id.clone()))
                .unwrap_or_else(|| "(no rule)".to_owned());
            let level = result
                .level
                .map(Level::from_sarif)
                .or_else(|| {
                    rule_desc
                        .and_then(|r| r.default_configuration.as_ref())
                        .and_then(|c| c.level.as_ref())
                        .and_then(Level::from_value)
                })
                .unwrap_or(Level::Warning);
            let physical = result
                .locations
                .as_deref()
                .and_then(|l| l.first())
                .and_then(|l| l.physical_location.as_ref());
            let file = physical
                .and_then(|p| p.artifact_location.as_ref())
                .and_then(|a| a.uri.as_deref())
                .map(display_uri);
            let region = physical.and_then(|p| p.region.as_ref());
            let message = result
                .message
                .text
                .clone()
                .or_else(|| result.message.markdown.clone())
                .or_else(|| result.message.id.clone())
                .unwrap_or_default();
            summary.findings.push(Finding {
                tool: driver.name.clone(),
                rule,
                level,
                message: cut(message.trim(), 300),
                file,
                line: region
                    .and_then(|r| r.start_line)
                    .and_then(|l| u64::try_from(l).ok()),
                column: region
                    .and_then(|r| r.start_column)
                    .and_then(|c| u64::try_from(c).ok()),
            });
        }
    }
    Ok(summary)
}

fn is_suppressed(result: &sarif::Result) -> bool {
    result.suppressions.as_deref().is_some_and(|s| {
        s.iter().any(|s| {
            // A suppression under review or rejected does not hide the result.
            !matches!(
                s.status.as_ref().and_then(|v| v.as_str()),
                Some("underReview" | "rejected")
            )
        })
    })
}

/// `file:///abs/path` shown as `/abs/path`; relative URIs unchanged.
fn display_uri(uri: &str) -> String {
    uri.strip_prefix("file://").unwrap_or(uri).to_owned()
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Merges SARIF logs into one (their runs, in order), for upload to GitHub code scanning.
///
/// Code scanning takes one category per run: a run without `automationDetails.id` gets
/// `orch/TOOL/FILE-STEM/` so runs of the same tool from different files stay apart.
pub fn merge(logs: &[SarifSummary]) -> serde_json::Value {
    let mut runs = Vec::new();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    for log in logs {
        let stem = log
            .path
            .file_stem()
            .map_or_else(|| "sarif".to_owned(), |s| s.to_string_lossy().into_owned());
        for run in log
            .raw
            .get("runs")
            .and_then(|r| r.as_array())
            .into_iter()
            .flatten()
        {
            let mut run = run.clone();
            let has_id = run
                .pointer("/automationDetails/id")
                .and_then(|v| v.as_str())
                .is_some_and(|s| !s.is_empty());
            if !has_id && let Some(obj) = run.as_object_mut() {
                let tool = obj
                    .get("tool")
                    .and_then(|t| t.pointer("/driver/name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("tool")
                    .to_owned();
                let base = format!("orch/{tool}/{stem}");
                let n = used.entry(base.clone()).or_insert(0);
                *n += 1;
                let id = if *n == 1 {
                    format!("{base}/")
                } else {
                    format!("{base}-{n}/")
                };
                obj.insert(
                    "automationDetails".to_owned(),
                    serde_json::json!({ "id": id }),
                );
            }
            runs.push(run);
        }
    }
    serde_json::json!({
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("r.sarif")
    }

    #[test]
    fn levels_default_from_the_rule_then_warning() {
        let text = r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"t","rules":[
            {"id":"R1","defaultConfiguration":{"level":"error"}}]}},
            "results":[
              {"ruleId":"R1","message":{"text":"a"}},
              {"ruleId":"R2","message":{"text":"b"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"file:///x/a.py"},"region":{"startLine":3,"startColumn":2}}}]},
              {"ruleId":"R2","level":"note","message":{"text":"c"}},
              {"ruleId":"R2","kind":"pass","message":{"text":"d"}},
              {"ruleId":"R2","message":{"text":"e"},"suppressions":[{"kind":"inSource"}]}
            ]}]}"#;
        let s = parse(text, p()).unwrap();
        let levels: Vec<_> = s.findings.iter().map(|f| f.level).collect();
        assert_eq!(levels, [Level::Error, Level::Warning, Level::Note]);
        assert_eq!(s.suppressed, 1);
        assert_eq!(s.findings[1].file.as_deref(), Some("/x/a.py"));
        assert_eq!(
            (s.findings[1].line, s.findings[1].column),
            (Some(3), Some(2))
        );
    }

    #[test]
    fn other_versions_and_broken_logs_are_errors() {
        let e = parse(r#"{"version":"2.0.0","runs":[]}"#, p()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "r.sarif: SARIF version 2.0.0 is not supported: only SARIF 2.1.0 is read"
        );
        let e = parse(
            "{\"version\":\"2.1.0\",\n \"runs\": [ {\"tool\": 3} ]}",
            p(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("r.sarif:2:"), "{e}");
        let e = parse("{\"version\": \"2.1.0\", \"runs\": [", p()).unwrap_err();
        assert!(e.to_string().starts_with("r.sarif:1:"), "{e}");
        let e = parse(r#"{"version":"2.1.0","runs":[]}"#, p()).unwrap_err();
        assert!(e.to_string().contains("no runs"), "{e}");
        let e = parse(r#"{"runs":[]}"#, p()).unwrap_err();
        assert!(e.to_string().contains("no `version`"), "{e}");
    }
}
