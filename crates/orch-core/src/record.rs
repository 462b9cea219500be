//! The run record (`run.json`): the serialized result of a run, read by reports and tools.
//!
//! These types are separate from the engine's internals and carry a `format_version`.

use std::collections::BTreeMap;
use std::path::Path;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::RunError;
use crate::ids::{KindName, Needs, PhaseId, RunId};

/// The version of the `run.json` format written by this build. Version 2 added
/// [`PhaseRecord::cause`]; records of version 1 (without it) are read as well.
pub const RECORD_FORMAT_VERSION: u32 = 2;

/// The oldest `run.json` format this build reads.
pub const OLDEST_RECORD_FORMAT_VERSION: u32 = 1;

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
    /// Still running: only in the record of a live run, rebuilt from its journal.
    Running,
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
            Self::Running => "running",
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
    /// Still running (seen in the records of live runs and of runs that died).
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

/// Why a phase ended as it did, as data: what [`PhaseRecord::reason`] says in words
/// (`Display` gives exactly that text). Readers decide from this, never from the text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reason {
    /// Left out by `--only` (`skipped`).
    NotSelected,
    /// Left out by `--skip` (`skipped`).
    SkippedBySelection,
    /// Declared before the phase `--from` starts at (`skipped`).
    BeforeFrom,
    /// Its `when` condition was false (`skipped`).
    WhenFalse {
        /// The condition.
        condition: String,
    },
    /// Done in an earlier run, which this one resumes (`skipped`, its outputs restored).
    DoneInRun {
        /// That run.
        run: RunId,
    },
    /// A phase it needs did not succeed (`blocked`).
    Blocked {
        /// That phase.
        by: String,
    },
    /// The run stopped before the phase started (`cancelled`).
    NotStarted {
        /// Why the run stopped.
        stop: Stop,
    },
    /// The run stopped while the phase ran (`cancelled`).
    Stopped {
        /// Why the run stopped.
        stop: Stop,
    },
    /// An attempt failed, and the run stopped before the next one (the failure's status).
    NotRetried {
        /// The last attempt's error.
        error: String,
        /// Why the run stopped.
        stop: Stop,
    },
    /// The run ended while the phase ran, without recording its end (a record rebuilt
    /// from the journal of a run that died).
    RunEnded,
    /// Cancelled without a known cause.
    Cancelled,
    /// The phase (or its agent) decided to skip itself, with its words (`skipped`).
    Skipped {
        /// Why.
        message: String,
    },
    /// It failed: the error (`failed`, `timed_out`).
    Error {
        /// The error, redacted.
        message: String,
    },
}

/// Why a run stopped scheduling phases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Stop {
    /// Interrupted (SIGINT, SIGTERM, [`crate::RunControl::stop`]).
    Interrupted,
    /// A phase failed or timed out and the run does not keep going (no `--keep-going`).
    FailFast {
        /// That phase.
        after: String,
        /// Whether it timed out (else it failed).
        timed_out: bool,
    },
    /// The journal could not be written: nothing more would be durable.
    JournalFailure {
        /// The error.
        message: String,
    },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Interrupted => f.write_str("the run was interrupted"),
            Self::FailFast { after, timed_out } => write!(
                f,
                "the run stopped after `{after}` {}",
                if *timed_out { "timed out" } else { "failed" }
            ),
            Self::JournalFailure { message } => f.write_str(message),
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotSelected => f.write_str("not selected by --only"),
            Self::SkippedBySelection => f.write_str("skipped by --skip"),
            Self::BeforeFrom => f.write_str("before --from"),
            Self::WhenFalse { condition } => write!(f, "`when` is false: {condition}"),
            Self::DoneInRun { run } => write!(f, "done in run {run}"),
            Self::Blocked { by } => write!(f, "needs `{by}`, which did not succeed"),
            Self::NotStarted { stop } => write!(f, "not started: {stop}"),
            Self::Stopped { stop } => write!(f, "{stop}"),
            Self::NotRetried { error, stop } => write!(f, "{error}; not retried: {stop}"),
            Self::RunEnded => f.write_str("interrupted: the run ended while this phase ran"),
            Self::Cancelled => f.write_str("cancelled"),
            Self::Skipped { message } | Self::Error { message } => f.write_str(message),
        }
    }
}

