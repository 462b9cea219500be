//! Writing a journal: queued records written with one `write(2)`, and the sync thread that
//! makes them durable (group commit) and publishes the durable sequence number.

use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

use super::entry::{Entry, Record};
use super::frame::{encode_record, header};
use super::storage::{Storage, SyncHandle};
use crate::failpoint;

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
    /// [`queue_raw`](Self::queue_raw)): what the audit log uses.
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

    /// Queues a record (an [`Entry`] or a borrowed form of one) for the next
    /// [`flush`](Self::flush) and returns its sequence number. It counts as written, and
    /// can become durable, only once flushed.
    pub fn queue<T: Record + ?Sized>(&mut self, entry: &T) -> u64 {
        encode_record(entry, &mut self.buf);
        self.seq += 1;
        self.seq
    }

    /// Queues one record of raw bytes (for writers made with
    /// [`create_raw`](Self::create_raw)), which `write` appends to the queue.
    pub fn queue_raw<R>(&mut self, write: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let r = write(&mut self.buf);
        self.seq += 1;
        r
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
            failpoint::hit(failpoint::Failpoint::AfterJournalAppend);
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
    #[cfg(test)]
    pub fn last_seq(&self) -> u64 {
        self.written
    }

    /// Whether records are queued and not yet written.
    pub fn has_queued(&self) -> bool {
        self.written != self.seq
    }

    /// The highest sequence number known durable.
    #[cfg(test)]
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

    /// Writes what is queued and has the sync thread sync it at once, without waiting for
    /// the group-commit interval (no more records are coming to join that sync); returns
    /// without waiting for it. [`wait_all`](Self::wait_all) then waits.
    pub fn sync_now(&mut self) -> Result<(), String> {
        self.flush()
            .map_err(|e| format!("cannot write the journal: {e}"))?;
        if *self.rx.borrow() < self.written && self.tx.is_none() {
            self.shared
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .now = true;
            self.shared.cv.notify_one();
        }
        Ok(())
    }

    /// Writes what is queued and waits until every record is durable (or writing or
    /// syncing failed).
    pub async fn wait_all(&mut self) -> Result<(), String> {
        self.sync_now()?;
        let target = self.written;
        let mut rx = self.rx.clone();
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

/// The least time between the starts of two syncs (`ORCH_JOURNAL_SYNC_MS`, default 50):
/// records written meanwhile share the next sync. Only reporting waits for it, never
/// scheduling, so it bounds how late a finished phase is reported, not the run's pace.
fn sync_interval() -> std::time::Duration {
    let ms = std::env::var("ORCH_JOURNAL_SYNC_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
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
            failpoint::hit(failpoint::Failpoint::BeforeFsync);
        }
        if let Err(e) = handle.sync() {
            let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            s.error = Some(format!("cannot sync the journal: {e}"));
            return;
        }
        if points {
            failpoint::hit(failpoint::Failpoint::AfterFsync);
        }
        synced = target;
        tx.send_replace(synced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::entry::StartedRef;
    use crate::journal::frame::{HEADER_LEN, parse};
    use crate::journal::storage::MemStorage;
    use crate::record::RunStatus;
    use std::path::Path;

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
