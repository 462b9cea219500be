//! What a run writes as it goes: journal records and audit-log entries (a failure to
//! write stops the run), and `PhaseFinished` events published once their records are
//! durable.

use indexmap::IndexMap;
use tokio::sync::watch;

use super::engine::{Engine, Pending};
use crate::audit::Event as AuditEvent;
use crate::failpoint;
use crate::ids::RunId;
use crate::journal::{Entry, JOURNAL_FILE};
use crate::record::{RecordError, Stop};

impl Engine {
    /// Waits until every journal record written so far is durable.
    pub(super) async fn sync_journal(&mut self) {
        let Some(j) = &mut self.journal else { return };
        if let Err(e) = j.wait_all().await {
            self.journal_failed(e);
        }
    }

    /// Appends to the journal (with whatever is queued); a failure to write stops the run.
    pub(super) fn journal_append(&mut self, entry: &Entry) -> Option<u64> {
        let j = self.journal.as_mut()?;
        match j.append(entry) {
            Ok(seq) => Some(seq),
            Err(e) => {
                self.journal_failed(format!("cannot write the journal: {e}"));
                None
            }
        }
    }

    /// Writes the queued journal records; a failure to write stops the run.
    pub(super) fn flush_journal(&mut self) {
        if let Some(j) = &mut self.journal
            && j.has_queued()
            && let Err(e) = j.flush()
        {
            self.journal_failed(format!("cannot write the journal: {e}"));
        }
        if let Some(a) = &mut self.audit
            && a.has_queued()
            && let Err(e) = a.flush()
        {
            let path = a.path().display().to_string();
            self.audit = None;
            self.journal_failed(format!("cannot write the audit log {path}: {e}"));
        }
    }

    /// Queues the audit log's `run_started` entry.
    pub(super) fn audit_run_started(&mut self, selection: &[String]) {
        let Some(a) = &mut self.audit else { return };
        let digest = self.p.source_sha256.as_deref();
        let file = self.p.source_path().map(|p| p.display().to_string());
        let vars: IndexMap<String, String> = self
            .p
            .spec()
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), self.shared.redactor.redact(v).into_owned()))
            .collect();
        a.queue(&AuditEvent::RunStarted {
            run: self.run_id.as_str(),
            pipeline: self.p.name(),
            user: &crate::policy::current_user(),
            host: &crate::audit::host_name(),
            file: file.as_deref(),
            file_sha256: digest,
            vars: &vars,
            selection,
            resumed_from: self.resumed_from.as_ref().map(RunId::as_str),
            pid: std::process::id(),
        });
    }

    /// The journal cannot be written: durability is lost, so the run stops (as failed) and
    /// what is waiting is reported anyway rather than never.
    pub(super) fn journal_failed(&mut self, message: String) {
        tracing::error!("{message}");
        let detail = message
            .strip_prefix("cannot write the journal: ")
            .unwrap_or(&message);
        self.record_errors
            .push(RecordError::new(JOURNAL_FILE, detail));
        self.journal = None;
        self.durable_rx = None;
        self.failed = true;
        if self.stopping.is_none() {
            self.stopping = Some(Stop::JournalFailure { message });
        }
    }

    /// The highest durable journal sequence number (everything, without a journal).
    pub(super) fn durable(&mut self) -> u64 {
        match &mut self.durable_rx {
            Some(rx) => *rx.borrow_and_update(),
            None => u64::MAX,
        }
    }

    /// Reports the finished phases whose records are durable, in order.
    pub(super) fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let durable = self.durable();
        while self.pending.front().is_some_and(|p| p.seq <= durable) {
            if let Some(p) = self.pending.pop_front() {
                self.publish(p);
            }
        }
    }

    pub(super) fn publish(&mut self, p: Pending) {
        failpoint::hit(failpoint::Failpoint::BeforePublish);
        self.bus.send(&p.event);
    }
}

/// Waits for a new durable sequence number; false when the sync thread is gone.
pub(super) async fn durable_changed(rx: &mut Option<watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
