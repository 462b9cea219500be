//! Starting a phase's process at less than the cost of `posix_spawn`, in the attempt's
//! cgroup.
//!
//! `std::process::Command` forks when it is given a `pre_exec` hook (the only way to enter
//! a cgroup before the program runs), and a fork copies the page tables of the whole
//! engine and makes every page it writes afterwards fault once: the larger the run, the
//! dearer each process. Here the child shares the engine's memory (`CLONE_VM`) and runs on
//! a small stack of its own until it calls `execve`. Between the two it makes only raw
//! system calls: it resets the signal handlers the engine installed (on x86-64 with Linux
//! 5.5 and later, the kernel does as it clones, `clone3` with `CLONE_CLEAR_SIGHAND`;
//! elsewhere the child asks for each signal), makes its own process group, sets up its standard streams and working directory, and
//! executes the program, whose path was looked up in `PATH` by the engine (once per run
//! and program, see [`forget`]). The child's exit is followed through a pidfd
//! (`CLONE_PIDFD`), so no `SIGCHLD` handler is involved.
//!
//! With `clone3`, the engine's thread does not wait while the child executes its program
//! (`posix_spawn`'s `CLONE_VFORK` would hold it for the whole `execve`, a tenth of a
//! millisecond per process in which no other phase is started or finished). What the child
//! reads (its arguments, its stack) is a [`Launch`] from a pool, which the kernel marks free
//! once the child no longer needs it (`CLONE_CHILD_CLEARTID`): a launch is reused only then,
//! and a step that failed in the child is read from it once the child has exited
//! ([`Child::start_error`]). Where `clone3` is missing, `clone` is used with `CLONE_VFORK`
//! and the thread waits, as `posix_spawn` does.
//!
//! The child starts in the attempt's cgroup: `clone3` puts it there (`CLONE_INTO_CGROUP`,
//! Linux 5.7), so it is never outside it. Elsewhere, or where a probe finds such children
//! killed (see [`probe_into_cgroup`]), it writes itself into the cgroup's `cgroup.procs`
//! before anything else: a migration, which takes a global lock for writing and, the
//! first time after a while, waits for an RCU grace period (tens of microseconds per
//! process, sometimes tens of milliseconds, more on a busy machine).
//!
//! Where the kernel lacks pidfds (before Linux 5.3), [`spawn`] says so and the caller
//! starts the process with `tokio::process::Command` instead.

// Cloning a child that shares the engine's memory needs raw system calls; each use says
// why it is sound.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// What to start.
#[derive(Debug)]
pub(crate) struct Spec<'a> {
    /// The program and its arguments; a program without `/` is looked up in `PATH`.
    pub argv: &'a [&'a OsStr],
    /// Variables removed from the inherited environment.
    pub env_remove: &'a [String],
    /// Variables set, in order (a later one wins).
    pub env: &'a [(&'a OsStr, &'a OsStr)],
    /// The working directory.
    pub cwd: &'a Path,
    /// `cgroup.procs` of the cgroup to start in, which the child writes itself into before
    /// it runs anything (unless it was started in the cgroup, see `cgroup_dir`).
    pub cgroup_procs: Option<RawFd>,
    /// The directory of that cgroup: `clone3` starts the child in it where the kernel can
    /// (`CLONE_INTO_CGROUP`, Linux 5.7), which spares the child its `cgroup.procs` write (a
    /// migration takes a global lock for writing, and the first after a while waits for an
    /// RCU grace period: tens of microseconds per process, up to tens of milliseconds).
    pub cgroup_dir: Option<RawFd>,
    /// Pipes the engine keeps for the process's stdout and stderr (the started [`Child`]
    /// then has none of its own); `None`: new pipes, whose write ends only the process holds.
    pub pipes: Option<&'a Pipes>,
}

/// A stdout and a stderr pipe whose both ends the engine holds, so that they can serve one
/// attempt after another: making a pipe pair and registering its read end with the runtime
/// (and later unregistering and closing it) costs more system calls than the rest of
/// starting a process. Since the engine holds the write ends, a reader never sees the end of
/// the stream: what a process wrote is all there once every process that had a write end is
/// gone, and [`Pipes::drain`] then reads it. Only then may the pipes serve another attempt
/// (see [`crate::cgroup::PipePool`]): a pipe some process can still write to is dropped.
/// What is not seen is a process outside the attempt's cgroup that was handed a write end
/// (descriptors passed over a socket to a server that was already running).
#[derive(Debug)]
pub(crate) struct Pipes {
    /// The read end of stdout (non-blocking, registered with the runtime).
    pub out: pipe::Receiver,
    /// The read end of stderr.
    pub err: pipe::Receiver,
    /// The write ends (blocking, for the process).
    writers: [OwnedFd; 2],
}

impl Pipes {
    /// Two new pipes, registered with the current runtime.
    pub(crate) fn new() -> io::Result<Self> {
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        Ok(Self {
            out: pipe::Receiver::from_owned_fd_unchecked(out_r)?,
            err: pipe::Receiver::from_owned_fd_unchecked(err_r)?,
            writers: [out_w, err_w],
        })
    }

    /// The read ends (stdout, stderr) and the engine's write ends, apart: dropping the write
    /// ends lets each reader see its stream end once no process holds one either (such
    /// pipes cannot be joined again, so they are never reused).
    pub(crate) fn split(self) -> ((pipe::Receiver, pipe::Receiver), [OwnedFd; 2]) {
        ((self.out, self.err), self.writers)
    }

    /// Pipes [`Pipes::split`] took apart.
    pub(crate) fn join(readers: (pipe::Receiver, pipe::Receiver), writers: [OwnedFd; 2]) -> Self {
        Self {
            out: readers.0,
            err: readers.1,
            writers,
        }
    }

    /// Reads what is left in both pipes, stdout first, with plain reads (the runtime may not
    /// have seen the last writes yet) until each is empty, giving it to `out` and `err`.
    /// Once no process but the engine can write to them, the pipes are then empty.
    pub(crate) fn drain(&self, mut out: impl FnMut(&[u8]), mut err: impl FnMut(&[u8])) {
        let mut buf = [0u8; 8192];
        for (r, f) in [
            (&self.out, &mut out as &mut dyn FnMut(&[u8])),
            (&self.err, &mut err),
        ] {
            // Non-blocking: ends at EAGAIN (empty), or 0 (no writer at all).
            loop {
                match nix::unistd::read(r, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => f(&buf[..n]),
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => break,
                }
            }
        }
    }
}

