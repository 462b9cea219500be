//! The entries of the audit log and their chain: how an entry is encoded, hashed and
//! (with a key) signed.

use indexmap::IndexMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::journal::json;
use crate::record::{Outputs, PhaseStatus, PolicyVerdict, RunStatus};

/// What one entry records (the `event` field and its fields).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A run began.
    RunStarted {
        /// The run.
        run: &'a str,
        /// The pipeline's name.
        pipeline: &'a str,
        /// Who ran it.
        user: &'a str,
        /// On which host.
        host: &'a str,
        /// The pipeline file, when there is one.
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<&'a str>,
        /// SHA-256 of the pipeline file's text.
        #[serde(skip_serializing_if = "Option::is_none")]
        file_sha256: Option<&'a str>,
        /// The vars as used (secret values redacted).
        vars: &'a IndexMap<String, String>,
        /// What was selected (`--only`, `--skip`, `--from`).
        selection: &'a [String],
        /// The run it resumes.
        #[serde(skip_serializing_if = "Option::is_none")]
        resumed_from: Option<&'a str>,
        /// The process.
        pid: u32,
    },
    /// What the policy decided for a phase.
    Policy {
        /// The run.
        run: &'a str,
        /// The phase.
        phase: &'a str,
        /// The decision.
        #[serde(flatten)]
        verdict: &'a PolicyVerdict,
    },
    /// An attempt of a phase began.
    PhaseStarted {
        /// The run.
        run: &'a str,
        /// The phase.
        phase: &'a str,
        /// The attempt (1-based).
        attempt: u32,
    },
    /// A phase reached its final status.
    PhaseFinished {
        /// The run.
        run: &'a str,
        /// The phase.
        phase: &'a str,
        /// Its status.
        status: PhaseStatus,
        /// Attempts made.
        attempts: u32,
        /// SHA-256 of its outputs (as sorted `key=value` lines), when it published any.
        #[serde(skip_serializing_if = "Option::is_none")]
        outputs_sha256: Option<&'a str>,
        /// Why it ended so.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    /// A run ended.
    RunFinished {
        /// The run.
        run: &'a str,
        /// How it ended.
        status: RunStatus,
        /// Wall time in milliseconds.
        duration_ms: u64,
    },
    /// A run found the log cut by a crash and removed the torn bytes before appending.
    TornTail {
        /// How many bytes were cut off.
        bytes: u64,
        /// Their SHA-256.
        sha256: &'a str,
    },
}

impl Event<'_> {
    /// Appends the event's fields, its `event` tag first, each after a comma, and the
    /// closing brace: the bytes `serde_json` writes for the event without its opening
    /// brace. The events of every phase are written directly; the few of a run, with
    /// `serde_json`.
    fn write_fields(&self, out: &mut Vec<u8>) {
        match *self {
            Event::PhaseStarted {
                run,
                phase,
                attempt,
            } => {
                out.extend_from_slice(b",\"event\":\"phase_started\",\"run\":");
                json::string(out, run);
                json::key(out, "phase");
                json::string(out, phase);
                json::key(out, "attempt");
                json::uint(out, attempt.into());
                out.push(b'}');
            }
            Event::PhaseFinished {
                run,
                phase,
                status,
                attempts,
                outputs_sha256,
                reason,
            } => {
                out.extend_from_slice(b",\"event\":\"phase_finished\",\"run\":");
                json::string(out, run);
                json::key(out, "phase");
                json::string(out, phase);
                json::key(out, "status");
                json::string(out, status.as_str());
                json::key(out, "attempts");
                json::uint(out, attempts.into());
                if let Some(digest) = outputs_sha256 {
                    json::key(out, "outputs_sha256");
                    json::string(out, digest);
                }
                if let Some(reason) = reason {
                    json::key(out, "reason");
                    json::string(out, reason);
                }
                out.push(b'}');
            }
            Event::RunStarted { .. }
            | Event::Policy { .. }
            | Event::RunFinished { .. }
            | Event::TornTail { .. } => {
                // An object whose first field is its tag: its fields follow the head's.
                let at = out.len();
                json::value(out, self);
                out[at] = b',';
            }
        }
    }
}

/// SHA-256 of `data`, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    let mut s = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut s);
    // Hex digits are ASCII.
    String::from_utf8(s).unwrap_or_default()
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = DIGITS[usize::from(b >> 4)];
        o[1] = DIGITS[usize::from(b & 15)];
    }
}

/// An entry's hash: SHA-256, as lowercase hex, kept on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct HexHash([u8; 64]);

impl HexHash {
    fn of(data: &[u8]) -> Self {
        let mut h = [0u8; 64];
        hex_into(&Sha256::digest(data), &mut h);
        Self(h)
    }

