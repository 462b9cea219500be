//! The run record (`run.json`): the serialized result of a run, read by reports and tools.
//!
//! These types are separate from the engine's internals and carry a `format_version`.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::RunError;
use crate::ids::RunId;

/// The version of the `run.json` format written by this build.
pub const RECORD_FORMAT_VERSION: u32 = 1;

/// Outputs of a phase: string keys to string values.
pub type Outputs = BTreeMap<String, String>;

/// How a phase ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    /// It ran and succeeded.
    Succeeded,
    /// It ran and failed (after its retries).
    Failed,
    /// Its last attempt passed the timeout.
    TimedOut,
    /// The run was interrupted while it ran (or before it could start).
    Cancelled,
    /// Not selected, `when` was false, or already done in a resumed run.
    Skipped,
    /// A phase it needs did not succeed.
    Blocked,
}

impl PhaseStatus {
    /// The status as written in records and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
            Self::Blocked => "blocked",
        }
    }

    /// Whether dependents may run after this status.
    pub fn lets_dependents_run(self) -> bool {
        matches!(self, Self::Succeeded | Self::Skipped)
    }

    /// Whether the phase ended in a failure (failed or timed out).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failed | Self::TimedOut)
    }
}

impl std::fmt::Display for PhaseStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running (only seen in records of runs that died).
    Running,
    /// Every phase succeeded, was skipped, or was allowed to fail.
    Succeeded,
    /// A phase failed.
    Failed,
    /// The run was interrupted.
    Cancelled,
}

impl RunStatus {
    /// The status as written in records and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a phase produced: an image, an archive, a report file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Artifact {
    /// What it is: `image`, `archive`, `file`, `report`, ...
    pub kind: String,
    /// A name (image reference, file name).
    pub name: String,
    /// Where it is on disk, if it is a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A content digest (`sha256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Kind-specific details.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

impl Artifact {
    /// An artifact with a kind and a name.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            path: None,
            digest: None,
            size: None,
            details: BTreeMap::new(),
        }
    }
}

/// One phase in a run record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhaseRecord {
    /// How it ended.
    pub status: PhaseStatus,
    /// Its kind.
    pub kind: String,
    /// Attempts made in this run (and earlier runs, when resumed mid-phase).
    pub attempts: u32,
    /// Exit code of the last attempt, for process phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the first attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Wall time from the first start to the end, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it ended this way (error message, skip reason, blocking phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// It failed, but `allow_failure` kept the run going.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allowed_failure: bool,
    /// Outputs it published.
    #[serde(default)]
    pub outputs: Outputs,
    /// What it produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Phases it needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Path of its log, relative to the run directory, when it wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// The record of one run: `STATE_DIR/runs/RUN_ID/run.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunRecord {
    /// Version of this format.
    pub format_version: u32,
    /// The run.
    pub run_id: RunId,
    /// The pipeline's name.
    pub pipeline: String,
    /// How the run ended.
    pub status: RunStatus,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Wall time in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The run this one resumed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<RunId>,
    /// The pipeline file, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_file: Option<String>,
    /// Variables as used (secret values never appear here).
    #[serde(default)]
    pub vars: IndexMap<String, String>,
    /// Every phase of the pipeline, in declaration order.
    pub phases: IndexMap<String, PhaseRecord>,
}

impl RunRecord {
    /// Reads a `run.json`.
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path).map_err(|e| RunError::Record {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| RunError::Record {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Counts phases by status.
    pub fn counts(&self) -> BTreeMap<PhaseStatus, usize> {
        let mut counts = BTreeMap::new();
        for p in self.phases.values() {
            *counts.entry(p.status).or_insert(0) += 1;
        }
        counts
    }
}

impl PartialOrd for PhaseStatus {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PhaseStatus {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

/// Formats a time as RFC 3339 with milliseconds, as records store it.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