/// A started process: its pid, a pidfd to wait on, and the read ends of its stdout and
/// stderr (unless it writes to the engine's [`Pipes`]). Dropped before it was waited for, it is reaped in the background.
#[derive(Debug)]
pub(crate) struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    /// Its standard output, until taken.
    pub stdout: Option<pipe::Receiver>,
    /// Its standard error, until taken.
    pub stderr: Option<pipe::Receiver>,
    /// What it read before executing its program, and why it could not (see
    /// [`Child::start_error`]).
    launch: Taken,
}

impl Child {
    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits until it exits and reaps it.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let Some(fd) = &self.pidfd else {
            return Err(io::Error::other("the process is not waited for"));
        };
        loop {
            let mut ready = fd.readable().await?;
            if let Some(status) = reap(self.pid, false)? {
                drop(ready);
                self.status = Some(status);
                self.pidfd = None;
                return Ok(status);
            }
            ready.clear_ready();
        }
    }

    /// Why it never ran its program, if a step before `execve` failed (it then exited with
    /// code 127): to be asked once it has exited ([`Child::wait`]), since the step runs
    /// after [`spawn`] returns. Asked earlier, it waits until the program is executed.
    pub(crate) fn start_error(&self) -> Option<io::Error> {
        self.launch.0.wait_released();
        // SAFETY: released: the child no longer reads or writes the launch, and this
        // `Child` holds it, so no other spawn does either.
        let args = unsafe { &(*self.launch.0.data.get()).args };
        (args.error != 0).then(|| step_error(args.step, args.error))
    }

    /// Reaps it if it has exited.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none()
            && let Some(status) = reap(self.pid, false)?
        {
            self.status = Some(status);
            self.pidfd = None;
        }
        Ok(self.status)
    }
}

/// Reaps our child `pid` if it has exited (or once it has, with `block`).
fn reap(pid: libc::pid_t, block: bool) -> io::Result<Option<ExitStatus>> {
    let mut raw = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: waits for our own child, which only its `Child` reaps.
        let r = unsafe { libc::waitpid(pid, &mut raw, flags) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(raw)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() || matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        // Still running (its tree guard is killing it): reap it once it is gone.
        let (Some(fd), Ok(rt)) = (self.pidfd.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let pid = self.pid;
        rt.spawn(async move {
            let _ = fd.readable().await;
            let _ = reap(pid, true);
        });
    }
}

/// Whether this kernel has pidfds (Linux 5.3 and later), asked once.
fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // SAFETY: a pidfd of this process, closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        if fd < 0 {
            return false;
        }
        // SAFETY: closes the descriptor just opened.
        unsafe { libc::close(fd as libc::c_int) };
        true
    })
}

/// Starts a process as `spec` says, its stdin `/dev/null` and its stdout and stderr pipes.
/// `Ok(None)` where this kernel has no pidfds (the caller then uses `tokio::process`).
///
/// It returns as soon as the child exists (with `clone3`): a step the child fails before
/// its program runs (its cgroup, directory, streams, `execve`) is known once it has exited,
/// from [`Child::start_error`]. What the engine can check itself (the program is found and
/// executable, the arguments hold no NUL) fails here.
pub(crate) fn spawn(spec: &Spec<'_>) -> io::Result<Option<Child>> {
    if !supported() {
        return Ok(None);
    }
    spawn_with(spec, Taken::new()).map(Some)
}

/// What [`spawn`] builds for the child, kept in its [`Launch`] so that a spawn allocates
/// nothing once the buffers have grown to the size it needs.
#[derive(Default)]
struct Scratch {
    /// Every string the child reads (the program, its arguments, the variables set, the
    /// working directory), NUL-terminated one after another.
    strings: Strings,
    /// The variables set: where each `NAME=VALUE` starts in `strings`, and its name's length.
    set: Vec<(usize, usize)>,
    /// The inherited variables kept.
    kept: Vec<*const libc::c_char>,
    /// Where each argument starts in `strings`.
    argv: Vec<usize>,
    /// argv then envp, each NULL-terminated.
    ptrs: Vec<*const libc::c_char>,
}

/// Everything a child reads between `clone` and `execve`, which it shares with the engine:
/// filled by the spawning thread while no child uses it, then read by one child (which
/// writes why it failed into `args`) until the kernel says it no longer does.
struct Launch {
    /// Non-zero from the clone until the child has executed its program or exited: the
    /// kernel clears it then and wakes a waiter (`CLONE_CHILD_CLEARTID`).
    busy: AtomicU32,
    data: UnsafeCell<LaunchData>,
}

#[derive(Default)]
struct LaunchData {
    scratch: Scratch,
    /// The child's stack.
    stack: Vec<u128>,
    args: ChildArgs,
    /// The environment `scratch.kept` points into, kept alive while the child reads it
    /// (a run's start forgets the one read before, see [`forget`]).
    inherited: Option<Arc<Inherited>>,
}

// SAFETY: `data` is used by one thread at a time: the holder of the `Taken` while `busy`
// is clear, the child while it is set (see `Taken` and `spawn_with`); its raw pointers
// point into its own buffers and its `inherited`.
unsafe impl Sync for Launch {}
// SAFETY: as above.
unsafe impl Send for Launch {}

impl Launch {
    /// Waits until no child uses it (at once, unless its child has not executed its
    /// program yet).
    fn wait_released(&self) {
        loop {
            let v = self.busy.load(Ordering::Acquire);
            if v == 0 {
                return;
            }
            // SAFETY: waits on our own word while it holds `v`; spurious returns loop.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.busy.as_ptr(),
                    libc::FUTEX_WAIT,
                    v,
                    std::ptr::null::<libc::timespec>(),
                );
            }
        }
    }
}

/// Launches no child uses and no [`Taken`] holds. Launches are never freed: a child may
/// still read one whose spawn was dropped (until it executes its program), and there are
/// only as many as processes were ever starting at once.
static LAUNCHES: Mutex<Vec<&'static Launch>> = Mutex::new(Vec::new());

/// A [`Launch`] held by one spawn and then by its [`Child`]; back in the pool when dropped.
#[derive(Debug)]
struct Taken(&'static Launch);

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("busy", &self.busy)
            .finish_non_exhaustive()
    }
}

impl Taken {
    /// A launch no child uses any more (a new one if every launch is in use).
    fn new() -> Self {
        let mut pool = LAUNCHES.lock().unwrap_or_else(|p| p.into_inner());
        let free = pool
            .iter()
            .position(|l| l.busy.load(Ordering::Acquire) == 0);
        Self(match free {
            Some(at) => pool.swap_remove(at),
            None => Box::leak(Box::new(Launch {
                busy: AtomicU32::new(0),
                data: UnsafeCell::default(),
            })),
        })
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        LAUNCHES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self.0);
    }
}

