//! The audit log: `STATE_DIR/audit.log`, a tamper-evident record of every run of a state
//! directory (who ran what, which phases started and how they ended, what the policy
//! decided).
//!
//! # Format
//! One JSON object per line. Each entry has `seq` (1, 2, ... across runs), `time`
//! (RFC 3339), `prev` (the `hash` of the entry before it; 64 zeros for the first), `event`
//! and the event's fields, then `hash` and, when the log is keyed, `hmac`:
//!
//! ```text
//! {"seq":7,"time":"...","prev":"9f2c...","event":"phase_finished",...,"hash":"41ab...","hmac":"..."}
//! ```
//!
//! `hash` is the SHA-256 (hex) of the line's bytes up to the `,"hash":` that ends it, with
//! `}` appended: the entry as written without its hash. Changing, removing, inserting or
//! reordering entries breaks the chain at the first changed place. Whoever can write the
//! file can still rewrite the whole chain; with a key (`ORCH_AUDIT_KEY`), each entry also
//! carries `hmac`, HMAC-SHA256 of its `hash` under the key, which a rewrite without the
//! key cannot produce.
//!
//! # Writing
//! The engine queues entries in the turns of its loop and writes them with the journal's
//! discipline (one `write(2)` per turn, group-committed `fdatasync(2)` on a sync thread;
//! see the `journal` module). A crash can only cut the file: a last line without its newline
//! is a *torn tail*, reported as such by [`verify`] and not as tampering. The next run
//! that appends cuts the torn bytes off and records that it did (a `torn_tail` entry with
//! their length and digest), so the chain stays whole.
//!

mod chain;
mod verify;
mod writer;

use std::path::PathBuf;

pub use chain::{Event, hmac_sha256, outputs_digest, sha256_hex};
pub use verify::{Entry, Filter, Report, Verdict, read, verify, verify_bytes};
pub use writer::AuditWriter;

/// The audit log's file name in the state directory.
pub const AUDIT_FILE: &str = "audit.log";
/// The environment variable holding the key of keyed (HMAC) entries.
pub const KEY_ENV: &str = "ORCH_AUDIT_KEY";
/// The environment variable that turns the audit log off (`ORCH_AUDIT=off`).
pub const ENV: &str = "ORCH_AUDIT";
/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether runs write the audit log: `ORCH_AUDIT=off|0|false` turns it off.
pub fn enabled_from_env() -> bool {
    !matches!(std::env::var(ENV).as_deref(), Ok("off" | "0" | "false"))
}

/// The key from `ORCH_AUDIT_KEY`, when set and not empty.
pub fn key_from_env() -> Option<Vec<u8>> {
    std::env::var_os(KEY_ENV)
        .map(|v| v.into_encoded_bytes())
        .filter(|v| !v.is_empty())
}

/// Whether a run writes the audit log, and with which key.
#[derive(Clone, Default)]
pub struct AuditSettings {
    /// Write it (the default).
    pub enabled: bool,
    /// Make every entry carry an HMAC under this key.
    pub key: Option<Vec<u8>>,
}

impl AuditSettings {
    /// `ORCH_AUDIT` and `ORCH_AUDIT_KEY`.
    pub fn from_env() -> Self {
        Self {
            enabled: enabled_from_env(),
            key: key_from_env(),
        }
    }
}

impl std::fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSettings")
            .field("enabled", &self.enabled)
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

/// The name of this host.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// An audit log that cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened, read or written.
    #[error("cannot access audit log {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Its last whole entry cannot be read, so nothing can be chained to it.
    #[error(
        "audit log {path} ends with an entry that cannot be read ({message}); check it with `orch audit verify`"
    )]
    BadTail {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}
