//! `orch rollback SERVICE [FILE]`, `orch deploy status [SERVICE]` and `orch deploy stop
//! SERVICE`: thin front-ends over `orch_deploy`. A rollback is a run of one
//! `deploy.rollback` phase, recorded in the state dir like any run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use orch_core::{
    LoadOptions, PhaseId, PhaseSpec, Pipeline, RunControl, RunOptions, RunStatus, Runner, WithTable,
};

use crate::exit_codes::ExitCodes;
use crate::output::{err, out, outln};
use crate::progress::{OutputOptions, Progress, ProgressMode};
use crate::style::ColorChoice;
use crate::summary::{Locations, summary};

type Outcome = Result<u8, (String, u8)>;

fn invalid(message: impl Into<String>) -> (String, u8) {
    (message.into(), ExitCodes::INVALID)
}

/// `orch rollback`.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The deployed service.
    service: String,
    /// The pipeline file whose state dir holds the service.
    #[arg(default_value = "orch.toml")]
    file: PathBuf,
}

/// `orch deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(subcommand)]
    command: DeployCommand,
}

#[derive(Subcommand, Debug)]
enum DeployCommand {
    /// Show what serves each deployed service (or one): image, containers, proxy, weights.
    Status {
        /// One service; default: every service of the state dir.
        service: Option<String>,
        /// The pipeline file whose state dir holds the services.
        #[arg(long, short = 'f', default_value = "orch.toml")]
        file: PathBuf,
    },
    /// End a service: its containers, its proxy (or Swarm service) and its state.
    Stop {
        /// The service.
        service: String,
        /// The pipeline file whose state dir holds the service.
        #[arg(long, short = 'f', default_value = "orch.toml")]
        file: PathBuf,
    },
}

fn load(file: &Path) -> Result<Pipeline, (String, u8)> {
    Pipeline::load(file, &orch_kinds::registry(), &LoadOptions::default()).map_err(|e| match e {
        orch_core::LoadError::Invalid(d) => invalid(d.render()),
        other => invalid(format!("error: {}", crate::app::chain(&other))),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, (String, u8)> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| invalid(format!("error: cannot start the runtime: {e}")))
}

/// `orch deploy status|stop`.
pub fn deploy(a: &DeployArgs) -> Outcome {
    let rt = runtime()?;
    match &a.command {
        DeployCommand::Status { service, file } => {
            let state_dir = load(file)?.state_dir();
            if let Some(s) = service {
                orch_deploy::settings::check_service_name(s)
                    .map_err(|e| invalid(format!("error: {e}")))?;
            }
            let text = rt
                .block_on(orch_deploy::ops::status_text(
                    &state_dir,
                    service.as_deref(),
                ))
                .map_err(|e| (format!("error: {e}"), ExitCodes::FAILED))?;
            out!("{text}")?;
            Ok(ExitCodes::OK)
        }
        DeployCommand::Stop { service, file } => {
            orch_deploy::settings::check_service_name(service)
                .map_err(|e| invalid(format!("error: {e}")))?;
            let state_dir = load(file)?.state_dir();
            let done = rt
                .block_on(orch_deploy::ops::stop(&state_dir, service))
                .map_err(|e| (format!("error: {e}"), ExitCodes::FAILED))?;
            for line in done {
                outln!("{line}")?;
            }
            Ok(ExitCodes::OK)
        }
    }
}

/// `orch rollback SERVICE [FILE]`: one `deploy.rollback` phase, run and recorded in the
/// pipeline's state dir.
pub fn rollback(a: &RollbackArgs, color: ColorChoice) -> Outcome {
    orch_deploy::settings::check_service_name(&a.service)
        .map_err(|e| invalid(format!("error: {e}")))?;
    let source = load(&a.file)?;
    let state_dir = source.state_dir();
    let base = a
        .file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let id = PhaseId::new(format!("rollback-{}", a.service))
        .map_err(|e| invalid(format!("error: {e}")))?;
    let mut spec = PhaseSpec::new(id, "deploy.rollback");
    let mut table = toml::Table::new();
    table.insert("service".into(), toml::Value::String(a.service.clone()));
    spec.with = WithTable::new(table);
    spec.description = Some(format!("orch rollback {}", a.service));
    let p = Pipeline::builder(source.name(), base)
        .registry(orch_kinds::registry())
        .state_dir(&state_dir)
        .phase(spec)
        .build()
        .map_err(|e| invalid(format!("error: {}", crate::app::chain(&e))))?;
    let p = Arc::new(p);
    let progress = Arc::new(Progress::new(
        OutputOptions {
            mode: ProgressMode::Plain,
            color,
            verbose: true,
            quiet: false,
        },
        &p,
    ));
    let rt = runtime()?;
    rt.block_on(async move {
        let mut runner = Runner::new(p.clone(), RunOptions::default());
        runner.subscribe(progress.sink());
        let record = runner
            .run(RunControl::new())
            .await
            .map_err(|e| invalid(format!("error: {}", crate::app::chain(&e))))?;
        progress.finish();
        let run_dir = state_dir.join("runs").join(record.run_id.as_str());
        let at = Locations {
            run_dir,
            reports: Vec::new(),
        };
        err!("{}", summary(&record, &at, progress.style(), false));
        Ok(match record.status {
            RunStatus::Succeeded => ExitCodes::OK,
            RunStatus::Cancelled => ExitCodes::INTERRUPTED,
            _ => ExitCodes::FAILED,
        })
    })
}
