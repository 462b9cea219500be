//! Past runs of a state directory: list them, load one, find a phase's log.
//!
//! A run that ended has its `run.json`. A run that died (or still runs) has a `run.json`
//! that says `running` and lists no phases; its phases are read from its journal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Serialize;

use crate::errors::RunError;
use crate::ids::PhaseId;
use crate::ids::{KindName, Needs, RunId};
use crate::journal::{Entry, JOURNAL_FILE};
use crate::record::{
    PhaseRecord, PhaseStatus, RECORD_FORMAT_VERSION, Reason, RunRecord, RunStatus, Timestamp,
};

/// One line of `orch runs`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// Its pipeline.
    pub pipeline: String,
    /// How it ended (`running` for a run that is running or died).
    pub status: RunStatus,
    /// For `running`: whether a live process holds the workspace for it (false: it died).
    pub live: bool,
    /// For a live run: the process running it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Wall time, for runs that ended.
    pub duration_ms: Option<u64>,
    /// Phases by status.
    pub counts: BTreeMap<PhaseStatus, usize>,
    /// The run it resumed.
    pub resumed_from: Option<RunId>,
}

impl RunSummary {
    /// The status as shown: `running`, `died`, or the final status.
    pub fn status_text(&self) -> &'static str {
        match (self.status, self.live) {
            (RunStatus::Running, false) => "died",
            (s, _) => s.as_str(),
        }
    }
}

/// The state directory a pipeline file uses, read from its `[pipeline] state_dir` without
/// loading the whole pipeline (default `.orch` beside the file).
pub fn state_dir_of(pipeline_file: &Path) -> PathBuf {
    let base = pipeline_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let configured =
        crate::input::read_regular_text(pipeline_file, crate::input::MAX_PIPELINE_FILE)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|t| {
                t.get("pipeline")?
                    .get("state_dir")?
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            });
    base.join(configured.unwrap_or_else(|| PathBuf::from(".orch")))
}

/// The run `id` names: a run id, or `latest`.
pub fn resolve(state_dir: &Path, id: &str) -> Result<RunId, RunError> {
    let not_found = |message: String| RunError::Record {
        path: state_dir.join("runs").join(id),
        message,
    };
    let run = if id == "latest" {
        crate::run::latest_run(state_dir)
            .ok_or_else(|| not_found(format!("no run in {}", state_dir.display())))?
    } else {
        RunId::parse(id).map_err(|e| not_found(e.to_string()))?
    };
    if !state_dir.join("runs").join(run.as_str()).is_dir() {
        return Err(not_found("no such run".into()));
    }
    Ok(run)
}

/// Every run of `state_dir`, newest first.
pub fn list(state_dir: &Path) -> Result<Vec<RunSummary>, RunError> {
    let runs = state_dir.join("runs");
    let dir = match std::fs::read_dir(&runs) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(RunError::State { path: runs, source }),
    };
    let holder = crate::lock::holder(state_dir);
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(id) = RunId::parse(name) else { continue };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // A directory with neither record nor journal is not a run.
        let Ok(record) = load_with(state_dir, &id, holder.as_ref()) else {
            continue;
        };
        let live = record.status == RunStatus::Running
            && holder.as_ref().is_some_and(|h| h.run_id == id.as_str());
        out.push(RunSummary {
            live,
            pid: holder.as_ref().filter(|_| live).map(|h| h.pid),
            counts: record.counts(),
            run_id: id,
            pipeline: record.pipeline,
            status: record.status,
            started_at: record.started_at,
            duration_ms: record.duration_ms,
            resumed_from: record.resumed_from,
        });
    }
    out.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.run_id.cmp(&a.run_id))
    });
    Ok(out)
}

/// The record of run `id` (or `latest`); for a run that did not end, rebuilt from its
/// journal: phases of a live run that have started and not finished are `running`, those
/// of a run that died `cancelled`.
pub fn load(state_dir: &Path, id: &str) -> Result<RunRecord, RunError> {
    let run = resolve(state_dir, id)?;
    load_id(state_dir, &run)
}

/// The process running run `id` now, if a live process holds the state directory for it.
pub fn live_holder(state_dir: &Path, run: &RunId) -> Option<crate::lock::LockHolder> {
    crate::lock::holder(state_dir).filter(|h| h.run_id == run.as_str())
}

fn load_id(state_dir: &Path, run: &RunId) -> Result<RunRecord, RunError> {
    load_with(state_dir, run, crate::lock::holder(state_dir).as_ref())
}

/// `holder`: who holds the state directory now.
fn load_with(
    state_dir: &Path,
    run: &RunId,
    holder: Option<&crate::lock::LockHolder>,
) -> Result<RunRecord, RunError> {
    let run_dir = state_dir.join("runs").join(run.as_str());
    let record = RunRecord::load(&run_dir.join("run.json"));
    match record {
        Ok(r) if r.status != RunStatus::Running => Ok(r),
        other => {
            let journal = run_dir.join(JOURNAL_FILE);
            if !journal.exists() {
                return other;
            }
            let contents = crate::journal::read(&journal).map_err(|e| RunError::Record {
                path: journal.clone(),
                message: e.to_string(),
            })?;
            let live = holder.is_some_and(|h| h.run_id == run.as_str());
            Ok(from_journal(
                &run_dir,
                run,
                other.ok(),
                &contents.entries,
                live,
            ))
        }
    }
}

