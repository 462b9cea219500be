//! Error types of the git kinds.
//!
//! Messages are lowercase fragments. Before a message leaves the crate it is passed through
//! the URL sanitiser and the run's secret redaction (see [`crate::sanitize`]).

use std::path::PathBuf;

/// Something a git phase could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// No repository at (or above) the path.
    #[error("cannot open git repository at {path}")]
    Open {
        /// Where it looked.
        path: PathBuf,
        /// The libgit2 error.
        #[source]
        source: Libgit2Error,
    },
    /// The repository is bare, and the kind needs a working tree.
    #[error("repository {repo} has no working tree (it is bare)")]
    Bare {
        /// The repository.
        repo: PathBuf,
    },
    /// A libgit2 operation failed.
    #[error("cannot {action} in {repo}")]
    Git {
        /// What was being done (`read the index`, `create the tag`).
        action: String,
        /// The repository.
        repo: PathBuf,
        /// The libgit2 error.
        #[source]
        source: Libgit2Error,
    },
    /// A file operation failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done (`read`, `write`, `remove`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The working tree has changes the phase refuses to run over.
    #[error(
        "working tree of {repo} has uncommitted changes ({count} path(s): {shown}); {hint}",
        count = files.len(),
        shown = show_paths(files)
    )]
    Dirty {
        /// The repository.
        repo: PathBuf,
        /// Changed, staged and untracked paths.
        files: Vec<String>,
        /// How to proceed anyway.
        hint: &'static str,
    },
    /// `to` (or `since`) names nothing the repository has.
    #[error("cannot resolve `{target}` in {repo}: not a commit id, snapshot ref, tag or branch")]
    Unresolved {
        /// What was asked for.
        target: String,
        /// The repository.
        repo: PathBuf,
    },
    /// HEAD has no commit yet.
    #[error("HEAD of {repo} has no commit yet")]
    Unborn {
        /// The repository.
        repo: PathBuf,
    },
    /// A tag of that name exists on another commit.
    #[error(
        "tag `{tag}` already exists on commit {existing} in {repo}, but HEAD is commit {head}; \
         choose another tag name or delete the old tag"
    )]
    TagConflict {
        /// The tag name.
        tag: String,
        /// The commit it is on.
        existing: String,
        /// The commit HEAD is on.
        head: String,
        /// The repository.
        repo: PathBuf,
    },
    /// A tag or branch name git does not accept.
    #[error("invalid {what} name `{name}`")]
    InvalidName {
        /// `tag` or `branch`.
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// The remote to push to does not exist.
    #[error("remote `{remote}` does not exist in {repo} (remotes: {known})")]
    NoRemote {
        /// The remote asked for.
        remote: String,
        /// The repository.
        repo: PathBuf,
        /// The remotes it has, comma-separated.
        known: String,
    },
    /// The remote refused to update a ref.
    #[error("push to remote `{remote}` ({url}) rejected {refname}: {reason}")]
    Rejected {
        /// The remote's name.
        remote: String,
        /// Its URL, without credentials.
        url: String,
        /// The ref (`refs/heads/main`).
        refname: String,
        /// Why.
        reason: String,
    },
    /// Talking to the remote failed.
    #[error("push to remote `{remote}` ({url}) failed")]
    Push {
        /// The remote's name.
        remote: String,
        /// Its URL, without credentials.
        url: String,
        /// The libgit2 error.
        #[source]
        source: Libgit2Error,
    },
    /// A `${{ }}` template in a setting could not be rendered.
    #[error("cannot render `{key}`")]
    Render {
        /// The setting.
        key: &'static str,
        /// Why.
        #[source]
        source: orch_core::InterpolationError,
    },
    /// The secret named by `token_secret` is not in the phase's environment.
    #[error(
        "secret `{name}` (from `token_secret`) is not set: declare it in the phase's `secrets` \
         and set it in the environment"
    )]
    MissingSecret {
        /// The variable name.
        name: String,
    },
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl GitError {
    /// A libgit2 failure while doing `action` in `repo`.
    pub(crate) fn git(
        action: impl Into<String>,
        repo: impl Into<PathBuf>,
    ) -> impl FnOnce(git2::Error) -> Self {
        let action = action.into();
        let repo = repo.into();
        move |source| Self::Git {
            action,
            repo,
            source: source.into(),
        }
    }

    /// An I/O failure while doing `action` on `path`.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// A libgit2 error, displayed as its message only (without libgit2's class and code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Libgit2Error {
    /// The message.
    pub message: String,
    /// libgit2's error code.
    pub code: git2::ErrorCode,
}

impl Libgit2Error {
    /// An error with a message of our own.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: git2::ErrorCode::GenericError,
        }
    }
}

impl From<git2::Error> for Libgit2Error {
    fn from(e: git2::Error) -> Self {
        Self {
            message: e.message().to_owned(),
            code: e.code(),
        }
    }
}

impl std::fmt::Display for Libgit2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Libgit2Error {}

/// The first few paths, for messages.
fn show_paths(files: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = files
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > SHOWN {
        s.push_str(&format!(", and {} more", files.len() - SHOWN));
    }
    s
}
