//! Containment by cgroup v2: every attempt of a phase that starts processes runs in a cgroup
//! of its own, inside one cgroup per run, placed in the cgroup this process lives in. A
//! process cannot leave its cgroup by `setsid`, a double fork, `nohup` or a cleared
//! environment, so killing the cgroup (`cgroup.kill`) ends everything the attempt started.
//!
//! The hierarchy is found from `/proc/self/mountinfo` and `/proc/self/cgroup`. Where no
//! writable cgroup v2 hierarchy exists (no `cgroup2` mount, or not ours to write), nothing
//! here is used and processes are found by their `ORCH_RUN_ID`/`ORCH_PHASE_ID` marks
//! instead (see `process.rs`).
//!
//! Layout: `OWN_CGROUP/orch-RUN_ID/N`. An attempt's cgroup that is empty once the attempt is
//! over (its main process exited and whatever it left was killed) goes back to its run and
//! is handed to a later attempt: making and removing a cgroup costs the kernel far more than
//! the rest of starting a process. The run's cgroups are removed when the run ends.
//!
//! The same goes for the pipes an attempt's processes write their output to: an attempt
//! whose cgroup is empty once it is over (so no process of it can write to its pipes any
//! more) leaves them, read to the end, to a later attempt ([`PipePool`]).

// Forking, `pre_exec` and raw system calls for the forked child need `unsafe`; each use
// says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::spawn::Pipes;

/// The directory of this process's own cgroup in a writable cgroup v2 hierarchy, if there is
/// one. Found once per process.
pub fn own_cgroup() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(discover).as_deref()
}

fn discover() -> Option<PathBuf> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = locate(&cgroup, &mountinfo)?;
    // Creating child cgroups needs the directory; moving a process into one needs the
    // common ancestor's `cgroup.procs` (ours).
    let writable = |p: &Path| nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok();
    (writable(&dir) && writable(&dir.join("cgroup.procs"))).then_some(dir)
}

/// Where our cgroup (`0::PATH` in `/proc/self/cgroup`) is in the file system: under the
/// mount point of a read-write `cgroup2` mount whose root contains it.
fn locate(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let own = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split(' ').next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = left.split(' ').collect();
        if f.len() < 6 || !f[5].split(',').any(|o| o == "rw") {
            continue;
        }
        let (root, mount) = (unescape(f[3]), unescape(f[4]));
        let Ok(rel) = Path::new(own).strip_prefix(&root) else {
            continue;
        };
        return Some(Path::new(&mount).join(rel));
    }
    None
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup of one run: the parent of its attempts' cgroups.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    next: AtomicU64,
    /// Attempt cgroups that are empty, for the next attempts.
    free: Arc<Mutex<Vec<Slot>>>,
    /// Output pipes attempts left, empty and with no writer but the engine.
    pipes: Arc<Mutex<Vec<Pipes>>>,
}

/// An attempt cgroup's directory and the files the engine uses, kept open while it is reused.
#[derive(Debug)]
struct Slot {
    dir: PathBuf,
    /// The directory, for a child to be started in (`CLONE_INTO_CGROUP`).
    dir_fd: File,
    /// `cgroup.procs`, for a child to write itself into (see [`enter`]).
    procs: File,
    /// `cgroup.events`, read (from offset 0) to see whether a process is left.
    events: File,
    /// Killed (`cgroup.kill`): not used again (see [`PhaseCgroup::kill_and_remove`]).
    killed: std::sync::atomic::AtomicBool,
}

impl Slot {
    fn populated(&self) -> bool {
        let mut buf = [0u8; 128];
        let n = self.events.read_at(&mut buf, 0).unwrap_or(0);
        buf[..n].split(|b| *b == b'\n').any(|l| l == b"populated 1")
    }
}

