//! `orch-report`: reports of an orch run, made from its [`RunRecord`] (`run.json`) and the
//! logs in its run directory (`RUN_DIR/logs/PHASE.log`).
//!
//! | [`Format`] | file | what |
//! |---|---|---|
//! | [`Format::Markdown`] | `report.md` | GitHub-flavoured summary: status, phases, failures with log tails, tests, outputs, artifacts |
//! | [`Format::Junit`] | `junit.xml` | a test suite for the run (a test case per phase) plus the phases' own JUnit files |
//! | [`Format::Html`] | `report.html` | a self-contained dashboard: timeline, graph, phases with logs, tests, discovery, parity, quality, artifacts |
//! | [`Format::Json`] | `report.json` | the record itself, pretty-printed |
//! | [`Format::ComplianceHtml`] | `compliance.html` | the document a release manager signs off |
//! | [`Format::Pdf`] | `compliance.pdf` | the compliance report printed by headless Chromium |
//!
//! Records and logs are redacted by the engine; reports add nothing from the environment,
//! and the HTML reports escape every value (minijinja auto-escaping) and allow no script but
//! their own (a hash-pinned Content Security Policy) and no network access.
//!
//! The `report` phase kind ([`register`]) renders reports inside a pipeline.
//!
//! # Example
//!
//! ```
//! use orch_core::RunRecord;
//! use orch_report::{Format, render};
//!
//! let record: RunRecord = serde_json::from_value(serde_json::json!({
//!     "format_version": 1,
//!     "run_id": "20261121T201600Z-3f2a",
//!     "pipeline": "demo",
//!     "status": "failed",
//!     "started_at": "2026-11-21T20:16:00.000Z",
//!     "finished_at": "2026-11-21T20:16:05.000Z",
//!     "duration_ms": 5000,
//!     "phases": {
//!         "build": { "status": "succeeded", "kind": "command", "attempts": 1,
//!                    "started_at": "2026-11-21T20:16:00.000Z",
//!                    "finished_at": "2026-11-21T20:16:02.000Z", "duration_ms": 2000 },
//!         "test": { "status": "failed", "kind": "command", "attempts": 2, "exit_code": 1,
//!                   "needs": ["build"], "reason": "exit status 1",
//!                   "started_at": "2026-11-21T20:16:02.000Z",
//!                   "finished_at": "2026-11-21T20:16:05.000Z", "duration_ms": 3000 }
//!     }
//! }))?;
//! let run_dir = tempfile::tempdir()?;
//!
//! let md = String::from_utf8(render(&record, run_dir.path(), Format::Markdown)?)?;
//! assert!(md.starts_with("## ❌ demo: failed"));
//! assert!(md.contains("| ❌ | `test` | command | failed (exit 1) | 3.0s | 2 (1 retry) |"));
//!
//! let xml = String::from_utf8(render(&record, run_dir.path(), Format::Junit)?)?;
//! assert!(xml.contains(r#"<testsuite name="demo" tests="2""#));
//!
//! let html = String::from_utf8(render(&record, run_dir.path(), Format::Html)?)?;
//! assert_eq!(html.matches(r#"class="tl-bar "#).count(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use orch_core::RunRecord;

mod dag;
mod deploy;
pub mod errors;
mod html;
mod junit;
mod logs;
mod markdown;
pub mod pdf;
mod phase;
mod quality;
mod sources;
mod time;
mod view;

pub use errors::ReportError;
pub use pdf::{find_chromium, print_pdf};
pub use phase::{DEFAULT_PHASE_FORMATS, ReportPhase, register};

