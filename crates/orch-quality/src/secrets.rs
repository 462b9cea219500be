//! The `secrets.scan` kind: finds credentials committed in a tree, offline, and writes
//! SARIF. A found value is never printed, logged or written: findings carry the rule, the
//! file, the line and column, and a short fingerprint that is not derived from the value.
//!
//! Rules ([`RULES`]): private key blocks (with a key body, not just the header), AWS access
//! key ids and secret keys, GCP API keys and service-account key files, Azure storage
//! account keys, GitHub, GitLab and Slack tokens and Slack webhooks by their known formats,
//! passwords in URLs, high-entropy quoted values assigned to secret-looking names, and
//! values of secret-looking variables in committed `.env` files.
//!
//! Not reported: values that read as placeholders (`example`, `changeme`, `your-...`,
//! `xxx`, `${VAR}`, `<...>`, ...), AWS's documented example keys, low-entropy values,
//! UUIDs, `.env.example`-style templates, lines marked `orch:allow-secret`, files ignored
//! by `.gitignore` or the `ignore` list, binary files and files over 2 MiB.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use async_trait::async_trait;
use orch_core::errors::RegistryError;
use orch_core::registry::Kind;
use orch_core::{
    Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext, Registry,
};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::errors::SecretsError;
use crate::sarif::{SARIF_SCHEMA, SARIF_VERSION};
use crate::util;

/// Files larger than this are not scanned (2 MiB).
pub const MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

/// A marker that, on a line, suppresses findings on that line.
pub const ALLOW_MARKER: &str = "orch:allow-secret";

/// A detection rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Its id (the SARIF `ruleId`).
    pub id: &'static str,
    /// What it finds.
    pub description: &'static str,
}

/// Every rule, in the order they are tried on a line (specific formats first).
pub const RULES: [Rule; 13] = [
    Rule {
        id: "private-key",
        description: "a private key block",
    },
    Rule {
        id: "aws-access-key-id",
        description: "an AWS access key id",
    },
    Rule {
        id: "aws-secret-access-key",
        description: "an AWS secret access key",
    },
    Rule {
        id: "gcp-api-key",
        description: "a Google Cloud API key",
    },
    Rule {
        id: "gcp-service-account-key",
        description: "a Google Cloud service-account key file",
    },
    Rule {
        id: "azure-storage-key",
        description: "an Azure storage account key",
    },
    Rule {
        id: "github-token",
        description: "a GitHub token",
    },
    Rule {
        id: "gitlab-token",
        description: "a GitLab personal access token",
    },
    Rule {
        id: "slack-token",
        description: "a Slack token",
    },
    Rule {
        id: "slack-webhook",
        description: "a Slack incoming-webhook URL",
    },
    Rule {
        id: "url-credentials",
        description: "a password in a URL",
    },
    Rule {
        id: "secret-assignment",
        description: "a high-entropy value assigned to a secret-looking name",
    },
    Rule {
        id: "dotenv-value",
        description: "a value for a secret-looking variable in a committed .env file",
    },
];

fn rule(id: &str) -> Rule {
    RULES
        .iter()
        .copied()
        .find(|r| r.id == id)
        .unwrap_or(RULES[0])
}

/// A regex known to be valid (they are literals of this file, checked by the tests).
fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("rule pattern {pattern}: {e}"))
}

static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    vec![
        (
            "aws-access-key-id",
            re(r"\b((?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b"),
        ),
        (
            "aws-secret-access-key",
            re(
                r#"(?i)aws_?secret_?(?:access_?)?key["']?\s*(?::=|=>|[:=])\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
            ),
        ),
        (
            "gcp-api-key",
            re(r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)"),
        ),
        (
            "gcp-service-account-key",
            re(r#""private_key_id"\s*:\s*"([0-9a-f]{40})""#),
        ),
        ("azure-storage-key", re(r"AccountKey=([A-Za-z0-9+/]{86}==)")),
        (
            "github-token",
            re(r"\b(gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b"),
        ),
        (
            "gitlab-token",
            re(r"\b(glpat-[A-Za-z0-9_-]{20,50})(?:[^A-Za-z0-9_-]|$)"),
        ),
        ("slack-token", re(r"\b(xox[baprs]-[0-9A-Za-z-]{10,72})\b")),
        (
            "slack-webhook",
            re(r"https://hooks\.slack\.com/services/(T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/[A-Za-z0-9]{24})"),
        ),
        (
            "url-credentials",
            re(r#"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/@"'<>]+:([^\s:/@"'<>]{3,})@[^\s"'<>]+"#),
        ),
    ]
});