impl RunCgroup {
    /// Creates the run's cgroup, or `None` where cgroups cannot be used.
    pub fn create(run_id: &str) -> Option<Self> {
        let dir = run_dir(run_id)?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                tracing::debug!("cannot create cgroup {}: {e}", dir.display());
                return None;
            }
        }
        Some(Self {
            dir,
            next: AtomicU64::new(0),
            free: Arc::default(),
            pipes: Arc::default(),
        })
    }

    /// The run's cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An empty cgroup for an attempt of `phase` (one a finished attempt left empty, or a
    /// new one); `None` if none can be made.
    pub fn attempt(&self, phase: &str, attempt: u32) -> Option<PhaseCgroup> {
        let reused = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let slot = match reused {
            Some(slot) => slot,
            None => self.new_slot(phase, attempt)?,
        };
        Some(PhaseCgroup {
            slot: Some(slot),
            free: Arc::downgrade(&self.free),
            pipes: PipePool(Arc::downgrade(&self.pipes)),
        })
    }

    fn new_slot(&self, phase: &str, attempt: u32) -> Option<Slot> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(n.to_string());
        if let Err(e) = std::fs::create_dir(&dir) {
            tracing::debug!(
                "cannot create cgroup {} for {phase} (attempt {attempt}): {e}",
                dir.display()
            );
            return None;
        }
        let opened = File::options()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .and_then(|procs| {
                Ok((
                    File::open(&dir)?,
                    procs,
                    File::open(dir.join("cgroup.events"))?,
                ))
            });
        match opened {
            Ok((dir_fd, procs, events)) => {
                crate::spawn::probe_into_cgroup(dir_fd.as_raw_fd());
                Some(Slot {
                    dir,
                    dir_fd,
                    procs,
                    events,
                    killed: std::sync::atomic::AtomicBool::new(false),
                })
            }
            Err(e) => {
                tracing::debug!("cannot open the files of cgroup {}: {e}", dir.display());
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Kills everything left in the run's cgroups and removes them; returns whether they
    /// are gone.
    pub async fn remove(&self) -> bool {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.pipes.lock().unwrap_or_else(|p| p.into_inner()).clear();
        remove_tree(&self.dir).await
    }
}

/// The cgroup directory a run with this id has (or would have).
pub fn run_dir(run_id: &str) -> Option<PathBuf> {
    Some(own_cgroup()?.join(format!("orch-{run_id}")))
}

/// Kills everything in the cgroup tree at `dir` and removes it, waiting (at most a few
/// seconds) until it is empty; returns whether it is gone. A missing `dir` is gone.
pub async fn remove_tree(dir: &Path) -> bool {
    if !dir.exists() {
        return true;
    }
    if populated(dir) {
        kill_all(dir);
        if !wait_empty(dir, Duration::from_secs(5)).await {
            tracing::warn!("processes in {} did not die", dir.display());
            return false;
        }
    }
    rmdir_tree(dir)
}

/// Removes the empty cgroup `dir` and the ones below it.
fn rmdir_tree(dir: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Whether a live process is in `dir` or below (`cgroup.events`); a cgroup that cannot be
/// read counts as empty.
fn populated(dir: &Path) -> bool {
    let mut buf = [0u8; 128];
    let Ok(mut f) = File::open(dir.join("cgroup.events")) else {
        return false;
    };
    let n = f.read(&mut buf).unwrap_or(0);
    buf[..n].split(|b| *b == b'\n').any(|l| l == b"populated 1")
}

async fn wait_empty(dir: &Path, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_micros(250);
    loop {
        if !populated(dir) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// SIGKILL to every process in the tree at `dir`: `cgroup.kill` where the kernel has it
/// (5.14+), else the tree is frozen and every listed process killed.
fn kill_all(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), b"1").is_ok() {
        return;
    }
    let _ = std::fs::write(dir.join("cgroup.freeze"), b"1");
    signal_tree(dir, Signal::SIGKILL);
    let _ = std::fs::write(dir.join("cgroup.freeze"), b"0");
}

/// Sends `signal` to every process listed in the tree at `dir`; returns how many.
fn signal_tree(dir: &Path, signal: Signal) -> usize {
    let mut n = 0;
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if kill(Pid::from_raw(pid), signal).is_ok() {
                n += 1;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += signal_tree(&e.path(), signal);
            }
        }
    }
    n
}

