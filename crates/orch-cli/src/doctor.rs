//! `orch doctor`: a thin front-end over `orch_system::doctor`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use orch_core::{LoadError, LoadOptions, Pipeline, history};
use orch_system::doctor::{self, Needs};
use orch_system::probe::ProbeEnv;

use crate::exit_codes::ExitCodes;
use crate::output::{out, outln};

/// `orch doctor`.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The pipeline file (default: `orch.toml` when there is one; without a file, only the
    /// machine is checked).
    file: Option<PathBuf>,
    /// The state directory (overrides the pipeline file's).
    #[arg(long, value_name = "DIR", env = "ORCH_STATE_DIR", value_parser = crate::app::parse_state_dir)]
    state_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DoctorFormat::Text)]
    format: DoctorFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DoctorFormat {
    Text,
    Json,
}

/// Runs `orch doctor`: exit 0 when nothing needed is missing, 1 otherwise, 2 when the file
/// cannot be read.
pub fn doctor(a: &DoctorArgs) -> Result<u8, (String, u8)> {
    let env = ProbeEnv::from_env();
    let file = a
        .file
        .clone()
        .or_else(|| Some(PathBuf::from("orch.toml")).filter(|f| f.exists()));
    let needs = match &file {
        Some(file) => {
            let state_dir = a
                .state_dir
                .clone()
                .unwrap_or_else(|| history::state_dir_of(file));
            let registry = orch_kinds::registry();
            let mut needs = Needs::of_file(file, state_dir, &registry, &env).map_err(|e| {
                (
                    format!("error: {}", crate::app::chain(&e)),
                    ExitCodes::INVALID,
                )
            })?;
            needs.valid = Some(validate(file, &registry));
            needs
        }
        None => Needs::machine(
            a.state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".orch")),
        ),
    };
    let report = doctor::check(&needs, &env, env!("ORCH_VERSION"));
    match a.format {
        DoctorFormat::Text => out!("{}", report.render())?,
        DoctorFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        )?,
    }
    Ok(if report.missing() {
        ExitCodes::FAILED
    } else {
        ExitCodes::OK
    })
}

/// Whether the file loads; `Err`: how many problems and the first.
fn validate(file: &Path, registry: &orch_core::Registry) -> Result<(), String> {
    match Pipeline::load(file, registry, &LoadOptions::default()) {
        Ok(_) => Ok(()),
        Err(LoadError::Invalid(d)) => {
            let first = d
                .items
                .first()
                .map(|i| i.message.clone())
                .unwrap_or_default();
            Err(match d.items.len() {
                1 => first,
                n => format!("{first} (and {} more)", n - 1),
            })
        }
        Err(e) => Err(crate::app::chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chromium_is_looked_up_by_the_names_the_report_kind_uses() {
        assert_eq!(
            orch_system::probe::CHROMIUM_NAMES,
            orch_report::pdf::CHROMIUM_NAMES
        );
    }
}
