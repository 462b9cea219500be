//! Errors of the deployment crate. Messages are lowercase fragments that name what failed
//! and where.

use std::path::PathBuf;

/// A failure of the proxy (HAProxy) or its runtime API.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `haproxy` is not installed.
    #[error("haproxy is not installed (scripts/install/haproxy.sh installs Debian's haproxy 2.6)")]
    NotInstalled,
    /// The frontend address is taken by another program.
    #[error(
        "cannot listen on {listen} for service `{service}`: the address is in use by another program"
    )]
    ListenInUse {
        /// The service.
        service: String,
        /// The address.
        listen: String,
    },
    /// HAProxy refused to start.
    #[error("haproxy did not start for service `{service}` (config {config}): {message}")]
    Start {
        /// The service.
        service: String,
        /// Its config file.
        config: PathBuf,
        /// HAProxy's own words.
        message: String,
    },
    /// The runtime API socket could not be reached.
    #[error("cannot reach the proxy's runtime API at {socket}: {source}")]
    Socket {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime API refused a command.
    #[error("the proxy refused `{command}`: {answer}")]
    Refused {
        /// The command.
        command: String,
        /// HAProxy's answer.
        answer: String,
    },
    /// A file of the proxy could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket path is longer than a Unix socket address allows.
    #[error("the proxy socket path {path} is longer than 100 bytes: use a shorter state_dir")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
    },
}

/// A failure reading or writing a service's deployment state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid state (edited by hand, or damaged).
    #[error(
        "{path}:{line}:{column}: the deployment state is damaged: {message} (restore it, or run `orch deploy stop {service}` to end the service and start over)"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Line (1-based).
        line: usize,
        /// Column (1-based).
        column: usize,
        /// What is wrong.
        message: String,
        /// The service.
        service: String,
    },
    /// No state for that service.
    #[error("no service `{service}` is deployed from {dir} (known: {known})")]
    Unknown {
        /// The service.
        service: String,
        /// The deploy directory.
        dir: PathBuf,
        /// Known services, comma-separated, or `none`.
        known: String,
    },
}