fn spawn_with(spec: &Spec<'_>, launch: Taken) -> io::Result<Child> {
    let Some(first) = spec.argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no program"));
    };
    let data = launch.0.data.get();
    // SAFETY: no child uses the launch (`Taken::new`) and we hold it; this borrow ends
    // before the clone.
    let LaunchData {
        scratch,
        stack,
        args,
        inherited: keep_inherited,
    } = unsafe { &mut *data };
    let Scratch {
        strings,
        set,
        kept,
        argv,
        ptrs,
    } = scratch;
    strings.0.clear();
    set.clear();
    kept.clear();
    argv.clear();
    ptrs.clear();
    // The variables set, the last value of a name winning, as `NAME=VALUE`.
    let mut path = None;
    for (i, (k, v)) in spec.env.iter().enumerate() {
        if spec.env[i + 1..].iter().any(|(later, _)| later == k) {
            continue;
        }
        if *k == "PATH" {
            path = Some(*v);
        }
        set.push((strings.push(&[k.as_bytes(), b"=", v.as_bytes()])?, k.len()));
    }
    let inherited = keep_inherited.insert(inherited());
    for (var, &len) in inherited.vars.iter().zip(&inherited.name_len) {
        let bytes = var.as_bytes();
        let name = &bytes[..len];
        if spec.env_remove.iter().any(|r| r.as_bytes() == name)
            || set.iter().any(|&(at, n)| &strings.0[at..at + n] == name)
        {
            continue;
        }
        if path.is_none() && name == b"PATH" {
            path = Some(OsStr::from_bytes(&bytes[len + 1..]));
        }
        kept.push(var.as_ptr());
    }
    let program = resolve(first, path, spec.cwd, |p| strings.push(&[p.as_bytes()]))?;
    let cwd = strings.push(&[spec.cwd.as_os_str().as_bytes()])?;
    for a in spec.argv {
        argv.push(strings.push(&[a.as_bytes()])?);
    }
    // The pointers, taken now that `strings` is complete.
    let base = strings.0.as_ptr().cast::<libc::c_char>();
    // SAFETY: each offset is the start of a NUL-terminated string inside `strings`, which
    // is not changed again while the pointers are used.
    let at = |off: usize| unsafe { base.add(off) };
    ptrs.extend(argv.iter().map(|&o| at(o)));
    ptrs.push(std::ptr::null());
    let envp_at = ptrs.len();
    ptrs.extend_from_slice(kept);
    ptrs.extend(set.iter().map(|&(o, _)| at(o)));
    ptrs.push(std::ptr::null());

    // The engine's pipes, or new ones whose write ends are the child's alone.
    let (fresh, writers) = match spec.pipes {
        Some(pipes) => {
            let [out_w, err_w] = &pipes.writers;
            (None, [out_w.as_raw_fd(), err_w.as_raw_fd()])
        }
        None => {
            let (out_r, out_w) = pipe_pair()?;
            let (err_r, err_w) = pipe_pair()?;
            let fds = [out_w.as_raw_fd(), err_w.as_raw_fd()];
            (Some((out_r, err_r, out_w, err_w)), fds)
        }
    };
    let stdin = dev_null()?;
    *args = ChildArgs {
        program: at(program),
        argv: ptrs.as_ptr(),
        envp: ptrs[envp_at..].as_ptr(),
        cwd: at(cwd),
        cgroup_procs: spec.cgroup_procs.unwrap_or(-1),
        cgroup_dir: spec.cgroup_procs.and(spec.cgroup_dir).unwrap_or(-1),
        fds: [stdin, writers[0], writers[1]],
        error: 0,
        step: 0,
        handlers_cleared: false,
        #[cfg(test)]
        hold: tests::HOLD_NEXT.with(|h| h.replace(false)),
    };
    if stack.is_empty() {
        stack.resize(STACK / 16, 0);
    }
    let (pid, pidfd) = clone_child(launch.0)?;
    // The child has its own copies of the descriptors: new pipes' write ends are its own.
    let readers = fresh.map(|(out_r, err_r, out_w, err_w)| {
        drop((out_w, err_w));
        (out_r, err_r)
    });
    let registered = watch(pid, pidfd, readers, launch);
    if registered.is_err() {
        // Not watched, so not kept: it goes before it could leave anything behind (its
        // launch is back in the pool, reused once the kernel has released it).
        // SAFETY: signals and reaps our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = reap(pid, true);
    }
    registered
}

/// Why a child exited without running its program: `errno` of the step that failed.
fn step_error(step: u32, errno: i32) -> io::Error {
    let e = io::Error::from_raw_os_error(errno);
    match step {
        STEP_CGROUP => io::Error::new(e.kind(), format!("cannot enter its cgroup: {e}")),
        STEP_CWD => io::Error::new(e.kind(), format!("cannot change directory: {e}")),
        STEP_PGID => io::Error::new(e.kind(), format!("cannot make its process group: {e}")),
        STEP_STDIO => io::Error::new(e.kind(), format!("cannot set up its streams: {e}")),
        _ => e,
    }
}

/// NUL-terminated strings one after another in one buffer.
#[derive(Default)]
struct Strings(Vec<u8>);

impl Strings {
    /// Appends the concatenation of `parts` and a NUL; returns where it starts. A NUL in
    /// a part is an error.
    fn push(&mut self, parts: &[&[u8]]) -> io::Result<usize> {
        let at = self.0.len();
        for part in parts {
            if part.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a NUL byte in an argument or variable",
                ));
            }
            self.0.extend_from_slice(part);
        }
        self.0.push(0);
        Ok(at)
    }
}

/// Registers a started child's pidfd and new pipes' read ends with the runtime.
fn watch(
    pid: libc::pid_t,
    pidfd: OwnedFd,
    readers: Option<(OwnedFd, OwnedFd)>,
    launch: Taken,
) -> io::Result<Child> {
    // SAFETY: the pidfd is owned by the `AsyncFd` and stays open as long as it does.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let (stdout, stderr) = match readers {
        Some((out, err)) => (
            Some(pipe::Receiver::from_owned_fd_unchecked(out)?),
            Some(pipe::Receiver::from_owned_fd_unchecked(err)?),
        ),
        None => (None, None),
    };
    Ok(Child {
        pid,
        pidfd: Some(pidfd),
        status: None,
        stdout,
        stderr,
        launch,
    })
}

/// A pipe whose read end is non-blocking (for tokio) and whose write end is blocking (for
/// the child); both close on exec, the child's copies are made by `dup2`.
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Never 0, 1 or 2, which the child's `dup2`s overwrite.
    let (r, w) = (above_stdio(r)?, above_stdio(w)?);
    // SAFETY: sets a flag on a descriptor we own.
    if unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r, w))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicates a descriptor we own to a new one (>= 3) we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// `/dev/null`, opened once per process.
