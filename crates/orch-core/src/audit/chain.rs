//! The entries of the audit log and their chain: how an entry is encoded, hashed and
//! (with a key) signed.

use indexmap::IndexMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

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

#[derive(Serialize)]
struct Head<'a, 'e> {
    seq: u64,
    time: &'a str,
    prev: &'a str,
    #[serde(flatten)]
    event: &'a Event<'e>,
}

/// SHA-256 of `data`, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
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
pub(super) fn encode(
    seq: u64,
    time: &str,
    prev: &str,
    event: &Event<'_>,
    key: Option<&[u8]>,
    out: &mut Vec<u8>,
) -> String {
    let start = out.len();
    // Serializing these plain types cannot fail.
    let _ = serde_json::to_writer(
        &mut *out,
        &Head {
            seq,
            time,
            prev,
            event,
        },
    );
    let hash = sha256_hex(&out[start..]);
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"hash\":\"");
    out.extend_from_slice(hash.as_bytes());
    out.push(b'"');
    if let Some(key) = key {
        out.extend_from_slice(b",\"hmac\":\"");
        out.extend_from_slice(hex(&hmac_sha256(key, hash.as_bytes())).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"}\n");
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

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
