//! `orch runs`, `orch runs show RUN_ID` and `orch logs RUN_ID PHASE`: past runs of a
//! state directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use orch_core::history::{self, RunSummary};
use orch_core::{PhaseStatus, RunError, RunRecord};

use crate::exit_codes::ExitCodes;
use crate::output::{errln, out, outln, write_out_bytes};

/// Where the runs are.
#[derive(Args, Debug)]
pub struct StateArgs {
    /// The pipeline file whose state directory to read.
    #[arg(long, short = 'f', default_value = "orch.toml", global = true)]
    file: PathBuf,
    /// The state directory (overrides the pipeline file's).
    #[arg(long, value_name = "DIR", global = true, env = "ORCH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

impl StateArgs {
    fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| history::state_dir_of(&self.file))
    }
}

/// `orch runs`.
#[derive(Args, Debug)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Subcommand, Debug)]
enum RunsCommand {
    /// Print one run: its phases, statuses, attempts and reasons.
    Show {
        /// The run id (or `latest`).
        run_id: String,
    },
}

/// `orch logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The run id (or `latest`).
    run_id: String,
    /// The phase.
    phase: String,
    #[command(flatten)]
    state: StateArgs,
}

/// An error and its exit code.
pub type Outcome = Result<u8, (String, u8)>;

fn fail(e: &RunError) -> (String, u8) {
    (format!("error: {e}"), ExitCodes::INVALID)
}

fn fmt_ms(ms: u64) -> String {
    let d = Duration::from_millis(ms);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

fn counts_text(counts: &std::collections::BTreeMap<PhaseStatus, usize>) -> String {
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// Runs `orch runs [show RUN_ID]`.
pub fn runs(a: &RunsArgs) -> Outcome {
    let state_dir = a.state.state_dir();
    match &a.command {
        None => list(&state_dir, a.state.json),
        Some(RunsCommand::Show { run_id }) => show(&state_dir, run_id, a.state.json),
    }
}

fn list(state_dir: &Path, json: bool) -> Outcome {
    let runs = history::list(state_dir).map_err(|e| fail(&e))?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&runs).unwrap_or_default()
        )?;
        return Ok(ExitCodes::OK);
    }
    if runs.is_empty() {
        errln!("no runs in {}", state_dir.display());
        return Ok(ExitCodes::OK);
    }
    out!("{}", render_list(&runs))?;
    Ok(ExitCodes::OK)
}

/// The table of `orch runs`.
pub fn render_list(runs: &[RunSummary]) -> String {
    let rows: Vec<[String; 5]> = runs
        .iter()
        .map(|r| {
            let mut status = r.status_text().to_owned();
            if let Some(pid) = r.pid {
                let _ = write!(status, " (pid {pid})");
            }
            if let Some(from) = &r.resumed_from {
                let _ = write!(status, " (resumed {from})");
            }
            [
                r.run_id.to_string(),
                r.started_at.clone(),
                r.duration_ms.map_or_else(|| "-".into(), fmt_ms),
                status,
                counts_text(&r.counts),
            ]
        })
        .collect();
    table(&["RUN", "STARTED", "DURATION", "STATUS", "PHASES"], &rows)
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut w = head.map(str::len);
    for r in rows {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (k, c) in cells.iter().enumerate() {
            if k + 1 == N {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<width$}  ", width = w[k]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

fn show(state_dir: &Path, run_id: &str, json: bool) -> Outcome {
    let record = history::load(state_dir, run_id).map_err(|e| fail(&e))?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&record).unwrap_or_default()
        )?;
    } else {
        let holder = history::live_holder(state_dir, &record.run_id).map(|h| h.pid);
        out!("{}", render_record(&record, holder))?;
    }
    Ok(ExitCodes::OK)
}

/// The text of `orch runs show`; `holder`: the pid of the process running it, when a
/// live process holds the state directory for it.
pub fn render_record(r: &RunRecord, holder: Option<u32>) -> String {
    let mut out = String::new();
    let status = match (r.status, holder) {
        (orch_core::RunStatus::Running, None) => {
            "died (no run.json; read from the journal)".to_owned()
        }
        (orch_core::RunStatus::Running, Some(pid)) => format!("running (process {pid})"),
        (s, _) => s.as_str().to_owned(),
    };
    let _ = writeln!(out, "run       {}", r.run_id);
    let _ = writeln!(out, "pipeline  {}", r.pipeline);
    let _ = writeln!(out, "status    {status}");
    let _ = writeln!(out, "started   {}", r.started_at);
    if let Some(d) = r.duration_ms {
        let _ = writeln!(out, "duration  {}", fmt_ms(d));
    }
    if let Some(from) = &r.resumed_from {
        let _ = writeln!(out, "resumed   {from}");
    }
    let _ = writeln!(out, "phases    {}", counts_text(&r.counts()));
    out.push('\n');
    let rows: Vec<[String; 5]> = r
        .phases
        .iter()
        .map(|(id, p)| {
            let mut status = p.status.to_string();
            if p.allowed_failure {
                status.push_str(" (allowed)");
            }
            [
                id.to_string(),
                status,
                p.attempts.to_string(),
                p.duration_ms.map_or_else(|| "-".into(), fmt_ms),
                p.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["PHASE", "STATUS", "ATTEMPTS", "DURATION", "REASON"],
        &rows,
    ));
    out
}

/// Runs `orch logs RUN_ID PHASE`.
pub fn logs(a: &LogsArgs) -> Outcome {
    let state_dir = a.state.state_dir();
    let path = history::log_path(&state_dir, &a.run_id, &a.phase).map_err(|e| fail(&e))?;
    match path {
        Some(path) => {
            let bytes = std::fs::read(&path).map_err(|e| {
                (
                    format!("error: cannot read {}: {e}", path.display()),
                    ExitCodes::FAILED,
                )
            })?;
            write_out_bytes(&bytes)?;
        }
        None => errln!("phase `{}` wrote no output", a.phase),
    }
    Ok(ExitCodes::OK)
}