fn dev_null() -> io::Result<RawFd> {
    static NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let f = std::fs::File::options().read(true).open("/dev/null")?;
    let fd = above_stdio(OwnedFd::from(f))?;
    Ok(NULL.get_or_init(|| fd).as_raw_fd())
}

/// This process's environment as `NAME=VALUE` strings, read once per run (see [`forget`]).
static INHERITED: Mutex<Option<Arc<Inherited>>> = Mutex::new(None);

/// This process's environment.
struct Inherited {
    /// `NAME=VALUE`.
    vars: Vec<CString>,
    /// The length of each name.
    name_len: Vec<usize>,
}

fn inherited() -> Arc<Inherited> {
    INHERITED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(|| {
            let mut vars = Vec::new();
            let mut name_len = Vec::new();
            for (k, v) in std::env::vars_os() {
                let len = k.len();
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                if let Ok(kv) = CString::new(kv) {
                    vars.push(kv);
                    name_len.push(len);
                }
            }
            Arc::new(Inherited { vars, name_len })
        })
        .clone()
}

/// Programs found in `PATH`, by `PATH` and name, until [`forget`].
type Found = HashMap<OsString, HashMap<OsString, PathBuf>>;
static FOUND: Mutex<Option<Found>> = Mutex::new(None);

/// Forgets what was read for earlier runs: where programs are in `PATH` and this process's
/// environment. A run starts with this, so it sees the environment and the programs as they
/// are when it starts (a program installed during a run is found by the next one, as a
/// shell's command hash would).
pub(crate) fn forget() {
    *FOUND.lock().unwrap_or_else(|p| p.into_inner()) = None;
    *INHERITED.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Finds where the program `name` is and gives it to `found`: itself when it holds a `/`
/// (relative to the working directory the child gets), else the first executable file of
/// that name in `path` (the default search path without one), as `execvp` would find it.
fn resolve<T>(
    name: &OsStr,
    path: Option<&OsStr>,
    cwd: &Path,
    found: impl FnOnce(&OsStr) -> io::Result<T>,
) -> io::Result<T> {
    if name.as_bytes().contains(&b'/') {
        return found(name);
    }
    if name.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let path = path.unwrap_or(OsStr::new("/bin:/usr/bin"));
    // Relative directories depend on the working directory: those lookups are not kept.
    let keep = path
        .as_bytes()
        .split(|b| *b == b':')
        .all(|d| d.first() == Some(&b'/'));
    if keep {
        let cache = FOUND.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = cache
            .as_ref()
            .and_then(|m| m.get(path))
            .and_then(|m| m.get(name))
        {
            return found(known.as_os_str());
        }
    }
    let mut denied = false;
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            cwd.to_owned()
        } else {
            cwd.join(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        if nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_err() {
            denied = true;
            continue;
        }
        let result = found(candidate.as_os_str());
        if keep {
            FOUND
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(HashMap::new)
                .entry(path.to_owned())
                .or_default()
                .insert(name.to_owned(), candidate);
        }
        return result;
    }
    Err(io::Error::from_raw_os_error(if denied {
        libc::EACCES
    } else {
        libc::ENOENT
    }))
}

const STEP_CGROUP: u32 = 1;
const STEP_CWD: u32 = 2;
const STEP_PGID: u32 = 3;
const STEP_STDIO: u32 = 4;
const STEP_EXEC: u32 = 5;

/// What the child reads, and where it writes why it failed: in its [`Launch`].
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    /// Written by the child to enter its cgroup (-1: none, or started in it).
    cgroup_procs: RawFd,
    /// The cgroup `clone3` starts the child in, where it can (-1: none).
    cgroup_dir: RawFd,
    /// What becomes its stdin, stdout and stderr.
    fds: [RawFd; 3],
    /// The errno of the step that failed (0: it executed the program).
    error: i32,
    step: u32,
    /// Started with `CLONE_CLEAR_SIGHAND`: no handler of the engine's is left in it.
    handlers_cleared: bool,
    /// Waits for [`tests::RELEASE`] before it executes its program.
    #[cfg(test)]
    hold: bool,
}

impl Default for ChildArgs {
    fn default() -> Self {
        Self {
            program: std::ptr::null(),
            argv: std::ptr::null(),
            envp: std::ptr::null(),
            cwd: std::ptr::null(),
            cgroup_procs: -1,
            cgroup_dir: -1,
            fds: [-1; 3],
            error: 0,
            step: 0,
            handlers_cleared: false,
            #[cfg(test)]
            hold: false,
        }
    }
}

/// The size of a child's stack.
const STACK: usize = 32 * 1024;

/// Clones the child of `launch`, filled by [`spawn_with`]; returns its pid and pidfd.
fn clone_child(launch: &'static Launch) -> io::Result<(libc::pid_t, OwnedFd)> {
    let data = launch.data.get();
    // SAFETY: raw pointers into the launch, which nothing else uses until `busy` is clear
    // again; no reference to its data is held across the clone.
    let (args, stack) = unsafe {
        (
            std::ptr::addr_of_mut!((*data).args),
            (*data).stack.as_mut_ptr_range(),
        )
    };
    // The stack grows down from its (16-byte aligned) end.
    let top = stack.end.cast::<libc::c_void>();
    let busy = launch.busy.as_ptr();
    launch.busy.store(1, Ordering::Release);
    let mut pidfd: libc::c_int = -1;
    // SAFETY: the child shares our memory and runs `child` on its own stack with every
    // signal blocked (no handler of ours may run in it), reading only the launch, which
    // stays as it is until the kernel clears `busy` (CLONE_CHILD_CLEARTID) when the child
    // executes its program or exits.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = match clone3(args, stack, busy, &mut pidfd) {
            Ok(pid) => Ok(pid),
            Err(Clone3::Failed(e)) => Err(e),
            Err(Clone3::Unsupported) => {
                // This thread waits (CLONE_VFORK) until the child executes or exits.
                (*args).handlers_cleared = false;
                let r = libc::clone(
                    child,
                    top,
                    libc::CLONE_VM
                        | libc::CLONE_VFORK
                        | libc::CLONE_PIDFD
                        | libc::CLONE_CHILD_CLEARTID
                        | libc::SIGCHLD,
                    args.cast(),
                    &mut pidfd as *mut libc::c_int,
                    std::ptr::null_mut::<libc::c_void>(),
                    busy,
                );
                if r < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            }
        };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        pid
    };
    let pid = match pid {
        Ok(pid) => pid,
        Err(e) => {
            // No child: the launch is free.
            launch.busy.store(0, Ordering::Release);
            return Err(e);
        }
    };
    if pidfd < 0 {
        // Not on a kernel with pidfds (checked before): wait for it here rather than
        // leave it unwatched.
        let _ = reap(pid, true);
        return Err(io::Error::other("clone gave no pidfd"));
    }
    // SAFETY: the kernel gave us this descriptor (CLONE_PIDFD).
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// Why [`clone3`] made no child.
#[derive(Debug)]
enum Clone3 {
    /// This kernel (before 5.5), architecture or seccomp filter has no `clone3` with
    /// `CLONE_CLEAR_SIGHAND`: `clone` is used, now and for the rest of the process.
    Unsupported,
    /// It failed (no memory, too many processes...).
    Failed(io::Error),
}

