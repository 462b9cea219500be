//! The run journal: an append-only, checksummed log of what a run did, written to
//! `STATE_DIR/runs/RUN_ID/journal` and made durable before anything is reported.
//!
//! # Format (version 1)
//! ```text
//! header:  "ORCHJRNL" (8 bytes) | format version (u32 LE)
//! record:  payload length (u32 LE) | crc32c(length bytes) (u32 LE)
//!          | crc32c(payload) (u32 LE) | payload (JSON of one [`Entry`])
//! ```
//! The length has its own checksum so that a damaged length is told apart from a record
//! cut short by a crash.
//!
//! # Reading back
//! [`read`] returns every whole record up to the first one that is not whole. What follows
//! is a *torn tail* (ignored and reported in [`Contents::torn`]) when it can only be the
//! remains of an interrupted write: fewer bytes than a record header, a record whose
//! (checked) length runs past the end of the file, a last record whose payload checksum
//! fails, or only zero bytes (blocks the file system allocated but never wrote). Anything
//! else, a bad record with more data after it, is corruption: [`JournalError::Corrupt`]
//! names the offset, and nothing is accepted silently.
//!
//! # Writing
//! [`JournalWriter::append`] writes a record with one `write(2)` from the engine's thread
//! (so a killed process loses nothing it appended) and returns its sequence number; a
//! sync thread makes written records durable with `fdatasync(2)`, as many at a time as
//! were written while the previous sync ran (group commit), and publishes the highest
//! durable sequence number on a [`tokio::sync::watch`] channel. The engine reports a phase
//! finished only once its record is durable.
//!
//! The engine also queues records ([`JournalWriter::queue`]) and writes everything queued
//! with one `write(2)` ([`JournalWriter::flush`]): the records of one turn of its loop (the
//! phases that finished, the attempts about to start) share a write. It flushes before it
//! starts an attempt (a `Started` record is written before its attempt runs, so attempt
//! numbers never repeat after a crash) and before it waits; a queued record is never
//! counted as written or durable, and records reach the file in the order they were
//! queued.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::failpoint;
use crate::ids::RunId;
use crate::record::{Artifact, Outputs, PhaseStatus, PolicyVerdict, RunStatus};

/// The version of the journal format written by this build.
pub const JOURNAL_FORMAT_VERSION: u32 = 1;
/// The journal's file name inside a run directory.
pub const JOURNAL_FILE: &str = "journal";
const MAGIC: &[u8; 8] = b"ORCHJRNL";
const HEADER_LEN: usize = 12;
const FRAME_LEN: usize = 12;

// ---------------------------------------------------------------------------------------
// Entries

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
    fn check(&self) -> Result<(), String> {
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
    /// Why it ended this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    /// Why it ended this way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
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

// ---------------------------------------------------------------------------------------
// Errors

/// A journal that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be opened, read or written.
    #[error("cannot access journal {path}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged before its last record.
    #[error("journal {path} is corrupt at byte {offset}: {message}")]
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The file was written by a newer (or unknown) format.
    #[error(
        "journal {path} has format version {version}; this build reads version {JOURNAL_FORMAT_VERSION}"
    )]
    Version {
        /// The journal file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
}

// ---------------------------------------------------------------------------------------
// CRC-32C (Castagnoli), table-driven.

/// Slicing-by-8 tables: `t[0]` is the classic byte table, `t[k][b]` the CRC of byte `b`
/// followed by `k` zero bytes.
const fn crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = t[0][(prev & 0xff) as usize] ^ (prev >> 8);
            k += 1;
        }
        i += 1;
    }
    t
}

static CRC_TABLES: [[u32; 256]; 8] = crc_tables();

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut c = !0u32;
    let mut chunks = data.chunks_exact(8);
    for b in &mut chunks {
        let lo = c ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        c = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][usize::from(b[4])]
            ^ t[2][usize::from(b[5])]
            ^ t[1][usize::from(b[6])]
            ^ t[0][usize::from(b[7])];
    }
    for &b in chunks.remainder() {
        c = t[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

// ---------------------------------------------------------------------------------------
// Encoding and reading

/// The journal header.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&JOURNAL_FORMAT_VERSION.to_le_bytes());
    h
}

/// Appends the framed record of `entry` to `buf`.
pub fn encode(entry: &Entry, buf: &mut Vec<u8>) {
    encode_record(entry, buf);
}

/// Appends the framed record of anything that serializes as an [`Entry`] (an entry, a
/// [`StartedRef`], a [`FinishedRef`]) to `buf`.
pub fn encode_record<T: Serialize + ?Sized>(entry: &T, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_LEN]);
    // Serializing these plain types cannot fail; an empty payload would be caught on read.
    let _ = serde_json::to_writer(&mut *buf, entry);
    let len = (buf.len() - start - FRAME_LEN) as u32;
    let len_bytes = len.to_le_bytes();
    let pcrc = crc32c(&buf[start + FRAME_LEN..]);
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc32c(&len_bytes).to_le_bytes());
    buf[start + 8..start + 12].copy_from_slice(&pcrc.to_le_bytes());
}

