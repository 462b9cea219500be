//! JSON Schema of the pipeline file and of `run.json`.
//!
//! The structs here describe the file for tools and editors (`orch schema`). The parser
//! walks the TOML tree itself; a test checks every example pipeline against this schema
//! and the checked-in `schemas/*.json` against what this module generates.

#![allow(dead_code)]

use std::collections::BTreeMap;

use schemars::JsonSchema;

use crate::record::RunRecord;

/// A duration such as `"250ms"`, `"30s"`, `"10m"`, `"1h"`.
pub struct DurationText(String);

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z]+(\s*[0-9]+(\.[0-9]+)?\s*[a-zA-Z]+)*\s*$",
            "description": "A duration: \"250ms\", \"30s\", \"10m\", \"1h\"."
        })
    }
}

/// An orch pipeline file (contract version 1).
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, title = "orch pipeline")]
pub struct PipelineFile {
    /// The pipeline itself.
    pub pipeline: PipelineTable,
    /// Free-form strings, overridable with `--var KEY=VALUE`; read as `${{ vars.KEY }}`.
    #[serde(default)]
    pub vars: BTreeMap<String, ScalarText>,
    /// Applied to every phase that does not set the field.
    #[serde(default)]
    pub defaults: Option<DefaultsTable>,
    /// Agents: who runs phases.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentTable>,
    /// Phases, by id (`[A-Za-z0-9_-]+`), in declaration order.
    pub phases: BTreeMap<String, PhaseTable>,
    /// Which phases may start: Rego rules `data.orch.allow` and `data.orch.deny`.
    #[serde(default)]
    pub policy: Option<PolicyTable>,
    /// Notification targets, by name: where the run's events are posted.
    #[serde(default)]
    pub notify: BTreeMap<String, NotifyTable>,
}

/// `[policy]`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PolicyTable {
    /// Rego files (paths or globs relative to the file); the package is `orch`.
    pub files: Vec<String>,
    /// Limit for evaluating one phase's decision (default 1s).
    pub timeout: Option<DurationText>,
}

/// `[notify.NAME]`: a webhook the run's events are posted to. Failures are recorded in
/// `RUN_DIR/notify.jsonl`, never fatal.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct NotifyTable {
    /// The URL (`http://` or `https://`); or `url_env`.
    #[schemars(regex(pattern = r"^https?://"))]
    pub url: Option<String>,
    /// Environment variable holding the URL (for a URL that is a credential).
    pub url_env: Option<String>,
    /// `json` (default; signed with HMAC-SHA256 when `secret` is set) or `slack`
    /// (`{"text": ...}`).
    pub format: Option<NotifyFormatText>,
    /// Environment variable holding the HMAC key (never the key itself).
    pub secret: Option<String>,
    /// Events sent (default `["run.finished"]`).
    pub on: Option<Vec<NotifyEventText>>,
    /// Limit of one request, and of the wait for pending ones at the run's end (default 10s).
    pub timeout: Option<DurationText>,
    /// Extra attempts after a failed request (default 3, at most 10).
    #[schemars(range(max = 10))]
    pub retries: Option<u32>,
}

/// `json` or `slack`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormatText {
    /// The event as JSON.
    Json,
    /// `{"text": ...}`.
    Slack,
}

/// An event a notification target can be sent.
#[derive(JsonSchema)]
pub enum NotifyEventText {
    /// The run began.
    #[serde(rename = "run.started")]
    RunStarted,
    /// The run ended (any status).
    #[serde(rename = "run.finished")]
    RunFinished,
    /// The run ended failed.
    #[serde(rename = "run.failed")]
    RunFailed,
    /// An attempt of a phase began.
    #[serde(rename = "phase.started")]
    PhaseStarted,
    /// An attempt failed and will be retried.
    #[serde(rename = "phase.retrying")]
    PhaseRetrying,
    /// A phase reached its final status.
    #[serde(rename = "phase.finished")]
    PhaseFinished,
    /// A phase failed (not an allowed failure).
    #[serde(rename = "phase.failed")]
    PhaseFailed,
}