/// A report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// GitHub-flavoured Markdown summary (`report.md`).
    Markdown,
    /// JUnit XML (`junit.xml`).
    Junit,
    /// The HTML dashboard (`report.html`).
    Html,
    /// The run record, pretty JSON (`report.json`).
    Json,
    /// The compliance report printed to PDF (`compliance.pdf`); needs Chromium.
    Pdf,
    /// The compliance report as HTML (`compliance.html`).
    ComplianceHtml,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 6] = [
        Format::Markdown,
        Format::Junit,
        Format::Html,
        Format::Json,
        Format::ComplianceHtml,
        Format::Pdf,
    ];

    /// The name used on the command line and in `with.formats`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Markdown => "md",
            Self::Junit => "junit",
            Self::Html => "html",
            Self::Json => "json",
            Self::Pdf => "pdf",
            Self::ComplianceHtml => "compliance",
        }
    }

    /// The file it is written to by [`write_reports`].
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Markdown => "report.md",
            Self::Junit => "junit.xml",
            Self::Html => "report.html",
            Self::Json => "report.json",
            Self::Pdf => "compliance.pdf",
            Self::ComplianceHtml => "compliance.html",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Format {
    type Err = ReportError;

    /// Parses `md`/`markdown`, `junit`/`xml`, `html`/`dashboard`, `json`, `pdf`,
    /// `compliance`/`compliance-html` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "md" | "markdown" => Self::Markdown,
            "junit" | "xml" => Self::Junit,
            "html" | "dashboard" => Self::Html,
            "json" => Self::Json,
            "pdf" => Self::Pdf,
            "compliance" | "compliance-html" | "compliance_html" => Self::ComplianceHtml,
            _ => {
                return Err(ReportError::UnknownFormat { name: s.to_owned() });
            }
        })
    }
}

/// Limits that keep reports readable and small.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReportOptions {
    /// Lines of log shown for a failure in Markdown and JUnit (default 30).
    pub log_tail_lines: usize,
    /// The most of one log the HTML dashboard inlines: its last bytes (default 16 KiB).
    pub html_log_bytes: u64,
    /// The most of all logs the dashboard inlines; failures come first (default 2 MiB).
    pub html_log_budget: u64,
    /// Phases per page of the dashboard's phase list (default 100).
    pub page_size: usize,
    /// Largest graph drawn as SVG; larger ones get a per-column table (default 400).
    pub dag_max_phases: usize,
    /// Largest run whose dashboard lists every phase as markup (default 1,000). Above it,
    /// the phase list and the timeline are built by the page's script from one compact
    /// JSON row per phase, a page at a time; phases with a problem, a log, artifacts or
    /// tests keep their markup.
    pub inline_phases: usize,
    /// How long Chromium may take to print the PDF (default 120 s).
    pub pdf_timeout: Duration,
    /// The Chromium to print with (default: the first of [`pdf::CHROMIUM_NAMES`] on `PATH`).
    pub chromium: Option<PathBuf>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            log_tail_lines: 30,
            html_log_bytes: 16 * 1024,
            html_log_budget: 2 * 1024 * 1024,
            page_size: 100,
            dag_max_phases: 400,
            inline_phases: 1000,
            pdf_timeout: Duration::from_secs(120),
            chromium: None,
        }
    }
}

/// Renders one report of a run with the default [`ReportOptions`].
///
/// `run_dir` is the run's directory (`STATE_DIR/runs/RUN_ID`): logs are read from it, and
/// relative paths that phases published (JUnit files, discovery and parity reports) are
/// looked up in it, then beside the pipeline file.
pub fn render(record: &RunRecord, run_dir: &Path, format: Format) -> Result<Vec<u8>, ReportError> {
    render_with(record, run_dir, format, &ReportOptions::default())
}

