//! Processes: whether they live, which are left behind, and waiting with deadlines.

use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some`, up to `within`; panics naming `what` after that.
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

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = i32::try_from(pid).expect("a pid fits in i32");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
}

/// Command lines of the processes whose command line contains `marker`.
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = leftovers(marker);
        if found.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind: {found:?}"
        );
        std::thread::yield_now();
    }
}

/// Waits until none of `pids` and no process marked with `run_id` is alive.
pub fn assert_all_gone(pids: &[i32], run_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        let marked: Vec<i32> = orch_core::test_support::marked_processes(run_id, None)
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