/// Whether `clone3` was found missing once.
static NO_CLONE3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `CLONE_CLEAR_SIGHAND` (Linux 5.5): the child starts with every handled signal back at
/// its default (ignored ones stay ignored), so it need not ask for each of the 64 signals
/// how it is handled, and reset those that are, before `execve`.
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the cgroup whose directory is
/// open as `cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Whether `clone3` was found unable to start a child in a cgroup once (a kernel before
/// 5.7): children then write themselves into theirs.
static NO_INTO_CGROUP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The kernel's `struct clone_args`, as far as `CLONE_ARGS_SIZE_VER2` (`cgroup`); passed
/// with the size of the first eight fields (`CLONE_ARGS_SIZE_VER0`) unless `cgroup` is
/// used, so kernels before 5.7 take it as before.
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_ARGS_SIZE_VER0`: the fields up to `tls`.
const CLONE_ARGS_SIZE_VER0: usize = 64;

/// Starts `child(args)` on `stack` with `clone3(CLONE_VM | CLONE_PIDFD |
/// CLONE_CHILD_CLEARTID | CLONE_CLEAR_SIGHAND)`, returning as soon as the child exists;
/// the kernel clears `busy` once the child has executed its program or exited.
///
/// # Safety
/// As for `clone` in [`clone_child`]: every signal blocked; `args`, what it points to and
/// `stack` unchanged and used by nothing else until `busy` is clear.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(
    args: *mut ChildArgs,
    stack: std::ops::Range<*mut u128>,
    busy: *mut u32,
    pidfd: &mut libc::c_int,
) -> Result<libc::pid_t, Clone3> {
    #[cfg(test)]
    if tests::FORCE_CLONE.get() {
        return Err(Clone3::Unsupported);
    }
    if NO_CLONE3.load(Ordering::Relaxed) {
        return Err(Clone3::Unsupported);
    }
    // SAFETY: the caller's launch, not yet shared with a child.
    let (cgroup_dir, cgroup_procs) = unsafe {
        (*args).handlers_cleared = true;
        ((*args).cgroup_dir, (*args).cgroup_procs)
    };
    #[cfg(test)]
    let forced_out = tests::FORCE_NO_INTO_CGROUP.get();
    #[cfg(not(test))]
    let forced_out = false;
    let into_cgroup = cgroup_dir >= 0 && !forced_out && !NO_INTO_CGROUP.load(Ordering::Relaxed);
    if into_cgroup {
        // Started in its cgroup: the child does not write itself into it.
        // SAFETY: as above.
        unsafe { (*args).cgroup_procs = -1 };
        // SAFETY: the caller's guarantees, passed on.
        match unsafe { clone3_with(args, stack.clone(), busy, pidfd, Some(cgroup_dir)) } {
            Ok(pid) => return Ok(pid),
            Err(errno) => {
                // A kernel before 5.7 (the larger arguments or the flag unknown): never
                // again. Otherwise (the cgroup refuses it, or no process can be made) the
                // child tries as before, and says why it cannot enter its cgroup.
                if matches!(
                    errno,
                    libc::E2BIG | libc::EINVAL | libc::ENOSYS | libc::EPERM
                ) {
                    NO_INTO_CGROUP.store(true, Ordering::Relaxed);
                }
                // SAFETY: as above (no child shares the launch: none was made).
                unsafe { (*args).cgroup_procs = cgroup_procs };
            }
        }
    }
    // SAFETY: the caller's guarantees, passed on.
    match unsafe { clone3_with(args, stack, busy, pidfd, None) } {
        Ok(pid) => Ok(pid),
        Err(libc::ENOSYS | libc::EINVAL | libc::EPERM) => {
            NO_CLONE3.store(true, Ordering::Relaxed);
            Err(Clone3::Unsupported)
        }
        Err(errno) => Err(Clone3::Failed(io::Error::from_raw_os_error(errno))),
    }
}

/// One `clone3` system call for [`clone3`] (started in the cgroup whose directory is open
/// as `cgroup`, when given); the child's pid, or the errno.
///
/// # Safety
/// As for [`clone3`].
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_with(
    args: *mut ChildArgs,
    stack: std::ops::Range<*mut u128>,
    busy: *mut u32,
    pidfd: &mut libc::c_int,
    cgroup: Option<RawFd>,
) -> Result<libc::pid_t, i32> {
    let mut cl = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_PIDFD | libc::CLONE_CHILD_CLEARTID) as u64
            | CLONE_CLEAR_SIGHAND
            | if cgroup.is_some() {
                CLONE_INTO_CGROUP
            } else {
                0
            },
        pidfd: std::ptr::from_mut(pidfd) as u64,
        child_tid: busy as u64,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.start as u64,
        stack_size: (stack.end as u64) - (stack.start as u64),
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
    };
    let size = match cgroup {
        Some(_) => std::mem::size_of::<CloneArgs>(),
        None => CLONE_ARGS_SIZE_VER0,
    };
    let arg = args.cast::<libc::c_void>();
    let ret: i64;
    // SAFETY: the system call returns twice: in this thread with the child's pid (or
    // -errno), and in the child, on its own (16-byte aligned) stack with 0, where it calls
    // `child_entry(arg)`, which never returns, without touching this thread's stack (the
    // child has copies of the registers). `syscall` clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, {arg}",
            "call {entry}",
            "ud2",
            "2:",
            arg = in(reg) arg,
            entry = sym child_entry,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") std::ptr::from_mut(&mut cl),
            in("rsi") size,
            out("rcx") _,
            out("r11") _,
        );
    }
    if ret >= 0 {
        Ok(ret as libc::pid_t)
    } else {
        Err(-ret as i32)
    }
}