/// A record from journal entries (for runs that did not write their final `run.json`);
/// `live`: the run is still going, so a phase that started and did not finish runs.
fn from_journal(
    run_dir: &Path,
    run: &RunId,
    header: Option<RunRecord>,
    entries: &[Entry],
    live: bool,
) -> RunRecord {
    let mut r = header.unwrap_or_else(|| RunRecord {
        format_version: RECORD_FORMAT_VERSION,
        run_id: run.clone(),
        pipeline: String::new(),
        status: RunStatus::Running,
        started_at: String::new(),
        finished_at: None,
        duration_ms: None,
        resumed_from: None,
        pipeline_file: None,
        vars: IndexMap::new(),
        phases: IndexMap::new(),
        audit: None,
        record_errors: Vec::new(),
    });
    let log_of = |phase: &str| {
        let rel = format!("logs/{phase}.log");
        run_dir.join(&rel).exists().then_some(rel)
    };
    let mut verdicts = BTreeMap::new();
    for e in entries {
        match e {
            Entry::Run {
                pipeline,
                started_at,
                resumed_from,
                ..
            } => {
                r.pipeline = pipeline.clone();
                r.started_at = started_at.clone();
                r.resumed_from = resumed_from.clone();
            }
            Entry::Started { phase, attempt, at } => {
                // The engine journals valid ids only: anything else is not one of its phases.
                let Ok(phase) = PhaseId::new(phase) else {
                    continue;
                };
                let p = r.phases.entry(phase).or_insert_with(|| PhaseRecord {
                    started_at: Some(Timestamp::from(at.as_str())),
                    ..PhaseRecord::new(PhaseStatus::Cancelled, String::new(), 0)
                });
                p.attempts = *attempt;
                let cause = (!live).then_some(Reason::RunEnded);
                p.status = if live {
                    PhaseStatus::Running
                } else {
                    PhaseStatus::Cancelled
                };
                p.reason = cause.as_ref().map(ToString::to_string);
                p.cause = cause.map(Box::new);
            }
            Entry::Finished(f) => {
                let rec = PhaseRecord {
                    status: f.status,
                    kind: KindName::from(&f.kind),
                    attempts: f.attempts,
                    exit_code: f.exit_code,
                    started_at: f.started_at.as_deref().map(Timestamp::from),
                    finished_at: f
                        .started_at
                        .as_ref()
                        .map(|_| Timestamp::from(f.finished_at.as_str())),
                    duration_ms: f.duration_ms,
                    reason: f
                        .reason
                        .clone()
                        .or_else(|| f.cause.as_ref().map(ToString::to_string)),
                    // Journals written before causes were recorded have the words only.
                    cause: f
                        .cause
                        .clone()
                        .or_else(|| {
                            f.reason
                                .as_deref()
                                .and_then(|r| Reason::from_v1_words(f.status, r))
                        })
                        .map(Box::new),
                    allowed_failure: f.allowed_failure,
                    outputs: f.outputs.clone(),
                    artifacts: f.artifacts.clone(),
                    needs: Needs::default(),
                    tags: Vec::new(),
                    description: None,
                    log: log_of(&f.phase),
                    policy: verdicts.remove(&f.phase),
                    warnings: Vec::new(),
                };
                if let Ok(phase) = PhaseId::new(&f.phase) {
                    r.phases.insert(phase, rec);
                }
            }
            Entry::RunFinished {
                status,
                finished_at,
                duration_ms,
            } => {
                r.status = *status;
                r.finished_at = Some(finished_at.clone());
                r.duration_ms = Some(*duration_ms);
            }
            Entry::Policy { phase, verdict } => {
                verdicts.insert(phase.clone(), Box::new(verdict.clone()));
            }
            Entry::Inherited { .. } | Entry::AttemptFailed { .. } => {}
        }
    }
    for (id, p) in r.phases.iter_mut() {
        if p.log.is_none() {
            p.log = log_of(id.as_str());
        }
    }
    r
}

/// The log of `phase` in run `id` (or `latest`). A phase skipped as done in an earlier
/// run has its log there: that one is returned. `Ok(None)`: the phase wrote no log.
pub fn log_path(state_dir: &Path, id: &str, phase: &str) -> Result<Option<PathBuf>, RunError> {
    let mut run = resolve(state_dir, id)?;
    // Follow the runs it was done in (bounded, in case of a loop in hand-edited records).
    for _ in 0..64 {
        let record = load_id(state_dir, &run)?;
        let run_dir = state_dir.join("runs").join(run.as_str());
        let Some(p) = record.phases.get(phase) else {
            return Err(RunError::Record {
                path: run_dir.join("run.json"),
                message: format!("run {run} has no phase `{phase}`"),
            });
        };
        let path = run_dir.join("logs").join(format!("{phase}.log"));
        if path.exists() {
            return Ok(Some(path));
        }
        match p.cause.as_deref().and_then(Reason::done_in) {
            Some(earlier) if p.status == PhaseStatus::Skipped => run = earlier.clone(),
            _ => return Ok(None),
        }
    }
    Ok(None)
}