/// The cgroup of one attempt. [`PhaseCgroup::kill_and_remove`] empties it and gives it back
/// to its run for a later attempt; dropped without that, it kills what is in it and removes
/// itself if it is already empty (else the run's cleanup does).
#[derive(Debug)]
pub struct PhaseCgroup {
    /// `None` once released.
    slot: Option<Slot>,
    /// Where an emptied cgroup goes back to (gone when the run is).
    free: std::sync::Weak<Mutex<Vec<Slot>>>,
    /// The run's output pipes.
    pipes: PipePool,
}

/// The output pipes of a run's attempts that are over: an attempt takes a pair
/// ([`PipePool::take`]) or makes one, and gives it back ([`PipePool::put`]) only once its
/// cgroup is empty and the pipes are read to the end; gone with the run.
#[derive(Debug, Clone)]
pub(crate) struct PipePool(std::sync::Weak<Mutex<Vec<Pipes>>>);

impl PipePool {
    /// Pipes an earlier attempt left, if any.
    pub(crate) fn take(&self) -> Option<Pipes> {
        self.0
            .upgrade()?
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }

    /// Gives `pipes` to a later attempt. Only for pipes no process but the engine can write
    /// to any more (the attempt's cgroup is empty), read to the end ([`Pipes::drain`]).
    pub(crate) fn put(&self, pipes: Pipes) {
        if let Some(pool) = self.0.upgrade() {
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(pipes);
        }
    }
}

impl PhaseCgroup {
    fn slot(&self) -> &Slot {
        match &self.slot {
            Some(s) => s,
            // Only `kill_and_remove` and `drop` take the slot, and both consume `self`.
            None => unreachable!("a released cgroup is not used"),
        }
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.slot().dir
    }

    /// The run's output pipes, for this attempt's processes (see [`PipePool`]).
    pub(crate) fn pipes(&self) -> &PipePool {
        &self.pipes
    }

    /// The descriptor a child passes to [`enter`] before it execs.
    pub fn procs_fd(&self) -> RawFd {
        self.slot().procs.as_raw_fd()
    }

    /// The cgroup's directory, open: where `clone3` can start a child
    /// (`CLONE_INTO_CGROUP`), so that it need not [`enter`] it.
    pub fn dir_fd(&self) -> RawFd {
        self.slot().dir_fd.as_raw_fd()
    }

    /// Whether a live process is still in it.
    pub fn is_populated(&self) -> bool {
        self.slot().populated()
    }

    /// Sends `signal` to every process in it; returns how many.
    pub fn signal(&self, signal: Signal) -> usize {
        signal_tree(self.dir(), signal)
    }

    /// SIGKILL to every process in it, at once.
    pub fn kill(&self) {
        self.slot().killed.store(true, Ordering::Relaxed);
        kill_all(self.dir());
    }

