//! Process trees: every process a phase starts runs in its own process group, carries
//! `ORCH_RUN_ID` and `ORCH_PHASE_ID` in its environment and, where a writable cgroup v2
//! hierarchy exists, lives in a cgroup of its own attempt (see [`crate::cgroup`]).
//!
//! What a phase started ends with the phase, whatever its outcome: when its main process
//! exits (success or failure), when its timeout passes, and when the run is stopped. With
//! cgroups nothing escapes (not `setsid`, a double fork, `nohup` nor `env -i`); without them
//! processes are found by process group and by their marks, so one that both leaves the
//! group and clears its environment is only caught when it is orphaned to orch (see
//! [`adopt_orphans`]) and the run ends. If the engine's process dies, the run's watchdog
//! (see [`crate::watchdog`]) kills what is left within milliseconds.

use std::time::Duration;

use crate::cgroup::PhaseCgroup;
use crate::ids::{PhaseId, RunId};

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
    run_id: RunId,
    phase_id: PhaseId,
    cgroup: Option<PhaseCgroup>,
    armed: bool,
}

impl TreeGuard {
    /// Guards the group `pgid` of a phase.
    pub fn new(pgid: u32, run_id: &RunId, phase_id: &PhaseId) -> Self {
        Self {
            pgid,
            run_id: run_id.clone(),
            phase_id: phase_id.clone(),
            cgroup: None,
            armed: true,
        }
    }

    /// Guards the attempt's cgroup too (its processes were started in it).
    pub fn with_cgroup(mut self, cgroup: Option<PhaseCgroup>) -> Self {
        self.cgroup = cgroup;
        self
    }

    /// Kills what is left of the phase after its main process exited: its group and its
    /// cgroup (or, without one, every process with its marks), and keeps guarding nothing.
    /// Returns whether nothing is left (the cgroup is empty, or no marked process is).
    pub async fn finish(mut self) -> bool {
        self.armed = false;
        signal_group(self.pgid, Signal::SIGKILL);
        match self.cgroup.take() {
            Some(cg) => cg.kill_and_remove().await,
            None => {
                kill_marked(
                    self.run_id.as_str(),
                    Some(self.phase_id.as_str()),
                    Duration::from_secs(2),
                )
                .await
            }
        }
    }

    /// Stops the tree gracefully: SIGTERM to the group, the cgroup and marked processes,
    /// then SIGKILL to whatever is left after `grace` (or at once when `grace` is zero).
    ///
    /// The grace period lasts until the whole tree is gone, not just the main process: a
    /// child that handles SIGTERM gets its time to finish even when its parent died at once.
    /// `exited` reaps the main process (a zombie is no longer marked, so it does not count).
    pub async fn terminate(mut self, grace: Duration, mut exited: impl FnMut() -> bool) {
        self.armed = false;
        signal_group(self.pgid, Signal::SIGTERM);
        if let Some(cg) = &self.cgroup {
            cg.signal(Signal::SIGTERM);
        }
        signal_marked(
            self.run_id.as_str(),
            Some(self.phase_id.as_str()),
            Signal::SIGTERM,
        );
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            let main_gone = exited();
            let rest_gone = match &self.cgroup {
                Some(cg) => !cg.is_populated(),
                None => {
                    marked_processes(self.run_id.as_str(), Some(self.phase_id.as_str())).is_empty()
                }
            };
            if main_gone && rest_gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal_group(self.pgid, Signal::SIGKILL);
        if let Some(cg) = self.cgroup.take() {
            cg.kill_and_remove().await;
        }
        kill_marked(
            self.run_id.as_str(),
            Some(self.phase_id.as_str()),
            Duration::from_secs(2),
        )
        .await;
    }
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
            // Dropping the cgroup kills everything in it.
            self.cgroup.take();
            // Grandchildren that called setsid left the group; find them by their marks.
            for _ in 0..50 {
                if signal_marked(
                    self.run_id.as_str(),
                    Some(self.phase_id.as_str()),
                    Signal::SIGKILL,
                ) == 0
                {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }
}

/// Makes this process the reaper of orphans of its descendants (`PR_SET_CHILD_SUBREAPER`):
/// a phase's process whose parent exits is re-parented to this process instead of init, so
/// the run's end (`kill_orphans`) can find it even when it left its group and cleared its
/// environment.
/// For a program whose only children are orch's (the `orch` binary), where cgroups are not
/// available; a host process that starts other children should not call it.
#[allow(unsafe_code)]
pub fn adopt_orphans() -> bool {
    // SAFETY: prctl with integer arguments.
    unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 }
}

#[allow(unsafe_code)]
fn is_subreaper() -> bool {
    let mut on: nix::libc::c_int = 0;
    // SAFETY: prctl writes one int to `on`.
    let r = unsafe {
        nix::libc::prctl(
            nix::libc::PR_GET_CHILD_SUBREAPER,
            &mut on as *mut nix::libc::c_int,
            0,
            0,
            0,
        )
    };
    r == 0 && on != 0
}

/// Processes started on purpose to outlive the run (a proxy that serves users), which
/// [`kill_orphans`] leaves alone.
static KEPT: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// Marks a process that an in-process kind started as a daemon meant to outlive the run
/// (the deployment proxy): when it is re-parented to this process, the run's end
/// (`kill_orphans`) does not kill it. Only code in this process can mark one; a phase's
/// commands cannot.
pub fn keep_alive(pid: i32) {
    if let Ok(mut kept) = KEPT.lock()
        && !kept.contains(&pid)
    {
        kept.push(pid);
    }
}

fn is_kept(pid: i32) -> bool {
    KEPT.lock().map(|k| k.contains(&pid)).unwrap_or(false)
}

/// After a run's phases are all over, in a process that [`adopt_orphans`]: kills and reaps
/// every child of this process but `keep` and those marked with [`keep_alive`] (orphans of
/// phases, re-parented here). Returns how many there were.
pub fn kill_orphans(keep: &[i32]) -> usize {
    if !is_subreaper() {
        return 0;
    }
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if keep.contains(&pid) || is_kept(pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // PID (COMM) STATE PPID ...: the command may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(me) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
            n += 1;
        }
    }
    n
}