/// Renders one report of a run.
///
/// [`Format::Pdf`] writes the compliance HTML to a temporary directory and prints it with
/// Chromium; without Chromium it fails with [`ReportError::ChromiumMissing`].
pub fn render_with(
    record: &RunRecord,
    run_dir: &Path,
    format: Format,
    options: &ReportOptions,
) -> Result<Vec<u8>, ReportError> {
    match format {
        Format::Pdf => {
            let dir = tempfile::Builder::new()
                .prefix("orch-report-")
                .tempdir()
                .map_err(|source| ReportError::Write {
                    path: std::env::temp_dir(),
                    source,
                })?;
            let html_path = dir.path().join(Format::ComplianceHtml.file_name());
            let pdf_path = dir.path().join(Format::Pdf.file_name());
            write_file_with(&html_path, |out| html::compliance(record, run_dir, out))?;
            pdf::print_pdf_cancellable(
                options.chromium.as_deref(),
                &html_path,
                &pdf_path,
                options.pdf_timeout,
                &AtomicBool::new(false),
            )
            .map_err(|e| match e {
                ReportError::ChromiumMissing { looked_for, .. } => ReportError::ChromiumMissing {
                    looked_for,
                    html: None,
                },
                other => other,
            })?;
            std::fs::read(&pdf_path).map_err(|source| ReportError::Write {
                path: pdf_path,
                source,
            })
        }
        _ => {
            let mut bytes = Vec::new();
            render_into(record, run_dir, format, options, &mut bytes)?;
            Ok(bytes)
        }
    }
}

/// Renders one report (any but [`Format::Pdf`], which is printed from a file) into `out`
/// as it is rendered: the reports of a large run are some MB each, and are never whole in
/// memory on their way to a file.
fn render_into(
    record: &RunRecord,
    run_dir: &Path,
    format: Format,
    options: &ReportOptions,
    out: &mut dyn std::io::Write,
) -> Result<(), ReportError> {
    let io_err = |source| ReportError::Write {
        path: PathBuf::new(),
        source,
    };
    match format {
        Format::Markdown => out
            .write_all(markdown::render(record, run_dir, options).as_bytes())
            .map_err(io_err),
        Format::Junit => junit::render(record, run_dir, options, out),
        Format::Html => html::dashboard(record, run_dir, options, out),
        // A PDF is printed from this page (see `render_with`).
        Format::ComplianceHtml | Format::Pdf => html::compliance(record, run_dir, out),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, record)
                .map_err(|source| ReportError::Json { source })?;
            out.write_all(b"\n").map_err(io_err)
        }
    }
}

/// Writes `bytes` to `path` whole or not at all: written beside and renamed, so readers
/// never see half a file; when that fails (a full disk), the partial temporary file is
/// removed and an earlier file at `path` stays as it was. A device or a named pipe at
/// `path` (`/dev/null`) is written to, not replaced.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    // A failed write is kept by the writer and reported as the file's.
    write_file_with(path, |out| {
        let _ = out.write_all(bytes);
        Ok(())
    })
}

