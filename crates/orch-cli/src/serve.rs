//! `orch serve`: wires the server of `orch-serve` to the CLI's registry and reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use orch_core::errors::chain;

use crate::exit_codes::ExitCodes;
use crate::output::errln;

/// `orch serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The pipeline file.
    #[arg(default_value = "orch.toml")]
    file: PathBuf,
    /// Address to listen on. Without --token-file only loopback addresses are accepted.
    #[arg(long, value_name = "ADDR", env = "ORCH_SERVE_BIND", default_value = orch_serve::DEFAULT_BIND)]
    bind: String,
    /// File holding the bearer token every API request must carry (at least 16
    /// characters).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The state directory (runs, logs, reports) instead of the pipeline's.
    #[arg(long, value_name = "DIR", env = "ORCH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// How long a cancelled run's phases get to stop before they are killed.
    #[arg(long, env = "ORCH_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

/// Serves until SIGINT or SIGTERM.
pub fn serve(a: &ServeArgs) -> Result<u8, (String, u8)> {
    let mut options = orch_serve::ServeOptions::new(&a.file, orch_kinds::registry());
    options.bind = a.bind.clone();
    options.token_file = a.token_file.clone();
    options.state_dir = a.state_dir.clone();
    options.grace = a.grace;
    options.after_run = Some(Arc::new(|record, run_dir| {
        crate::reports::after_run(record, run_dir);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            (
                format!("error: cannot start the runtime: {e}"),
                ExitCodes::FAILED,
            )
        })?;
    rt.block_on(async move {
        let server = orch_serve::Server::bind(options).await.map_err(|e| {
            let code = match e {
                orch_serve::ServeError::Serve(_) => ExitCodes::FAILED,
                _ => ExitCodes::INVALID,
            };
            (format!("error: {}", chain(&e)), code)
        })?;
        errln!(
            "orch: serving {} on http://{} (state {})",
            a.file.display(),
            server.local_addr(),
            server.state_dir().display()
        );
        server
            .run(async {
                use tokio::signal::unix::{SignalKind, signal};
                match (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) {
                    (Ok(mut int), Ok(mut term)) => {
                        tokio::select! {
                            _ = int.recv() => {},
                            _ = term.recv() => {},
                        }
                    }
                    _ => std::future::pending::<()>().await,
                }
                errln!(
                    "orch: stopping the server (a running run is stopped; queued runs stay queued)"
                );
            })
            .await
            .map_err(|e| (format!("error: {}", chain(&e)), ExitCodes::FAILED))?;
        Ok(ExitCodes::OK)
    })
}