impl Reason {
    /// The cause a format-1 record's words stand for (see [`RunRecord::upgrade`]).
    pub(crate) fn from_v1_words(status: PhaseStatus, words: &str) -> Option<Self> {
        let fixed = [
            Self::NotSelected,
            Self::SkippedBySelection,
            Self::BeforeFrom,
            Self::RunEnded,
            Self::Cancelled,
        ];
        if let Some(r) = fixed.into_iter().find(|r| r.to_string() == words) {
            return Some(r);
        }
        if let Some(run) = words.strip_prefix("done in run ") {
            return RunId::parse(run).ok().map(|run| Self::DoneInRun { run });
        }
        if let Some(by) = words
            .strip_prefix("needs `")
            .and_then(|w| w.strip_suffix("`, which did not succeed"))
        {
            return Some(Self::Blocked { by: by.to_owned() });
        }
        if let Some(condition) = words.strip_prefix("`when` is false: ") {
            return Some(Self::WhenFalse {
                condition: condition.to_owned(),
            });
        }
        Some(match status {
            PhaseStatus::Failed | PhaseStatus::TimedOut => Self::Error {
                message: words.to_owned(),
            },
            PhaseStatus::Skipped => Self::Skipped {
                message: words.to_owned(),
            },
            // Blocked and cancelled reasons name phases and stops in words only.
            _ => return None,
        })
    }

    /// Whether the selection left the phase out without naming it (`--only`, `--from`):
    /// it was never in play. A phase `--skip` names is not: the user named it.
    pub fn is_unselected(&self) -> bool {
        matches!(self, Self::NotSelected | Self::BeforeFrom)
    }

    /// The run it was done in, for a phase a resumed run did not run again.
    pub fn done_in(&self) -> Option<&RunId> {
        match self {
            Self::DoneInRun { run } => Some(run),
            _ => None,
        }
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
    pub kind: KindName,
    /// Attempts made in this run (and earlier runs, when resumed mid-phase).
    pub attempts: u32,
    /// Exit code of the last attempt, for process phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// When the first attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<Timestamp>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<Timestamp>,
    /// Wall time from the first start to the end, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it ended this way, in words (error message, skip reason, blocking phase): the
    /// text of [`PhaseRecord::cause`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it ended this way, as data (since format version 2; absent in older records).
    // Boxed: most phases succeed and have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Box<Reason>>,
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
    // The pipeline's ids, shared: no string per need.
    #[serde(default, skip_serializing_if = "<[PhaseId]>::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub needs: Needs,
    /// Its tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Path of its log, relative to the run directory, when it wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// What `[policy]` decided before it started (absent without a policy, or when it
    /// never came to start).
    // Boxed: most pipelines have no policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Box<PolicyVerdict>>,
    /// What went wrong around the phase without changing its status (its log could not
    /// be written in full, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What the policy decided for a phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyVerdict {
    /// Whether the phase was allowed to start.
    pub allowed: bool,
    /// The messages of `data.orch.deny`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Why the evaluation failed, when it did (the phase is then denied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PhaseRecord {
    /// A record of a phase of `kind` that ended with `status` after `attempts` attempts, with
    /// nothing else known yet (no times, outputs, cause or policy).
    ///
    /// ```
    /// use orch_core::{PhaseRecord, PhaseStatus};
    /// let r = PhaseRecord::new(PhaseStatus::Skipped, "noop", 0);
    /// assert!(r.started_at.is_none() && r.outputs.is_empty());
    /// ```
    pub fn new(status: PhaseStatus, kind: impl Into<KindName>, attempts: u32) -> Self {
        Self {
            status,
            kind: kind.into(),
            attempts,
            exit_code: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            reason: None,
            cause: None,
            allowed_failure: false,
            outputs: Outputs::new(),
            artifacts: Vec::new(),
            needs: Needs::default(),
            tags: Vec::new(),
            description: None,
            log: None,
            policy: None,
            warnings: Vec::new(),
        }
    }

    /// Whether the policy kept the phase from starting.
    pub fn denied_by_policy(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| !p.allowed)
    }
}

