//! The run record: its header (also the base of a report's snapshot), the finished record
//! with every phase, and writing `run.json` with the `runs/latest` link.

use std::path::Path;
use std::time::SystemTime;

use indexmap::IndexMap;

use super::engine::Engine;
use crate::errors::RunError;
use crate::journal::json;
use crate::record::{
    Artifact, PhaseRecord, RECORD_FORMAT_VERSION, RunRecord, RunStatus, Timestamp, rfc3339,
};
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
    stage_record(run_dir, record)?.commit()
}

/// A `run.json` written beside its place (`run.json.tmp`) and not yet in it: removed when
/// dropped uncommitted.
#[must_use = "a staged record is removed unless committed"]
pub(crate) struct StagedRecord {
    run_dir: std::path::PathBuf,
    tmp: std::path::PathBuf,
    committed: bool,
}

/// Writes `record` to `run.json.tmp` in `run_dir`, to be put in place by
/// [`StagedRecord::commit`]. On failure the temporary file is removed.
pub(crate) fn stage_record(run_dir: &Path, record: &RunRecord) -> Result<StagedRecord, RunError> {
    let tmp = run_dir.join("run.json.tmp");
    // Streamed to the file (a record of 10k phases is some MB of text).
    let write =
        || -> std::io::Result<()> { write_pretty(record, &mut std::fs::File::create(&tmp)?) };
    if let Err(source) = write() {
        remove_quietly(&tmp);
        return Err(RunError::State {
            path: run_dir.join("run.json"),
            source,
        });
    }
    Ok(StagedRecord {
        run_dir: run_dir.to_owned(),
        tmp,
        committed: false,
    })
}

impl StagedRecord {
    /// Renames the record into `run.json` and points `runs/latest` at the run.
    pub(crate) fn commit(mut self) -> Result<(), RunError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| RunError::State { path, source }
        };
        let path = self.run_dir.join("run.json");
        std::fs::rename(&self.tmp, &path).map_err(err(&path))?;
        self.committed = true;
        if let (Some(runs), Some(name)) = (self.run_dir.parent(), self.run_dir.file_name()) {
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
}

impl Drop for StagedRecord {
    fn drop(&mut self) {
        if !self.committed {
            remove_quietly(&self.tmp);
        }
    }
}

/// Writes `record` as `serde_json::to_writer_pretty` does (the same bytes), to `w` in
/// blocks of some 64 KiB. The fields every phase has are written directly (a record of
/// 10,000 phases is some MB of text, mostly strings that need no escaping); the structured
/// fields a few phases have, with `serde_json`.
fn write_pretty(record: &RunRecord, w: &mut impl std::io::Write) -> std::io::Result<()> {
    // Every field named: one added to the type cannot be left out here.
    let RunRecord {
        format_version,
        run_id,
        pipeline,
        status,
        started_at,
        finished_at,
        duration_ms,
        resumed_from,
        pipeline_file,
        vars,
        phases,
        audit,
        record_errors,
    } = record;
    let mut out = Vec::with_capacity(72 * 1024);
    let mut top = Obj::open(&mut out, 0);
    top.field(&mut out, "format_version");
    json::uint(&mut out, u64::from(*format_version));
    top.field(&mut out, "run_id");
    json::string(&mut out, run_id.as_str());
    top.field(&mut out, "pipeline");
    json::string(&mut out, pipeline);
    top.field(&mut out, "status");
    nested(&mut out, 1, status)?;
    top.field(&mut out, "started_at");
    json::string(&mut out, started_at);
    if let Some(at) = finished_at {
        top.field(&mut out, "finished_at");
        json::string(&mut out, at);
    }
    if let Some(ms) = duration_ms {
        top.field(&mut out, "duration_ms");
        json::uint(&mut out, *ms);
    }
    if let Some(run) = resumed_from {
        top.field(&mut out, "resumed_from");
        json::string(&mut out, run.as_str());
    }
    if let Some(file) = pipeline_file {
        top.field(&mut out, "pipeline_file");
        json::string(&mut out, file);
    }
    top.field(&mut out, "vars");
    let mut o = Obj::open(&mut out, 1);
    for (k, v) in vars {
        o.key(&mut out, k);
        json::string(&mut out, v);
    }
    o.close(&mut out);
    top.field(&mut out, "phases");
    let mut o = Obj::open(&mut out, 1);
    for (id, phase) in phases {
        o.key(&mut out, id.as_str());
        write_phase(&mut out, phase)?;
        if out.len() >= 64 * 1024 {
            w.write_all(&out)?;
            out.clear();
        }
    }
    o.close(&mut out);
    if let Some(head) = audit {
        top.field(&mut out, "audit");
        nested(&mut out, 1, head)?;
    }
    if !record_errors.is_empty() {
        top.field(&mut out, "record_errors");
        nested(&mut out, 1, record_errors)?;
    }
    top.close(&mut out);
    w.write_all(&out)
}

