//! Reports: the files every run leaves, and `orch report` for any past run.

use std::path::{Path, PathBuf};

use clap::Args;
use orch_core::history;
use orch_core::{RecordError, RunRecord};
use orch_report::{Format, ReportError};

use crate::exit_codes::ExitCodes;
use crate::output::{errln, outln, write_out_bytes};

/// `orch report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run id (default: the latest run).
    #[arg(default_value = "latest")]
    run_id: String,
    /// md, junit, html, json, pdf or compliance.
    #[arg(long, default_value = "md")]
    format: String,
    /// Write to this file instead of standard output (PDF defaults to the run directory).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The pipeline file whose state directory to read.
    #[arg(long, short = 'f', default_value = "orch.toml")]
    file: PathBuf,
    /// The state directory (overrides the pipeline file's).
    #[arg(long, value_name = "DIR", env = "ORCH_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// Writes `report.md`, `junit.xml`, `report.html` (and `artifacts_manifest.json` when the
/// run built or pushed images) into the run directory, and appends the Markdown summary to
/// `GITHUB_STEP_SUMMARY` when it is set. Each report is tried, whatever happened to the
/// others; returns the paths written and the reports that could not be (the run's status
/// stands, but it is not fully recorded). A step summary that cannot be appended is a
/// warning only: it is not part of the run's record.
pub fn after_run(record: &RunRecord, run_dir: &Path) -> (Vec<PathBuf>, Vec<RecordError>) {
    let mut written = Vec::new();
    let mut failed = Vec::new();
    for format in orch_report::DEFAULT_FORMATS {
        match orch_report::write_reports(
            record,
            run_dir,
            &[format],
            run_dir,
            &orch_report::ReportOptions::default(),
        ) {
            Ok(paths) => written.extend(paths),
            Err(e) => failed.push(RecordError::new(format.file_name(), report_error(&e))),
        }
    }
    let manifest = orch_docker::artifacts_manifest(record);
    if manifest["images"].as_array().is_some_and(|a| !a.is_empty()) {
        let name = "artifacts_manifest.json";
        let path = run_dir.join(name);
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        match orch_report::write_file(&path, &bytes) {
            Ok(()) => written.push(path),
            Err(e) => failed.push(RecordError::new(name, report_error(&e))),
        }
    }
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty())
        && let Err(e) = orch_report::append_step_summary(record, run_dir, Path::new(&summary))
    {
        errln!("warning: cannot append to GITHUB_STEP_SUMMARY: {e}");
    }
    (written, failed)
}

/// The I/O error behind a report that could not be written (the file is named beside it).
fn report_error(e: &ReportError) -> String {
    match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => e.to_string(),
    }
}

/// `orch report [RUN_ID] --format F [-o FILE]`.
pub fn report(a: &ReportArgs) -> Result<u8, (String, u8)> {
    let invalid = |m: String| (m, ExitCodes::INVALID);
    let format: Format = a
        .format
        .parse()
        .map_err(|e: ReportError| invalid(format!("error: {e}")))?;
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| history::state_dir_of(&a.file));
    let id = history::resolve(&state_dir, &a.run_id).map_err(|e| invalid(format!("error: {e}")))?;
    let record =
        history::load(&state_dir, id.as_str()).map_err(|e| invalid(format!("error: {e}")))?;
    let run_dir = state_dir.join("runs").join(id.as_str());
    let bytes = orch_report::render(&record, &run_dir, format)
        .map_err(|e| (format!("error: {e}"), ExitCodes::FAILED))?;
    let output = a
        .output
        .clone()
        .or_else(|| (format == Format::Pdf).then(|| run_dir.join(format.file_name())));
    match output {
        Some(path) => {
            // Whole or not at all; a report that cannot be written is not recorded.
            orch_report::write_file(&path, &bytes).map_err(|e| {
                (
                    format!(
                        "error: cannot write {}: {}",
                        path.display(),
                        report_error(&e)
                    ),
                    ExitCodes::UNRECORDED,
                )
            })?;
            errln!("wrote {}", path.display());
        }
        None => {
            write_out_bytes(&bytes)?;
        }
    }
    Ok(ExitCodes::OK)
}

/// `orch verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The archive (`tar.gz` or `tar`) made by a `package` phase.
    archive: PathBuf,
}

/// `orch verify FILE`: checks a package against its manifest. Exit 0 when it verifies, 1
/// when it is rejected (every reason listed), 2 when it cannot be read.
pub fn verify(a: &VerifyArgs) -> Result<u8, (String, u8)> {
    match orch_delivery::verify_archive(&a.archive) {
        Ok(r) => {
            outln!(
                "{}: ok, {} files match the manifest (manifest sha256 {})",
                a.archive.display(),
                r.files,
                r.manifest_sha256
            )?;
            Ok(ExitCodes::OK)
        }
        Err(e @ orch_delivery::VerifyError::Rejected { .. }) => {
            Err((format!("error: {e}"), ExitCodes::FAILED))
        }
        Err(e) => {
            let mut m = format!("error: {e}");
            if let Some(s) = std::error::Error::source(&e) {
                m.push_str(&format!(": {s}"));
            }
            Err((m, ExitCodes::INVALID))
        }
    }
}
