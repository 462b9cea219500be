//! A temporary workspace with a pipeline file, and a binary run in it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

/// The environment variables that change how orch runs or prints, kept from the binary a
/// [`Workspace`] runs (a test sets what it needs explicitly).
pub const SETTINGS: &[&str] = &[
    "ORCH_JOBS",
    "ORCH_STATE_DIR",
    "ORCH_PROGRESS",
    "ORCH_COLOR",
    "ORCH_GRACE",
    "ORCH_JOURNAL",
    "ORCH_FAILPOINT",
    "NO_COLOR",
    "GITHUB_STEP_SUMMARY",
];

/// A temporary directory holding `orch.toml`. Whatever a run of it left running (a killed
/// `orch` leaves its phases) is killed when the workspace is dropped.
pub struct Workspace {
    dir: tempfile::TempDir,
    binary: Option<PathBuf>,
}

/// What a finished command printed, and how it ended.
#[derive(Clone, Debug)]
pub struct Run {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A command started in the background: killed on drop if still running (a failed
/// assertion must not leave it behind).
pub struct Running(pub Child);

impl Running {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Waits for it to end.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Workspace {
    /// A fresh directory with `pipeline` as its `orch.toml`.
    pub fn new(pipeline: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("orch.toml"), pipeline).expect("write orch.toml");
        Self { dir, binary: None }
    }

    /// The binary [`command`](Self::command) runs (an integration test's
    /// `env!("CARGO_BIN_EXE_orch")`).
    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keeps the directory after the test (to look at what a failed test left).
    pub fn keep(&mut self) {
        self.dir.disable_cleanup(true);
    }

    /// Writes `text` to `rel`, making its directories.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    /// The text of `rel`; panics when it cannot be read.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// The text of `rel`, empty when it cannot be read (a file a run has not written yet).
    pub fn read_or_empty(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }

    /// Whether `rel` exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.path().join(rel).exists()
    }

    /// The state directory (`.orch`).
    pub fn state(&self) -> PathBuf {
        self.path().join(".orch")
    }

    /// The directory `runs/latest` points at.
    pub fn latest_dir(&self) -> PathBuf {
        std::fs::canonicalize(self.state().join("runs/latest")).expect("runs/latest")
    }

    /// The `run.json` of the latest run.
    pub fn record(&self) -> serde_json::Value {
        self.record_of("latest")
    }

    /// The `run.json` of run `run`.
    pub fn record_of(&self, run: &str) -> serde_json::Value {
        let p = self.state().join("runs").join(run).join("run.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).expect("run.json is JSON")
    }

    /// The binary with `args`, in the workspace, with none of the test's own orch settings
    /// ([`SETTINGS`]) in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let binary = self
            .binary
            .as_deref()
            .expect("a workspace made with_binary runs commands");
        let mut c = Command::new(binary);
        c.args(args).current_dir(self.path());
        for var in SETTINGS {
            c.env_remove(var);
        }
        c
    }

    /// Runs the binary with `args` to the end.
    pub fn orch(&self, args: &[&str]) -> Run {
        self.orch_env(args, &[])
    }

    /// Runs the binary with `args` and `env` to the end.
    pub fn orch_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.command(args)
            .envs(env.iter().copied())
            .output()
            .expect("run the binary")
            .into()
    }

    /// Starts the binary in the background, output discarded.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running(
            self.command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn the binary"),
        )
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(self.state().join("runs")) else {
            return;
        };
        for e in dir.flatten() {
            if let Some(id) = e.file_name().to_str() {
                orch_core::test_support::signal_marked(id, None, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}
