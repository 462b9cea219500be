//! Generated from the clap definitions: shell completions (`orch completions SHELL`) and the
//! man page (`orch man`), plus the environment section of `orch --help`.

use std::io::Write as _;

use clap::Args;

use crate::exit_codes::ExitCodes;

/// The text after `orch --help`.
pub const AFTER_HELP: &str = "\
Environment:
  ORCH_JOBS       phases running at once (run, plan: --jobs)
  ORCH_STATE_DIR  state directory for runs, logs and reports (run: --state-dir)
  ORCH_PROGRESS   auto, live or plain (run: --progress)
  ORCH_COLOR      auto, always or never (--color)
  ORCH_GRACE      how long interrupted phases get to stop, e.g. 30s (run: --grace)
  NO_COLOR        when set and not empty, --color auto does not colour
  ORCH_JOURNAL    nosync: the run journal without fsync; off: no journal (default: durable)
A flag given on the command line wins over its variable.

Exit codes: 0 every phase succeeded or was allowed to fail, 1 a phase failed,
2 the file or the command line is invalid (nothing ran), 130 interrupted.";

/// `orch completions SHELL`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `orch man [COMMAND]`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// A subcommand's page (`orch-run(1)`) instead of `orch(1)`.
    command: Option<String>,
}

/// Prints the completion script for a shell.
pub fn completions(a: &CompletionsArgs, mut cmd: clap::Command) -> Result<u8, (String, u8)> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "orch", &mut out);
    write_out(&out)
}

/// Prints a man page (roff).
pub fn man(a: &ManArgs, cmd: clap::Command) -> Result<u8, (String, u8)> {
    let cmd = match &a.command {
        None => cmd,
        Some(name) => {
            let Some(sub) = cmd.find_subcommand(name).cloned() else {
                let names: Vec<&str> = cmd.get_subcommands().map(clap::Command::get_name).collect();
                return Err((
                    format!("error: no command `{name}`; one of: {}", names.join(", ")),
                    ExitCodes::INVALID,
                ));
            };
            let version = cmd.get_version().unwrap_or_default().to_owned();
            sub.name(format!("orch-{name}")).version(version)
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut out).map_err(|e| {
        (
            format!("error: cannot render the man page: {e}"),
            ExitCodes::FAILED,
        )
    })?;
    write_out(&out)
}

fn write_out(bytes: &[u8]) -> Result<u8, (String, u8)> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCodes::OK),
        // `orch man | head`: the reader went away; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCodes::OK),
        Err(e) => Err((format!("error: cannot write: {e}"), ExitCodes::FAILED)),
    }
}
