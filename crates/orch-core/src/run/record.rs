//! The run record: its header (also the base of a report's snapshot), the finished record
//! with every phase, and writing `run.json` with the `runs/latest` link.

use std::path::Path;
use std::time::SystemTime;

use indexmap::IndexMap;

use super::engine::Engine;
use crate::errors::RunError;
use crate::record::{Artifact, RECORD_FORMAT_VERSION, RunRecord, RunStatus, rfc3339};
use crate::redact::Redactor;

impl Engine {
    pub(super) fn record_header(&self, status: RunStatus) -> RunRecord {
        RunRecord {
            format_version: RECORD_FORMAT_VERSION,
            run_id: self.run_id.clone(),
            pipeline: self.p.name().to_owned(),
            status,
            started_at: rfc3339(self.started.0),
            finished_at: None,
            duration_ms: None,
            resumed_from: self.resumed_from.clone(),
            pipeline_file: self.p.source_path().map(|p| p.display().to_string()),
            audit: None,
            vars: self
                .p
                .spec()
                .vars
                .iter()
                .map(|(k, v)| (k.clone(), self.shared.redactor.redact(v).into_owned()))
                .collect(),
            phases: IndexMap::new(),
            record_errors: Vec::new(),
        }
    }

    pub(super) fn record(&self, status: RunStatus) -> RunRecord {
        let mut r = self.record_header(status);
        r.finished_at = Some(rfc3339(SystemTime::now()));
        r.duration_ms = Some(self.started.1.elapsed().as_millis() as u64);
        let mut recs = std::mem::take(&mut *self.records.lock().unwrap_or_else(|p| p.into_inner()));
        // In the order the phases are declared, as they were ended in the order they ran
        // (unless they ended in that order).
        if !self.records_sorted {
            recs.sort_by_cached_key(|id, _| self.p.index_of(id.as_str()));
        }
        r.phases = recs;
        r.record_errors = self.record_errors.clone();
        r
    }
}

pub(super) fn redact_artifacts(r: &Redactor, artifacts: Vec<Artifact>) -> Vec<Artifact> {
    if r.is_empty() {
        return artifacts;
    }
    artifacts
        .into_iter()
        .map(|mut a| {
            a.kind = r.redact(&a.kind).into_owned();
            a.name = r.redact(&a.name).into_owned();
            a.path = a.path.map(|p| r.redact(&p).into_owned());
            a.digest = a.digest.map(|d| r.redact(&d).into_owned());
            a.details = a
                .details
                .into_iter()
                .map(|(k, mut v)| {
                    r.redact_json(&mut v);
                    (r.redact(&k).into_owned(), v)
                })
                .collect();
            a
        })
        .collect()
}

/// Writes `run.json` atomically and points `runs/latest` at the run. On failure nothing
/// half-written is left: the temporary file (or link) is removed, and an earlier
/// `run.json` stays as it was.
pub fn write_record(run_dir: &Path, record: &RunRecord) -> Result<(), RunError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| RunError::State { path, source }
    };
    let path = run_dir.join("run.json");
    let tmp = run_dir.join("run.json.tmp");
    // Streamed to the file (a record of 10k phases is some MB of text).
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut out, record).map_err(std::io::Error::other)?;
        out.into_inner()
            .map_err(std::io::IntoInnerError::into_error)?;
        Ok(())
    };
    if let Err(e) = write().and_then(|()| std::fs::rename(&tmp, &path)) {
        remove_quietly(&tmp);
        return Err(err(&path)(e));
    }
    if let (Some(runs), Some(name)) = (run_dir.parent(), run_dir.file_name()) {
        let latest = runs.join("latest");
        let tmp_link = runs.join(format!(".latest.{}", std::process::id()));
        remove_quietly(&tmp_link);
        if let Err(e) = std::os::unix::fs::symlink(name, &tmp_link)
            .and_then(|()| std::fs::rename(&tmp_link, &latest))
        {
            remove_quietly(&tmp_link);
            return Err(err(&latest)(e));
        }
    }
    Ok(())
}

/// Removes a temporary file that may not exist (nothing to report either way: the
/// operation that made it has failed already, or is about to make it again).
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", path.display());
    }
}
