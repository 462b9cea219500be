//! Helpers: a temp workspace, the real binary, processes and polling with deadlines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Ws {
    pub dir: tempfile::TempDir,
}

/// An `orch` started in the background: killed on drop if still running (a failed
/// assertion must not leave it behind).
pub struct Running(pub Child);

impl Running {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
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

impl Drop for Ws {
    /// Whatever a run of this workspace left running (a killed `orch` leaves its phases)
    /// goes with the workspace.
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(self.path().join(".orch/runs")) else {
            return;
        };
        for e in dir.flatten() {
            if let Some(id) = e.file_name().to_str() {
                orch_core::process::signal_marked(id, None, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ws {
    pub fn new(pipeline: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("orch.toml"), pipeline).expect("write pipeline");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orch"));
        c.args(args)
            .current_dir(self.path())
            .env_remove("ORCH_JOBS")
            .env_remove("ORCH_FAILPOINT")
            .env_remove("ORCH_JOURNAL");
        c
    }

    pub fn orch(&self, args: &[&str]) -> Run {
        self.orch_env(args, &[])
    }

    pub fn orch_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out: Output = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .expect("run orch");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `orch` in the background, output discarded; killed if the test fails.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running(
            self.command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn orch"),
        )
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_default()
    }

    pub fn state(&self) -> PathBuf {
        self.path().join(".orch")
    }

    pub fn record(&self, run: &str) -> serde_json::Value {
        let p = self.state().join("runs").join(run).join("run.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).expect("run.json is JSON")
    }
}

/// Polls `f` until it returns `Some`, up to `within`.
pub fn poll<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `pid` is a live process (zombies count as gone: they run nothing).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the command name in parentheses.
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

/// Waits until none of `pids` and no process marked with `run_id` is alive.
pub fn assert_all_gone(pids: &[i32], run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        let marked: Vec<i32> = orch_core::process::marked_processes(run_id, None)
            .into_iter()
            .filter(|p| alive(*p))
            .collect();
        if live.is_empty() && marked.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of run {run_id} left behind: pids {live:?}, marked {marked:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).expect("kill");
}
