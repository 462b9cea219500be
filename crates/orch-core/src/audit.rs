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
//! see [`crate::journal`]). A crash can only cut the file: a last line without its newline
//! is a *torn tail*, reported as such by [`verify`] and not as tampering. The next run
//! that appends cuts the torn bytes off and records that it did (a `torn_tail` entry with
//! their length and digest), so the chain stays whole.
//!
//! Secret values never reach the log: vars are redacted, outputs are kept as a digest.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use indexmap::IndexMap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::journal::{FileStorage, JournalWriter};
use crate::record::{Outputs, PhaseStatus, PolicyVerdict, RunStatus, rfc3339};

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

// ---------------------------------------------------------------------------------------
// Entries

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

fn hex(bytes: &[u8]) -> String {
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
fn encode(
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

// ---------------------------------------------------------------------------------------
// Writing

/// Appends entries to an audit log (see the module docs).
pub struct AuditWriter {
    path: PathBuf,
    writer: JournalWriter,
    seq: u64,
    prev: String,
    key: Option<Vec<u8>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for AuditWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditWriter")
            .field("path", &self.path)
            .field("seq", &self.seq)
            .field("keyed", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

impl AuditWriter {
    /// Opens (or creates) the log at `path` to append to it, chained to its last entry.
    /// A torn tail is cut off and recorded. With `durable`, entries are synced with group
    /// commit; `key` makes every entry carry an HMAC.
    pub fn open(path: &Path, durable: bool, key: Option<Vec<u8>>) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let (seq, prev, torn) = match std::fs::File::open(path) {
            Ok(f) => read_tail(path, f)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, GENESIS.to_owned(), None),
            Err(e) => return Err(io(e)),
        };
        if let Some((at, _)) = &torn {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io)?;
            f.set_len(*at).map_err(io)?;
        }
        let storage = FileStorage::open_append(path, durable).map_err(io)?;
        let writer = JournalWriter::create_raw(Box::new(storage), durable).map_err(io)?;
        let mut w = Self {
            path: path.to_owned(),
            writer,
            seq,
            prev,
            key,
            buf: Vec::with_capacity(512),
        };
        if let Some((at, bytes)) = torn {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(at);
            debug_assert_eq!(len, at);
            w.queue(&Event::TornTail {
                bytes: bytes.len() as u64,
                sha256: &sha256_hex(&bytes),
            });
        }
        Ok(w)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues an entry (written by the next [`flush`](Self::flush)).
    pub fn queue(&mut self, event: &Event<'_>) {
        self.seq += 1;
        self.buf.clear();
        let time = rfc3339(SystemTime::now());
        self.prev = encode(
            self.seq,
            &time,
            &self.prev,
            event,
            self.key.as_deref(),
            &mut self.buf,
        );
        self.writer.queue_bytes(&self.buf);
    }

    /// Writes what is queued, with one write.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    /// Whether entries are queued and not yet written.
    pub fn has_queued(&self) -> bool {
        self.writer.has_queued()
    }

    /// Writes what is queued and waits until all of it is durable.
    pub async fn wait_all(&mut self) -> Result<(), String> {
        self.writer
            .wait_all()
            .await
            .map_err(|e| e.replace("journal", "audit log"))
    }

    /// The last entry's sequence number and hash: the head of the chain.
    pub fn head(&self) -> (u64, &str) {
        (self.seq, &self.prev)
    }

    /// Stops the sync thread once what was written is synced.
    pub fn close(self) {
        self.writer.close();
    }
}

/// Reads the end of the log: the last entry's seq and hash, and the torn tail (its offset
/// and bytes), if any.
#[allow(clippy::type_complexity)]
fn read_tail(
    path: &Path,
    mut f: std::fs::File,
) -> Result<(u64, String, Option<(u64, Vec<u8>)>), AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_owned(),
        source,
    };
    let len = f.metadata().map_err(io)?.len();
    let mut chunk = 64 * 1024u64;
    loop {
        let from = len.saturating_sub(chunk);
        f.seek(SeekFrom::Start(from)).map_err(io)?;
        let mut bytes = Vec::with_capacity((len - from) as usize);
        f.by_ref().read_to_end(&mut bytes).map_err(io)?;
        // Everything after the last newline is a torn tail.
        let end = bytes.iter().rposition(|&b| b == b'\n');
        let torn_at = end.map_or(0, |e| e + 1);
        let torn =
            (torn_at < bytes.len()).then(|| (from + torn_at as u64, bytes[torn_at..].to_vec()));
        let Some(end) = end else {
            if from == 0 {
                return Ok((0, GENESIS.to_owned(), torn));
            }
            chunk *= 4;
            continue;
        };
        let start = bytes[..end].iter().rposition(|&b| b == b'\n');
        let Some(start) = start.map(|s| s + 1).or((from == 0).then_some(0)) else {
            chunk *= 4;
            continue;
        };
        let line = &bytes[start..end];
        let entry = parse_line(line).map_err(|message| AuditError::BadTail {
            path: path.to_owned(),
            message,
        })?;
        return Ok((entry.seq, entry.hash, torn));
    }
}