static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|PGP|ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----")
});
static KEY_BODY: LazyLock<Regex> = LazyLock::new(|| re(r"^[A-Za-z0-9+/=]{40,}$"));
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"(?i)([A-Za-z0-9_.-]*(?:secret|passw(?:or)?d|pwd|token|api[_-]?key|access[_-]?key|private[_-]?key|auth[_-]?key|credential|signing[_-]?key|encryption[_-]?key)[A-Za-z0-9_]*)["']?\s*(?::=|=>|[:=])\s*(["'])([^"'\s]{12,})["']"#,
    )
});
static DOTENV_LINE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*)$"));
static SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(secret|passw(or)?d|pwd|token|api_?key|access_?key|private_?key|credential|auth|dsn|salt|signing_?key)",
    )
});
static NOT_SECRET_NAME: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)(_hash|_digest|checksum|_sha\d*|_md5|_id|_uuid|_url|_uri|_file|_path|_name|_env|_field|_header|_type|_len(gth)?|_prefix|_expir\w*|_ttl|_timeout|_endpoint)$",
    )
});
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
});

/// Whether a value reads as a placeholder rather than a credential.
pub fn is_placeholder(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    const WORDS: [&str; 17] = [
        "example",
        "changeme",
        "change_me",
        "change-me",
        "placeholder",
        "dummy",
        "your",
        "xxxx",
        "redacted",
        "****",
        "sample",
        "fake",
        "todo",
        "replace",
        "insert",
        "<",
        "${",
    ];
    if WORDS.iter().any(|w| v.contains(w)) || v.contains("{{") || v.contains("$(") {
        return true;
    }
    let distinct: std::collections::BTreeSet<char> = v.chars().collect();
    distinct.len() <= 3
        || matches!(
            v.as_str(),
            "password" | "secret" | "none" | "null" | "nil" | "true" | "false" | "test"
        )
}

/// Shannon entropy of a string, in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// One credential found. The value itself is never kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretFinding {
    /// The rule id.
    pub rule: String,
    /// The file, relative to the scan root, `/`-separated.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column where the value starts.
    pub column: u64,
    /// 16 hex digits: sha256 of the rule, the file and the line with the value masked, so
    /// the same finding keeps its fingerprint across runs and the value cannot be
    /// recovered from it.
    pub fingerprint: String,
}

fn fingerprint(rule: &str, file: &str, line: &str, value_range: std::ops::Range<usize>) -> String {
    let mut masked = String::with_capacity(line.len());
    masked.push_str(line.get(..value_range.start).unwrap_or(""));
    masked.push_str("<secret>");
    masked.push_str(line.get(value_range.end..).unwrap_or(""));
    let h =
        util::sha256_hex(format!("orch-secret-v1\0{rule}\0{file}\0{}", masked.trim()).as_bytes());
    h[..16].to_owned()
}

fn is_template_env(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        ".example",
        ".sample",
        ".template",
        ".tmpl",
        ".tpl",
        ".dist",
        ".defaults",
        ".default",
    ]
    .iter()
    .any(|s| lower.ends_with(s))
}

/// Whether a file name is a dotenv file whose values are real (`.env`, `.env.production`,
/// `prod.env`), not a template (`.env.example`).
pub fn is_dotenv(name: &str) -> bool {
    (name == ".env" || name.starts_with(".env.") || name.ends_with(".env"))
        && !is_template_env(name)
}