    pub(super) fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for HexHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// SHA-256 of a phase's outputs (sorted `key=value` lines), or `None` when it has none.
pub fn outputs_digest(outputs: &Outputs) -> Option<String> {
    if outputs.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for (k, v) in outputs {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    }
    Some(hex(&h.finalize()))
}

/// Encodes one entry as a line (with its newline) and returns its hash.
///
/// The line is `{"seq":N,"time":T,"prev":P,` then the event's own fields (its `event` tag
/// first), then `"hash"` (SHA-256 of the line up to there, closed with `}`) and, with a
/// key, `"hmac"`. Written field by field into `out`: no intermediate values.
pub(super) fn encode(
    seq: u64,
    time: &str,
    prev: &str,
    event: &Event<'_>,
    key: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> HexHash {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    json::uint(out, seq);
    json::key(out, "time");
    json::string(out, time);
    json::key(out, "prev");
    json::string(out, prev);
    event.write_fields(out);
    let hash = HexHash::of(&out[start..]);
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(&hash.0);
    out.push(b'"');
    if let Some(key) = key {
        let mut mac = [0u8; 64];
        hex_into(&hmac_sha256(key, &hash.0), &mut mac);
        out.extend_from_slice(b",\"hmac\":\"");
        out.extend_from_slice(&mac);
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How entries were encoded before [`encode`] wrote them field by field: the same
    /// bytes are expected.
    fn encode_with_serde(
        seq: u64,
        time: &str,
        prev: &str,
        event: &Event<'_>,
        key: Option<&[u8]>,
    ) -> Vec<u8> {
        #[derive(Serialize)]
        struct Head<'a, 'e> {
            seq: u64,
            time: &'a str,
            prev: &'a str,
            #[serde(flatten)]
            event: &'a Event<'e>,
        }
        let mut out = serde_json::to_vec(&Head {
            seq,
            time,
            prev,
            event,
        })
        .unwrap();
        let hash = sha256_hex(&out);
        out.pop();
        out.extend_from_slice(format!(",\"hash\":\"{hash}\"").as_bytes());
        if let Some(key) = key {
            let mac = hex(&hmac_sha256(key, hash.as_bytes()));
            out.extend_from_slice(format!(",\"hmac\":\"{mac}\"").as_bytes());
        }
        out.extend_from_slice(b"}\n");
        out
    }

    #[test]
    fn entries_are_encoded_as_serde_would_with_the_head_flattened() {
        let vars: IndexMap<String, String> = [
            ("a".to_owned(), "1".to_owned()),
            ("q\"".to_owned(), "\n".to_owned()),
        ]
        .into();
        let selection = ["only:x".to_owned()];
        let outputs = Outputs::from([("k".to_owned(), "v".to_owned())]);
        let digest = outputs_digest(&outputs);
        let denied = PolicyVerdict {
            allowed: false,
            deny: vec!["no \"deploys\" on fridays".into()],
            error: None,
        };
        let allowed = PolicyVerdict {
            allowed: true,
            deny: Vec::new(),
            error: Some("e".into()),
        };
        let events = [
            Event::RunStarted {
                run: "r1",
                pipeline: "p\u{e9}",
                user: "me",
                host: "h",
                file: Some("/x/orch.toml"),
                file_sha256: Some("ab"),
                vars: &vars,
                selection: &selection,
                resumed_from: None,
                pid: 42,
            },
            Event::RunStarted {
                run: "r1",
                pipeline: "p",
                user: "me",
                host: "h",
                file: None,
                file_sha256: None,
                vars: &vars,
                selection: &[],
                resumed_from: Some("r0"),
                pid: 42,
            },
            Event::Policy {
                run: "r1",
                phase: "deploy",
                verdict: &denied,
            },
            Event::Policy {
                run: "r1",
                phase: "deploy",
                verdict: &allowed,
            },
            Event::PhaseStarted {
                run: "r1",
                phase: "build",
                attempt: 3,
            },
            Event::PhaseFinished {
                run: "r1",
                phase: "build",
                status: PhaseStatus::Failed,
                attempts: 3,
                outputs_sha256: digest.as_deref(),
                reason: Some("exit \"2\"\t"),
            },
            Event::PhaseFinished {
                run: "r1",
                phase: "build",
                status: PhaseStatus::Succeeded,
                attempts: 1,
                outputs_sha256: None,
                reason: None,
            },
            Event::RunFinished {
                run: "r1",
                status: RunStatus::Succeeded,
                duration_ms: 12,
            },
            Event::TornTail {
                bytes: 7,
                sha256: "cd",
            },
        ];
        let prev = sha256_hex(b"x");
        for key in [None, Some(&b"k1"[..])] {
            for (seq, event) in events.iter().enumerate() {
                let mut out = b"earlier\n".to_vec();
                let hash = encode(
                    seq as u64,
                    "2026-01-01T00:00:00.000Z",
                    &prev,
                    event,
                    key,
                    &mut out,
                );
                let want =
                    encode_with_serde(seq as u64, "2026-01-01T00:00:00.000Z", &prev, event, key);
                assert_eq!(
                    String::from_utf8_lossy(&out[8..]),
                    String::from_utf8_lossy(&want)
                );
                let body = &want[..want.len() - 1];
                let at = body.windows(8).position(|w| w == b",\"hash\":").unwrap();
                let mut hashed = body[..at].to_vec();
                hashed.push(b'}');
                assert_eq!(hash.as_str(), sha256_hex(&hashed));
            }
        }
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 of RFC 4231.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
