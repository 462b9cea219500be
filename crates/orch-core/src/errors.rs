//! Error types of the engine, one focused type per operation.

use std::ops::Range;
use std::path::PathBuf;

use crate::diagnostics::Diagnostics;

/// An id that is not of the allowed form.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {what} id `{id}`: use letters, digits, `_` and `-`")]
pub struct IdError {
    /// `phase` or `run`.
    pub what: &'static str,
    /// The rejected text.
    pub id: String,
}

/// A phase kind or agent type rejected its settings.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct KindError {
    /// What is wrong, as a lowercase fragment.
    pub message: String,
    /// Where in the pipeline file, when known.
    pub span: Option<Range<usize>>,
}

impl KindError {
    /// An error with no location.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            span: None,
        }
    }
}

/// A registration the [`crate::Registry`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two kinds under one name: the second would silently replace the first.
    #[error("phase kind `{kind}` is registered twice")]
    DuplicateKind {
        /// The kind's name.
        kind: String,
    },
    /// Two agent types under one name.
    #[error("agent type `{agent_type}` is registered twice")]
    DuplicateAgentType {
        /// The type's name.
        agent_type: String,
    },
}

/// A `${{ ... }}` template that cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// The template syntax is wrong.
    #[error("malformed template at byte {offset}: {message}")]
    Syntax {
        /// Byte offset in the templated string.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// `${{ vars.X }}` with no such var.
    #[error("unknown variable `{name}`")]
    UnknownVar {
        /// The var name.
        name: String,
    },
    /// `${{ phases.P.outputs.K }}` where P published no K.
    #[error("phase `{phase}` has no output `{key}`")]
    MissingOutput {
        /// The phase read from.
        phase: String,
        /// The output key.
        key: String,
    },
    /// `${{ phases.P... }}` where P is not among the phase's needs.
    #[error("outputs of phase `{phase}` are not available: it is not among the needs")]
    NotNeeded {
        /// The phase read from.
        phase: String,
    },
}

/// An agent that cannot take work.
#[derive(Debug, Clone, thiserror::Error)]
#[error("agent `{agent}` ({endpoint}) is unavailable: {message}")]
pub struct AgentError {
    /// The agent's name.
    pub agent: String,
    /// What it talks to (socket, path, ...).
    pub endpoint: String,
    /// Why.
    pub message: String,
}

/// Loading a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read pipeline file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why: an I/O error, not a regular file, too large, not UTF-8.
        #[source]
        source: crate::input::InputError,
    },
    /// The file has problems; each carries its location.
    #[error("{0}")]
    Invalid(Diagnostics),
    /// A policy file of `[policy]` cannot be read or compiled.
    #[error("invalid policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
}

impl RunError {
    /// The file a [`RunError::State`] is about, relative to `run_dir` when it is inside.
    pub fn file(&self, run_dir: &std::path::Path) -> String {
        match self {
            Self::State { path, .. } | Self::Record { path, .. } => path
                .strip_prefix(run_dir)
                .unwrap_or(path)
                .display()
                .to_string(),
            Self::Locked { state_dir, .. } => state_dir.display().to_string(),
            Self::Selection(_) | Self::Resume(_) | Self::Audit(_) => String::new(),
        }
    }
}

/// A run could not be carried out (as opposed to a phase failing inside it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory could not be written.
    #[error("cannot write {path}")]
    State {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The selection names phases that do not exist.
    #[error("{0}")]
    Selection(String),
    /// `--resume` found nothing to resume.
    #[error("nothing to resume: {0}")]
    Resume(String),
    /// Another run holds the state directory.
    #[error("another run is using {state_dir}: {holder}")]
    Locked {
        /// The state directory.
        state_dir: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// The audit log could not be opened or continued.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// A record could not be read back.
    #[error("cannot read {path}: {message}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A file a phase writes (see [`crate::PhaseContext::write_file`]) could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct WriteFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// An error and its sources in one line, `outer: inner: root`; a source whose text the
/// line already holds is left out (many errors repeat their source in their message).
///
/// ```
/// let io = std::io::Error::other("disk full");
/// let e = orch_core::RunError::State { path: "/s/run.json".into(), source: io };
/// assert_eq!(
///     orch_core::errors::chain(&e),
///     format!("{e}: disk full"),
/// );
/// ```
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}