// ---------------------------------------------------------------------------------------
// Reading and verifying

/// One entry as read back.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its sequence number.
    pub seq: u64,
    /// The hash it claims for the entry before it.
    pub prev: String,
    /// Its hash, as written.
    pub hash: String,
    /// Its HMAC, as written.
    pub hmac: Option<String>,
    /// The hash of its bytes (what `hash` must be).
    pub computed: String,
    /// The whole entry as JSON.
    pub value: serde_json::Value,
}

impl Entry {
    /// The `event` field.
    pub fn event(&self) -> &str {
        self.value["event"].as_str().unwrap_or("")
    }

    /// A string field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.value.get(name).and_then(serde_json::Value::as_str)
    }
}

/// Parses one line (without its newline).
fn parse_line(line: &[u8]) -> Result<Entry, String> {
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON entry: {e}"))?;
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    let at = text
        .rfind(",\"hash\":\"")
        .ok_or_else(|| "the entry has no hash".to_owned())?;
    let mut body = text.as_bytes()[..at].to_vec();
    body.push(b'}');
    let str_field = |k: &str| value.get(k).and_then(serde_json::Value::as_str);
    let seq = value
        .get("seq")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "the entry has no seq".to_owned())?;
    let prev = str_field("prev")
        .ok_or_else(|| "the entry has no prev".to_owned())?
        .to_owned();
    let hash = str_field("hash")
        .ok_or_else(|| "the entry has no hash".to_owned())?
        .to_owned();
    let hmac = str_field("hmac").map(str::to_owned);
    Ok(Entry {
        seq,
        prev,
        hash,
        hmac,
        computed: sha256_hex(&body),
        value,
    })
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry is whole and chained (and keyed, when a key was given).
    Intact,
    /// Line `line` (1-based) is where the chain breaks, with why.
    Tampered {
        /// The first bad line.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

/// The result of checking a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Intact or where it breaks.
    pub verdict: Verdict,
    /// Whole entries read before the verdict (all of them when intact).
    pub entries: usize,
    /// The head of the chain: the last good entry's seq and hash.
    pub head: Option<(u64, String)>,
    /// Bytes of torn tail after the last whole entry (an interrupted write).
    pub torn: u64,
    /// Entries carrying an HMAC.
    pub keyed: usize,
    /// Whether HMACs were checked (a key was given).
    pub key_checked: bool,
    /// Torn tails earlier runs cut off (`torn_tail` entries).
    pub recovered: usize,
    /// Runs that started and have no `run_finished` entry (interrupted or still running).
    pub unfinished: Vec<String>,
}

/// Checks a log: every line whole, each `hash` right, each `prev` the hash before it,
/// `seq` counting up by one, and with `key`, every entry from the first keyed one on
/// carrying a right HMAC (and at least one keyed entry).
pub fn verify(path: &Path, key: Option<&[u8]>) -> Result<Report, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(verify_bytes(&bytes, key))
}

