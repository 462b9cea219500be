//! What a journal holds: its records ([`Entry`]) and the borrowed forms the engine queues.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::json;
use crate::ids::RunId;
use crate::record::{Artifact, Outputs, PhaseStatus, PolicyVerdict, Reason, RunStatus};

/// One journal record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// The first record: which run this is.
    Run {
        /// The run.
        run_id: RunId,
        /// The pipeline's name.
        pipeline: String,
        /// When it started (RFC 3339).
        started_at: String,
        /// The run it resumes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_from: Option<RunId>,
        /// The process that ran it.
        pid: u32,
    },
    /// What a resumed run took over from the run it resumes (second record).
    Inherited {
        /// Per phase id: what is known of it.
        phases: BTreeMap<String, PhaseResume>,
    },
    /// An attempt of a phase began.
    Started {
        /// The phase.
        phase: String,
        /// The attempt (1-based; goes on across resumed runs).
        attempt: u32,
        /// When (RFC 3339).
        at: String,
    },
    /// An attempt failed and the phase will be retried.
    AttemptFailed {
        /// The phase.
        phase: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why (redacted).
        error: String,
    },
    /// A phase reached its final status.
    Finished(Box<Finished>),
    /// What `[policy]` decided for a phase before it first started.
    Policy {
        /// The phase.
        phase: String,
        /// The decision.
        #[serde(flatten)]
        verdict: PolicyVerdict,
    },
    /// The run ended.
    RunFinished {
        /// How it ended.
        status: RunStatus,
        /// When (RFC 3339).
        finished_at: String,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
}

/// The highest attempt number a journal may hold: the engine never starts an attempt
/// past it, so the attempt after any journaled one always has a number.
pub const MAX_ATTEMPT: u32 = u32::MAX - 1;

impl Entry {
    /// Checks the numbers a resumed run computes with: an attempt number past
    /// [`MAX_ATTEMPT`] is refused (a journal this build writes never holds one).
    pub(super) fn check(&self) -> Result<(), String> {
        let attempt = |what: &str, phase: &str, n: u32| {
            if n > MAX_ATTEMPT {
                Err(format!(
                    "{what} of phase `{phase}` is {n}, past the highest attempt number ({MAX_ATTEMPT})"
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Self::Started {
                phase, attempt: n, ..
            } => attempt("attempt", phase, *n),
            Self::AttemptFailed {
                phase, attempt: n, ..
            } => attempt("attempt", phase, *n),
            Self::Finished(f) => attempt("attempt count", &f.phase, f.attempts),
            Self::Inherited { phases } => phases
                .iter()
                .try_for_each(|(phase, p)| attempt("inherited attempt count", phase, p.attempts)),
            Self::Run { .. } | Self::RunFinished { .. } | Self::Policy { .. } => Ok(()),
        }
    }
}

/// A phase reached its final status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// The phase.
    pub phase: String,
    /// Its kind.
    pub kind: String,
    /// Final status.
    pub status: PhaseStatus,
    /// Attempts made (across resumed runs).
    pub attempts: u32,
    /// Exit code of the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it ended this way, in words (journals written before [`Finished::cause`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it ended this way, as data; its `Display` is the reason's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Reason>,
    /// Failed, but allowed to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allowed_failure: bool,
    /// Outputs it published (redacted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: Outputs,
    /// What it produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// The fingerprint of its definition and inputs when it ran (see [`crate::resume`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Set when the phase was not run because it was done in that earlier run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_in: Option<RunId>,
    /// When its first attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: String,
    /// Wall time from the first start, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// An [`Entry::Started`] record, borrowed: what the engine queues (same JSON).
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "type", rename = "started")]
pub struct StartedRef<'a> {
    /// The phase.
    pub phase: &'a str,
    /// The attempt.
    pub attempt: u32,
    /// When (RFC 3339).
    pub at: &'a str,
}

/// An [`Entry::Finished`] record, borrowed: what the engine queues (same JSON).
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "type", rename = "finished")]
pub struct FinishedRef<'a> {
    /// The phase.
    pub phase: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// Final status.
    pub status: PhaseStatus,
    /// Attempts made (across resumed runs).
    pub attempts: u32,
    /// Exit code of the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it ended this way (the words are its `Display`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'a Reason>,
    /// Failed, but allowed to.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allowed_failure: bool,
    /// Outputs it published (redacted).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: &'a Outputs,
    /// What it produced.
    #[serde(skip_serializing_if = "<[Artifact]>::is_empty")]
    pub artifacts: &'a [Artifact],
    /// The fingerprint of its definition and inputs when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<&'a str>,
    /// Set when the phase was not run because it was done in that earlier run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_in: Option<&'a RunId>,
    /// When its first attempt started (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<&'a str>,
    /// When it ended (RFC 3339).
    pub finished_at: &'a str,
    /// Wall time from the first start, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// A journal record as the engine queues it: writes the JSON payload of the [`Entry`] it
/// stands for (the bytes `serde_json` writes for that entry).
pub trait Record {
    /// Appends the record's JSON payload to `out`.
    fn write_json(&self, out: &mut Vec<u8>);
}

impl Record for Entry {
    fn write_json(&self, out: &mut Vec<u8>) {
        json::value(out, self);
    }
}