/// What [`read`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Contents {
    /// Every whole record, in order.
    pub entries: Vec<Entry>,
    /// Bytes of header and whole records.
    pub valid_len: u64,
    /// Bytes of torn tail after them (0 when the file ends with a whole record).
    pub torn: u64,
}

/// Reads a journal file. See the module docs for what counts as a torn tail.
pub fn read(path: &Path) -> Result<Contents, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&bytes, path)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

/// Parses journal bytes (`path` is only used in errors).
pub fn parse(bytes: &[u8], path: &Path) -> Result<Contents, JournalError> {
    let corrupt = |offset: usize, message: String| JournalError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        message,
    };
    let n = bytes.len();
    if n < HEADER_LEN {
        // Cut short while the header was written: a prefix of the header is an empty
        // journal; anything else is not a journal.
        if header()[..n] == bytes[..] {
            return Ok(Contents {
                entries: Vec::new(),
                valid_len: 0,
                torn: n as u64,
            });
        }
        return Err(corrupt(0, "not an orch journal (bad header)".into()));
    }
    if &bytes[..8] != MAGIC {
        return Err(corrupt(0, "not an orch journal (bad magic)".into()));
    }
    let version = u32_at(bytes, 8);
    if version != JOURNAL_FORMAT_VERSION {
        return Err(JournalError::Version {
            path: path.to_owned(),
            version,
        });
    }
    let mut entries = Vec::new();
    let mut pos = HEADER_LEN;
    let zero_tail = |from: usize| bytes[from..].iter().all(|b| *b == 0);
    while pos < n {
        let torn = |pos: usize| Contents {
            entries: Vec::new(),
            valid_len: pos as u64,
            torn: (n - pos) as u64,
        };
        if n - pos < FRAME_LEN {
            let mut c = torn(pos);
            c.entries = entries;
            return Ok(c);
        }
        let len_bytes = &bytes[pos..pos + 4];
        let len = u32_at(bytes, pos) as usize;
        if crc32c(len_bytes) != u32_at(bytes, pos + 4) {
            if zero_tail(pos) {
                let mut c = torn(pos);
                c.entries = entries;
                return Ok(c);
            }
            return Err(corrupt(pos, "record header checksum mismatch".into()));
        }
        let end = pos + FRAME_LEN + len;
        if end > n {
            let mut c = torn(pos);
            c.entries = entries;
            return Ok(c);
        }
        let payload = &bytes[pos + FRAME_LEN..end];
        if crc32c(payload) != u32_at(bytes, pos + 8) {
            if end == n || zero_tail(pos) {
                let mut c = torn(pos);
                c.entries = entries;
                return Ok(c);
            }
            return Err(corrupt(
                pos,
                format!(
                    "record checksum mismatch with {} more bytes after it",
                    n - end
                ),
            ));
        }
        let entry: Entry = serde_json::from_slice(payload)
            .map_err(|e| corrupt(pos, format!("record cannot be decoded: {e}")))?;
        entry.check().map_err(|m| corrupt(pos, m))?;
        entries.push(entry);
        pos = end;
    }
    Ok(Contents {
        entries,
        valid_len: n as u64,
        torn: 0,
    })
}

// ---------------------------------------------------------------------------------------
// Storage

/// Where journal bytes go. The engine appends from its thread; a separate
/// [`SyncHandle`] makes what was appended durable from the sync thread.
pub trait Storage: Send {
    /// Appends `bytes` (whole records) at the end, in one write where possible.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// A handle that makes everything appended before each `sync` call durable.
    fn sync_handle(&self) -> std::io::Result<Box<dyn SyncHandle>>;
}

/// Makes appended journal bytes durable.
pub trait SyncHandle: Send {
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> std::io::Result<()>;
}

