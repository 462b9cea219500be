//! The `orch` command line: argument parsing, dispatch and terminal output over the
//! orch libraries. Scheduling, parsing and report rendering live in the libraries.

mod app;
mod completions;
mod exit_codes;
mod history;
mod init;
mod live;
mod progress;
mod registry;
mod reports;
mod summary;

pub use exit_codes::ExitCodes;

/// Runs the CLI with the process's arguments and returns its exit code.
pub fn main() -> std::process::ExitCode {
    app::main()
}
