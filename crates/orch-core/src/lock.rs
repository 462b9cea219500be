//! One run per workspace: an exclusive `flock(2)` on `STATE_DIR/lock`, which holds the
//! holder's pid, run id and start time as one JSON line.
//!
//! The kernel drops the lock when its holder dies, however it dies, so a lock left by a
//! killed run is free at once. Its file still names the dead holder: whoever takes the
//! lock then knows a run died and which run (see [`WorkspaceLock::stale`]), and the engine
//! kills whatever that run left running before it starts anything. A run that ends
//! normally empties the file before it unlocks.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::errors::RunError;

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

/// Who holds (or held) the lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The holding process.
    pub pid: u32,
    /// Its run.
    pub run_id: String,
    /// When it took the lock (RFC 3339).
    pub started_at: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process {} (run {}, started {})",
            self.pid, self.run_id, self.started_at
        )
    }
}

/// The held lock of a state directory; dropping it empties the file and unlocks.
#[derive(Debug)]
pub struct WorkspaceLock {
    file: Flock<File>,
    path: PathBuf,
    stale: Option<LockHolder>,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn read_holder(file: &mut File) -> Option<LockHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// Takes the lock without waiting, except when the holder named in the file is dead: then
/// a process it forked may still hold a copy of the lock for the instant before it execs or
/// is killed by the dead run's watchdog, so the lock is retried for a moment.
fn lock_or_wait_for_the_dead(file: File) -> Result<Flock<File>, (File, Errno)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Err((mut f, Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                let dead = read_holder(&mut f).is_some_and(|h| {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(h.pid as i32), None).is_err()
                });
                if !dead {
                    return Err((f, Errno::EWOULDBLOCK));
                }
                std::thread::sleep(Duration::from_millis(5));
                file = f;
            }
            other => return other,
        }
    }
}

impl WorkspaceLock {
    /// Takes the lock of `state_dir`, or fails at once with
    /// [`RunError::Locked`] naming the process that holds it.
    pub fn acquire(state_dir: &Path) -> Result<Self, RunError> {
        let state_err = |path: &Path| {
            let path = path.to_owned();
            move |source| RunError::State { path, source }
        };
        std::fs::create_dir_all(state_dir).map_err(state_err(state_dir))?;
        let path = state_dir.join(LOCK_FILE);
        let file = open(&path).map_err(state_err(&path))?;
        let mut file = match lock_or_wait_for_the_dead(file) {
            Ok(f) => f,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                // The holder writes its name right after locking: give it a moment.
                let deadline = std::time::Instant::now() + Duration::from_millis(200);
                let holder = loop {
                    if let Some(h) = read_holder(&mut file) {
                        break h.to_string();
                    }
                    if std::time::Instant::now() >= deadline {
                        break "a process that has not written its name yet".to_owned();
                    }
                    std::thread::yield_now();
                };
                return Err(RunError::Locked {
                    state_dir: state_dir.to_owned(),
                    holder,
                });
            }
            Err((_, errno)) => {
                return Err(RunError::State {
                    path,
                    source: std::io::Error::from(errno),
                });
            }
        };
        let stale = read_holder(&mut file);
        Ok(Self { file, path, stale })
    }

    /// The run that held the lock before and died without releasing it cleanly.
    pub fn stale(&self) -> Option<&LockHolder> {
        self.stale.as_ref()
    }

    /// Writes this process and `run_id` into the lock file (after the stale holder's
    /// leftovers are dealt with).
    pub fn write_holder(&mut self, run_id: &str) -> Result<(), RunError> {
        let holder = LockHolder {
            pid: std::process::id(),
            run_id: run_id.to_owned(),
            started_at: crate::record::rfc3339(SystemTime::now()),
        };
        let mut line = serde_json::to_string(&holder).unwrap_or_default();
        line.push('\n');
        let f: &mut File = &mut self.file;
        f.set_len(0)
            .and_then(|()| f.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| f.write_all(line.as_bytes()))
            .map_err(|source| RunError::State {
                path: self.path.clone(),
                source,
            })?;
        self.stale = None;
        Ok(())
    }
}

impl Drop for WorkspaceLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

/// Who holds the lock of `state_dir` now, if anyone (takes no lock).
pub fn holder(state_dir: &Path) -> Option<LockHolder> {
    let mut file = File::open(state_dir.join(LOCK_FILE)).ok()?;
    let h = read_holder(&mut file)?;
    // A name in the file whose process is gone is a dead run's. The pid is read from a
    // file: 0 or one past `i32::MAX` would name a process group (or every process) to
    // `kill`, never one process, so it names none.
    let pid = i32::try_from(h.pid).ok().filter(|p| *p > 0)?;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    alive.then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_that_is_not_one_process_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for pid in [0u32, u32::MAX, 1 << 31] {
            std::fs::write(
                dir.path().join(LOCK_FILE),
                format!(r#"{{"pid":{pid},"run_id":"r1","started_at":"2026-01-01T00:00:00Z"}}"#),
            )
            .unwrap();
            assert_eq!(holder(dir.path()), None, "pid {pid}");
        }
    }

    #[test]
    fn second_lock_is_refused_with_the_holder_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = WorkspaceLock::acquire(dir.path()).unwrap();
        assert!(a.stale().is_none());
        a.write_holder("r1").unwrap();
        // flock locks belong to the open file: a second open in this process conflicts.
        let err = WorkspaceLock::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("run r1"), "{msg}");
        assert_eq!(holder(dir.path()).map(|h| h.run_id), Some("r1".into()));
        drop(a);
        let b = WorkspaceLock::acquire(dir.path()).unwrap();
        assert!(
            b.stale().is_none(),
            "a clean release leaves no stale holder"
        );
    }

    #[test]
    fn a_holder_that_did_not_release_is_reported_stale() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed holder leaves: its name in an unlocked file.
        let dead = LockHolder {
            pid: 1,
            run_id: "r1".into(),
            started_at: "t".into(),
        };
        std::fs::write(
            dir.path().join(LOCK_FILE),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        let mut b = WorkspaceLock::acquire(dir.path()).unwrap();
        assert_eq!(b.stale(), Some(&dead));
        b.write_holder("r2").unwrap();
        assert!(b.stale().is_none());
    }
}
