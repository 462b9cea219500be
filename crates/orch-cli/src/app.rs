//! Argument parsing and dispatch.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use orch_core::graph::GraphFormat;
use orch_core::{
    LoadError, LoadOptions, Pipeline, Plan, ResumeFrom, RunControl, RunError, RunId, RunOptions,
    RunStatus, Runner, Selection, Selector,
};

use crate::exit_codes::ExitCodes;
use crate::output::{OutError, err, errln, out, outln};
use crate::progress::{OutputOptions, Progress, ProgressMode};
use crate::style::ColorChoice;
use crate::summary::{Locations, summary};

pub(crate) use orch_core::errors::chain;

/// Runs software-delivery pipelines as a DAG of phases.
#[derive(Parser, Debug)]
#[command(
    name = "orch",
    version = env!("ORCH_VERSION"),
    about,
    long_about = None,
    propagate_version = true,
    after_help = crate::completions::AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Colour status words: auto (when stderr is a terminal and NO_COLOR is not set),
    /// always, never.
    #[arg(long, global = true, value_enum, env = "ORCH_COLOR", default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

/// The clap definition of `orch`, for completions and the man page.
pub(crate) fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a pipeline.
    Run(RunArgs),
    /// Show the ordered plan and what each phase would do; runs nothing.
    Plan(PlanArgs),
    /// Check a pipeline file; every problem is reported with its line.
    Validate(FileArgs),
    /// Print the DAG.
    Graph(GraphArgs),
    /// Print the JSON Schema of the pipeline file (or of run.json with --run).
    Schema(SchemaArgs),
    /// List past runs (id, start, duration, status, phase counts); `runs show RUN_ID`
    /// prints one.
    Runs(crate::history::RunsArgs),
    /// Print the log of a phase of a run.
    Logs(crate::history::LogsArgs),
    /// Render a report of a past run: md, junit, html, json, pdf or compliance.
    Report(crate::reports::ReportArgs),
    /// Check a package archive against its manifest.
    Verify(crate::reports::VerifyArgs),
    /// Serve a live web view of the runs and an HTTP API to start, follow and stop them.
    Serve(crate::serve::ServeArgs),
    /// Policy tools: `policy eval [FILE] --phase ID` prints the input document a phase's
    /// decision is made on, and the decision.
    Policy(crate::governance::PolicyArgs),
    /// The audit log: `audit verify [LOG]` checks its chain, `audit show` prints entries.
    Audit(crate::governance::AuditArgs),
    /// KPIs over the run history: per phase runs, success rate, p50/p95 duration, retries
    /// and flaky successes; per pipeline success rate, time to recovery and lead time.
    Stats(crate::stats::StatsArgs),
    /// What orch and the pipeline need from this machine (engines, git, Chromium, HAProxy,
    /// the state directory, disk, memory, GPU): exit 0 when nothing is missing, 1 otherwise.
    Doctor(crate::doctor::DoctorArgs),
    /// Switch a deployed service back to its previous version at once (recorded as a run).
    Rollback(crate::deploy::RollbackArgs),
    /// Deployed services: `deploy status [SERVICE]` shows what serves, `deploy stop
    /// SERVICE` ends a service's containers and its proxy.
    Deploy(crate::deploy::DeployArgs),
    /// Write a commented orch.toml that runs as it is (never overwrites).
    Init(crate::init::InitArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    Completions(crate::completions::CompletionsArgs),
    /// Print the man page (roff): `orch man | man -l -`.
    Man(crate::completions::ManArgs),
}

#[derive(Args, Debug)]
struct FileArgs {
    /// The pipeline file.
    #[arg(default_value = "orch.toml")]
    file: PathBuf,
    /// Override a var: KEY=VALUE (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    vars: Vec<String>,
    /// Output format. json: machine-readable on stdout (run.json after `run`, the plan, or
    /// the problems with their positions when the file is invalid); human text on stderr.
    #[arg(long, value_enum, default_value_t = OutFormat::Human)]
    format: OutFormat,
}

#[derive(Args, Debug)]
struct SelectArgs {
    /// Run only these phases (ID or tag:T) and what they need (repeatable).
    #[arg(long, value_name = "ID|tag:T")]
    only: Vec<String>,
    /// Do not run these phases (ID or tag:T; repeatable).
    #[arg(long, value_name = "ID|tag:T")]
    skip: Vec<String>,
    /// Run this phase and everything after it (repeatable).
    #[arg(long, value_name = "ID")]
    from: Vec<String>,
    /// Phases running at once (1 to 4096).
    #[arg(long, short = 'j', env = "ORCH_JOBS", value_parser = parse_jobs)]
    jobs: Option<usize>,
}