/// A journal file (`O_APPEND`, synced with `fdatasync`).
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Creates the journal file (it must not exist); when `durable`, makes its directory
    /// entry durable too.
    pub fn create(path: &Path, durable: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        if durable && let Some(dir) = path.parent() {
            // The new name must survive a crash too.
            File::open(dir)?.sync_all()?;
        }
        Ok(Self { file })
    }

    /// Opens a file to append to, creating it when missing (for logs that outlive a run,
    /// like the audit log); when `durable` and it was created, makes its directory entry
    /// durable too.
    pub fn open_append(path: &Path, durable: bool) -> std::io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        if durable
            && !existed
            && let Some(dir) = path.parent()
        {
            File::open(dir)?.sync_all()?;
        }
        Ok(Self { file })
    }
}

impl Storage for FileStorage {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)
    }

    fn sync_handle(&self) -> std::io::Result<Box<dyn SyncHandle>> {
        Ok(Box::new(FileSync(self.file.try_clone()?)))
    }
}

struct FileSync(File);

impl SyncHandle for FileSync {
    fn sync(&mut self) -> std::io::Result<()> {
        self.0.sync_data()
    }
}

/// In-memory storage that keeps apart what was synced: [`MemStorage::durable`] is what
/// would survive a power cut, so a test can drop every unsynced write.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<MemState>>,
}

#[derive(Debug, Default)]
struct MemState {
    data: Vec<u8>,
    synced: usize,
}

impl MemStorage {
    /// Empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything appended, synced or not.
    pub fn written(&self) -> Vec<u8> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data
            .clone()
    }

    /// Only what was synced: the journal as a crash that loses unsynced writes leaves it.
    pub fn durable(&self) -> Vec<u8> {
        let s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.data[..s.synced].to_vec()
    }
}

impl Storage for MemStorage {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .data
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync_handle(&self) -> std::io::Result<Box<dyn SyncHandle>> {
        Ok(Box::new(self.clone()))
    }
}

impl SyncHandle for MemStorage {
    fn sync(&mut self) -> std::io::Result<()> {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.synced = s.data.len();
        Ok(())
    }
}

/// Makes the storage of a run's journal, given the journal's path.
#[derive(Clone)]
pub struct StorageFactory(
    #[allow(clippy::type_complexity)]
    pub  Arc<dyn Fn(&Path) -> std::io::Result<Box<dyn Storage>> + Send + Sync>,
);

impl StorageFactory {
    /// A factory from a closure.
    pub fn new(
        f: impl Fn(&Path) -> std::io::Result<Box<dyn Storage>> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    /// Always hands out (clones of) the same in-memory storage.
    pub fn memory(storage: MemStorage) -> Self {
        Self::new(move |_| Ok(Box::new(storage.clone()) as Box<dyn Storage>))
    }
}

impl std::fmt::Debug for StorageFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageFactory(..)")
    }
}

// ---------------------------------------------------------------------------------------
// Writer

/// How a run keeps its journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JournalMode {
    /// Written and synced (group commit) before phases are reported: the default.
    #[default]
    Durable,
    /// Written but never synced: survives a killed process, not a power cut.
    NoSync,
    /// No journal: the run cannot be resumed.
    Off,
}

impl JournalMode {
    /// The environment variable [`JournalMode::from_env`] reads.
    pub const ENV: &'static str = "ORCH_JOURNAL";

    /// `ORCH_JOURNAL=off|nosync|on` (default `on`, i.e. durable).
    pub fn from_env() -> Self {
        match std::env::var(Self::ENV).as_deref() {
            Ok("off" | "0" | "false") => Self::Off,
            Ok("nosync") => Self::NoSync,
            _ => Self::Durable,
        }
    }
}

struct SyncState {
    requested: u64,
    closed: bool,
    /// Someone waits for every record (the end of a run): sync without waiting for the
    /// group-commit interval, since no more records are coming to join.
    now: bool,
    /// The sync thread waits for a first record to sync (appends need to wake it only
    /// then; in between it wakes by itself).
    idle: bool,
    error: Option<String>,
}

struct Shared {
    state: Mutex<SyncState>,
    cv: Condvar,
}

/// Appends records to a journal and makes them durable in the background.
pub struct JournalWriter {
    storage: Box<dyn Storage>,
    /// Records queued and not yet written.
    buf: Vec<u8>,
    /// The sequence number of the last record queued.
    seq: u64,
    /// The sequence number of the last record written.
    written: u64,
    /// A write failed: nothing more is written (it could follow a partial record).
    broken: bool,
    shared: Arc<Shared>,
    tx: Option<watch::Sender<u64>>,
    rx: watch::Receiver<u64>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Raw bytes, not a journal: no header, no journal failpoints.
    raw: bool,
}

