//! Helpers: a temp workspace with a pipeline file, running the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Ws {
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
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

    pub fn orch(&self, args: &[&str]) -> Run {
        self.orch_env(args, &[])
    }

    pub fn orch_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out: Output = Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(args)
            .current_dir(self.path())
            .envs(env.iter().copied())
            .env_remove("ORCH_JOBS")
            .output()
            .expect("run orch");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn record(&self) -> serde_json::Value {
        let p = self.path().join(".orch/runs/latest/run.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).expect("run.json is JSON")
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path().join(rel).exists()
    }

    pub fn latest_dir(&self) -> PathBuf {
        std::fs::canonicalize(self.path().join(".orch/runs/latest")).expect("latest")
    }
}

/// The status of every phase in a record, as `id=status` in record order.
pub fn statuses(record: &serde_json::Value) -> Vec<String> {
    record["phases"]
        .as_object()
        .expect("phases")
        .iter()
        .map(|(k, v)| format!("{k}={}", v["status"].as_str().unwrap_or("?")))
        .collect()
}

/// Processes whose command line contains `marker`.
pub fn leftovers(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) && !cmd.contains("pgrep") {
                found.push(cmd);
            }
        }
    }
    found
}

/// Waits until no process matches `marker` (killed processes take a moment to be reaped
/// by their new parent), up to a deadline.
pub fn assert_no_leftovers(marker: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let found = leftovers(marker);
        if found.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!("processes left behind: {found:?}");
        }
        std::thread::yield_now();
    }
}

/// insta settings that hide temp paths, run ids and times.
pub fn redactions(ws: &Ws) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    let path = ws.path().display().to_string();
    let canon = std::fs::canonicalize(ws.path())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    s.add_filter(&regex_escape(&canon), "[WS]");
    s.add_filter(&regex_escape(&path), "[WS]");
    s.add_filter(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "[RUN_ID]");
    // Times, with the padding that aligns them (their width varies).
    s.add_filter(r" *\b\d+(\.\d+)?(ms|s)\b", " [T]");
    s.add_filter(r"\b\d+m\d\ds\b", "[T]");
    s
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
