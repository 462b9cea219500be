//! Error types of this crate, one focused type per operation.

use std::path::PathBuf;

/// `discover` could not run at all (problems inside the tree are findings, not errors).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// A root to walk does not exist or is not a directory.
    #[error("discovery root {path} is not a directory")]
    NotADirectory {
        /// The root.
        path: PathBuf,
    },
    /// An `ignore` pattern is not a valid glob.
    #[error("invalid ignore pattern `{pattern}`")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        #[source]
        source: ignore::Error,
    },
    /// Several roots were given and one of them lies outside the pipeline directory.
    #[error("root {path} is outside the pipeline directory; give it as the only root")]
    RootOutside {
        /// The root.
        path: PathBuf,
    },
    /// The walk was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// A parity spec or a discovery report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The spec is not valid TOML of the expected shape.
    #[error("invalid parity spec {path}: {message}")]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// What is wrong (with line and column).
        message: String,
    },
    /// The discovery report is not a `discovery.json` this build understands.
    #[error("invalid discovery report {path}")]
    Discovery {
        /// The report.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// `scaffold` refused or failed to write a service.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// A module name that cannot be a directory name inside the target.
    #[error("module name `{name}` is not allowed: {reason}")]
    UnsafeName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A template file whose (rendered) path would leave the service directory.
    #[error("template path `{path}` is not allowed: {reason}")]
    UnsafeTemplatePath {
        /// The path, as written or rendered.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A `target` outside the pipeline's directory (absolute, or leaving it with `..`).
    #[error(
        "target `{target}` is outside the pipeline's directory: scaffold writes only inside it"
    )]
    TargetOutside {
        /// The target as rendered.
        target: String,
    },
    /// A symlink inside a template directory, or on the way to a file to write.
    #[error("refusing symlink {path}: scaffold never follows links")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// A FIFO, socket or device inside a template directory.
    #[error("refusing {path}: not a regular file (a template holds only files and directories)")]
    NotRegular {
        /// The entry.
        path: PathBuf,
    },
    /// The template name is neither built in nor an existing directory.
    #[error("unknown template `{name}`: use `python-fastapi`, `node-express` or a directory")]
    UnknownTemplate {
        /// The setting as given.
        name: String,
    },
    /// A template did not render.
    #[error("cannot render template {path}")]
    Render {
        /// The template file.
        path: String,
        /// The template error.
        #[source]
        source: minijinja::Error,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// `read`, `write`, `create`.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The parity report named by `from` could not be used.
    #[error("cannot read parity report {path}")]
    Report {
        /// The report.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// `package` could not build the archive.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A path to package lies outside the pipeline directory.
    #[error("path `{path}` is outside the pipeline directory")]
    Outside {
        /// The path as given.
        path: String,
    },
    /// A path to package does not exist.
    #[error("path `{path}` does not exist")]
    Missing {
        /// The path as given.
        path: String,
    },
    /// A file name an archive cannot carry portably (not UTF-8, a newline or backslash,
    /// or the reserved `MANIFEST.sha256` at the top).
    #[error("cannot package {path}: {reason}")]
    UnportableName {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// A file changed while it was being packaged.
    #[error("{path} changed while it was being packaged")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read or the archive written.
    #[error("cannot {action} {path}")]
    Io {
        /// `read`, `write`, `rename`.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `SOURCE_DATE_EPOCH` is not a non-negative integer.
    #[error("SOURCE_DATE_EPOCH `{value}` is not a number of seconds")]
    Epoch {
        /// The value.
        value: String,
    },
    /// An `exclude` pattern is not a valid glob.
    #[error("invalid exclude pattern `{pattern}`")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: ignore::Error,
    },
    /// Nothing to package.
    #[error("no files to package")]
    Empty,
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// One reason an archive fails verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyProblem {
    /// An entry whose path has a `..` component.
    #[error("entry `{entry}` has a `..` component")]
    ParentDir {
        /// The entry path.
        entry: String,
    },
    /// An entry with an absolute path.
    #[error("entry `{entry}` has an absolute path")]
    Absolute {
        /// The entry path.
        entry: String,
    },
    /// An entry with an empty or non-UTF-8 path.
    #[error("entry `{entry}` has an invalid path: {reason}")]
    BadPath {
        /// The entry path (lossy).
        entry: String,
        /// Why.
        reason: &'static str,
    },
    /// A symlink or hard link whose target leaves the archive root.
    #[error("link `{entry}` points outside the archive: `{target}`")]
    EscapingLink {
        /// The link entry.
        entry: String,
        /// Its target.
        target: String,
    },
    /// A link (packages made by `package` hold none) not listed in the manifest.
    #[error("link `{entry}` -> `{target}` is not in the manifest")]
    UnlistedLink {
        /// The link entry.
        entry: String,
        /// Its target.
        target: String,
    },
    /// A device file, FIFO or other special entry.
    #[error("entry `{entry}` is a {kind}, which a package may not contain")]
    Special {
        /// The entry path.
        entry: String,
        /// `character device`, `block device`, `fifo`, ...
        kind: &'static str,
    },
    /// The same path appears twice.
    #[error("entry `{entry}` appears more than once")]
    Duplicate {
        /// The entry path.
        entry: String,
    },
    /// A path that is a file in one entry and a directory (or a file's parent) in another:
    /// extractors disagree on what such an archive holds.
    #[error("entry `{entry}` makes `{path}` both a file and a directory")]
    FileAndDirectory {
        /// The entry that conflicts with an earlier one.
        entry: String,
        /// The path that is both.
        path: String,
    },
    /// A PAX extended header key that extractors interpret differently or that changes
    /// what is extracted (sparse maps `GNU.sparse.*`, extended attributes, unknown keys).
    #[error("entry `{entry}` has the pax key `{key}`, which a package may not contain")]
    PaxKey {
        /// The entry the header describes (or `(global header)`).
        entry: String,
        /// The key.
        key: String,
    },
    /// A PAX header that does not parse, or that names a key twice.
    #[error("entry `{entry}` has a malformed pax header: {reason}")]
    BadPax {
        /// The entry the header describes.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A directory, link or special entry that carries data.
    #[error("entry `{entry}` is a {kind} with {size} bytes of data")]
    DataInNonFile {
        /// The entry.
        entry: String,
        /// What it is.
        kind: &'static str,
        /// The data size.
        size: u64,
    },
    /// Bytes after the end-of-archive marker (hidden entries that `tar -i` reads).
    #[error("data follows the end of the archive")]
    TrailingData,
    /// No `MANIFEST.sha256` at the archive root.
    #[error("the archive has no MANIFEST.sha256")]
    NoManifest,
    /// A manifest line that is not `HEX  PATH`.
    #[error("MANIFEST.sha256 line {line}: {reason}")]
    BadManifest {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A file listed in the manifest is not in the archive.
    #[error("`{path}` is in the manifest but not in the archive")]
    MissingFile {
        /// The path.
        path: String,
    },
    /// A file whose sha256 differs from the manifest's.
    #[error("`{path}` does not match the manifest (expected {expected}, found {actual})")]
    Mismatch {
        /// The path.
        path: String,
        /// Hex digest in the manifest.
        expected: String,
        /// Hex digest of the content.
        actual: String,
    },
    /// A file in the archive the manifest does not list.
    #[error("`{path}` is in the archive but not in the manifest")]
    ExtraFile {
        /// The path.
        path: String,
    },
}

/// An archive could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The archive could not be read (missing, not gzip, truncated tar).
    #[error("cannot read archive {path}")]
    Read {
        /// The archive.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The archive is readable but fails verification.
    #[error("archive {path} is rejected: {}", join_problems(.problems))]
    Rejected {
        /// The archive.
        path: PathBuf,
        /// Every reason found, in archive order.
        problems: Vec<VerifyProblem>,
    },
}

fn join_problems(problems: &[VerifyProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
