//! Errors of the quality kinds. Each names the file (and, for a malformed one, the line and
//! column of the fault); none is ever turned into a zero.

use std::path::PathBuf;

/// An input of the `quality` kind that cannot be read as a measure.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A pattern is not a valid glob.
    #[error("`{key}` pattern `{pattern}` is not a valid glob: {message}")]
    BadGlob {
        /// The setting (`sarif`, `coverage`, `junit`).
        key: &'static str,
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A pattern matched no file.
    #[error("`{key}` pattern `{pattern}` matches no file (looked in {dir})")]
    NoMatch {
        /// The setting (`sarif`, `coverage`, `junit`).
        key: &'static str,
        /// The pattern.
        pattern: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file is empty.
    #[error("{path} is empty: no {format} to read")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What it should hold (`SARIF`, `coverage`, `JUnit XML`).
        format: &'static str,
    },
    /// A file is not well-formed, or not the format it should be.
    #[error("{path}:{line}:{column}: malformed {format}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        format: &'static str,
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A SARIF file of another version than 2.1.0.
    #[error("{path}: SARIF version {found} is not supported: only SARIF 2.1.0 is read")]
    SarifVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: String,
    },
    /// A coverage file that is neither Cobertura XML nor LCOV.
    #[error("{path}: not a coverage report this build reads (Cobertura XML or LCOV)")]
    UnknownCoverage {
        /// The file.
        path: PathBuf,
    },
}

/// Why a quality evaluation could not be completed (as opposed to a gate that failed).
#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    /// An input could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// No input was given at all.
    #[error("nothing to measure: set at least one of `sarif`, `coverage`, `junit`")]
    NoInputs,
    /// A condition could not be evaluated.
    #[error("condition {expr}: {message}")]
    Condition {
        /// The condition.
        expr: String,
        /// Why.
        message: String,
    },
    /// A report could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a secrets scan could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The root does not exist or is not a directory.
    #[error("scan root {path} is not a directory")]
    Root {
        /// The root.
        path: PathBuf,
    },
    /// An `ignore` entry is not a valid glob.
    #[error("`ignore` pattern `{pattern}` is not a valid glob: {message}")]
    BadIgnore {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// Walking the tree failed.
    #[error("cannot walk {path}: {message}")]
    Walk {
        /// Where.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The report could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