/// Asks once per process whether a child that `clone3` starts in a cgroup
/// (`CLONE_INTO_CGROUP`) lives, with a child that exits at once, started in the empty
/// cgroup open as `dir`; if it does not, children write themselves into their cgroups, as
/// on kernels before 5.7. Some kernels kill such a child as it starts when the cgroup's
/// count of `cgroup.kill` writes differs from that of the engine's own cgroup (a cgroup
/// orch killed is therefore never used again, see `crate::cgroup`): the engine's cgroup
/// may have such a count.
pub(crate) fn probe_into_cgroup(dir: RawFd) {
    static PROBED: OnceLock<()> = OnceLock::new();
    PROBED.get_or_init(|| {
        if !into_cgroup_lives(dir) {
            tracing::debug!("children started in a cgroup are killed: not used");
            NO_INTO_CGROUP.store(true, Ordering::Relaxed);
        }
    });
}

/// Whether a child started in the cgroup open as `dir` runs and exits as it should (true
/// also where `clone3` cannot start one there: that is found at the first spawn).
#[cfg(target_arch = "x86_64")]
fn into_cgroup_lives(dir: RawFd) -> bool {
    if NO_CLONE3.load(Ordering::Relaxed) || NO_INTO_CGROUP.load(Ordering::Relaxed) {
        return true;
    }
    // No program: the child exits as it starts.
    let mut args = ChildArgs::default();
    let mut stack = vec![0u128; 1024];
    let mut busy: u32 = 1;
    let mut pidfd: libc::c_int = -1;
    // SAFETY: as in `clone_child`: every signal blocked while the child starts; it reads
    // only `args` and uses only `stack`, both kept until it has exited (waited for below).
    let started = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let r = clone3_with(
            &mut args,
            stack.as_mut_ptr_range(),
            &mut busy,
            &mut pidfd,
            Some(dir),
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    };
    let Ok(pid) = started else {
        return true;
    };
    if pidfd >= 0 {
        // SAFETY: the kernel gave us this descriptor (CLONE_PIDFD); closed here.
        drop(unsafe { OwnedFd::from_raw_fd(pidfd) });
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let waited = loop {
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break r;
        }
    };
    drop(stack);
    waited != pid || !libc::WIFSIGNALED(status)
}

#[cfg(not(target_arch = "x86_64"))]
fn into_cgroup_lives(_: RawFd) -> bool {
    true
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3(
    _: *mut ChildArgs,
    _: std::ops::Range<*mut u128>,
    _: *mut u32,
    _: &mut libc::c_int,
) -> Result<libc::pid_t, Clone3> {
    Err(Clone3::Unsupported)
}

/// Where a child started by [`clone3`] begins.
#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(arg: *mut libc::c_void) -> ! {
    child(arg);
    // SAFETY: `child` ends in `execve` or `exit_group`; this is not reached.
    loop {
        // SAFETY: ends the child, which uses nothing of the engine's any more.
        unsafe { sys(libc::SYS_exit_group, [127, 0, 0, 0]) };
    }
}

/// A system call, returning `-errno` on failure. The child makes no call through the C
/// library: the thread whose memory it shares keeps running (with `clone3`), and the C
/// library would write `errno` into that thread's.
///
/// # Safety
/// As for the system call `n` with these arguments.
#[cfg(target_arch = "x86_64")]
unsafe fn sys(n: libc::c_long, a: [usize; 4]) -> isize {
    let ret: isize;
    // SAFETY: the caller's; `syscall` clobbers rcx and r11 and nothing else.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    ret
}

/// As on x86-64; here the child runs only under `CLONE_VFORK` (the engine's thread waits),
/// so the C library's `errno` is free to use.
///
/// # Safety
/// As for the system call `n` with these arguments.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn sys(n: libc::c_long, a: [usize; 4]) -> isize {
    // SAFETY: the caller's.
    unsafe {
        let r = libc::syscall(n, a[0], a[1], a[2], a[3]);
        if r < 0 {
            -(*libc::__errno_location() as isize)
        } else {
            r as isize
        }
    }
}

