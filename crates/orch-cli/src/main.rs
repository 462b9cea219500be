//! The `orch` command line.

fn main() -> std::process::ExitCode {
    // The watchdog that ends a run's processes if this process dies is forked now, while
    // the process is small and has one thread: forked later, once a pipeline is read, it
    // would share the engine's memory copy-on-write for the rest of the run. Only commands
    // that may run pipelines need it; if this fails, the first run tries again.
    if std::env::args_os()
        .skip(1)
        .any(|a| a == "run" || a == "serve")
    {
        let _ = orch_core::watchdog::start_early();
    }
    orch_cli::main()
}