/// Written directly: one per attempt.
impl Record for StartedRef<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        let StartedRef { phase, attempt, at } = *self;
        out.extend_from_slice(b"{\"type\":\"started\",\"phase\":");
        json::string(out, phase);
        json::key(out, "attempt");
        json::uint(out, attempt.into());
        json::key(out, "at");
        json::string(out, at);
        out.push(b'}');
    }
}

/// Written directly (what most phases have: plain fields), with `serde_json` for the
/// structured fields a few phases have.
impl Record for FinishedRef<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        // Every field named: one added to the type cannot be left out here.
        let FinishedRef {
            phase,
            kind,
            status,
            attempts,
            exit_code,
            cause,
            allowed_failure,
            outputs,
            artifacts,
            fingerprint,
            done_in,
            started_at,
            finished_at,
            duration_ms,
        } = *self;
        out.extend_from_slice(b"{\"type\":\"finished\",\"phase\":");
        json::string(out, phase);
        json::key(out, "kind");
        json::string(out, kind);
        json::key(out, "status");
        json::string(out, status.as_str());
        json::key(out, "attempts");
        json::uint(out, attempts.into());
        if let Some(code) = exit_code {
            json::key(out, "exit_code");
            json::int(out, code.into());
        }
        if let Some(cause) = cause {
            json::key(out, "cause");
            json::value(out, cause);
        }
        if allowed_failure {
            json::key(out, "allowed_failure");
            out.extend_from_slice(b"true");
        }
        if !outputs.is_empty() {
            json::key(out, "outputs");
            json::value(out, outputs);
        }
        if !artifacts.is_empty() {
            json::key(out, "artifacts");
            json::value(out, artifacts);
        }
        if let Some(fingerprint) = fingerprint {
            json::key(out, "fingerprint");
            json::string(out, fingerprint);
        }
        if let Some(run) = done_in {
            json::key(out, "done_in");
            json::value(out, run);
        }
        if let Some(at) = started_at {
            json::key(out, "started_at");
            json::string(out, at);
        }
        json::key(out, "finished_at");
        json::string(out, finished_at);
        if let Some(ms) = duration_ms {
            json::key(out, "duration_ms");
            json::uint(out, ms);
        }
        out.push(b'}');
    }
}

/// What a resumed run knows of one phase from the runs before it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseResume {
    /// Set when its success is journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<Done>,
    /// Attempts started so far (the next one is numbered `attempts + 1`).
    #[serde(default)]
    pub attempts: u32,
    /// Failed attempts that count against `retries` (reset when the phase ends failed).
    #[serde(default)]
    pub failures: u32,
}

/// A journaled success.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Done {
    /// The run in which the phase ran and succeeded.
    pub run: RunId,
    /// The fingerprint of its definition and inputs then.
    pub fingerprint: String,
    /// Its outputs, restored for the phases that read them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: Outputs,
    /// Its artifacts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Exit code of its last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::frame::{encode, encode_record};

    #[test]
    fn borrowed_records_encode_like_entries() {
        let mut outputs = Outputs::new();
        outputs.insert("k".into(), "v \"q\"".into());
        let owned = Finished {
            phase: "p \"q\"".into(),
            kind: "com\tmand".into(),
            status: PhaseStatus::Skipped,
            attempts: 2,
            exit_code: Some(-3),
            reason: None,
            cause: Some(Reason::Skipped {
                message: "why".into(),
            }),
            allowed_failure: true,
            outputs,
            artifacts: vec![Artifact::new("file", "f")],
            fingerprint: Some("sha256:00".into()),
            done_in: Some(RunId::parse("r1").unwrap()),
            started_at: Some("t0".into()),
            finished_at: "t1".into(),
            duration_ms: Some(5),
        };
        fn borrowed(f: &Finished) -> FinishedRef<'_> {
            FinishedRef {
                phase: &f.phase,
                kind: &f.kind,
                status: f.status,
                attempts: f.attempts,
                exit_code: f.exit_code,
                cause: f.cause.as_ref(),
                allowed_failure: f.allowed_failure,
                outputs: &f.outputs,
                artifacts: &f.artifacts,
                fingerprint: f.fingerprint.as_deref(),
                done_in: f.done_in.as_ref(),
                started_at: f.started_at.as_deref(),
                finished_at: &f.finished_at,
                duration_ms: f.duration_ms,
            }
        }
        // Every optional field set, and none.
        let bare = Finished {
            exit_code: None,
            reason: None,
            cause: None,
            allowed_failure: false,
            outputs: Outputs::new(),
            artifacts: Vec::new(),
            fingerprint: None,
            done_in: None,
            started_at: None,
            duration_ms: None,
            ..owned.clone()
        };
        for f in [owned, bare] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            encode(&Entry::Finished(Box::new(f.clone())), &mut a);
            encode_record(&borrowed(&f), &mut b);
            assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode(
            &Entry::Started {
                phase: "p".into(),
                attempt: 4,
                at: "t".into(),
            },
            &mut a,
        );
        encode_record(
            &StartedRef {
                phase: "p",
                attempt: 4,
                at: "t",
            },
            &mut b,
        );
        assert_eq!(a, b);
    }
}
