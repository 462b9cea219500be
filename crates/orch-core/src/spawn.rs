//! Starting a phase's process at the cost of `posix_spawn`, in the attempt's cgroup.
//!
//! `std::process::Command` forks when it is given a `pre_exec` hook (the only way to enter
//! a cgroup before the program runs), and a fork copies the page tables of the whole
//! engine and makes every page it writes afterwards fault once: the larger the run, the
//! dearer each process. Here the child is made the way `posix_spawn` makes it:
//! `clone(CLONE_VM | CLONE_VFORK)` on a small stack of its own, sharing the engine's memory
//! until it calls `execve`, while the calling thread waits. Between the two it makes only
//! system calls: it resets the signal handlers the engine installed (on x86-64 with Linux
//! 5.5 and later, the kernel does as it clones, `clone3` with `CLONE_CLEAR_SIGHAND`, which
//! spares the child a question per signal while the engine's thread waits; elsewhere the
//! child asks for each signal), enters the attempt's
//! cgroup (one `write`), makes its own process group, sets up its standard streams and
//! working directory, and executes the program, whose path was looked up in `PATH` by the
//! engine (once per run and program, see [`forget`]). The child's exit is
//! followed through a pidfd (`CLONE_PIDFD`), so no `SIGCHLD` handler is involved.
//!
//! Where the kernel lacks pidfds (before Linux 5.3), [`spawn`] says so and the caller
//! starts the process with `tokio::process::Command` instead.

// Cloning a child that shares the engine's memory needs raw system calls; each use says
// why it is sound.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
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
    /// `cgroup.procs` of the cgroup to start in.
    pub cgroup_procs: Option<RawFd>,
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
pub(crate) fn spawn(spec: &Spec<'_>) -> io::Result<Option<Child>> {
    if !supported() {
        return Ok(None);
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => spawn_with(spec, &mut scratch),
        Err(_) => spawn_with(spec, &mut Scratch::default()),
    })
}

/// What [`spawn`] builds for the child, kept per thread so a spawn allocates nothing once
/// the buffers have grown to the size it needs.
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

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

fn spawn_with(spec: &Spec<'_>, scratch: &mut Scratch) -> io::Result<Option<Child>> {
    let Some(first) = spec.argv.first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no program"));
    };
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
    let inherited = inherited();
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
    let mut args = ChildArgs {
        program: at(program),
        argv: ptrs.as_ptr(),
        envp: ptrs[envp_at..].as_ptr(),
        cwd: at(cwd),
        cgroup_procs: spec.cgroup_procs.unwrap_or(-1),
        fds: [stdin, writers[0], writers[1]],
        error: 0,
        step: 0,
        handlers_cleared: false,
    };
    let (pid, pidfd) = clone_child(&mut args)?;
    // The child has executed the program or failed: new pipes' write ends are its own now.
    let readers = fresh.map(|(out_r, err_r, out_w, err_w)| {
        drop((out_w, err_w));
        (out_r, err_r)
    });
    if args.error != 0 {
        // It exited (127) without running anything: reap it and say why.
        let _ = reap(pid, true);
        let e = io::Error::from_raw_os_error(args.error);
        return Err(match args.step {
            STEP_CGROUP => io::Error::new(e.kind(), format!("cannot enter its cgroup: {e}")),
            STEP_CWD => io::Error::new(e.kind(), format!("cannot change directory: {e}")),
            STEP_PGID => io::Error::new(e.kind(), format!("cannot make its process group: {e}")),
            STEP_STDIO => io::Error::new(e.kind(), format!("cannot set up its streams: {e}")),
            _ => e,
        });
    }
    let registered = watch(pid, pidfd, readers);
    if registered.is_err() {
        // Not watched, so not kept: it goes before it could leave anything behind.
        // SAFETY: signals and reaps our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = reap(pid, true);
    }
    registered.map(Some)
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

/// What the child reads, and where it writes why it failed: in memory it shares with the
/// engine's thread, which waits (`CLONE_VFORK`) until the child has executed or exited.
#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    cgroup_procs: RawFd,
    /// What becomes its stdin, stdout and stderr.
    fds: [RawFd; 3],
    /// The errno of the step that failed (0: it executed the program).
    error: i32,
    step: u32,
    /// Started with `CLONE_CLEAR_SIGHAND`: no handler of the engine's is left in it.
    handlers_cleared: bool,
}

/// The child's stack: one per thread, since the thread that clones waits until the child
/// no longer uses it.
const STACK: usize = 32 * 1024;

thread_local! {
    static CHILD_STACK: std::cell::RefCell<Vec<u128>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Clones the child; returns its pid and pidfd.
fn clone_child(args: &mut ChildArgs) -> io::Result<(libc::pid_t, OwnedFd)> {
    CHILD_STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        if stack.is_empty() {
            stack.resize(STACK / 16, 0);
        }
        // The stack grows down from its (16-byte aligned) end.
        let top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();
        let mut pidfd: libc::c_int = -1;
        // SAFETY: the child shares our memory and runs `child` on its own stack with
        // every signal blocked (no handler of ours may run in it), while this thread
        // waits (CLONE_VFORK); `args` and everything it points to outlive the call.
        let pid = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            let pid = match clone3(args, stack.as_mut_ptr_range(), &mut pidfd) {
                Ok(pid) => Ok(pid),
                Err(Clone3::Failed(e)) => Err(e),
                Err(Clone3::Unsupported) => {
                    args.handlers_cleared = false;
                    let r = libc::clone(
                        child,
                        top,
                        libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
                        std::ptr::from_mut(args).cast(),
                        &mut pidfd as *mut libc::c_int,
                    );
                    if r < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(r)
                    }
                }
            };
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            pid?
        };
        if pidfd < 0 {
            // Not on a kernel with pidfds (checked before): wait for it here rather than
            // leave it unwatched.
            let _ = reap(pid, true);
            return Err(io::Error::other("clone gave no pidfd"));
        }
        // SAFETY: the kernel gave us this descriptor (CLONE_PIDFD).
        Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
    })
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
/// how it is handled, and reset those that are, before `execve` (the engine's thread waits
/// all that time).
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// The kernel's `struct clone_args`, as far as `CLONE_ARGS_SIZE_VER0`.
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
}

