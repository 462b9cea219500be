//! `orch stats`: a thin front-end over `orch_core::stats`.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, ValueEnum};
use orch_core::history;
use orch_core::stats::Stats;

use crate::exit_codes::ExitCodes;
use crate::output::{errln, out, outln};

/// `orch stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The pipeline file whose state directory holds the runs.
    #[arg(default_value = "orch.toml")]
    file: PathBuf,
    /// Only runs that started since: a duration ago (`30d`, `12h`) or an RFC 3339 time.
    #[arg(long, value_name = "AGO|TIME")]
    since: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatsFormat::Text)]
    format: StatsFormat,
    /// The state directory (overrides the pipeline file's).
    #[arg(long, value_name = "DIR", env = "ORCH_STATE_DIR", value_parser = crate::app::parse_state_dir)]
    state_dir: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StatsFormat {
    Text,
    Json,
    Prometheus,
}

/// Runs `orch stats`.
pub fn stats(a: &StatsArgs) -> Result<u8, (String, u8)> {
    let since = a
        .since
        .as_deref()
        .map(|s| orch_core::stats::since(s, SystemTime::now()))
        .transpose()
        .map_err(|e| (format!("error: --since: {e}"), ExitCodes::INVALID))?;
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| history::state_dir_of(&a.file));
    let stats = Stats::collect(&state_dir, since).map_err(|e| {
        (
            format!("error: {}", crate::app::chain(&e)),
            ExitCodes::FAILED,
        )
    })?;
    for s in &stats.skipped {
        errln!("warning: skipped run {}: {}", s.run, s.why);
    }
    match a.format {
        StatsFormat::Text => out!("{}", stats.render_text())?,
        StatsFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&stats).unwrap_or_default()
        )?,
        StatsFormat::Prometheus => out!("{}", stats.render_prometheus())?,
    }
    Ok(ExitCodes::OK)
}
