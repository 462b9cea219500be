//! Preparing a run: its cgroup and watchdog, the workspace lock (taking over from a run
//! that died), the run to resume, the journal's header and the audit log.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{ResumeFrom, Runner};
use crate::audit::{AUDIT_FILE, AuditSettings, AuditWriter};
use crate::errors::RunError;
use crate::failpoint;
use crate::ids::RunId;
use crate::journal::{Entry, FileStorage, JOURNAL_FILE, JournalMode, JournalWriter};
use crate::lock::WorkspaceLock;
use crate::record::rfc3339;
use crate::resume::ResumeState;

impl Runner {
    pub(super) async fn prepare(&self) -> Result<Prepared, RunError> {
        let run_id = self.options.run_id.clone().unwrap_or_else(RunId::generate);
        // Processes get the environment as it is when the run starts, and programs are
        // looked up in `PATH` once per run.
        crate::spawn::forget();
        // Where the run's processes are contained, and who ends them if this process dies:
        // the process's watchdog, which the run registers with (`orch` forks it as it
        // starts; else the first run does, here). Before anything is opened (the lock
        // above all), so a watchdog forked here never holds a copy of it, not even for the
        // instant before it closes what it inherited.
        let cgroup = crate::cgroup::RunCgroup::create(run_id.as_str()).map(Arc::new);
        let watchdog = match crate::watchdog::Watchdog::start(
            run_id.as_str(),
            cgroup.as_ref().map(|c| c.dir()),
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("cannot start the run's watchdog: {e}");
                None
            }
        };
        if !self.options.write_files {
            if self.options.resume.is_some() {
                return Err(RunError::Resume(
                    "a run that writes no files cannot resume".into(),
                ));
            }
            return Ok(Prepared {
                run_id,
                cgroup,
                watchdog,
                started_at: SystemTime::now(),
                lock: None,
                resume: None,
                journal: None,
                durable: false,
                audit: None,
            });
        }
        // A selection naming unknown phases fails before anything is written.
        self.options.selection.unselected(&self.pipeline)?;
        let state_dir = self.state_dir();
        let mut lock = WorkspaceLock::acquire(&state_dir)?;
        failpoint::hit(failpoint::Failpoint::AfterLock);
        if let Some(stale) = lock.stale() {
            // A run died holding the workspace: nothing it started may outlive it, and
            // nothing of it may run beside this run.
            tracing::warn!(
                "taking over the lock of {stale}, which is gone; killing what it left running"
            );
            if let Ok(id) = RunId::parse(&stale.run_id)
                && let Some(dir) = crate::cgroup::run_dir(id.as_str())
            {
                crate::cgroup::remove_tree(&dir).await;
            }
            crate::process::kill_marked(&stale.run_id, None, Duration::from_secs(2)).await;
            // Its attempts' private files (outputs that may hold secrets) go too.
            if !stale.run_id.is_empty() && !stale.run_id.contains(['/', '.']) {
                crate::orch_output::remove_private_dir(&state_dir.join("runs").join(&stale.run_id));
            }
        }
        lock.write_holder(run_id.as_str())?;
        let resume = match &self.options.resume {
            None => None,
            Some(from) => Some(load_resume(&state_dir, from, self.pipeline.name())?),
        };
        let started_at = SystemTime::now();
        let run_dir = state_dir.join("runs").join(run_id.as_str());
        std::fs::create_dir_all(&run_dir).map_err(|source| RunError::State {
            path: run_dir.clone(),
            source,
        })?;
        let mode = self.options.journal.unwrap_or_else(JournalMode::from_env);
        let journal = if mode == JournalMode::Off {
            None
        } else {
            let path = run_dir.join(JOURNAL_FILE);
            let state_err = |source| RunError::State {
                path: path.clone(),
                source,
            };
            let durable = mode == JournalMode::Durable;
            let storage = match &self.options.journal_storage {
                Some(f) => (f.0)(&path).map_err(state_err)?,
                None => Box::new(FileStorage::create(&path, durable).map_err(state_err)?),
            };
            let mut j = JournalWriter::create(storage, durable).map_err(state_err)?;
            // Who this run is and what it inherits: one write, durable before
            // `runs/latest` points here, so a resume of this run never misses them.
            let mut first = vec![Entry::Run {
                run_id: run_id.clone(),
                pipeline: self.pipeline.name().to_owned(),
                started_at: rfc3339(started_at),
                resumed_from: resume.as_ref().map(|(id, _)| id.clone()),
                pid: std::process::id(),
            }];
            if let Some((_, state)) = &resume {
                first.push(Entry::Inherited {
                    phases: state.phases.clone(),
                });
            }
            j.append_all(&first).map_err(state_err)?;
            j.wait_all().await.map_err(|e| RunError::State {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
            failpoint::hit(failpoint::Failpoint::AfterJournalHeader);
            Some(j)
        };
        let settings = self
            .options
            .audit
            .clone()
            .unwrap_or_else(AuditSettings::from_env);
        let audit = if settings.enabled {
            // Under the workspace lock: one writer at a time.
            let path = state_dir.join(AUDIT_FILE);
            Some(AuditWriter::open(
                &path,
                mode == JournalMode::Durable,
                settings.key,
            )?)
        } else {
            None
        };
        Ok(Prepared {
            run_id,
            cgroup,
            watchdog,
            started_at,
            lock: Some(lock),
            resume,
            journal,
            durable: mode == JournalMode::Durable,
            audit,
        })
    }
}

pub(super) struct Prepared {
    pub(super) run_id: RunId,
    pub(super) cgroup: Option<Arc<crate::cgroup::RunCgroup>>,
    pub(super) watchdog: Option<crate::watchdog::Watchdog>,
    pub(super) started_at: SystemTime,
    pub(super) lock: Option<WorkspaceLock>,
    pub(super) resume: Option<(RunId, ResumeState)>,
    pub(super) journal: Option<JournalWriter>,
    /// Journal synced: make the `runs/latest` link durable too.
    pub(super) durable: bool,
    pub(super) audit: Option<AuditWriter>,
}

/// The id `runs/latest` points at in `state_dir`, if any.
pub fn latest_run(state_dir: &Path) -> Option<RunId> {
    let target = std::fs::read_link(state_dir.join("runs").join("latest")).ok()?;
    RunId::parse(target.file_name()?.to_str()?).ok()
}

/// Loads what the journal of the run to resume says.
fn load_resume(
    state_dir: &Path,
    from: &ResumeFrom,
    pipeline: &str,
) -> Result<(RunId, ResumeState), RunError> {
    let id = match from {
        ResumeFrom::Run(id) => id.clone(),
        ResumeFrom::Latest => latest_run(state_dir).ok_or_else(|| {
            RunError::Resume(format!("no run in {} to resume", state_dir.display()))
        })?,
    };
    let path = state_dir.join("runs").join(id.as_str()).join(JOURNAL_FILE);
    if !path.exists() {
        return Err(RunError::Resume(format!(
            "run {id} has no journal at {} (it did not start, or ran with ORCH_JOURNAL=off)",
            path.display()
        )));
    }
    let contents =
        crate::journal::read(&path).map_err(|e| RunError::Resume(crate::errors::chain(&e)))?;
    if contents.torn > 0 {
        tracing::warn!(
            "journal {} ends with {} bytes of an interrupted write; they are ignored",
            path.display(),
            contents.torn
        );
    }
    let state = ResumeState::from_entries(&contents.entries);
    if let Some(name) = &state.pipeline
        && name != pipeline
    {
        return Err(RunError::Resume(format!(
            "run {id} ran pipeline `{name}`, not `{pipeline}`"
        )));
    }
    Ok((id, state))
}