/// Starts `child(args)` on `stack` with `clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD |
/// CLONE_CLEAR_SIGHAND)`, returning once it has executed its program or exited.
///
/// # Safety
/// As for `clone` in [`clone_child`]: every signal blocked, `args` and what it points to
/// valid until the call returns, `stack` this thread's and unused by anything else.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(
    args: &mut ChildArgs,
    stack: std::ops::Range<*mut u128>,
    pidfd: &mut libc::c_int,
) -> Result<libc::pid_t, Clone3> {
    use std::sync::atomic::Ordering;
    if NO_CLONE3.load(Ordering::Relaxed) {
        return Err(Clone3::Unsupported);
    }
    args.handlers_cleared = true;
    let mut cl = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD) as u64
            | CLONE_CLEAR_SIGHAND,
        pidfd: std::ptr::from_mut(pidfd) as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.start as u64,
        stack_size: (stack.end as u64) - (stack.start as u64),
        tls: 0,
    };
    let arg = std::ptr::from_mut(args).cast::<libc::c_void>();
    let ret: i64;
    // SAFETY: the system call returns twice: in this thread with the child's pid (or
    // -errno), and in the child, on its own (16-byte aligned) stack with 0, where it calls
    // `child_entry(arg)`, which never returns, without touching this thread's stack or
    // registers (the vfork'd child has copies of them). `syscall` clobbers rcx and r11.
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
            in("rsi") std::mem::size_of::<CloneArgs>(),
            out("rcx") _,
            out("r11") _,
        );
    }
    if ret >= 0 {
        return Ok(ret as libc::pid_t);
    }
    let errno = -ret as i32;
    if matches!(errno, libc::ENOSYS | libc::EINVAL | libc::EPERM) {
        NO_CLONE3.store(true, Ordering::Relaxed);
        return Err(Clone3::Unsupported);
    }
    Err(Clone3::Failed(io::Error::from_raw_os_error(errno)))
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3(
    _: &mut ChildArgs,
    _: std::ops::Range<*mut u128>,
    _: &mut libc::c_int,
) -> Result<libc::pid_t, Clone3> {
    Err(Clone3::Unsupported)
}

/// Where a child started by [`clone3`] begins.
#[cfg(target_arch = "x86_64")]
extern "C" fn child_entry(arg: *mut libc::c_void) -> ! {
    child(arg);
    // SAFETY: `child` ends in `execve` or `_exit`; this is not reached.
    unsafe { libc::_exit(127) }
}

/// The child, between `clone` and `execve`: system calls only (no allocation, no lock, no
/// `errno` of ours), since it shares the engine's memory.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` the waiting parent passed; each call is a plain
    // system call on values it prepared.
    unsafe {
        let a = &mut *arg.cast::<ChildArgs>();
        // No handler of the engine's may run here or survive into the program: handled
        // signals go back to their default (ignored ones stay ignored, as across exec).
        let mut sa: libc::sigaction = std::mem::zeroed();
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        // SIGPIPE is ignored by Rust programs; the program gets the default.
        libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut());
        // Without `CLONE_CLEAR_SIGHAND`, each handled signal is reset here.
        let signals = if a.handlers_cleared { 0 } else { 64 };
        for sig in 1..=signals {
            if sig == libc::SIGKILL
                || sig == libc::SIGSTOP
                || libc::sigaction(sig, std::ptr::null(), &mut sa) != 0
            {
                continue;
            }
            if sa.sa_sigaction != libc::SIG_DFL && sa.sa_sigaction != libc::SIG_IGN {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let fail = |a: &mut ChildArgs, step: u32| -> libc::c_int {
            a.error = *libc::__errno_location();
            if a.error == 0 {
                a.error = libc::EIO;
            }
            a.step = step;
            libc::_exit(127)
        };
        if a.cgroup_procs >= 0 && libc::write(a.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            return fail(a, STEP_CGROUP);
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(a, STEP_PGID);
        }
        let fds = a.fds;
        for (target, fd) in fds.into_iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                return fail(a, STEP_STDIO);
            }
        }
        if libc::chdir(a.cwd) != 0 {
            return fail(a, STEP_CWD);
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty,
            std::ptr::null_mut::<libc::sigset_t>(),
            8usize,
        );
        libc::execve(a.program, a.argv, a.envp);
        fail(a, STEP_EXEC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

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
            pipes: None,
        };
        let mut child = spawn(&spec)?.expect("a kernel with pidfds");
        let mut out = String::new();
        let mut stdout = child.stdout.take().expect("stdout");
        stdout.read_to_string(&mut out).await?;
        let status = child.wait().await?;
        Ok((status.code().unwrap_or(-1), out))
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
        assert_eq!(lines[5], "stdin-empty");
    }

    #[tokio::test]
    async fn with_clone3_or_clone_a_program_starts_with_default_handlers_and_the_ignored_kept() {
        use std::sync::atomic::Ordering;
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
            NO_CLONE3.store(fallback, Ordering::Relaxed);
            let (code, out) = run(&["sh", "-c", script], &[], dir.path()).await.unwrap();
            assert_eq!(code, 0);
            seen.push(out);
        }
        NO_CLONE3.store(false, Ordering::Relaxed);
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
