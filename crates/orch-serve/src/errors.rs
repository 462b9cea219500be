//! Errors of `orch serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The `--bind` value names no address.
    #[error("cannot resolve bind address `{addr}`")]
    Resolve {
        /// The value given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Binding a non-loopback address needs a token.
    #[error(
        "refusing to bind {addr}: it is not a loopback address and no --token-file was given \
         (anyone who reaches it could start and cancel runs)"
    )]
    NotLoopback {
        /// The address.
        addr: SocketAddr,
    },
    /// The socket could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token file could not be read or is empty.
    #[error("cannot read token file {path}: {message}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The pipeline file could not be loaded.
    #[error("{0}")]
    Pipeline(String),
    /// The state directory (queue file) could not be read or written.
    #[error("cannot use {path}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("server error")]
    Serve(#[source] std::io::Error),
}
