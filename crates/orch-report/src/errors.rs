//! Error types of `orch-report`.

use std::path::PathBuf;

/// A report that could not be rendered or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A file (report output, GitHub step summary) could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A template failed to render (a bug in this crate).
    #[error("cannot render the {template} template")]
    Template {
        /// The template's name.
        template: &'static str,
        /// Why.
        #[source]
        source: minijinja::Error,
    },
    /// The JUnit XML could not be serialized.
    #[error("cannot serialize the junit report")]
    Junit {
        /// Why.
        #[source]
        source: quick_junit::SerializeError,
    },
    /// The run record could not be serialized as JSON.
    #[error("cannot serialize the run record")]
    Json {
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No Chromium was found to print the PDF.
    #[error(
        "cannot print the pdf: chromium is not installed (looked for {looked_for}; install Debian's \
         `chromium`, e.g. with scripts/install/chromium.sh){}",
        html.as_ref().map(|h| format!("; the compliance html is at {}", h.display())).unwrap_or_default()
    )]
    ChromiumMissing {
        /// What was looked for: program names on `PATH`, or the configured path.
        looked_for: String,
        /// The compliance HTML that was written, if any.
        html: Option<PathBuf>,
    },
    /// Chromium ran but did not produce the PDF.
    #[error("chromium failed to print {}: {message}", pdf.display())]
    Print {
        /// The PDF it should have written.
        pdf: PathBuf,
        /// What went wrong (exit status, stderr tail, timeout).
        message: String,
    },
    /// A format name that is not known.
    #[error("unknown report format `{name}`: use one of md, junit, html, json, compliance, pdf")]
    UnknownFormat {
        /// The rejected name.
        name: String,
    },
}
