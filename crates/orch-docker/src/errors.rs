//! Error types of the Docker phases, one per operation.

use std::path::PathBuf;

use crate::dockerignore::PatternError;

/// The engine cannot be reached or refused to talk.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot reach the docker engine at {endpoint}: {message}")]
pub struct ConnectError {
    /// The endpoint tried (`unix:///var/run/docker.sock`, `tcp://host:2375`).
    pub endpoint: String,
    /// Why, one line.
    pub message: String,
}

/// The build context could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The context is not a directory.
    #[error("build context {path} is not a directory")]
    NotADirectory {
        /// The context.
        path: PathBuf,
    },
    /// The Dockerfile was not found.
    #[error("dockerfile {path} not found{hint}")]
    NoDockerfile {
        /// Where it was looked for.
        path: PathBuf,
        /// Where else it was looked for, as `(also tried ...)`, or empty.
        hint: String,
    },
    /// A file of the context could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `.dockerignore` has a bad pattern.
    #[error("{path}: {source}")]
    Pattern {
        /// The `.dockerignore` file.
        path: PathBuf,
        /// The pattern error.
        #[source]
        source: PatternError,
    },
}

/// Registry credentials could not be loaded. Messages never contain credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    /// The Docker config file is unreadable or malformed.
    #[error("cannot read docker config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An `auths` entry has an `auth` that is not base64 of `user:password`.
    #[error("docker config {path}: the `auth` of `{registry}` is not base64 of `user:password`")]
    BadAuth {
        /// The file.
        path: PathBuf,
        /// The `auths` key.
        registry: String,
    },
    /// A credential helper failed.
    #[error("credential helper `docker-credential-{helper}` failed for {registry}: {message}")]
    Helper {
        /// The helper's suffix (`pass`, `secretservice`, ...).
        helper: String,
        /// The registry asked about.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// `password_secret` names a variable the phase does not have.
    #[error(
        "secret `{name}` is not set: declare it in the phase's `secrets` and set it in the environment"
    )]
    MissingSecret {
        /// The variable.
        name: String,
    },
}