/// Scans one file's text. `file` is the path shown in findings.
pub fn scan_text(file: &str, text: &str) -> Vec<SecretFinding> {
    let name = file.rsplit('/').next().unwrap_or(file);
    let dotenv = is_dotenv(name);
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<SecretFinding> = Vec::new();
    let push = |out: &mut Vec<SecretFinding>,
                rule: &str,
                n: usize,
                line: &str,
                range: std::ops::Range<usize>| {
        if out.iter().any(|f| f.line == n as u64 + 1) {
            return; // One finding per line: the most specific rule, tried first.
        }
        out.push(SecretFinding {
            rule: rule.to_owned(),
            file: file.to_owned(),
            line: n as u64 + 1,
            column: line
                .get(..range.start)
                .map_or(1, |s| s.chars().count() as u64 + 1),
            fingerprint: fingerprint(rule, file, line, range),
        });
    };
    for (n, line) in lines.iter().enumerate() {
        if line.contains(ALLOW_MARKER) {
            continue;
        }
        if let Some(m) = PRIVATE_KEY.find(line) {
            // A real key has a body; a header alone is documentation.
            let body = lines
                .iter()
                .skip(n + 1)
                .map(|l| l.trim())
                .filter(|l| !l.is_empty() && !l.contains(':'))
                .take(1)
                .any(|l| KEY_BODY.is_match(l) && entropy(l) > 4.0);
            if body {
                push(&mut out, "private-key", n, line, m.range());
            }
            continue;
        }
        for (id, pattern) in PATTERNS.iter() {
            for caps in pattern.captures_iter(line) {
                let Some(value) = caps.get(1) else { continue };
                let v = value.as_str();
                if is_placeholder(v) {
                    continue;
                }
                let min_entropy = match *id {
                    "url-credentials" => 0.0,
                    "github-token" | "gitlab-token" | "slack-token" => 3.0,
                    _ => 3.5,
                };
                if entropy(v) < min_entropy {
                    continue;
                }
                push(&mut out, id, n, line, value.range());
            }
        }
        for caps in ASSIGNMENT.captures_iter(line) {
            let (Some(name), Some(value)) = (caps.get(1), caps.get(3)) else {
                continue;
            };
            let v = value.as_str();
            if NOT_SECRET_NAME.is_match(name.as_str())
                || is_placeholder(v)
                || UUID.is_match(v)
                || entropy(v) < 3.5
                || !(v.chars().any(|c| c.is_ascii_alphabetic())
                    && v.chars().any(|c| c.is_ascii_digit()))
            {
                continue;
            }
            push(&mut out, "secret-assignment", n, line, value.range());
        }
        if dotenv
            && let Some(caps) = DOTENV_LINE.captures(line)
            && let (Some(name), Some(raw)) = (caps.get(1), caps.get(2))
        {
            let mut value = raw.as_str().trim();
            let mut start = raw.start() + (raw.as_str().len() - raw.as_str().trim_start().len());
            if let Some(q) = value.chars().next().filter(|c| *c == '"' || *c == '\'') {
                value = value[1..].split(q).next().unwrap_or("");
                start += 1;
            } else {
                value = value.split(" #").next().unwrap_or("").trim_end();
            }
            if !value.is_empty()
                && SECRET_NAME.is_match(name.as_str())
                && !NOT_SECRET_NAME.is_match(name.as_str())
                && !is_placeholder(value)
            {
                push(
                    &mut out,
                    "dotenv-value",
                    n,
                    line,
                    start..start + value.len(),
                );
            }
        }
    }
    out
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanResult {
    /// Findings, by file then line.
    pub findings: Vec<SecretFinding>,
    /// Files scanned.
    pub files: u64,
    /// Files skipped as binary or too large.
    pub skipped: u64,
}

/// Scans a tree: honours `.gitignore` files (inside a git repository or not), never
/// enters `.git` or `exclude` (the state directory), and leaves out paths matching
/// `ignore` (gitignore syntax, relative to `root`).
pub fn scan(
    root: &Path,
    ignore: &[String],
    exclude: &[PathBuf],
) -> Result<ScanResult, SecretsError> {
    if !root.is_dir() {
        return Err(SecretsError::Root {
            path: root.to_owned(),
        });
    }
    let mut gi = ignore::gitignore::GitignoreBuilder::new(root);
    for p in ignore {
        gi.add_line(None, p).map_err(|e| SecretsError::BadIgnore {
            pattern: p.clone(),
            message: e.to_string(),
        })?;
    }
    let user_ignore = gi.build().map_err(|e| SecretsError::BadIgnore {
        pattern: ignore.join(", "),
        message: e.to_string(),
    })?;
    let exclude: Vec<PathBuf> = exclude
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .sort_by_file_path(|a, b| a.cmp(b))
        .filter_entry(move |e| {
            if e.file_name() == ".git" {
                return false;
            }
            let path = e.path();
            let canon = path.canonicalize().unwrap_or_else(|_| path.to_owned());
            !exclude.iter().any(|x| canon.starts_with(x))
        })
        .build();
    let mut result = ScanResult::default();
    for entry in walker {
        let entry = entry.map_err(|e| SecretsError::Walk {
            path: root.to_owned(),
            message: e.to_string(),
        })?;
        let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
        if !entry.file_type().is_some_and(|t| t.is_file()) && !is_dir {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        if rel.as_os_str().is_empty() || is_dir {
            continue;
        }
        if user_ignore
            .matched_path_or_any_parents(rel, false)
            .is_ignore()
        {
            continue;
        }
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if len > MAX_FILE_BYTES {
            result.skipped += 1;
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            result.skipped += 1;
            continue;
        };
        if bytes.iter().take(8192).any(|b| *b == 0) {
            result.skipped += 1;
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        let shown = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        result.files += 1;
        result.findings.extend(scan_text(&shown, &text));
    }
    Ok(result)
}

/// The SARIF log of a scan (`root` becomes the `SRCROOT` base of the file URIs).
pub fn to_sarif(result: &ScanResult, root: &Path) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = RULES
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id,
                "name": r.id,
                "shortDescription": { "text": r.description },
                "defaultConfiguration": { "level": "error" },
                "properties": { "tags": ["security", "secret"] },
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = result
        .findings
        .iter()
        .map(|f| {
            let index = RULES.iter().position(|r| r.id == f.rule).unwrap_or(0);
            serde_json::json!({
                "ruleId": f.rule,
                "ruleIndex": index,
                "level": "error",
                "message": { "text": format!("{} (fingerprint {}); the value is not shown", rule(&f.rule).description, f.fingerprint) },
                "locations": [{ "physicalLocation": {
                    "artifactLocation": { "uri": f.file, "uriBaseId": "SRCROOT" },
                    "region": { "startLine": f.line, "startColumn": f.column },
                }}],
                "partialFingerprints": { "orchSecret/v1": f.fingerprint },
            })
        })
        .collect();
    let mut root_uri = format!("file://{}", root.display());
    if !root_uri.ends_with('/') {
        root_uri.push('/');
    }
    serde_json::json!({
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": { "driver": {
                "name": "orch-secrets",
                "informationUri": "https://example.invalid/orch",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "originalUriBaseIds": { "SRCROOT": { "uri": root_uri } },
            "results": results,
        }],
    })
}