impl JournalWriter {
    /// Starts a journal on `storage`: writes the header and, when `sync`, starts the sync
    /// thread (otherwise records count as durable once written).
    pub fn create(storage: Box<dyn Storage>, sync: bool) -> std::io::Result<Self> {
        Self::create_with_interval(storage, sync, sync_interval(), false)
    }

    /// A writer of raw bytes with the same group commit (no header, no framing; see
    /// [`queue_bytes`](Self::queue_bytes)): what the audit log uses.
    pub fn create_raw(storage: Box<dyn Storage>, sync: bool) -> std::io::Result<Self> {
        Self::create_with_interval(storage, sync, sync_interval(), true)
    }

    fn create_with_interval(
        mut storage: Box<dyn Storage>,
        sync: bool,
        interval: std::time::Duration,
        raw: bool,
    ) -> std::io::Result<Self> {
        if !raw {
            storage.append(&header())?;
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(SyncState {
                requested: 0,
                closed: false,
                now: false,
                idle: false,
                error: None,
            }),
            cv: Condvar::new(),
        });
        let (tx, rx) = watch::channel(0u64);
        let mut w = Self {
            storage,
            buf: Vec::with_capacity(4096),
            seq: 0,
            written: 0,
            broken: false,
            shared: shared.clone(),
            tx: None,
            rx,
            thread: None,
            raw,
        };
        if sync {
            let mut handle = w.storage.sync_handle()?;
            let points = !raw;
            let thread = std::thread::Builder::new()
                .name("orch-journal-sync".into())
                .spawn(move || sync_loop(&shared, &mut *handle, &tx, interval, points))?;
            w.thread = Some(thread);
        } else {
            w.tx = Some(tx);
        }
        Ok(w)
    }

    /// Writes `entry` and returns its sequence number (1 for the first record).
    pub fn append(&mut self, entry: &Entry) -> std::io::Result<u64> {
        self.append_all(std::slice::from_ref(entry))
    }

    /// Writes `entries` (after anything queued) with one write and returns the sequence
    /// number of the last.
    pub fn append_all(&mut self, entries: &[Entry]) -> std::io::Result<u64> {
        for entry in entries {
            self.queue(entry);
        }
        self.flush()?;
        Ok(self.seq)
    }

    /// Queues a record (anything that serializes as an [`Entry`]) for the next
    /// [`flush`](Self::flush) and returns its sequence number. It counts as written, and
    /// can become durable, only once flushed.
    pub fn queue<T: Serialize + ?Sized>(&mut self, entry: &T) -> u64 {
        encode_record(entry, &mut self.buf);
        self.seq += 1;
        self.seq
    }

    /// Queues raw bytes as one record (for writers made with
    /// [`create_raw`](Self::create_raw)) and returns its sequence number.
    pub fn queue_bytes(&mut self, bytes: &[u8]) -> u64 {
        self.buf.extend_from_slice(bytes);
        self.seq += 1;
        self.seq
    }

    /// Writes every queued record with one write and hands them to the sync thread.
    /// After a failed write nothing more is written: every later call fails.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::Error::other("an earlier journal write failed"));
        }
        if self.written == self.seq {
            return Ok(());
        }
        if let Err(e) = self.storage.append(&self.buf) {
            self.broken = true;
            return Err(e);
        }
        self.buf.clear();
        if !self.raw {
            failpoint::hit("after-journal-append");
        }
        self.written = self.seq;
        match &self.tx {
            Some(tx) => {
                tx.send_replace(self.written);
            }
            None => {
                let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                s.requested = self.written;
                let wake = s.idle;
                drop(s);
                if wake {
                    self.shared.cv.notify_one();
                }
            }
        }
        Ok(())
    }

    /// The sequence number of the last record written (queued records not counted).
    pub fn last_seq(&self) -> u64 {
        self.written
    }

    /// Whether records are queued and not yet written.
    pub fn has_queued(&self) -> bool {
        self.written != self.seq
    }

    /// The highest sequence number known durable.
    pub fn durable(&self) -> u64 {
        *self.rx.borrow()
    }

    /// A receiver of the durable sequence number.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.rx.clone()
    }

    /// Why syncing failed, once it has.
    pub fn error(&self) -> Option<String> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error
            .clone()
    }

    /// Writes what is queued and waits until every record is durable (or writing or
    /// syncing failed).
    pub async fn wait_all(&mut self) -> Result<(), String> {
        self.flush()
            .map_err(|e| format!("cannot write the journal: {e}"))?;
        let target = self.written;
        let mut rx = self.rx.clone();
        if *rx.borrow_and_update() < target && self.tx.is_none() {
            self.shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .now = true;
            self.shared.cv.notify_one();
        }
        loop {
            if *rx.borrow_and_update() >= target {
                return Ok(());
            }
            if let Some(e) = self.error() {
                return Err(e);
            }
            if rx.changed().await.is_err() {
                return match self.error() {
                    Some(e) => Err(e),
                    None if *rx.borrow() >= target => Ok(()),
                    None => Err("the journal sync thread stopped".into()),
                };
            }
        }
    }

    /// Stops the sync thread after it synced what was written.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            s.closed = true;
        }
        self.shared.cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The least time between the starts of two syncs (`ORCH_JOURNAL_SYNC_MS`, default 10):