/// One phase of [`write_pretty`], at the indentation of a phase (2).
fn write_phase(out: &mut Vec<u8>, phase: &PhaseRecord) -> std::io::Result<()> {
    const LEVEL: usize = 2;
    let PhaseRecord {
        status,
        kind,
        attempts,
        exit_code,
        started_at,
        finished_at,
        duration_ms,
        reason,
        cause,
        allowed_failure,
        outputs,
        artifacts,
        needs,
        tags,
        description,
        log,
        policy,
        warnings,
    } = phase;
    let time = |out: &mut Vec<u8>, t: &Timestamp| json::string(out, t.as_str());
    let mut o = Obj::open(out, LEVEL);
    o.field(out, "status");
    json::string(out, status.as_str());
    o.field(out, "kind");
    json::string(out, kind);
    o.field(out, "attempts");
    json::uint(out, u64::from(*attempts));
    if let Some(code) = exit_code {
        o.field(out, "exit_code");
        json::int(out, i64::from(*code));
    }
    if let Some(t) = started_at {
        o.field(out, "started_at");
        time(out, t);
    }
    if let Some(t) = finished_at {
        o.field(out, "finished_at");
        time(out, t);
    }
    if let Some(ms) = duration_ms {
        o.field(out, "duration_ms");
        json::uint(out, *ms);
    }
    if let Some(reason) = reason {
        o.field(out, "reason");
        json::string(out, reason);
    }
    if let Some(cause) = cause {
        o.field(out, "cause");
        nested(out, LEVEL + 1, cause)?;
    }
    if *allowed_failure {
        o.field(out, "allowed_failure");
        out.extend_from_slice(b"true");
    }
    o.field(out, "outputs");
    let mut m = Obj::open(out, LEVEL + 1);
    for (k, v) in outputs {
        m.key(out, k);
        json::string(out, v);
    }
    m.close(out);
    if !artifacts.is_empty() {
        o.field(out, "artifacts");
        nested(out, LEVEL + 1, artifacts)?;
    }
    let strings = |out: &mut Vec<u8>, items: &mut dyn Iterator<Item = &str>| {
        out.push(b'[');
        for (n, item) in items.enumerate() {
            out.extend_from_slice(if n == 0 { b"\n" } else { b",\n" });
            indent(out, LEVEL + 2);
            json::string(out, item);
        }
        out.push(b'\n');
        indent(out, LEVEL + 1);
        out.push(b']');
    };
    if !needs.is_empty() {
        o.field(out, "needs");
        strings(out, &mut needs.iter().map(|n| n.as_str()));
    }
    if !tags.is_empty() {
        o.field(out, "tags");
        strings(out, &mut tags.iter().map(String::as_str));
    }
    if let Some(text) = description {
        o.field(out, "description");
        json::string(out, text);
    }
    if let Some(path) = log {
        o.field(out, "log");
        json::string(out, path);
    }
    if let Some(verdict) = policy {
        o.field(out, "policy");
        nested(out, LEVEL + 1, verdict)?;
    }
    if !warnings.is_empty() {
        o.field(out, "warnings");
        strings(out, &mut warnings.iter().map(String::as_str));
    }
    o.close(out);
    Ok(())
}

/// An object being written as `serde_json`'s pretty printer writes it, at `level`.
struct Obj {
    level: usize,
    empty: bool,
}

impl Obj {
    fn open(out: &mut Vec<u8>, level: usize) -> Self {
        out.push(b'{');
        Self { level, empty: true }
    }

    /// The next key, after a comma when it is not the first.
    fn key(&mut self, out: &mut Vec<u8>, key: &str) {
        out.extend_from_slice(if self.empty { b"\n" } else { b",\n" });
        self.empty = false;
        indent(out, self.level + 1);
        json::string(out, key);
        out.extend_from_slice(b": ");
    }

    /// The next key, one of the record's own field names (no escaping needed).
    fn field(&mut self, out: &mut Vec<u8>, name: &'static str) {
        out.extend_from_slice(if self.empty { b"\n" } else { b",\n" });
        self.empty = false;
        indent(out, self.level + 1);
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\": ");
    }

    fn close(self, out: &mut Vec<u8>) {
        if !self.empty {
            out.push(b'\n');
            indent(out, self.level);
        }
        out.push(b'}');
    }
}

fn indent(out: &mut Vec<u8>, level: usize) {
    const SPACES: &[u8; 16] = b"                ";
    match SPACES.get(..2 * level) {
        Some(spaces) => out.extend_from_slice(spaces),
        None => (0..level).for_each(|_| out.extend_from_slice(b"  ")),
    }
}

