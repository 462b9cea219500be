//! The `orch` command line: argument parsing, dispatch and terminal output over the
//! orch libraries. Scheduling, parsing and report rendering live in the libraries.
// Output goes through `output::{out, outln, err, errln}`, which never panic on a closed pipe.
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod app;
mod completions;
mod deploy;
mod doctor;
mod exit_codes;
mod governance;
mod history;
mod init;
mod live;
mod malloc;
mod output;
mod progress;
mod reports;
mod serve;
mod stats;
mod style;
mod summary;

pub use exit_codes::ExitCodes;

/// Runs the CLI with the process's arguments and returns its exit code.
pub fn main() -> std::process::ExitCode {
    app::main()
}