    /// Kills what is left in it and waits (a few seconds at most) until it is empty; an
    /// empty cgroup goes back to the run for a later attempt. Returns whether it is empty.
    pub async fn kill_and_remove(mut self) -> bool {
        let Some(slot) = self.slot.take() else {
            return true;
        };
        let populated = slot.populated();
        let killed = populated || slot.killed.load(Ordering::Relaxed);
        if populated {
            kill_all(&slot.dir);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            let mut pause = Duration::from_micros(250);
            while slot.populated() {
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!("processes in {} did not die", slot.dir.display());
                    // Left to the run's cleanup.
                    return false;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
        match self.free.upgrade() {
            // A cgroup killed with `cgroup.kill` is not used again: some kernels kill a
            // child started in it (see `crate::spawn::probe_into_cgroup`).
            Some(free) if !killed => free.lock().unwrap_or_else(|p| p.into_inner()).push(slot),
            _ => {
                let dir = slot.dir.clone();
                drop(slot);
                let _ = std::fs::remove_dir(&dir);
            }
        }
        true
    }
}

impl Drop for PhaseCgroup {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            if slot.populated() {
                kill_all(&slot.dir);
            }
            let dir = slot.dir.clone();
            drop(slot);
            // Still dying: the run's cleanup removes it once empty.
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open as `procs_fd`:
/// for a `pre_exec` hook, so the child is contained before it runs anything. Async-signal
/// safe (one `write`).
pub fn enter(procs_fd: RawFd) -> std::io::Result<()> {
    // "0" is the writing process itself.
    // SAFETY: writes one byte from a static buffer to a descriptor the caller owns.
    let n = unsafe { nix::libc::write(procs_fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raw-syscall versions for a forked child of a multi-threaded process (the run's watchdog),
/// where only async-signal-safe calls are allowed: no allocation, no locks.
pub(crate) mod raw {
    use nix::libc;

    const DIRENT_BUF: usize = 8192;

    /// Calls `f(name, d_type)` for each entry of the directory open as `dirfd`.
    pub(crate) unsafe fn each_entry(dirfd: i32, mut f: impl FnMut(&[u8], u8)) {
        let mut buf = [0u64; DIRENT_BUF / 8];
        // SAFETY (whole fn): raw syscalls on a descriptor the caller owns; the kernel fills
        // `buf` with `linux_dirent64` records that are parsed within the returned length.
        unsafe {
            libc::lseek(dirfd, 0, libc::SEEK_SET);
            loop {
                let n = libc::syscall(
                    libc::SYS_getdents64,
                    dirfd,
                    buf.as_mut_ptr().cast::<u8>(),
                    DIRENT_BUF,
                );
                if n <= 0 {
                    return;
                }
                let bytes = std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize);
                let mut off = 0usize;
                while off + 19 < bytes.len() {
                    let reclen = u16::from_ne_bytes([bytes[off + 16], bytes[off + 17]]) as usize;
                    if reclen == 0 || off + reclen > bytes.len() {
                        return;
                    }
                    let d_type = bytes[off + 18];
                    let name = &bytes[off + 19..off + reclen];
                    let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
                    f(&name[..len], d_type);
                    off += reclen;
                }
            }
        }
    }

    /// A NUL-terminated copy of `name` in a stack buffer (`None` if too long).
    fn cname(name: &[u8], buf: &mut [u8; 256]) -> Option<*const libc::c_char> {
        if name.len() >= buf.len() {
            return None;
        }
        buf[..name.len()].copy_from_slice(name);
        buf[name.len()] = 0;
        Some(buf.as_ptr().cast())
    }

    /// Whether the cgroup open as `dirfd` has a live process (`cgroup.events`).
    pub(crate) unsafe fn populated(dirfd: i32) -> bool {
        // SAFETY: raw syscalls on descriptors owned here; reads into a stack buffer.
        unsafe {
            let fd = libc::openat(
                dirfd,
                c"cgroup.events".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return false;
            }
            let mut buf = [0u8; 128];
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            n > 0
                && buf[..n as usize]
                    .split(|b| *b == b'\n')
                    .any(|l| l == b"populated 1")
        }
    }

    /// SIGKILL to everything in the tree open as `dirfd`: `cgroup.kill`, else every pid
    /// listed in each `cgroup.procs`.
    pub(crate) unsafe fn kill_tree(dirfd: i32, depth: u32) {
        // SAFETY: raw syscalls on descriptors owned here; stack buffers only.
        unsafe {
            let fd = libc::openat(
                dirfd,
                c"cgroup.kill".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                let ok = libc::write(fd, b"1".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if ok {
                    return;
                }
            }
            let fd = libc::openat(
                dirfd,
                c"cgroup.procs".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                let mut buf = [0u8; 4096];
                let mut pid: i32 = 0;
                loop {
                    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                    if n <= 0 {
                        break;
                    }
                    for b in &buf[..n as usize] {
                        if b.is_ascii_digit() {
                            pid = pid.saturating_mul(10).saturating_add(i32::from(b - b'0'));
                        } else {
                            if pid > 0 {
                                libc::kill(pid, libc::SIGKILL);
                            }
                            pid = 0;
                        }
                    }
                }
                if pid > 0 {
                    libc::kill(pid, libc::SIGKILL);
                }
                libc::close(fd);
            }
            if depth < 16 {
                each_entry(dirfd, |name, d_type| {
                    let mut nb = [0u8; 256];
                    if d_type == libc::DT_DIR
                        && name != b"."
                        && name != b".."
                        && let Some(c) = cname(name, &mut nb)
                    {
                        let sub = libc::openat(
                            dirfd,
                            c,
                            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                        );
                        if sub >= 0 {
                            kill_tree(sub, depth + 1);
                            libc::close(sub);
                        }
                    }
                });
            }
        }
    }

    /// Removes the (empty) cgroups below the one open as `dirfd`.
    pub(crate) unsafe fn rmdir_children(dirfd: i32, depth: u32) {
        if depth >= 16 {
            return;
        }
        // SAFETY: raw syscalls on descriptors owned here; stack buffers only.
        unsafe {
            each_entry(dirfd, |name, d_type| {
                let mut nb = [0u8; 256];
                if d_type == libc::DT_DIR
                    && name != b"."
                    && name != b".."
                    && let Some(c) = cname(name, &mut nb)
                {
                    let sub = libc::openat(
                        dirfd,
                        c,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    );
                    if sub >= 0 {
                        rmdir_children(sub, depth + 1);
                        libc::close(sub);
                    }
                    libc::unlinkat(dirfd, c, libc::AT_REMOVEDIR);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_attempt_cgroup_is_reused_only_once_it_is_empty_and_never_once_killed() {
        if own_cgroup().is_none() {
            eprintln!("no writable cgroup v2 hierarchy here: nothing to reuse");
            return;
        }
        let run = RunCgroup::create(&format!("test-{:016x}", fastrand::u64(..))).unwrap();
        // A process started in `cgroup`, running `argv`.
        let start = |cgroup: &PhaseCgroup, argv: &[&str]| {
            let procs = cgroup.procs_fd();
            let mut cmd = std::process::Command::new(argv[0]);
            cmd.args(&argv[1..]);
            // SAFETY: `enter` makes one async-signal-safe `write`.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || enter(procs));
            }
            cmd.spawn().unwrap()
        };
        let a = run.attempt("p", 1).unwrap();
        let dir = a.dir().to_owned();
        // A process left in it after the attempt's main process would have exited.
        let mut left = start(&a, &["sleep", "1000"]);
        assert!(a.is_populated());
        // While it is in use, another attempt gets another cgroup.
        let b = run.attempt("q", 1).unwrap();
        assert_ne!(b.dir(), dir);
        assert!(a.kill_and_remove().await);
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(left.wait().unwrap().signal(), Some(9));
        // Killed: removed, not handed out again (some kernels kill what is started in a
        // cgroup killed before).
        assert!(!dir.exists());
        let c = run.attempt("r", 1).unwrap();
        assert_ne!(c.dir(), dir);
        // One whose processes all ended by themselves is handed out again.
        let ended = c.dir().to_owned();
        assert!(start(&c, &["true"]).wait().unwrap().success());
        assert!(c.kill_and_remove().await);
        let d = run.attempt("s", 1).unwrap();
        assert_eq!(d.dir(), ended, "the emptied cgroup is handed out again");
        assert!(!d.is_populated());
        drop(b);
        drop(d);
        assert!(run.remove().await);
        assert!(!run.dir().exists());
    }

    #[test]
    fn the_cgroup2_mount_holding_our_cgroup_is_found() {
        let mountinfo = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            locate("1:cpu:/\n0::/a/b\n", mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified/a/b"))
        );
        // A mount whose root is a sub-cgroup (a container), and an escaped space.
        let nested = "50 1 0:40 /box /sys/fs/cg\\040x rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            locate("0::/box/run\n", nested),
            Some(PathBuf::from("/sys/fs/cg x/run"))
        );
        // Outside the mounted root, read-only, or no v2 line: not usable.
        assert_eq!(locate("0::/other\n", nested), None);
        let ro = "41 31 0:38 / /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 ro\n";
        assert_eq!(locate("0::/\n", ro), None);
        assert_eq!(locate("1:cpu:/\n", mountinfo), None);
    }
}