/// Something of a run that could not be written to its run directory (a full disk, a
/// state directory that is not writable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordError {
    /// The file, relative to the run directory: `journal`, `logs/PHASE.log`, `run.json`,
    /// `report.html`, ...
    pub file: String,
    /// Why (the I/O error).
    pub message: String,
}

impl RecordError {
    /// An error writing `file` (relative to the run directory).
    pub fn new(file: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            file: file.into(),
            message: message.to_string(),
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
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
    #[schemars(with = "IndexMap<String, PhaseRecord>")]
    pub phases: IndexMap<PhaseId, PhaseRecord>,
    /// The head of the audit log's chain once the run ended, when it wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditHead>,
    /// What of the run could not be written (empty when everything was): a run with any
    /// is not fully recorded, whatever its status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub record_errors: Vec<RecordError>,
}

/// The last entry of the audit log a run wrote: keep it apart to detect a log cut short.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AuditHead {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash (SHA-256, hex).
    pub hash: String,
}

impl RunRecord {
    /// Reads a `run.json` of any format version this build knows: a record of version 1
    /// gets the [`PhaseRecord::cause`] its words stand for (see [`RunRecord::upgrade`]).
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let fail = |message: String| RunError::Record {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let mut record: Self = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if !(OLDEST_RECORD_FORMAT_VERSION..=RECORD_FORMAT_VERSION).contains(&record.format_version)
        {
            return Err(fail(format!(
                "format version {} is not one this build reads ({OLDEST_RECORD_FORMAT_VERSION} to {RECORD_FORMAT_VERSION})",
                record.format_version
            )));
        }
        record.upgrade();
        Ok(record)
    }

    /// Brings a record of an older format version to this one. Version 1 had no
    /// [`PhaseRecord::cause`]: the engine's own fixed words stand for theirs (`not selected
    /// by --only`, `done in run X`, ...), any other reason of a failure is its error. This
    /// is the only place a reason is read back from its words.
    pub fn upgrade(&mut self) {
        if self.format_version >= 2 {
            return;
        }
        for p in self.phases.values_mut() {
            if p.cause.is_none() {
                p.cause = p
                    .reason
                    .as_deref()
                    .and_then(|r| Reason::from_v1_words(p.status, r))
                    .map(Box::new);
            }
        }
        self.format_version = RECORD_FORMAT_VERSION;
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

/// Formats a time as RFC 3339 with milliseconds, as records store it
/// (`2025-01-02T03:04:05.678Z`, the form of `humantime::format_rfc3339_millis`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    match rfc3339_bytes(t) {
        // The bytes are ASCII digits and separators: one copy, not a char at a time.
        Some(b) => std::str::from_utf8(&b).unwrap_or_default().to_owned(),
        None => humantime::format_rfc3339_millis(t).to_string(),
    }
}

/// A time in a record, as its text: RFC 3339 with milliseconds in UTC
/// (`2025-01-02T03:04:05.678Z`, the form of [`rfc3339`]) for the times orch records.
///
/// That text is kept in place, without a heap allocation; a text of another length (read
/// from a record written elsewhere) is kept as it was read, so a record serializes exactly
/// as it was read. It reads as a `str` (`Deref`), serializes as that string, and compares
/// by its text.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use orch_core::Timestamp;
/// let t = Timestamp::new(UNIX_EPOCH + Duration::from_millis(1_500));
/// assert_eq!(&*t, "1970-01-01T00:00:01.500Z");
/// assert_eq!(Timestamp::from("yesterday"), "yesterday");
/// ```
#[derive(Clone)]
pub struct Timestamp(Text);

#[derive(Clone)]
enum Text {
    /// Any text of 24 bytes, such as every time from 1970 to 9999 in the form above.
    Inline([u8; 24]),
    /// Any other text.
    Boxed(Box<str>),
}