/// A string; numbers and booleans are taken as their text.
#[derive(JsonSchema)]
#[serde(untagged)]
pub enum ScalarText {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
    /// A decimal.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

/// `[pipeline]`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PipelineTable {
    /// The pipeline's name.
    pub name: String,
    /// Phases running at once (at most 4096); default: the number of CPUs.
    #[schemars(range(min = 1, max = 4096))]
    pub jobs: Option<u32>,
    /// Runs, logs and reports; default `.orch` beside the file. Not the file's own
    /// directory (`""` or `"."`).
    #[schemars(length(min = 1))]
    pub state_dir: Option<String>,
    /// What the pipeline is for.
    pub description: Option<String>,
}

/// `[defaults]`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DefaultsTable {
    /// Limit for one attempt.
    pub timeout: Option<DurationText>,
    /// Extra attempts after a failure (at most 100).
    #[schemars(range(max = 100))]
    pub retries: Option<u32>,
    /// Delay between attempts.
    pub backoff: Option<BackoffTable>,
    /// Environment for every phase.
    pub env: Option<BTreeMap<String, ScalarText>>,
    /// Agent for every phase.
    pub agent: Option<String>,
}

/// Delay between attempts: `initial * factor^(n-1)`, at most `max`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BackoffTable {
    /// First delay (default 500ms).
    pub initial: Option<DurationText>,
    /// Growth factor (default 2.0, at least 1.0).
    pub factor: Option<f64>,
    /// Largest delay (default 30s).
    pub max: Option<DurationText>,
    /// Randomise each delay between half and all of it.
    pub jitter: Option<bool>,
}

/// `[agents.NAME]`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AgentTable {
    /// `local`, `docker`, `git`, `python`, ...
    #[serde(rename = "type")]
    pub agent_type: String,
    /// Phases at once (at most 4096).
    #[schemars(range(min = 1, max = 4096))]
    pub capacity: Option<u32>,
    /// Type-specific settings (docker: `host`).
    pub with: Option<BTreeMap<String, serde_json::Value>>,
    /// Circuit breaker: opens after `failures` consecutive failures, half-opens after
    /// `cooldown`.
    pub breaker: Option<BreakerTable>,
    /// What happens to its phases when its health check fails: `fail` (default) or `skip`.
    pub unavailable: Option<UnavailableText>,
}

/// `fail` or `skip`.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnavailableText {
    /// Phases fail.
    Fail,
    /// Phases are skipped.
    Skip,
}

/// Circuit-breaker settings.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct BreakerTable {
    /// Consecutive failures that open it (0 disables it).
    pub failures: Option<u32>,
    /// How long it stays open.
    pub cooldown: Option<DurationText>,
}

/// What a `command` phase runs.
#[derive(JsonSchema)]
#[serde(untagged)]
pub enum RunField {
    /// Run under `sh -c`.
    Shell(String),
    /// An argv, run without a shell.
    Argv(Vec<String>),
}

/// `[phases.ID]`.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PhaseTable {
    /// Implementation; default `command` when `run` is set.
    pub kind: Option<String>,
    /// For `command`: a string runs under `sh -c`; an array is an argv.
    pub run: Option<RunField>,
    /// Phases that must succeed first.
    pub needs: Option<Vec<String>>,
    /// Kind-specific settings.
    pub with: Option<BTreeMap<String, serde_json::Value>>,
    /// Extra environment.
    pub env: Option<BTreeMap<String, ScalarText>>,
    /// Working directory, relative to the file.
    pub cwd: Option<String>,
    /// Limit for one attempt; the process tree is killed when it passes.
    pub timeout: Option<DurationText>,
    /// Extra attempts after a failure (at most 100).
    #[schemars(range(max = 100))]
    pub retries: Option<u32>,
    /// Delay between attempts.
    pub backoff: Option<BackoffTable>,
    /// A failure is recorded but does not fail the run or block dependents.
    pub allow_failure: Option<bool>,
    /// Labels for selection (`--only tag:T`) and reports.
    pub tags: Option<Vec<String>>,
    /// Environment variable names given to the phase as secrets, redacted everywhere.
    pub secrets: Option<Vec<String>>,
    /// Which agent runs it.
    pub agent: Option<String>,
    /// Shown in plans and reports.
    pub description: Option<String>,
    /// A CEL condition; the phase is skipped when it is false.
    pub when: Option<String>,
    /// For `kind = "gate"`: CEL expressions that must all be true.
    pub assert: Option<Vec<String>>,
}

/// The JSON Schema of the pipeline file.
pub fn pipeline_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PipelineFile)).unwrap_or_default()
}

/// The JSON Schema of `run.json`.
pub fn run_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RunRecord)).unwrap_or_default()
}