/// `--jobs N`: the same range as `jobs` in the file.
fn parse_jobs(text: &str) -> Result<usize, String> {
    let max = orch_core::spec::MAX_JOBS;
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(n) => Err(format!("must be between 1 and {max}, not {n}")),
        Err(_) => Err(format!("must be a number of phases from 1 to {max}")),
    }
}

/// `--state-dir DIR`: not empty (an empty path would mean the working directory).
pub(crate) fn parse_state_dir(text: &str) -> Result<PathBuf, String> {
    if text.trim().is_empty() {
        Err("the state directory cannot be empty".to_owned())
    } else {
        Ok(PathBuf::from(text))
    }
}

impl SelectArgs {
    fn selection(&self) -> Selection {
        Selection {
            only: self.only.iter().map(|s| Selector::parse(s)).collect(),
            skip: self.skip.iter().map(|s| Selector::parse(s)).collect(),
            from: self.from.clone(),
        }
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    file: FileArgs,
    #[command(flatten)]
    select: SelectArgs,
    /// Run everything that does not depend on a failure.
    #[arg(long)]
    keep_going: bool,
    /// Print the plan instead of running (same as `orch plan`).
    #[arg(long)]
    dry_run: bool,
    /// How long interrupted phases get to stop before they are killed.
    #[arg(long, env = "ORCH_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// The state directory (runs, logs, reports) instead of the pipeline's.
    #[arg(long, value_name = "DIR", env = "ORCH_STATE_DIR", value_parser = parse_state_dir)]
    state_dir: Option<PathBuf>,
    /// Live view (spinners, overall bar) or one plain line per event; auto: live when
    /// stderr is a terminal.
    #[arg(long, value_enum, env = "ORCH_PROGRESS", default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Stream every phase's output, prefixed by its id.
    #[arg(long, short)]
    verbose: bool,
    /// Print only failures and the summary (one line when the run succeeds).
    #[arg(long, short, conflicts_with = "verbose")]
    quiet: bool,
    /// Continue the latest run (or RUN_ID): phases whose success was journaled are not
    /// run again unless their definition or inputs changed.
    #[arg(long, value_name = "RUN_ID", num_args = 0..=1, default_missing_value = "latest")]
    resume: Option<String>,
}

#[derive(Args, Debug)]
struct PlanArgs {
    #[command(flatten)]
    file: FileArgs,
    #[command(flatten)]
    select: SelectArgs,
}

#[derive(Args, Debug)]
struct GraphArgs {
    /// The pipeline file.
    #[arg(default_value = "orch.toml")]
    file: PathBuf,
    /// Graph format.
    #[arg(long, value_enum, default_value_t = GraphKind::Dot)]
    format: GraphKind,
}

#[derive(Args, Debug)]
struct SchemaArgs {
    /// The schema of run.json instead of the pipeline file.
    #[arg(long)]
    run: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum OutFormat {
    Human,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GraphKind {
    Dot,
    Mermaid,
}

/// An error at the edge: its message and exit code.
struct Failure {
    message: String,
    code: u8,
}

impl From<OutError> for Failure {
    fn from(e: OutError) -> Self {
        let (message, code) = e.into_parts();
        Self { message, code }
    }
}

impl Failure {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: ExitCodes::INVALID,
        }
    }
}

pub fn main() -> ExitCode {
    crate::malloc::fix_mmap_threshold();
    // The engine's warnings (a dead run's lock taken over, a torn journal tail ignored)
    // go to stderr as plain lines.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .without_time()
        .with_target(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                ExitCodes::INVALID
            } else {
                ExitCodes::OK
            });
        }
    };
    let result = match cli.command {
        Command::Run(a) => run(a, cli.color),
        Command::Plan(a) => plan(&a.file, &a.select),
        Command::Validate(a) => validate(&a),
        Command::Graph(a) => graph(&a),
        Command::Schema(a) => {
            let schema = if a.run {
                orch_core::file::schema::run_schema()
            } else {
                orch_core::file::schema::pipeline_schema()
            };
            outln!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            )
            .map(|()| ExitCodes::OK)
            .map_err(Failure::from)
        }
        Command::Runs(a) => {
            crate::history::runs(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Logs(a) => {
            crate::history::logs(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Report(a) => {
            crate::reports::report(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Verify(a) => {
            crate::reports::verify(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Serve(a) => {
            crate::serve::serve(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Policy(a) => {
            crate::governance::policy(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Audit(a) => {
            crate::governance::audit(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Stats(a) => {
            crate::stats::stats(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Doctor(a) => {
            crate::doctor::doctor(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Rollback(a) => crate::deploy::rollback(&a, cli.color)
            .map_err(|(message, code)| Failure { message, code }),
        Command::Deploy(a) => {
            crate::deploy::deploy(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Init(a) => {
            crate::init::init(&a).map_err(|(message, code)| Failure { message, code })
        }
        Command::Completions(a) => crate::completions::completions(&a, command())
            .map_err(|(message, code)| Failure { message, code }),
        Command::Man(a) => crate::completions::man(&a, command())
            .map_err(|(message, code)| Failure { message, code }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if !f.message.is_empty() {
                err!("{}", f.message);
                if !f.message.ends_with('\n') {
                    errln!();
                }
            }
            ExitCode::from(f.code)
        }
    }
}

fn parse_vars(vars: &[String]) -> Result<Vec<(String, String)>, Failure> {
    vars.iter()
        .map(|v| match v.split_once('=') {
            Some((k, value)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), value.to_owned())),
            Some(_) => Err(Failure::invalid(format!(
                "error: `--var {v}` names no variable: write `--var KEY=VALUE` with a KEY declared in [vars]"
            ))),
            None => Err(Failure::invalid(format!(
                "error: `--var {v}` is not KEY=VALUE"
            ))),
        })
        .collect()
}

fn load(file: &FileArgs) -> Result<Pipeline, Failure> {
    let options = LoadOptions {
        vars: parse_vars(&file.vars)?,
    };
    Pipeline::load(&file.file, &orch_kinds::registry(), &options).map_err(|e| match e {
        LoadError::Invalid(d) => {
            // `plan`/`run --format json`: the problems as `validate --format json` gives
            // them, on stdout; the rendered ones still go to stderr.
            if file.format == OutFormat::Json
                && let Err(e) = outln!(
                    "{}",
                    serde_json::json!({ "valid": false, "file": file.file, "errors": d.items })
                )
            {
                return Failure::from(e);
            }
            Failure::invalid(d.render())
        }
        other => Failure::invalid(format!("error: {}", chain(&other))),
    })
}

fn validate(a: &FileArgs) -> Result<u8, Failure> {
    let options = LoadOptions {
        vars: parse_vars(&a.vars)?,
    };
    match Pipeline::load(&a.file, &orch_kinds::registry(), &options) {
        Ok(p) => {
            if a.format == OutFormat::Json {
                outln!(
                    "{}",
                    serde_json::json!({ "valid": true, "file": a.file, "phases": p.len(), "errors": [] })
                )?;
            } else {
                errln!(
                    "{}: valid, {} phase{}",
                    a.file.display(),
                    p.len(),
                    if p.len() == 1 { "" } else { "s" }
                );
            }
            Ok(ExitCodes::OK)
        }
        Err(LoadError::Invalid(d)) => {
            if a.format == OutFormat::Json {
                outln!(
                    "{}",
                    serde_json::json!({ "valid": false, "file": a.file, "errors": d.items })
                )?;
                Err(Failure {
                    message: String::new(),
                    code: ExitCodes::INVALID,
                })
            } else {
                Err(Failure::invalid(d.render()))
            }
        }
        Err(e) => Err(Failure::invalid(format!("error: {}", chain(&e)))),
    }
}

fn plan(file: &FileArgs, select: &SelectArgs) -> Result<u8, Failure> {
    let p = load(file)?;
    let plan = Plan::new(&p, &select.selection(), select.jobs)
        .map_err(|e| Failure::invalid(format!("error: {e}")))?;
    if file.format == OutFormat::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        )?;
    } else {
        out!("{}", plan.render())?;
    }
    Ok(ExitCodes::OK)
}

fn graph(a: &GraphArgs) -> Result<u8, Failure> {
    let p = load(&FileArgs {
        file: a.file.clone(),
        vars: Vec::new(),
        format: OutFormat::Human,
    })?;
    let format = match a.format {
        GraphKind::Dot => GraphFormat::Dot,
        GraphKind::Mermaid => GraphFormat::Mermaid,
    };
    out!("{}", orch_core::graph::render(&p, format))?;
    Ok(ExitCodes::OK)
}

fn run(mut a: RunArgs, color: ColorChoice) -> Result<u8, Failure> {
    if a.dry_run {
        return plan(&a.file, &a.select);
    }
    let resume = match a.resume.take() {
        None => None,
        Some(id) if id == "latest" => Some(ResumeFrom::Latest),
        Some(id) => match RunId::parse(&id) {
            Ok(id) => Some(ResumeFrom::Run(id)),
            // `orch run --resume path/orch.toml`: the value is the file, not a run.
            Err(_) if a.file.file == Path::new("orch.toml") && Path::new(&id).is_file() => {
                a.file.file = PathBuf::from(id);
                Some(ResumeFrom::Latest)
            }
            Err(e) => return Err(Failure::invalid(format!("error: --resume: {e}"))),
        },
    };
    let p = Arc::new(load(&a.file)?);
    // Without cgroups, orphans of phases are re-parented here, where the run end finds them.
    if orch_core::cgroup::own_cgroup().is_none() {
        orch_core::adopt_orphans();
    }
    let options = RunOptions {
        jobs: a.select.jobs,
        selection: a.select.selection(),
        keep_going: a.keep_going,
        grace: a.grace,
        resume,
        state_dir: a.state_dir.as_deref().map(absolute),
        ..RunOptions::default()
    };
    let progress = Arc::new(Progress::new(
        OutputOptions {
            mode: a.progress,
            color,
            verbose: a.verbose,
            quiet: a.quiet,
        },
        &p,
    ));
    let json = a.file.format == OutFormat::Json;
    let quiet = a.quiet;
    // One thread, as `make` and `ninja` have: the engine, the phases' processes and pipes
    // and the event sinks are all driven by one event loop, so no event crosses threads
    // (work that computes or blocks goes to the blocking pool). On a run of many short
    // processes, the hand-offs between threads were a tenth of orch's own CPU
    // (`benches/delivery_speed.sh` measures it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::invalid(format!("error: cannot start the runtime: {e}")))?;
    block_on_and_leave(rt, async move {
        let mut runner = Runner::new(p.clone(), options);
        let state_dir = runner.state_dir();
        runner.subscribe(progress.sink());
        // Notifications (`[notify]`) follow the same events; they never hold the run.
        let notifier = orch_notify::Notifier::new(&p, &state_dir);
        if let Some(n) = &notifier {
            runner.subscribe(n.clone());
        }
        let control = RunControl::new();
        spawn_signal_handler(control.clone(), progress.clone());
        let result = runner.run(control).await;
        // The run is over: its pipeline's memory goes to the reports.
        drop(p);
        progress.finish();
        if let Some(n) = notifier {
            n.finish().await;
        }
        let mut record = result.map_err(|e| match &e {
            // One run per workspace: name the process that holds it.
            RunError::Locked { state_dir, holder } => Failure::invalid(format!(
                "error: another orch run is using {}: held by {holder}",
                relative(state_dir).display()
            )),
            // The state directory cannot be written: nothing can be recorded.
            RunError::State { .. } => Failure {
                message: format!("error: {}", chain(&e)),
                code: ExitCodes::UNRECORDED,
            },
            _ => Failure::invalid(format!("error: {}", chain(&e))),
        })?;
        let run_dir = state_dir.join("runs").join(record.run_id.as_str());
        let (reports, report_errors) = crate::reports::after_run(&record, &run_dir);
        record.record_errors.extend(report_errors);
        let at = Locations {
            run_dir: relative(&run_dir),
            reports: reports.iter().map(|r| relative(r)).collect(),
        };
        err!("{}", summary(&record, &at, progress.style(), quiet));
        if json {
            // A reader that went away (`| head`) is not the run's failure.
            use std::io::Write as _;
            let text = serde_json::to_string_pretty(&record).unwrap_or_default();
            let _ = writeln!(std::io::stdout().lock(), "{text}");
        }
        Ok(match record.status {
            RunStatus::Cancelled => ExitCodes::INTERRUPTED,
            _ if !record.record_errors.is_empty() => ExitCodes::UNRECORDED,
            RunStatus::Succeeded => ExitCodes::OK,
            RunStatus::Failed | RunStatus::Running => ExitCodes::FAILED,
        })
    })
}

/// Runs `fut` to the end, then shuts the runtime down without waiting for blocking work
/// that is still going: a phase dropped on its timeout may leave a worker thread blocked
/// (a read that never returns), and the process must still exit (and answer signals).
fn block_on_and_leave<T>(rt: tokio::runtime::Runtime, fut: impl Future<Output = T>) -> T {
    let out = rt.block_on(fut);
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    out
}

fn relative(p: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(&cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| p.to_path_buf())
}

/// `path` made absolute against the working directory (as given, when that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn spawn_signal_handler(control: RunControl, progress: Arc<Progress>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            if control.is_stopped() {
                progress.message("orch: interrupted again: killing running phases");
            } else {
                progress.message("orch: interrupted: stopping (again to kill running phases now)");
            }
            control.interrupt();
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::block_on_and_leave;

    #[test]
    fn the_runtime_never_waits_for_blocked_work() {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Kept until the test ends: the blocking task waits on it, like a FIFO nobody opens.
        let (_hold, blocked) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            block_on_and_leave(rt, async move {
                tokio::task::spawn_blocking(move || {
                    let _ = blocked.recv();
                });
            });
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the runtime waited for a blocked worker thread"
        );
    }
}
