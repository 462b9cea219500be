//! The `orch` command line.

fn main() -> std::process::ExitCode {
    orch_cli::main()
}