impl Timestamp {
    /// The time `t`, in the form of [`rfc3339`].
    pub fn new(t: std::time::SystemTime) -> Self {
        match t
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(rfc3339_since_epoch)
        {
            Some(b) => Self(Text::Inline(b)),
            None => Self(Text::Boxed(
                humantime::format_rfc3339_millis(t).to_string().into(),
            )),
        }
    }

    /// The time `d` after the Unix epoch, in the form of [`rfc3339`] (the engine's clock
    /// gives its times so: no subtraction of the epoch per time).
    pub(crate) fn since_epoch(d: std::time::Duration) -> Self {
        match rfc3339_since_epoch(d) {
            Some(b) => Self(Text::Inline(b)),
            None => match std::time::UNIX_EPOCH.checked_add(d) {
                Some(t) => Self::new(t),
                None => Self(Text::Boxed(format!("{}s after 1970", d.as_secs()).into())),
            },
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever made from a `str` or from ASCII digits and separators.
            Text::Inline(b) => std::str::from_utf8(b).unwrap_or_default(),
            Text::Boxed(s) => s,
        }
    }
}

impl From<&str> for Timestamp {
    fn from(s: &str) -> Self {
        match <[u8; 24]>::try_from(s.as_bytes()) {
            Ok(b) => Self(Text::Inline(b)),
            Err(_) => Self(Text::Boxed(s.into())),
        }
    }
}