/// [`verify`] over the bytes of a log.
pub fn verify_bytes(bytes: &[u8], key: Option<&[u8]>) -> Report {
    let mut report = Report {
        verdict: Verdict::Intact,
        entries: 0,
        head: None,
        torn: 0,
        keyed: 0,
        key_checked: key.is_some(),
        recovered: 0,
        unfinished: Vec::new(),
    };
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1);
    report.torn = (bytes.len() - whole) as u64;
    let mut prev = GENESIS.to_owned();
    let mut seq = 0u64;
    let mut keyed_from: Option<usize> = None;
    let mut open_runs: IndexMap<String, ()> = IndexMap::new();
    let tamper = |report: &mut Report, line: usize, why: String| {
        report.verdict = Verdict::Tampered { line, why };
    };
    for (n, line) in bytes[..whole].split_inclusive(|&b| b == b'\n').enumerate() {
        let lineno = n + 1;
        let line = &line[..line.len() - 1];
        let entry = match parse_line(line) {
            Ok(e) => e,
            Err(why) => {
                tamper(&mut report, lineno, why);
                return report;
            }
        };
        if entry.computed != entry.hash {
            tamper(
                &mut report,
                lineno,
                format!(
                    "entry {} was changed: its hash does not match its contents",
                    entry.seq
                ),
            );
            return report;
        }
        if entry.prev != prev {
            let why = if entry.seq <= seq {
                format!(
                    "entry {} comes after entry {seq}: entries were reordered or inserted",
                    entry.seq
                )
            } else if entry.seq > seq + 1 {
                format!(
                    "entries {} to {} are missing (removed)",
                    seq + 1,
                    entry.seq - 1
                )
            } else {
                format!(
                    "entry {} does not chain to the entry before it: an entry was removed, inserted or replaced",
                    entry.seq
                )
            };
            tamper(&mut report, lineno, why);
            return report;
        }
        if entry.seq != seq + 1 {
            tamper(
                &mut report,
                lineno,
                format!("entry has seq {}, expected {}", entry.seq, seq + 1),
            );
            return report;
        }
        if entry.hmac.is_some() {
            report.keyed += 1;
            keyed_from.get_or_insert(lineno);
        }
        if let Some(key) = key {
            match &entry.hmac {
                Some(mac) if *mac != hex(&hmac_sha256(key, entry.hash.as_bytes())) => {
                    tamper(
                        &mut report,
                        lineno,
                        format!(
                            "entry {}: its HMAC does not match (rewritten without the key, or another key)",
                            entry.seq
                        ),
                    );
                    return report;
                }
                Some(_) => {}
                None if keyed_from.is_some() => {
                    tamper(
                        &mut report,
                        lineno,
                        format!(
                            "entry {} has no HMAC, but entries before it have one",
                            entry.seq
                        ),
                    );
                    return report;
                }
                None => {}
            }
        }
        match entry.event() {
            "run_started" => {
                if let Some(run) = entry.field("run") {
                    open_runs.insert(run.to_owned(), ());
                }
            }
            "run_finished" => {
                if let Some(run) = entry.field("run") {
                    open_runs.shift_remove(run);
                }
            }
            "torn_tail" => report.recovered += 1,
            _ => {}
        }
        seq = entry.seq;
        prev = entry.hash.clone();
        report.entries += 1;
        report.head = Some((entry.seq, entry.hash));
    }
    if key.is_some() && report.entries > 0 && report.keyed == 0 {
        tamper(
            &mut report,
            1,
            "a key was given, but no entry carries an HMAC (the log was written, or rewritten, without the key)".into(),
        );
        return report;
    }
    report.unfinished = open_runs.into_keys().collect();
    report
}

/// Which entries `orch audit show` prints.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this run's entries.
    pub run: Option<String>,
    /// Only this phase's entries.
    pub phase: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<SystemTime>,
    /// Only entries before this time.
    pub until: Option<SystemTime>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &Entry) -> bool {
        if self
            .run
            .as_deref()
            .is_some_and(|r| e.field("run") != Some(r))
        {
            return false;
        }
        if self
            .phase
            .as_deref()
            .is_some_and(|p| e.field("phase") != Some(p))
        {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = e
                .field("time")
                .and_then(|t| humantime::parse_rfc3339(t).ok())
            else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        true
    }
}

impl Entry {
    /// One line for people: `SEQ TIME EVENT fields...`.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:>6} {} {}",
            self.seq,
            self.field("time").unwrap_or("-"),
            self.event()
        );
        if let serde_json::Value::Object(m) = &self.value {
            for (k, v) in m {
                if matches!(
                    k.as_str(),
                    "seq" | "time" | "prev" | "hash" | "hmac" | "event"
                ) {
                    continue;
                }
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push_str(&format!(" {k}={v}"));
            }
        }
        out
    }
}