/// Writes what `render` writes to `path`, whole or not at all (as [`write_file`]), through
/// a buffer: the text is never whole in memory. A write that fails is reported as
/// [`ReportError::Write`] of `path`, whatever the renderer made of it. A path that is
/// neither a file nor a directory (a device such as `/dev/null`, a named pipe) is written to
/// as it is: renamed over, it would be replaced by a regular file.
fn write_file_with(
    path: &Path,
    render: impl FnOnce(&mut dyn std::io::Write) -> Result<(), ReportError>,
) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_owned(),
        source,
    };
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(err)?;
        return write_through(file, render, err);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(err)?;
        write_through(file, render, err)?;
        std::fs::rename(&tmp, path).map_err(err)
    })();
    if result.is_err() {
        // Nothing half-written stays behind. The error reported is the first one: a
        // temporary file that cannot be removed either is on the same broken disk.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes what `render` writes to `file` through a buffer; a write that fails is reported
/// through `err`, whatever the renderer made of it.
fn write_through(
    file: std::fs::File,
    render: impl FnOnce(&mut dyn std::io::Write) -> Result<(), ReportError>,
    err: impl Fn(std::io::Error) -> ReportError,
) -> Result<(), ReportError> {
    let mut out = Tracked {
        inner: std::io::BufWriter::with_capacity(64 * 1024, file),
        failed: None,
    };
    let rendered = render(&mut out);
    if let Some(e) = out.failed.take() {
        return Err(err(e));
    }
    rendered?;
    out.inner
        .into_inner()
        .map(drop)
        .map_err(|e| err(e.into_error()))
}

/// A writer that keeps the first error it met, for [`write_file_with`] to report as the
/// file's (renderers wrap I/O errors in their own).
struct Tracked<W> {
    inner: W,
    failed: Option<std::io::Error>,
}

impl<W: std::io::Write> Tracked<W> {
    fn keep<T>(&mut self, r: std::io::Result<T>) -> std::io::Result<T> {
        r.inspect_err(|e| {
            if self.failed.is_none() {
                self.failed = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

impl<W: std::io::Write> std::io::Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.inner.write(buf);
        self.keep(r)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.inner.flush();
        self.keep(r)
    }
}

/// Writes reports of a run into `out_dir` under their [`Format::file_name`]s and returns
/// the paths written, in the order of `formats` (duplicates ignored).
///
/// [`Format::Pdf`] also writes `compliance.html` (the page it prints). PDF comes last: when
/// Chromium is missing the other reports and the compliance HTML are written and the error
/// ([`ReportError::ChromiumMissing`]) names the HTML.
pub fn write_reports(
    record: &RunRecord,
    run_dir: &Path,
    formats: &[Format],
    out_dir: &Path,
    options: &ReportOptions,
) -> Result<Vec<PathBuf>, ReportError> {
    write_reports_cancellable(
        record,
        run_dir,
        formats,
        out_dir,
        options,
        &orch_core::redact::Redactor::default(),
        &AtomicBool::new(false),
    )
}

/// [`write_reports`] that masks `redactor`'s secrets in every file it writes (the `report`
/// kind passes its run's) and stops when `cancel` is set.
pub(crate) fn write_reports_cancellable(
    record: &RunRecord,
    run_dir: &Path,
    formats: &[Format],
    out_dir: &Path,
    options: &ReportOptions,
    redactor: &orch_core::redact::Redactor,
    cancel: &AtomicBool,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut ordered: Vec<Format> = Vec::new();
    for f in formats {
        if !ordered.contains(f) {
            ordered.push(*f);
        }
    }
    let wants_pdf = ordered.contains(&Format::Pdf);
    ordered.retain(|f| *f != Format::Pdf);
    if wants_pdf && !ordered.contains(&Format::ComplianceHtml) {
        ordered.push(Format::ComplianceHtml);
    }
    let mut written = Vec::new();
    for format in ordered {
        let path = out_dir.join(format.file_name());
        if redactor.is_empty() {
            write_file_with(&path, |out| {
                render_into(record, run_dir, format, options, out)
            })?;
        } else {
            let bytes = render_with(record, run_dir, format, options)?;
            write_file(&path, &redactor.redact_bytes(&bytes))?;
        }
        written.push(path);
    }
    if wants_pdf {
        let html = out_dir.join(Format::ComplianceHtml.file_name());
        let pdf = out_dir.join(Format::Pdf.file_name());
        pdf::print_pdf_cancellable(
            options.chromium.as_deref(),
            &html,
            &pdf,
            options.pdf_timeout,
            cancel,
        )?;
        written.push(pdf);
    }
    Ok(written)
}

/// The reports every run leaves in its run directory.
pub const DEFAULT_FORMATS: [Format; 3] = [Format::Markdown, Format::Junit, Format::Html];

/// Writes `report.md`, `junit.xml` and `report.html` into the run directory (the CLI calls
/// this after every run) and returns their paths.
pub fn write_default_reports(
    record: &RunRecord,
    run_dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    write_reports(
        record,
        run_dir,
        &DEFAULT_FORMATS,
        run_dir,
        &ReportOptions::default(),
    )
}

/// Appends the Markdown summary to a GitHub step summary file (the CLI passes the value
/// of `$GITHUB_STEP_SUMMARY` when it is set), creating the file if needed.
pub fn append_step_summary(
    record: &RunRecord,
    run_dir: &Path,
    summary_path: &Path,
) -> Result<(), ReportError> {
    let md = markdown::render(record, run_dir, &ReportOptions::default());
    let err = |source| ReportError::Write {
        path: summary_path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(summary_path)
        .map_err(err)?;
    file.write_all(md.as_bytes()).map_err(err)?;
    file.write_all(b"\n").map_err(err)
}
