//! Appending to the audit log: taking over its tail (cutting a torn one off, with a
//! `torn_tail` entry), then queued entries written with the journal's group commit.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::chain::{Event, encode, sha256_hex};
use super::verify::parse_line;
use super::{AuditError, GENESIS};
use crate::journal::{FileStorage, JournalWriter};
use crate::record::Timestamp;

/// Appends entries to an audit log (see the module docs).
pub struct AuditWriter {
    path: PathBuf,
    writer: JournalWriter,
    seq: u64,
    prev: String,
    key: Option<Vec<u8>>,
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
        self.queue_at(SystemTime::now(), event);
    }

    /// Queues an entry of time `at` (a time already read for what it records).
    pub fn queue_at(&mut self, at: SystemTime, event: &Event<'_>) {
        self.seq += 1;
        let (seq, prev, key) = (self.seq, &self.prev, self.key.as_deref());
        // Encoded where it waits to be written: no copy.
        let hash = self
            .writer
            .queue_raw(|buf| encode(seq, Timestamp::new(at).as_str(), prev, event, key, buf));
        self.prev.clear();
        self.prev.push_str(hash.as_str());
    }

    /// Writes what is queued, with one write.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }

    /// Whether entries are queued and not yet written.
    pub fn has_queued(&self) -> bool {
        self.writer.has_queued()
    }

    /// Writes what is queued and has it synced at once; returns without waiting for the
    /// sync ([`wait_all`](Self::wait_all) waits).
    pub fn sync_now(&mut self) -> Result<(), String> {
        self.writer
            .sync_now()
            .map_err(|e| e.replace("journal", "audit log"))
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
