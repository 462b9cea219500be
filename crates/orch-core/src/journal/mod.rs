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

mod entry;
mod frame;
pub(crate) mod json;
mod storage;
mod writer;

use std::path::PathBuf;

pub use entry::{Done, Entry, FinishedRef, MAX_ATTEMPT, PhaseResume, StartedRef};
pub use frame::read;
pub use storage::{FileStorage, MemStorage, Storage, StorageFactory, SyncHandle};
pub use writer::{JournalMode, JournalWriter};
// What only tests (`orch_core::test_support::journal`) and the fuzz target read.
#[cfg(feature = "test-support")]
pub use entry::Finished;
#[cfg(feature = "test-support")]
pub use frame::{Contents, encode, header, parse};

/// The version of the journal format written by this build.
pub const JOURNAL_FORMAT_VERSION: u32 = 1;
/// The journal's file name inside a run directory.
pub const JOURNAL_FILE: &str = "journal";

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