impl Report {
    /// The result for people, naming the log.
    pub fn render(&self, path: &Path) -> String {
        let mut out = String::new();
        let head = self
            .head
            .as_ref()
            .map(|(seq, h)| format!("head: entry {seq}, sha256 {h}"))
            .unwrap_or_else(|| "empty".into());
        match &self.verdict {
            Verdict::Intact => out.push_str(&format!(
                "{}: intact, {} entr{}; {head}\n",
                path.display(),
                self.entries,
                if self.entries == 1 { "y" } else { "ies" }
            )),
            Verdict::Tampered { line, why } => {
                out.push_str(&format!(
                    "{}: TAMPERED: line {line}: {why}\n",
                    path.display()
                ));
                out.push_str(&format!(
                    "  the {} entr{} before it chain correctly; last good {head}\n",
                    self.entries,
                    if self.entries == 1 { "y" } else { "ies" }
                ));
            }
        }
        if self.key_checked {
            out.push_str("  keyed: HMACs checked with ORCH_AUDIT_KEY (a rewrite of the whole log is detected too)\n");
            if self.keyed < self.entries {
                out.push_str(&format!(
                    "  note: the first {} entr{} carry no HMAC (written before a key was used)\n",
                    self.entries - self.keyed,
                    if self.entries - self.keyed == 1 {
                        "y"
                    } else {
                        "ies"
                    }
                ));
            }
        } else if self.keyed > 0 {
            out.push_str("  entries carry HMACs, but ORCH_AUDIT_KEY is not set: only edits, removals, insertions and reorderings can be detected, not a rewrite of the whole log\n");
        } else {
            out.push_str("  not keyed: only edits, removals, insertions and reorderings can be detected, not a rewrite of the whole log (set ORCH_AUDIT_KEY when running to key entries)\n");
        }
        if self.torn > 0 {
            out.push_str(&format!(
                "  torn tail: {} byte{} after the last entry (a write cut short by a crash, not tampering)\n",
                self.torn,
                if self.torn == 1 { "" } else { "s" }
            ));
        }
        if self.recovered > 0 {
            out.push_str(&format!(
                "  {} torn tail{} cut off by later runs (recorded as torn_tail entries)\n",
                self.recovered,
                if self.recovered == 1 { "" } else { "s" }
            ));
        }
        if !self.unfinished.is_empty() {
            out.push_str(&format!(
                "  runs with no end entry (interrupted or still running): {}\n",
                self.unfinished.join(", ")
            ));
        }
        out
    }
}

/// Reads every whole entry of a log (for `orch audit show`); lines that cannot be read
/// are left out.
pub fn read(path: &Path) -> Result<Vec<Entry>, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |e| e + 1);
    Ok(bytes[..whole]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| parse_line(l).ok())
        .collect())
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

    fn log(n: usize, key: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_owned();
        for i in 0..n {
            prev = encode(
                i as u64 + 1,
                "2026-01-01T00:00:00.000Z",
                &prev,
                &Event::PhaseStarted {
                    run: "r1",
                    phase: &format!("p{i}"),
                    attempt: 1,
                },
                key,
                &mut out,
            );
        }
        out
    }

    #[test]
    fn a_written_log_verifies_and_a_torn_tail_is_not_tampering() {
        let bytes = log(3, None);
        let r = verify_bytes(&bytes, None);
        assert_eq!(r.verdict, Verdict::Intact);
        assert_eq!(r.entries, 3);
        for cut in 1..40 {
            let r = verify_bytes(&bytes[..bytes.len() - cut], None);
            assert_eq!(r.verdict, Verdict::Intact, "cut {cut}");
            assert_eq!(r.entries, 2);
            assert!(r.torn > 0 || cut == 0);
        }
    }

    #[test]
    fn keyed_entries_verify_only_with_the_key() {
        let bytes = log(3, Some(b"k1"));
        assert_eq!(verify_bytes(&bytes, Some(b"k1")).verdict, Verdict::Intact);
        assert!(matches!(
            verify_bytes(&bytes, Some(b"k2")).verdict,
            Verdict::Tampered { line: 1, .. }
        ));
        // Without a key, the chain still verifies.
        assert_eq!(verify_bytes(&bytes, None).verdict, Verdict::Intact);
        // A rewrite without the key carries no HMAC: refused when the key is given.
        let bytes = log(3, None);
        assert!(matches!(
            verify_bytes(&bytes, Some(b"k1")).verdict,
            Verdict::Tampered { .. }
        ));
    }
}
