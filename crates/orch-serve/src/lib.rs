//! `orch serve`: a live web view of a pipeline's runs and an HTTP API to start, follow
//! and stop them.
//!
//! The server reads the state directory's runs (`run.json`, journals, logs) and runs the
//! runs started through the API itself, with the same engine, journal, lock and (through
//! [`ServeOptions::after_run`]) reports as `orch run`. Events of those runs come straight
//! from the engine's event stream; each gets an increasing integer id, is kept in memory
//! (the last [`ServeOptions::event_window`]) and appended to `RUN_DIR/events.jsonl`, from
//! which a finished run is replayed with the same ids.
//!
//! Routes: `GET /api/runs`, `GET /api/runs/RUN_ID`, `GET /api/runs/RUN_ID/events` (SSE),
//! `GET /api/runs/RUN_ID/logs/PHASE`, `POST /api/runs`, `POST /api/runs/RUN_ID/cancel`,
//! `GET /api/pipeline`, `POST /api/login`, `GET /metrics`, `GET /` (the page).
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod api;
mod auth;
mod errors;
mod events;
mod live;
mod metrics;
mod runs;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_core::Registry;

pub use errors::ServeError;
pub use events::EVENTS_FILE;
pub use runs::{AfterRun, StartRequest};

/// Default address: loopback, port 7700.
pub const DEFAULT_BIND: &str = "127.0.0.1:7700";

/// How to serve.
#[derive(Clone)]
pub struct ServeOptions {
    /// The pipeline file runs are started from.
    pub pipeline_file: PathBuf,
    /// The kinds its phases may use (the CLI passes every adapter's).
    pub registry: Registry,
    /// The state directory (default: the pipeline's).
    pub state_dir: Option<PathBuf>,
    /// Address to listen on (`HOST:PORT`; port 0 picks a free one).
    pub bind: String,
    /// File holding the bearer token every API request must carry. Without it, only
    /// loopback addresses may be bound.
    pub token_file: Option<PathBuf>,
    /// Called after each run with its record and run directory (reports).
    pub after_run: Option<AfterRun>,
    /// How long a cancelled run's phases get to stop before they are killed.
    pub grace: Duration,
    /// Events of a live run kept in memory; a client further behind is told it lagged.
    pub event_window: usize,
}

impl ServeOptions {
    /// Options for `pipeline_file` with defaults: loopback port 7700, no token, no reports,
    /// 10 s grace, 65,536 events in memory.
    pub fn new(pipeline_file: impl Into<PathBuf>, registry: Registry) -> Self {
        Self {
            pipeline_file: pipeline_file.into(),
            registry,
            state_dir: None,
            bind: DEFAULT_BIND.to_owned(),
            token_file: None,
            after_run: None,
            grace: Duration::from_secs(10),
            event_window: 65_536,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("pipeline_file", &self.pipeline_file)
            .field("state_dir", &self.state_dir)
            .field("bind", &self.bind)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    grace: Duration,
    app: Arc<api::App>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn read_token(path: &std::path::Path) -> Result<String, ServeError> {
    let err = |message: String| ServeError::Token {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.len() < 16 {
        return Err(err(format!(
            "the token has {} characters; use at least 16",
            token.chars().count()
        )));
    }
    Ok(token.to_owned())
}

impl Server {
    /// Checks the pipeline file, reads the token and the queue, and binds the address:
    /// a non-loopback address without a token file is refused.
    pub async fn bind(options: ServeOptions) -> Result<Self, ServeError> {
        let token = options
            .token_file
            .as_deref()
            .map(read_token)
            .transpose()?
            .map(|t| auth::Token::new(&t));
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&options.bind)
            .await
            .map_err(|source| ServeError::Resolve {
                addr: options.bind.clone(),
                source,
            })?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            return Err(ServeError::Resolve {
                addr: options.bind.clone(),
                source: std::io::Error::other("no address"),
            });
        };
        if token.is_none()
            && let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback())
        {
            return Err(ServeError::NotLoopback { addr: *bad });
        }
        let file = std::path::absolute(&options.pipeline_file)
            .unwrap_or_else(|_| options.pipeline_file.clone());
        let registry = options.registry.clone();
        let f = file.clone();
        let pipeline = tokio::task::spawn_blocking(move || {
            runs::load_pipeline(&f, &registry, &Default::default())
        })
        .await
        .map_err(|e| ServeError::Pipeline(e.to_string()))?
        .map_err(ServeError::Pipeline)?;
        let state_dir = options
            .state_dir
            .clone()
            .map(|d| std::path::absolute(&d).unwrap_or(d))
            .unwrap_or_else(|| pipeline.state_dir());
        let manager = runs::Manager::new(
            file,
            state_dir,
            options.registry,
            options.after_run,
            options.grace,
            options.event_window,
        )?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Self {
            listener,
            addr,
            grace: options.grace,
            app: Arc::new(api::App { manager, token }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The state directory it serves.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.app.manager.state_dir
    }

    /// Serves until `shutdown` completes; then the running run (if any) is stopped and
    /// awaited, event streams end, and queued runs stay queued for the next start.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let manager = self.app.manager.clone();
        let worker = tokio::spawn(manager.clone().worker());
        let router = api::router(self.app);
        let m = manager.clone();
        let stopping = Arc::new(tokio::sync::Notify::new());
        let stop = stopping.clone();
        let served = axum::serve(self.listener, router).with_graceful_shutdown(async move {
            shutdown.await;
            m.shut_down();
            stop.notify_one();
        });
        // Connections get a moment to finish; one whose client stopped reading would
        // otherwise hold the shutdown forever.
        let linger = self.grace + Duration::from_secs(5);
        let served = tokio::select! {
            r = served => r,
            () = async {
                stopping.notified().await;
                tokio::time::sleep(linger).await;
            } => Ok(()),
        };
        manager.shut_down();
        let _ = worker.await;
        served.map_err(ServeError::Serve)
    }
}
