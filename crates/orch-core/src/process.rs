//! Process trees: every process a phase starts runs in its own process group and carries
//! `ORCH_RUN_ID` and `ORCH_PHASE_ID` in its environment, so the whole tree can be stopped,
//! including grandchildren that left the group with `setsid`.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Sends `signal` to a process group; a group that is gone is not an error.
pub fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Processes (other than this one) whose environment marks them as belonging to `run_id`,
/// and to `phase_id` when given. Linux only: reads `/proc/PID/environ`.
pub fn marked_processes(run_id: &str, phase_id: Option<&str>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let run_mark = format!("ORCH_RUN_ID={run_id}");
    let phase_mark = phase_id.map(|p| format!("ORCH_PHASE_ID={p}"));
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let mut run_ok = false;
        let mut phase_ok = phase_mark.is_none();
        for var in environ.split(|b| *b == 0) {
            if var == run_mark.as_bytes() {
                run_ok = true;
            } else if let Some(pm) = &phase_mark
                && var == pm.as_bytes()
            {
                phase_ok = true;
            }
        }
        if run_ok && phase_ok {
            found.push(pid);
        }
    }
    found
}

/// Sends `signal` to every process marked with the run (and phase); returns how many.
pub fn signal_marked(run_id: &str, phase_id: Option<&str>, signal: Signal) -> usize {
    let pids = marked_processes(run_id, phase_id);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid), signal);
    }
    pids.len()
}

/// Kills (SIGKILL) every process marked with the run (and phase) until none is left or
/// `within` has passed; returns whether none is left.
pub async fn kill_marked(run_id: &str, phase_id: Option<&str>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if signal_marked(run_id, phase_id, Signal::SIGKILL) == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Kills a phase's process tree when dropped, unless disarmed: the engine drops a phase's
/// future when its timeout passes, and this guard makes sure nothing it started survives.
#[derive(Debug)]
pub struct TreeGuard {
    pgid: u32,
    run_id: String,
    phase_id: String,
    armed: bool,
}

impl TreeGuard {
    /// Guards the group `pgid` of a phase.
    pub fn new(pgid: u32, run_id: &str, phase_id: &str) -> Self {
        Self {
            pgid,
            run_id: run_id.to_owned(),
            phase_id: phase_id.to_owned(),
            armed: true,
        }
    }

    /// Kills what is left of the group (after the main process exited) and keeps guarding
    /// nothing more.
    pub fn finish(mut self) {
        signal_group(self.pgid, Signal::SIGKILL);
        self.armed = false;
    }

    /// Stops the tree gracefully: SIGTERM to the group and marked processes, then SIGKILL
    /// to whatever is left after `grace` (or at once when `grace` is zero).
    ///
    /// The grace period lasts until the whole tree is gone, not just the main process: a
    /// child that handles SIGTERM gets its time to finish even when its parent died at once.
    /// `exited` reaps the main process (a zombie is no longer marked, so it does not count).
    pub async fn terminate(mut self, grace: Duration, mut exited: impl FnMut() -> bool) {
        signal_group(self.pgid, Signal::SIGTERM);
        signal_marked(&self.run_id, Some(&self.phase_id), Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            let main_gone = exited();
            if main_gone && marked_processes(&self.run_id, Some(&self.phase_id)).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal_group(self.pgid, Signal::SIGKILL);
        kill_marked(&self.run_id, Some(&self.phase_id), Duration::from_secs(2)).await;
        self.armed = false;
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
            // Grandchildren that called setsid left the group; find them by their marks.
            for _ in 0..50 {
                if signal_marked(&self.run_id, Some(&self.phase_id), Signal::SIGKILL) == 0 {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }
}