impl From<String> for Timestamp {
    fn from(s: String) -> Self {
        match <[u8; 24]>::try_from(s.as_bytes()) {
            Ok(b) => Self(Text::Inline(b)),
            Err(_) => Self(Text::Boxed(s.into_boxed_str())),
        }
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Self {
        Self::new(t)
    }
}

impl std::ops::Deref for Timestamp {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Timestamp {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Timestamp {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Timestamp {}

impl PartialEq<str> for Timestamp {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Timestamp {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for Timestamp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a time (RFC 3339)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Ok(Timestamp::from(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Timestamp, E> {
                Ok(Timestamp::from(v))
            }
        }
        d.deserialize_str(V)
    }
}

thread_local! {
    /// The second last formatted on this thread and its text: a run formats a few times per
    /// phase, nearly all in the second before, so mostly only the milliseconds change.
    static LAST_SECOND: std::cell::Cell<(u64, [u8; 24])> =
        const { std::cell::Cell::new((u64::MAX, [0; 24])) };
}

/// The RFC 3339 form of a time from 1970 to 9999 without allocating (records are written
/// several times per phase); `None` outside that range.
fn rfc3339_bytes(t: std::time::SystemTime) -> Option<[u8; 24]> {
    rfc3339_since_epoch(t.duration_since(std::time::UNIX_EPOCH).ok()?)
}

/// [`rfc3339_bytes`] of the time `d` after the Unix epoch.
fn rfc3339_since_epoch(d: std::time::Duration) -> Option<[u8; 24]> {
    let secs = d.as_secs();
    // 10000-01-01T00:00:00Z.
    if secs >= 253_402_300_800 {
        return None;
    }
    let millis = d.subsec_millis();
    let (last, mut b) = LAST_SECOND.get();
    if last == secs {
        b[20] = b'0' + (millis / 100) as u8;
        b[21] = b'0' + (millis / 10 % 10) as u8;
        b[22] = b'0' + (millis % 10) as u8;
        return Some(b);
    }
    let b = rfc3339_of_second(secs, millis);
    LAST_SECOND.set((secs, b));
    Some(b)
}

/// The RFC 3339 form of `secs` since the epoch (before year 10000) and `millis`.
fn rfc3339_of_second(secs: u64, millis: u32) -> [u8; 24] {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let millis = u64::from(millis);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for k in (at..at + width).rev() {
            b[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 3, millis);
    b
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_format_1_record_is_read_with_the_causes_its_words_stand_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        let phase = |status: &str, reason: &str| serde_json::json!({"status": status, "kind": "command", "attempts": 0, "reason": reason});
        let v1 = serde_json::json!({
            "format_version": 1, "run_id": "20250101T000000Z-aaaa", "pipeline": "p",
            "status": "failed", "started_at": "2025-01-01T00:00:00.000Z", "vars": {},
            "phases": {
                "only": phase("skipped", "not selected by --only"),
                "from": phase("skipped", "before --from"),
                "when": phase("skipped", "`when` is false: vars.x == \"1\""),
                "done": phase("skipped", "done in run 20241231T000000Z-bbbb"),
                "blocked": phase("blocked", "needs `build`, which did not succeed"),
                "failed": phase("failed", "exit status 2"),
                "cancelled": phase("cancelled", "not started: the run was interrupted"),
            }
        });
        std::fs::write(&path, v1.to_string()).unwrap();
        let r = RunRecord::load(&path).unwrap();
        assert_eq!(r.format_version, RECORD_FORMAT_VERSION);
        let causes: Vec<_> = r
            .phases
            .values()
            .map(|p| p.cause.as_deref().cloned())
            .collect();
        assert_eq!(
            causes,
            [
                Some(Reason::NotSelected),
                Some(Reason::BeforeFrom),
                Some(Reason::WhenFalse {
                    condition: "vars.x == \"1\"".into()
                }),
                Some(Reason::DoneInRun {
                    run: RunId::parse("20241231T000000Z-bbbb").unwrap()
                }),
                Some(Reason::Blocked { by: "build".into() }),
                Some(Reason::Error {
                    message: "exit status 2".into()
                }),
                None,
            ]
        );
        // The words are kept as they were, and each cause says them again.
        for p in r.phases.values() {
            if let Some(c) = &p.cause {
                assert_eq!(p.reason.as_deref(), Some(c.to_string().as_str()));
            }
        }
        // A format from the future is refused, with its number.
        let mut v9 = v1;
        v9["format_version"] = 9.into();
        std::fs::write(&path, v9.to_string()).unwrap();
        let e = RunRecord::load(&path).unwrap_err().to_string();
        assert!(e.contains("format version 9"), "{e}");
    }

    /// `PhaseRecord` as format 2 was first written (times and needs as strings, the cause
    /// and the policy's verdict in place): the record must serialize to the same bytes.
    #[derive(Serialize)]
    struct PhaseRecordAsFirstWritten {
        status: PhaseStatus,
        kind: String,
        attempts: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        started_at: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        finished_at: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cause: Option<Reason>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        allowed_failure: bool,
        outputs: Outputs,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<Artifact>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        needs: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tags: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        log: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        policy: Option<PolicyVerdict>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    }

    #[test]
    fn a_phase_record_serializes_to_the_bytes_it_always_had() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_961_200_123);
        let stop = Stop::FailFast {
            after: "lint".into(),
            timed_out: false,
        };
        let cause = Reason::NotRetried {
            error: "exit status 2".into(),
            stop,
        };
        let verdict = PolicyVerdict {
            allowed: false,
            deny: vec!["no \"deploys\" on fridays".into()],
            error: None,
        };
        let mut artifact = Artifact::new("file", "app.tar");
        artifact.size = Some(3);
        let outputs = Outputs::from([("k".to_owned(), "v\n".to_owned())]);
        // (started_at, finished_at) as they were written: orch's own form, and texts
        // written elsewhere (shorter, longer, not UTC) that must come back as they were.
        let times = [
            (
                Some(rfc3339(at)),
                Some(rfc3339(at + Duration::from_millis(5))),
            ),
            (Some("2025-01-01T00:00:00Z".to_owned()), None),
            (
                Some("2025-01-01T01:00:00.123456+01:00".to_owned()),
                Some("2025-01-01T00:00:00.5Z".to_owned()),
            ),
            (None, None),
        ];
        for (started_at, finished_at) in times {
            let old = PhaseRecordAsFirstWritten {
                status: PhaseStatus::Failed,
                kind: "command".into(),
                attempts: 2,
                exit_code: Some(2),
                started_at: started_at.clone(),
                finished_at: finished_at.clone(),
                duration_ms: Some(5),
                reason: Some(cause.to_string()),
                cause: Some(cause.clone()),
                allowed_failure: true,
                outputs: outputs.clone(),
                artifacts: vec![artifact.clone()],
                needs: vec!["build".into(), "unit-tests_2".into()],
                tags: vec!["ci".into()],
                description: Some("d\u{e9}".into()),
                log: Some("logs/p.log".into()),
                policy: Some(verdict.clone()),
                warnings: vec!["log w".into()],
            };
            let new = PhaseRecord {
                status: PhaseStatus::Failed,
                kind: "command".into(),
                attempts: 2,
                exit_code: Some(2),
                started_at: started_at.clone().map(Timestamp::from),
                finished_at: finished_at.clone().map(Timestamp::from),
                duration_ms: Some(5),
                reason: Some(cause.to_string()),
                cause: Some(Box::new(cause.clone())),
                allowed_failure: true,
                outputs: outputs.clone(),
                artifacts: vec![artifact.clone()],
                needs: vec![
                    PhaseId::new("build").unwrap(),
                    PhaseId::new("unit-tests_2").unwrap(),
                ]
                .into(),
                tags: vec!["ci".into()],
                description: Some("d\u{e9}".into()),
                log: Some("logs/p.log".into()),
                policy: Some(Box::new(verdict.clone())),
                warnings: vec!["log w".into()],
            };
            let old_text = serde_json::to_string_pretty(&old).unwrap();
            assert_eq!(serde_json::to_string_pretty(&new).unwrap(), old_text);
            assert_eq!(
                serde_json::to_string(&new).unwrap(),
                serde_json::to_string(&old).unwrap()
            );
            // Read back, it is the same record and writes the same bytes again.
            let read: PhaseRecord = serde_json::from_str(&old_text).unwrap();
            assert_eq!(read, new);
            assert_eq!(serde_json::to_string_pretty(&read).unwrap(), old_text);
            assert_eq!(read.started_at.as_deref(), started_at.as_deref());
            assert_eq!(read.finished_at.as_deref(), finished_at.as_deref());
        }
        // A record with nothing optional.
        let old = PhaseRecordAsFirstWritten {
            status: PhaseStatus::Succeeded,
            kind: "noop".into(),
            attempts: 1,
            exit_code: None,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            reason: None,
            cause: None,
            allowed_failure: false,
            outputs: Outputs::new(),
            artifacts: Vec::new(),
            needs: Vec::new(),
            tags: Vec::new(),
            description: None,
            log: None,
            policy: None,
            warnings: Vec::new(),
        };
        let old_text = serde_json::to_string_pretty(&old).unwrap();
        let read: PhaseRecord = serde_json::from_str(&old_text).unwrap();
        assert_eq!(serde_json::to_string_pretty(&read).unwrap(), old_text);
    }