/// The child, between `clone` and `execve`: raw system calls only (no allocation, no lock,
/// no `errno`), since it shares the engine's memory.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // The kernel's `struct sigaction` (handler, flags, restorer, mask): all zero is the
    // default action.
    const DEFAULT: [u64; 4] = [0; 4];
    const SIGSET: usize = 8;
    // SAFETY: `arg` is the `ChildArgs` of the launch that is ours until we execute or
    // exit; each call is a system call on values it prepared.
    unsafe {
        let a = &mut *arg.cast::<ChildArgs>();
        if a.program.is_null() {
            // A probe (see `probe_into_cgroup`): it only has to start.
            sys(libc::SYS_exit_group, [0, 0, 0, 0]);
        }
        let fail = |a: &mut ChildArgs, step: u32, ret: isize| -> libc::c_int {
            a.error = if ret < 0 { -ret as i32 } else { libc::EIO };
            a.step = step;
            sys(libc::SYS_exit_group, [127, 0, 0, 0]);
            127
        };
        // No handler of the engine's may run here or survive into the program: handled
        // signals go back to their default (ignored ones stay ignored, as across exec).
        // SIGPIPE is ignored by Rust programs; the program gets the default.
        let dfl = DEFAULT.as_ptr() as usize;
        sys(
            libc::SYS_rt_sigaction,
            [libc::SIGPIPE as usize, dfl, 0, SIGSET],
        );
        // Without `CLONE_CLEAR_SIGHAND`, each handled signal is reset here.
        let signals = if a.handlers_cleared { 0 } else { 64 };
        for sig in 1..=signals {
            let mut old = [0u64; 4];
            if sig == libc::SIGKILL
                || sig == libc::SIGSTOP
                || sys(
                    libc::SYS_rt_sigaction,
                    [sig as usize, 0, old.as_mut_ptr() as usize, SIGSET],
                ) != 0
            {
                continue;
            }
            let handler = old[0] as libc::sighandler_t;
            if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                sys(libc::SYS_rt_sigaction, [sig as usize, dfl, 0, SIGSET]);
            }
        }
        if a.cgroup_procs >= 0 {
            let r = sys(
                libc::SYS_write,
                [a.cgroup_procs as usize, b"0".as_ptr() as usize, 1, 0],
            );
            if r != 1 {
                return fail(a, STEP_CGROUP, r);
            }
        }
        let r = sys(libc::SYS_setpgid, [0, 0, 0, 0]);
        if r != 0 {
            return fail(a, STEP_PGID, r);
        }
        let fds = a.fds;
        for (target, fd) in fds.into_iter().enumerate() {
            // `dup3` (every architecture has it): `fd` is never 0, 1 or 2 (see
            // `above_stdio`), so it is `dup2`.
            let r = sys(libc::SYS_dup3, [fd as usize, target, 0, 0]);
            if r < 0 {
                return fail(a, STEP_STDIO, r);
            }
        }
        let r = sys(libc::SYS_chdir, [a.cwd as usize, 0, 0, 0]);
        if r != 0 {
            return fail(a, STEP_CWD, r);
        }
        #[cfg(test)]
        while a.hold && tests::RELEASE.load(Ordering::Acquire) == 0 {
            sys(
                libc::SYS_futex,
                [
                    tests::RELEASE.as_ptr() as usize,
                    libc::FUTEX_WAIT as usize,
                    0,
                    0,
                ],
            );
        }
        let empty = 0u64;
        sys(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_SETMASK as usize,
                &empty as *const u64 as usize,
                0,
                SIGSET,
            ],
        );
        let r = sys(
            libc::SYS_execve,
            [a.program as usize, a.argv as usize, a.envp as usize, 0],
        );
        fail(a, STEP_EXEC, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt as _;

    thread_local! {
        /// The next child spawned on this thread waits for [`RELEASE`] before `execve`.
        pub(super) static HOLD_NEXT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// Spawns on this thread use `clone` (with `CLONE_VFORK`), as without `clone3`.
        pub(super) static FORCE_CLONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// Spawns on this thread do not use `CLONE_INTO_CGROUP`, as on kernels before 5.7.
        pub(super) static FORCE_NO_INTO_CGROUP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    /// Non-zero: held children go on.
    pub(super) static RELEASE: AtomicU32 = AtomicU32::new(0);

    async fn run(argv: &[&str], env: &[(&str, &str)], cwd: &Path) -> io::Result<(i32, String)> {
        let argv: Vec<&OsStr> = argv.iter().map(OsStr::new).collect();
        let env: Vec<(&OsStr, &OsStr)> = env
            .iter()
            .map(|(k, v)| (OsStr::new(k), OsStr::new(v)))
            .collect();
        let spec = Spec {
            argv: &argv,
            env_remove: &["HOME".to_owned()],
            env: &env,
            cwd,
            cgroup_procs: None,
            cgroup_dir: None,
            pipes: None,
        };
        let mut child = spawn(&spec)?.expect("a kernel with pidfds");
        let mut out = String::new();
        let mut stdout = child.stdout.take().expect("stdout");
        stdout.read_to_string(&mut out).await?;
        let status = child.wait().await?;
        if let Some(e) = child.start_error() {
            return Err(e);
        }
        Ok((status.code().unwrap_or(-1), out))
    }

    /// `cat /proc/self/cgroup` started in `cgroup` (its `cgroup.procs` given as `procs`):
    /// what it printed, or why it did not start.
    async fn cgroup_of_child(
        procs: RawFd,
        cgroup: &crate::cgroup::PhaseCgroup,
    ) -> io::Result<String> {
        let argv = [OsStr::new("cat"), OsStr::new("/proc/self/cgroup")];
        let spec = Spec {
            argv: &argv,
            env_remove: &[],
            env: &[],
            cwd: Path::new("/"),
            cgroup_procs: Some(procs),
            cgroup_dir: Some(cgroup.dir_fd()),
            pipes: None,
        };
        let mut child = spawn(&spec)?.expect("a kernel with pidfds");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .await?;
        child.wait().await?;
        match child.start_error() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    #[tokio::test]
    async fn a_child_starts_in_its_cgroup_and_writes_itself_in_only_where_clone3_cannot_start_it_there()
     {
        if crate::cgroup::own_cgroup().is_none() {
            eprintln!("SKIPPED: no writable cgroup v2 hierarchy here");
            return;
        }
        let run = crate::cgroup::RunCgroup::create(&format!("test-{:016x}", fastrand::u64(..)))
            .expect("run cgroup");
        let cgroup = run.attempt("p", 1).expect("attempt cgroup");
        let in_it = |out: &str| {
            let line = out
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("?")
                .to_owned();
            assert!(
                cgroup.dir().ends_with(line.trim_start_matches('/')),
                "{} is not in {}",
                line,
                cgroup.dir().display()
            );
        };
        // Its `cgroup.procs` as given, written by the child where it must enter by itself.
        let out = cgroup_of_child(cgroup.procs_fd(), &cgroup).await.unwrap();
        in_it(&out);
        FORCE_NO_INTO_CGROUP.set(true);
        let out = cgroup_of_child(cgroup.procs_fd(), &cgroup).await.unwrap();
        in_it(&out);
        FORCE_NO_INTO_CGROUP.set(false);
        // A `cgroup.procs` that cannot be written: only a child started in the cgroup runs,
        // since it has no need to write.
        let unwritable = std::fs::File::open("/dev/null").unwrap();
        let fd = unwritable.as_raw_fd();
        let out = cgroup_of_child(fd, &cgroup).await.unwrap();
        in_it(&out);
        for forced in [&FORCE_NO_INTO_CGROUP, &FORCE_CLONE] {
            forced.set(true);
            let e = cgroup_of_child(fd, &cgroup).await.unwrap_err();
            forced.set(false);
            assert!(e.to_string().starts_with("cannot enter its cgroup"), "{e}");
        }
        drop(cgroup);
        assert!(run.remove().await);
    }

    #[tokio::test]
    async fn a_process_gets_its_argv_env_directory_streams_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let (code, out) = run(
            &[
                "sh",
                "-c",
                "echo \"$A $B ${HOME:-removed}\"; pwd; \
                 test \"$(ps -o pgid= $$ | tr -d ' ')\" = $$ && echo own-group; \
                 grep -E '^Sig(Blk|Ign)' /proc/self/status; read x || echo stdin-empty; exit 3",
            ],
            &[("A", "1"), ("B", "2"), ("A", "last")],
            dir.path(),
        )
        .await
        .unwrap();
        assert_eq!(code, 3);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "last 2 removed");
        assert_eq!(
            Path::new(lines[1]).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
        assert_eq!(lines[2], "own-group");
        // No signal blocked, and SIGPIPE (bit 13) not ignored: the program's defaults.
        assert_eq!(lines[3], "SigBlk:\t0000000000000000");
        let ign = u64::from_str_radix(lines[4].trim_start_matches("SigIgn:\t"), 16).unwrap();
        assert_eq!(ign & (1 << (libc::SIGPIPE - 1)), 0, "{}", lines[4]);
        assert_eq!(lines.get(5), Some(&"stdin-empty"), "{out}");
    }

    #[tokio::test]
    async fn with_clone3_or_clone_a_program_starts_with_default_handlers_and_the_ignored_kept() {
        // SAFETY: one handler that does nothing, and one signal ignored, in this test process.
        unsafe {
            extern "C" fn nothing(_: libc::c_int) {}
            libc::signal(libc::SIGUSR1, nothing as *const () as libc::sighandler_t);
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        }
        let dir = tempfile::tempdir().unwrap();
        let script = "grep -E '^Sig(Blk|Ign|Cgt)' /proc/self/status";
        let mut seen = Vec::new();
        for fallback in [false, true] {
            FORCE_CLONE.set(fallback);
            let (code, out) = run(&["sh", "-c", script], &[], dir.path()).await.unwrap();
            assert_eq!(code, 0);
            seen.push(out);
        }
        FORCE_CLONE.set(false);
        assert_eq!(seen[0], seen[1], "the same with clone3 and with clone");
        let field = |name: &str| {
            let line = seen[0].lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.rsplit('\t').next().unwrap(), 16).unwrap()
        };
        let bit = |sig: libc::c_int| 1u64 << (sig - 1);
        assert_eq!(field("SigBlk:"), 0);
        // Ignored here, ignored there (as `nohup` expects); SIGPIPE at its default.
        assert_ne!(field("SigIgn:") & bit(libc::SIGUSR2), 0);
        assert_eq!(field("SigIgn:") & bit(libc::SIGPIPE), 0);
        assert_eq!(field("SigIgn:") & bit(libc::SIGUSR1), 0);
    }

    #[tokio::test]
    async fn spawn_returns_before_the_child_executes_and_a_launch_serves_one_child_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        // Where `clone3` is missing the engine waits for each `execve` (CLONE_VFORK), as
        // `posix_spawn` does: nothing to show.
        run(&["true"], &[], dir.path()).await.unwrap();
        if NO_CLONE3.load(Ordering::Relaxed) {
            return;
        }
        RELEASE.store(0, Ordering::Release);
        // Two children that wait before `execve`, each spawned on a thread of its own so a
        // spawn that waited for its child would be seen (and not hang the test).
        let rt = tokio::runtime::Handle::current();
        let path = dir.path().to_owned();
        let held = |word: &'static str| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (rt, path) = (rt.clone(), path.clone());
            std::thread::spawn(move || {
                let _rt = rt.enter();
                HOLD_NEXT.set(true);
                let argv = [OsStr::new("echo"), OsStr::new(word)];
                let spec = Spec {
                    argv: &argv,
                    env_remove: &[],
                    env: &[],
                    cwd: &path,
                    cgroup_procs: None,
                    cgroup_dir: None,
                    pipes: None,
                };
                let _ = tx.send(spawn(&spec).map(|c| c.expect("a kernel with pidfds")));
            });
            rx
        };
        let release = || {
            RELEASE.store(1, Ordering::Release);
            // SAFETY: wakes whoever waits on the word.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    RELEASE.as_ptr(),
                    libc::FUTEX_WAKE,
                    i32::MAX,
                )
            };
        };
        let first = held("first").recv_timeout(Duration::from_secs(10));
        let second = first
            .as_ref()
            .ok()
            .map(|_| held("second").recv_timeout(Duration::from_secs(10)));
        release();
        let mut first = first
            .expect("spawn returned while its child waited before executing its program")
            .unwrap();
        let mut second = second
            .unwrap()
            .expect("the second spawn returned too")
            .unwrap();
        assert!(
            !std::ptr::eq(first.launch.0, second.launch.0),
            "a launch in use by a child that has not executed its program was given to another"
        );
        for (child, word) in [(&mut first, "first\n"), (&mut second, "second\n")] {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .await
                .unwrap();
            assert!(child.wait().await.unwrap().success());
            assert!(child.start_error().is_none());
            assert_eq!(out, word);
        }
    }

    #[tokio::test]
    async fn what_cannot_start_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let e = run(&["no-such-program-here"], &[], dir.path())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let e = run(&["true"], &[], &dir.path().join("gone"))
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("cannot change directory: "),
            "{e}"
        );
        // A program found in the child's own PATH.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("hello"), "#!/bin/sh\necho hi\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("hello"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let path = format!("{}:/usr/bin:/bin", bin.display());
        let (code, out) = run(&["hello"], &[("PATH", &path)], dir.path())
            .await
            .unwrap();
        assert_eq!((code, out.as_str()), (0, "hi\n"));
    }

    #[tokio::test]
    async fn pipes_serve_one_process_after_another_each_reading_only_its_own_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let pipes = Pipes::new().unwrap();
        let mut seen = Vec::new();
        // More than a pipe holds (64 KiB), so it is read while it runs, then what is left.
        let scripts = [
            "head -c 200000 /dev/zero | tr '\\0' a; printf first-err >&2",
            "printf second; printf second-err >&2",
        ];
        for script in scripts {
            let argv = [OsStr::new("sh"), OsStr::new("-c"), OsStr::new(script)];
            let spec = Spec {
                argv: &argv,
                env_remove: &[],
                env: &[],
                cwd: dir.path(),
                cgroup_procs: None,
                cgroup_dir: None,
                pipes: Some(&pipes),
            };
            let mut child = spawn(&spec).unwrap().expect("a kernel with pidfds");
            assert!(child.stdout.is_none() && child.stderr.is_none());
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let mut buf = vec![0u8; 65536];
            // Read while it runs: the engine holds the write end, so no end of stream comes.
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status.unwrap(),
                    n = pipes.out.readable() => {
                        n.unwrap();
                        if let Ok(n) = pipes.out.try_read(&mut buf) {
                            out.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            };
            assert!(status.success());
            pipes.drain(|b| out.extend_from_slice(b), |b| err.extend_from_slice(b));
            seen.push((out, err));
        }
        assert_eq!(seen[0].0.len(), 200_000);
        assert!(seen[0].0.iter().all(|b| *b == b'a'));
        assert_eq!(seen[0].1, b"first-err");
        assert_eq!(seen[1], (b"second".to_vec(), b"second-err".to_vec()));
    }

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        use std::os::unix::fs::PermissionsExt;
        // Not executable in `a`, a directory of that name too: `b`'s is the one.
        std::fs::write(a.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir(a.join("sub")).unwrap();
        std::fs::write(b.join("tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(b.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = OsString::from(format!("{}:{}", a.display(), b.display()));
        let resolve = |name: &str, path: &OsStr| {
            resolve(OsStr::new(name), Some(path), dir.path(), |p| {
                Ok(PathBuf::from(p))
            })
        };
        let found = resolve("tool", &path).unwrap();
        assert_eq!(found, b.join("tool"));
        // With a slash it is taken as it is; a missing one is ENOENT.
        assert_eq!(resolve("./x", &path).unwrap(), PathBuf::from("./x"));
        let e = resolve("nothing-here", &path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        // Relative directories are taken from the child's working directory.
        let rel = OsString::from("b");
        assert_eq!(resolve("tool", &rel).unwrap(), b.join("tool"));
    }
}