/// The `with` table of a `secrets.scan` phase.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    /// The tree to scan (default: the pipeline's directory).
    #[serde(default)]
    pub root: Option<String>,
    /// Paths to leave out, gitignore syntax, relative to `root`.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Where to write the SARIF log (default `RUN_DIR/secrets/PHASE/secrets.sarif`).
    #[serde(default)]
    pub output: Option<String>,
    /// Fail the phase when anything is found (default false: gate on it in a `quality`
    /// phase, or read the `findings` output).
    #[serde(default)]
    pub fail_on_findings: bool,
}

/// The `secrets.scan` phase.
#[derive(Clone, Debug)]
pub struct SecretsPhase {
    settings: SecretsSettings,
}

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new(
            "secrets.scan",
            "find committed credentials in a tree (offline) and write SARIF",
        ),
        |spec: &PhaseSpec, settings: SecretsSettings| {
            let mut gi = ignore::gitignore::GitignoreBuilder::new("/");
            for p in &settings.ignore {
                gi.add_line(None, p).map_err(|e| {
                    spec.with
                        .error(format!("`ignore` pattern `{p}` is not valid: {e}"))
                })?;
            }
            Ok(SecretsPhase { settings })
        },
    )
}

/// The state directory of a run (`STATE_DIR` of `STATE_DIR/runs/RUN_ID`), kept out of scans.
fn state_dir(run_dir: &Path) -> PathBuf {
    match run_dir.parent() {
        Some(runs) if runs.file_name().is_some_and(|n| n == "runs") => {
            runs.parent().unwrap_or(run_dir).to_owned()
        }
        _ => run_dir.to_owned(),
    }
}