/// `value` pretty-printed by `serde_json`, as it would be at `level` (its lines after the
/// first indented by as much: a newline in pretty JSON is never inside a string).
fn nested<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    level: usize,
    value: &T,
) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    for line in text.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line);
        if line.ends_with(b"\n") {
            indent(out, level);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PhaseId, RunId};
    use crate::record::{AuditHead, PhaseStatus, PolicyVerdict, Reason, RecordError, Stop};

    fn id(s: &str) -> PhaseId {
        PhaseId::new(s).unwrap()
    }

    #[test]
    fn a_staged_record_is_in_place_only_once_committed_and_gone_if_dropped() {
        let runs = tempfile::tempdir().unwrap();
        let run_dir = runs.path().join("R1");
        std::fs::create_dir(&run_dir).unwrap();
        let [first, second, ..] = &records()[..] else {
            panic!("two records")
        };
        let run_json = run_dir.join("run.json");
        let staged = stage_record(&run_dir, first).unwrap();
        assert!(!run_json.exists(), "not in place before it is committed");
        // Replaced before it is committed (the run's end learned something meanwhile): the
        // first is removed, the second goes in place.
        drop(staged);
        assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 0);
        stage_record(&run_dir, second).unwrap().commit().unwrap();
        let mut expected = serde_json::to_vec_pretty(second).unwrap();
        expected.push(b'\n');
        let written = std::fs::read(&run_json).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&written).trim_end(),
            String::from_utf8_lossy(&expected).trim_end()
        );
        assert_eq!(
            std::fs::read_link(runs.path().join("latest")).unwrap(),
            Path::new("R1")
        );
        assert_eq!(
            std::fs::read_dir(&run_dir).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    /// Records with every field set and none, with strings that need escaping.
    fn records() -> Vec<RunRecord> {
        let bare = PhaseRecord::new(PhaseStatus::Succeeded, "noop", 1);
        let mut full = PhaseRecord::new(PhaseStatus::Failed, "com\"mand\u{1}", 3);
        full.exit_code = Some(-2);
        full.started_at = Some("2026-01-01T00:00:00.000Z".into());
        full.finished_at = Some("2026-01-01T00:00:01.250Z".into());
        full.duration_ms = Some(1250);
        full.reason = Some("exit \"2\"\n\tand more".into());
        full.cause = Some(Box::new(Reason::NotStarted {
            stop: Stop::Interrupted,
        }));
        full.allowed_failure = true;
        full.outputs = [
            ("k".to_owned(), "v\\".to_owned()),
            ("\u{e9}".to_owned(), String::new()),
        ]
        .into();
        let mut artifact = Artifact::new("image", "reg/x:1");
        artifact.path = Some("/p".into());
        artifact.size = Some(12);
        artifact
            .details
            .insert("layers".into(), serde_json::json!([{"a": 1}, [], {}]));
        full.artifacts = vec![artifact, Artifact::new("file", "f")];
        full.needs = vec![id("a"), id("b-2")].into();
        full.tags = vec!["t1".into()];
        full.description = Some("d\u{2028}".into());
        full.log = Some("logs/x.log".into());
        full.policy = Some(Box::new(PolicyVerdict {
            allowed: false,
            deny: vec!["no".into(), "never \"ever\"".into()],
            error: None,
        }));
        full.warnings = vec!["w1".into(), "w2".into()];
        let mut blocked = PhaseRecord::new(PhaseStatus::Blocked, "noop", 0);
        blocked.cause = Some(Box::new(Reason::Blocked { by: "x".into() }));
        blocked.reason = Some("blocked by x".into());
        let run = RunRecord {
            format_version: RECORD_FORMAT_VERSION,
            run_id: RunId::parse("20261121T201600Z-3f2a").unwrap(),
            pipeline: "p\u{e9}\"".into(),
            status: RunStatus::Failed,
            started_at: "2026-01-01T00:00:00.000Z".into(),
            finished_at: Some("2026-01-01T00:00:02.000Z".into()),
            duration_ms: Some(2000),
            resumed_from: Some(RunId::parse("20261121T201500Z-0000").unwrap()),
            pipeline_file: Some("/w/orch.toml".into()),
            vars: [
                ("a".to_owned(), "1".to_owned()),
                ("q\"".to_owned(), "\n".to_owned()),
            ]
            .into_iter()
            .collect(),
            phases: [
                (id("a"), bare.clone()),
                (id("b-2"), full),
                (id("c"), blocked),
            ]
            .into_iter()
            .collect(),
            audit: Some(AuditHead {
                seq: 7,
                hash: "ab".into(),
            }),
            record_errors: vec![RecordError::new("logs/x.log", "disk full")],
        };
        let empty = RunRecord {
            finished_at: None,
            duration_ms: None,
            resumed_from: None,
            pipeline_file: None,
            vars: IndexMap::new(),
            phases: IndexMap::new(),
            audit: None,
            record_errors: Vec::new(),
            status: RunStatus::Succeeded,
            ..run.clone()
        };
        let many = RunRecord {
            phases: (0..3000)
                .map(|i| (id(&format!("p{i}")), bare.clone()))
                .collect(),
            ..empty.clone()
        };
        vec![run, empty, many]
    }

    #[test]
    fn the_record_is_written_as_serde_json_pretty_prints_it() {
        for record in records() {
            let mut out = Vec::new();
            write_pretty(&record, &mut out).unwrap();
            let want = serde_json::to_vec_pretty(&record).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want)
            );
        }
    }
}