/// records written meanwhile share the next sync. Only reporting waits for it, never
/// scheduling, so it bounds how late a finished phase is reported, not the run's pace.
fn sync_interval() -> std::time::Duration {
    let ms = std::env::var("ORCH_JOURNAL_SYNC_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    std::time::Duration::from_millis(ms)
}

fn sync_loop(
    shared: &Shared,
    handle: &mut dyn SyncHandle,
    tx: &watch::Sender<u64>,
    interval: std::time::Duration,
    points: bool,
) {
    let mut synced = 0u64;
    let mut last: Option<std::time::Instant> = None;
    loop {
        let target = {
            let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if s.requested > synced {
                    // Group commit: give records that follow a moment to join this sync
                    // (closing, or waited for by the end of the run: at once).
                    let due = last.map(|t| t + interval);
                    match due {
                        Some(due) if !s.closed && !s.now && std::time::Instant::now() < due => {
                            let wait = due - std::time::Instant::now();
                            s = shared
                                .cv
                                .wait_timeout(s, wait)
                                .unwrap_or_else(|p| p.into_inner())
                                .0;
                            continue;
                        }
                        _ => {
                            s.now = false;
                            break s.requested;
                        }
                    }
                }
                if s.closed {
                    return;
                }
                s.idle = true;
                s = shared.cv.wait(s).unwrap_or_else(|p| p.into_inner());
                s.idle = false;
            }
        };
        last = Some(std::time::Instant::now());
        if points {
            failpoint::hit("before-fsync");
        }
        if let Err(e) = handle.sync() {
            let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            s.error = Some(format!("cannot sync the journal: {e}"));
            return;
        }
        if points {
            failpoint::hit("after-fsync");
        }
        synced = target;
        tx.send_replace(synced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_known_vectors() {
        assert_eq!(crc32c(b""), 0);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    fn sample() -> Vec<u8> {
        let mut b = header().to_vec();
        for i in 0..3 {
            encode(
                &Entry::Started {
                    phase: format!("p{i}"),
                    attempt: 1,
                    at: "t".into(),
                },
                &mut b,
            );
        }
        b
    }

    #[test]
    fn waiting_for_every_record_does_not_wait_for_the_group_commit_interval() {
        let storage = MemStorage::new();
        let hour = std::time::Duration::from_secs(3600);
        let mut w =
            JournalWriter::create_with_interval(Box::new(storage.clone()), true, hour, false)
                .expect("journal");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let started = |i: u32| Entry::Started {
            phase: format!("p{i}"),
            attempt: 1,
            at: "t".into(),
        };
        rt.block_on(async {
            for i in 0..2 {
                // The first sync goes at once; the second falls inside the interval, and
                // the end of a run waiting for it must not wait the hour.
                w.append(&started(i)).expect("append");
                tokio::time::timeout(std::time::Duration::from_secs(20), w.wait_all())
                    .await
                    .expect("wait_all waited for the group-commit interval")
                    .expect("synced");
            }
        });
        assert_eq!(storage.durable(), storage.written());
        w.close();
    }

    #[test]
    fn borrowed_records_encode_like_entries() {
        let mut outputs = Outputs::new();
        outputs.insert("k".into(), "v \"q\"".into());
        let owned = Finished {
            phase: "p".into(),
            kind: "command".into(),
            status: PhaseStatus::Skipped,
            attempts: 2,
            exit_code: Some(3),
            reason: Some("why".into()),
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
                reason: f.reason.as_deref(),
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

    #[test]
    fn crc32c_slices_match_the_bytewise_form() {
        let bytewise = |data: &[u8]| {
            let mut c = !0u32;
            for &b in data {
                c = CRC_TABLES[0][((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
            }
            !c
        };
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for start in 0..9 {
            for end in (start..data.len()).step_by(37) {
                assert_eq!(crc32c(&data[start..end]), bytewise(&data[start..end]));
            }
        }
    }

    #[test]
    fn queued_records_are_written_by_flush_only() {
        let m = MemStorage::new();
        let mut w = JournalWriter::create(Box::new(m.clone()), false).unwrap();
        let started = |i: u32| StartedRef {
            phase: "p",
            attempt: i,
            at: "t",
        };
        assert_eq!(w.queue(&started(1)), 1);
        assert_eq!(w.queue(&started(2)), 2);
        assert_eq!((w.last_seq(), w.durable(), w.has_queued()), (0, 0, true));
        assert_eq!(m.written().len(), HEADER_LEN);
        w.flush().unwrap();
        assert_eq!((w.last_seq(), w.durable(), w.has_queued()), (2, 2, false));
        assert_eq!(
            w.append(&Entry::RunFinished {
                status: RunStatus::Succeeded,
                finished_at: "t".into(),
                duration_ms: 1,
            })
            .unwrap(),
            3
        );
        let c = parse(&m.written(), Path::new("j")).unwrap();
        assert_eq!(c.entries.len(), 3);
        assert!(matches!(c.entries[1], Entry::Started { attempt: 2, .. }));
    }

    #[test]
    fn whole_journal_reads_back() {
        let b = sample();
        let c = parse(&b, Path::new("j")).unwrap();
        assert_eq!(c.entries.len(), 3);
        assert_eq!(c.torn, 0);
        assert_eq!(c.valid_len, b.len() as u64);
    }

    #[test]
    fn every_truncation_is_a_torn_tail() {
        let b = sample();
        let mut last = 0;
        for cut in 0..=b.len() {
            let c = parse(&b[..cut], Path::new("j")).unwrap();
            assert!(c.entries.len() >= last, "cut {cut}");
            last = c.entries.len();
            assert_eq!(c.valid_len + c.torn, cut as u64);
        }
        assert_eq!(last, 3);
    }

    #[test]
    fn zero_filled_tail_is_torn() {
        let mut b = sample();
        b.extend_from_slice(&[0u8; 100]);
        let c = parse(&b, Path::new("j")).unwrap();
        assert_eq!((c.entries.len(), c.torn), (3, 100));
    }

    #[test]
    fn damage_before_the_last_record_is_corruption() {
        let b = sample();
        let c = parse(&b, Path::new("j")).unwrap();
        // The last record starts where the whole journal minus its length ends.
        let mut last_start = HEADER_LEN;
        let mut pos = HEADER_LEN;
        while pos < b.len() {
            last_start = pos;
            pos += FRAME_LEN + u32_at(&b, pos) as usize;
        }
        assert_eq!(c.entries.len(), 3);
        for at in 0..last_start {
            let mut d = b.clone();
            d[at] ^= 0x5a;
            let r = parse(&d, Path::new("j"));
            assert!(r.is_err(), "flip at {at} not detected: {r:?}");
        }
    }

    #[test]
    fn mem_storage_keeps_unsynced_writes_apart() {
        let mut m = MemStorage::new();
        m.append(b"abc").unwrap();
        let mut h = m.sync_handle().unwrap();
        h.sync().unwrap();
        m.append(b"def").unwrap();
        assert_eq!(m.durable(), b"abc");
        assert_eq!(m.written(), b"abcdef");
    }

    #[test]
    fn writer_makes_records_durable_in_order() {
        let m = MemStorage::new();
        let mut w = JournalWriter::create(Box::new(m.clone()), true).unwrap();
        for i in 0..50 {
            let seq = w
                .append(&Entry::Started {
                    phase: format!("p{i}"),
                    attempt: 1,
                    at: "t".into(),
                })
                .unwrap();
            assert_eq!(seq, i + 1);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(w.wait_all()).unwrap();
        assert_eq!(w.durable(), 50);
        let c = parse(&m.durable(), Path::new("j")).unwrap();
        assert_eq!(c.entries.len(), 50);
        w.close();
    }
}