#[async_trait]
impl Phase for SecretsPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let root = self
            .settings
            .root
            .as_deref()
            .map_or_else(|| ctx.base_dir().to_owned(), |r| ctx.resolve(r));
        let mut d = Description::new(format!("scan {} for committed credentials", root.display()));
        if !self.settings.ignore.is_empty() {
            d = d.detail("ignore", self.settings.ignore.join(", "));
        }
        match &self.settings.output {
            Some(o) => {
                let p = ctx.resolve(o);
                d.detail("report", p.display().to_string())
                    .change(format!("write {}", p.display()))
            }
            None => d.detail(
                "report",
                format!("RUN_DIR/secrets/{}/secrets.sarif", ctx.phase_id()),
            ),
        }
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let render = |key: &str, v: &str| {
            ctx.resolve(v)
                .map_err(|e| PhaseError::failed(format!("cannot render `{key}`: {e}")))
        };
        let root = match &self.settings.root {
            Some(r) => render("root", r)?,
            None => ctx.base_dir().to_owned(),
        };
        let output = match &self.settings.output {
            Some(o) => render("output", o)?,
            None => ctx
                .run_dir()
                .join("secrets")
                .join(ctx.phase_id().as_str())
                .join("secrets.sarif"),
        };
        let ignore = self.settings.ignore.clone();
        // Leave the state directory out, unless the tree to scan lives in it (a working copy
        // under `.orch/work`).
        let state = state_dir(ctx.run_dir());
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
        let exclude = if canon(&root).starts_with(canon(&state)) {
            Vec::new()
        } else {
            vec![state]
        };
        let scan_root = root.clone();
        let result = util::blocking(ctx, move || scan(&scan_root, &ignore, &exclude))
            .await?
            .map_err(|e| PhaseError::from_error(&e))?;
        let (size, digest) = util::write_json(&output, &to_sarif(&result, &root))
            .map_err(|e| PhaseError::from_error(&e))?;
        ctx.log(format!(
            "{} files scanned ({} skipped: binary or over {} MiB), {} finding(s)",
            result.files,
            result.skipped,
            MAX_FILE_BYTES / (1024 * 1024),
            result.findings.len()
        ));
        for f in &result.findings {
            ctx.log(format!(
                "{} {}:{}:{} fingerprint {}",
                f.rule, f.file, f.line, f.column, f.fingerprint
            ));
        }
        if self.settings.fail_on_findings && !result.findings.is_empty() {
            return Err(PhaseError::failed(format!(
                "{} committed credential(s) found; see {}",
                result.findings.len(),
                output.display()
            )));
        }
        let report = output.display().to_string();
        let mut outcome = PhaseOutcome::with_outputs([
            ("report", report.clone()),
            ("findings", result.findings.len().to_string()),
            ("files", result.files.to_string()),
        ]);
        outcome.artifacts.push(util::artifact(
            "sarif",
            "secrets.sarif",
            &output,
            size,
            digest,
        ));
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert_eq!(PATTERNS.len(), 10);
        LazyLock::force(&PRIVATE_KEY);
        LazyLock::force(&ASSIGNMENT);
        LazyLock::force(&DOTENV_LINE);
        LazyLock::force(&SECRET_NAME);
        LazyLock::force(&NOT_SECRET_NAME);
        LazyLock::force(&UUID);
        LazyLock::force(&KEY_BODY);
    }

    #[test]
    fn placeholders_and_entropy() {
        assert!(is_placeholder("AKIAIOSFODNN7EXAMPLE"));
        assert!(is_placeholder("${DB_PASSWORD}"));
        assert!(is_placeholder("xxxxxxxx"));
        assert!(!is_placeholder("q8Zt3vLw0pXe"));
        assert!(entropy("aaaa") < 0.1);
        assert!(entropy("q8Zt3vLw0pXeR5mN") > 3.5);
    }

    #[test]
    fn dotenv_files_are_told_from_templates() {
        assert!(is_dotenv(".env"));
        assert!(is_dotenv(".env.production"));
        assert!(is_dotenv("prod.env"));
        assert!(!is_dotenv(".env.example"));
        assert!(!is_dotenv("env.py"));
    }
}