    /// `RunRecord` as format 2 was first written (phases keyed by strings).
    #[derive(Serialize)]
    struct RunRecordAsFirstWritten {
        format_version: u32,
        run_id: RunId,
        pipeline: String,
        status: RunStatus,
        started_at: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        finished_at: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed_from: Option<RunId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pipeline_file: Option<String>,
        vars: IndexMap<String, String>,
        phases: IndexMap<String, PhaseRecordAsFirstWritten>,
        #[serde(skip_serializing_if = "Option::is_none")]
        audit: Option<AuditHead>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        record_errors: Vec<RecordError>,
    }

    #[test]
    fn a_run_record_serializes_to_the_bytes_it_always_had() {
        let phase = |needs: &[&str]| PhaseRecordAsFirstWritten {
            status: PhaseStatus::Succeeded,
            kind: "command".into(),
            attempts: 1,
            exit_code: Some(0),
            started_at: Some("2025-01-01T00:00:00.000Z".into()),
            finished_at: Some("2025-01-01T00:00:01.000Z".into()),
            duration_ms: Some(1000),
            reason: None,
            cause: None,
            allowed_failure: false,
            outputs: Outputs::new(),
            artifacts: Vec::new(),
            needs: needs.iter().map(|n| (*n).to_owned()).collect(),
            tags: Vec::new(),
            description: None,
            log: None,
            policy: None,
            warnings: Vec::new(),
        };
        let old = RunRecordAsFirstWritten {
            format_version: RECORD_FORMAT_VERSION,
            run_id: RunId::parse("20250101T000000Z-aaaa").unwrap(),
            pipeline: "p".into(),
            status: RunStatus::Succeeded,
            started_at: "2025-01-01T00:00:00.000Z".into(),
            finished_at: Some("2025-01-01T00:00:02.000Z".into()),
            duration_ms: Some(2000),
            resumed_from: None,
            pipeline_file: Some("/x/orch.toml".into()),
            vars: IndexMap::from([("v".to_owned(), "1".to_owned())]),
            // Not in id order: the order is kept.
            phases: IndexMap::from([
                ("build".to_owned(), phase(&[])),
                ("a-test_2".to_owned(), phase(&["build"])),
            ]),
            audit: Some(AuditHead {
                seq: 3,
                hash: "ab".into(),
            }),
            record_errors: vec![RecordError::new("logs/a.log", "disk full")],
        };
        let text = serde_json::to_string_pretty(&old).unwrap();
        let read: RunRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string_pretty(&read).unwrap(), text);
        assert_eq!(
            read.phases["a-test_2"].needs,
            [PhaseId::new("build").unwrap()]
        );
        // A phase id that is not one is refused, naming it.
        let bad = text.replace("\"a-test_2\": {", "\"a test\": {");
        let e = serde_json::from_str::<RunRecord>(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a test"), "{e}");
    }

