//! The run's watchdog: a small process forked when a run starts that ends the run's
//! processes if the engine's process dies without doing it (SIGKILL, a crash, an abort).
//!
//! It waits on a pipe whose write end only the engine holds (close-on-exec, so no phase
//! process inherits it). When the run ends normally the engine writes one byte and the
//! watchdog exits at once; when the engine dies the kernel closes the pipe, the read returns
//! end-of-file, and the watchdog kills the run's cgroup (`cgroup.kill`) and every process
//! marked `ORCH_RUN_ID=RUN`, removes the run's cgroups, and exits: within milliseconds.
//!
//! The watchdog starts its own session and ignores terminal signals (so a Ctrl-C or a kill
//! of the whole process group reaches it no sooner than the engine), closes every
//! descriptor it inherited (it holds neither the workspace lock nor the caller's pipes), and
//! makes only async-signal-safe system calls: it is forked from a multi-threaded process.

// Forking, `pre_exec` and raw system calls for the forked child need `unsafe`; each use
// says why it is sound.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::libc;

use crate::cgroup::raw;

/// The watchdog of one run; [`Watchdog::finish`] stops it when the run ended normally.
/// Dropped without `finish`, it kills the run's processes before it exits (and the drop
/// waits for it).
#[derive(Debug)]
pub struct Watchdog {
    pid: libc::pid_t,
    tx: Option<OwnedFd>,
}

impl Watchdog {
    /// Forks the watchdog of run `run_id`, whose processes are in the cgroup tree `cgroup`
    /// (when cgroups are used) and carry the mark `ORCH_RUN_ID=run_id`.
    pub fn start(run_id: &str, cgroup: Option<&Path>) -> std::io::Result<Self> {
        let cgroup = cgroup
            .map(|d| CString::new(d.as_os_str().as_bytes()))
            .transpose()?;
        let mark = format!("ORCH_RUN_ID={run_id}").into_bytes();
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the child runs `watch`, which makes only async-signal-safe system calls on
        // memory prepared before the fork, and never returns.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()),
            0 => unsafe { watch(rx.as_raw_fd(), cgroup.as_deref(), &mark) },
            pid => Ok(Self { pid, tx: Some(tx) }),
        }
    }

    /// The watchdog's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The run ended normally: the watchdog exits without doing anything.
    pub fn finish(mut self) {
        self.stop(true);
    }

    fn stop(&mut self, clean: bool) {
        let Some(tx) = self.tx.take() else { return };
        if clean {
            let _ = nix::unistd::write(&tx, b"1");
        }
        drop(tx);
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// The watchdog process.
///
/// # Safety
/// Only in a child just forked; never returns.
unsafe fn watch(rx: i32, cgroup: Option<&std::ffi::CStr>, mark: &[u8]) -> ! {
    // SAFETY (whole fn): async-signal-safe system calls only, on stack buffers and on
    // memory the parent prepared before the fork.
    unsafe {
        libc::setsid();
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        close_all_but(rx);

        let mut byte = [0u8; 1];
        let clean = loop {
            let n = libc::read(rx, byte.as_mut_ptr().cast(), 1);
            if n == 1 {
                break true;
            }
            if n == 0 || *libc::__errno_location() != libc::EINTR {
                break false;
            }
        };
        if !clean {
            if let Some(dir) = cgroup {
                let fd = libc::open(
                    dir.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                if fd >= 0 {
                    // A child forked before the engine died may still enter a cgroup after
                    // the kill (a kill is not sticky): kill again until the tree is removed.
                    for _ in 0..10 {
                        raw::kill_tree(fd, 0);
                        for _ in 0..100 {
                            if !raw::populated(fd) {
                                break;
                            }
                            pause_ms(5);
                        }
                        raw::rmdir_children(fd, 0);
                        if libc::rmdir(dir.as_ptr()) == 0
                            || *libc::__errno_location() == libc::ENOENT
                        {
                            break;
                        }
                    }
                    libc::close(fd);
                }
            }
            // Processes that left the cgroup (or all of them, without cgroups): by mark.
            for _ in 0..200 {
                if kill_marked(mark) == 0 {
                    break;
                }
                pause_ms(10);
            }
        }
        libc::_exit(0)
    }
}

unsafe fn pause_ms(ms: i64) {
    let t = libc::timespec {
        tv_sec: 0,
        tv_nsec: ms * 1_000_000,
    };
    // SAFETY: sleeps; the remainder is not needed.
    unsafe { libc::nanosleep(&t, std::ptr::null_mut()) };
}

/// Closes every descriptor above 2 except `keep`.
unsafe fn close_all_but(keep: i32) {
    // SAFETY: closing descriptors of this (forked) process.
    unsafe {
        let close_range =
            |lo: u32, hi: u32| lo > hi || libc::syscall(libc::SYS_close_range, lo, hi, 0) == 0;
        let keep_u = keep as u32;
        let ok = if keep_u >= 3 {
            close_range(3, keep_u - 1) && close_range(keep_u + 1, u32::MAX)
        } else {
            close_range(3, u32::MAX)
        };
        if !ok {
            for fd in 3..4096 {
                if fd != keep {
                    libc::close(fd);
                }
            }
        }
    }
}

/// SIGKILL to every process (but this one) whose environment holds `mark` as a whole
/// variable; returns how many were found.
unsafe fn kill_marked(mark: &[u8]) -> usize {
    // SAFETY: raw syscalls on descriptors owned here; stack buffers only.
    unsafe {
        let me = libc::getpid();
        let proc_fd = libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if proc_fd < 0 {
            return 0;
        }
        let mut found = 0;
        raw::each_entry(proc_fd, |name, _| {
            if name.is_empty() || !name.iter().all(u8::is_ascii_digit) || name.len() > 10 {
                return;
            }
            let mut pid: i32 = 0;
            for b in name {
                pid = pid.saturating_mul(10).saturating_add(i32::from(b - b'0'));
            }
            if pid == me {
                return;
            }
            let mut path = [0u8; 32];
            let suffix = b"/environ\0";
            path[..name.len()].copy_from_slice(name);
            path[name.len()..name.len() + suffix.len()].copy_from_slice(suffix);
            let fd = libc::openat(
                proc_fd,
                path.as_ptr().cast(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return;
            }
            if environ_has(fd, mark) {
                libc::kill(pid, libc::SIGKILL);
                found += 1;
            }
            libc::close(fd);
        });
        libc::close(proc_fd);
        found
    }
}

/// Whether the NUL-separated variables read from `fd` include `mark` exactly.
unsafe fn environ_has(fd: i32, mark: &[u8]) -> bool {
    const MISMATCH: usize = usize::MAX;
    let mut buf = [0u8; 8192];
    // How much of `mark` the current variable matched so far.
    let mut at = 0usize;
    loop {
        // SAFETY: reads into a stack buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return at == mark.len();
        }
        for &b in &buf[..n as usize] {
            if b == 0 {
                if at == mark.len() {
                    return true;
                }
                at = 0;
            } else if at != MISMATCH {
                at = if at < mark.len() && mark[at] == b {
                    at + 1
                } else {
                    MISMATCH
                };
            }
        }
    }
}