    #[test]
    fn a_timestamp_is_its_text() {
        let at = UNIX_EPOCH + Duration::from_millis(1_500);
        let t = Timestamp::new(at);
        assert_eq!(t, "1970-01-01T00:00:01.500Z");
        assert_eq!(t.to_string(), rfc3339(at));
        assert_eq!(format!("{t:?}"), "\"1970-01-01T00:00:01.500Z\"");
        // Equal texts are equal however they were made, and order as their texts do.
        assert_eq!(Timestamp::from(rfc3339(at)), t);
        assert_eq!(Timestamp::from("x"), Timestamp::from("x".to_owned()));
        assert!(Timestamp::new(at) < Timestamp::new(at + Duration::from_millis(1)));
        // Not a string: an error that says what was expected.
        let e = serde_json::from_str::<Timestamp>("3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a time (RFC 3339)"), "{e}");
    }

    #[test]
    fn rfc3339_matches_humantime() {
        let check = |t: std::time::SystemTime| {
            assert_eq!(
                rfc3339(t),
                humantime::format_rfc3339_millis(t).to_string(),
                "{t:?}"
            );
        };
        check(UNIX_EPOCH);
        check(std::time::SystemTime::now());
        // Month and year ends, leap days, centuries, the last millisecond of 9999.
        for s in [
            951_782_399,
            951_782_400,
            951_868_800,
            4_107_542_399,
            4_107_542_400,
            1_709_164_800,
            1_735_689_599,
            253_402_300_799,
        ] {
            check(UNIX_EPOCH + Duration::from_millis(s * 1000 + 999));
            check(UNIX_EPOCH + Duration::from_secs(s));
        }
        // Times in the same second as the one before (its text is reused but for the
        // milliseconds), the next second, and back.
        let base = UNIX_EPOCH + Duration::from_secs(1_764_961_199);
        for ms in (0..2_500).step_by(7).chain((0..2_500).rev().step_by(13)) {
            check(base + Duration::from_millis(ms));
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..100_000 {
            let t = Duration::new(rng.u64(..253_402_300_800), rng.u32(..1_000_000_000));
            check(UNIX_EPOCH + t);
        }
        // Outside 1970..=9999 it is humantime's (which panics there), never a wrong date.
        assert!(rfc3339_bytes(UNIX_EPOCH + Duration::from_secs(253_402_300_800)).is_none());
    }
}
