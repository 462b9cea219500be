//! The watchdog: a small process that ends a run's processes if the engine's process dies
//! without doing it (SIGKILL, a crash, an abort).
//!
//! One watchdog serves every run of a process. It is forked once, as early as possible
//! ([`start_early`], which the `orch` binary calls first thing, while its process is small
//! and has a single thread), else by the process's first run. A fork made later, once the
//! engine holds a large pipeline, copies more page tables, and leaves the engine's memory
//! shared copy-on-write with the watchdog: every page the engine writes afterwards faults.
//!
//! The engine holds one end of a control socket (`SOCK_SEQPACKET`: a message is read whole,
//! never split nor merged with another) whose other end only the watchdog holds. Each run
//! ([`Watchdog::start`]) makes a socket pair of its own and sends one end to the watchdog
//! with the run's mark (`ORCH_RUN_ID=RUN`) and cgroup; the watchdog answers once it watches
//! the run. When the run ends normally ([`Watchdog::finish`]) the engine says so and the
//! watchdog forgets the run; when the run's guard is dropped without `finish`, the watchdog
//! kills the run's processes and answers once they are gone (the drop waits for it). When
//! the engine's process dies the kernel closes its ends of the sockets: for every run it
//! still watches, the watchdog kills the run's cgroup (`cgroup.kill`) and every process
//! marked `ORCH_RUN_ID=RUN` and removes the run's cgroups; then it exits. Within
//! milliseconds.
//!
//! The watchdog starts its own session and ignores terminal signals (so a Ctrl-C or a kill
//! of the whole process group reaches it no sooner than the engine), closes every
//! descriptor it inherited (it holds neither the workspace lock nor the caller's pipes), and
//! makes only async-signal-safe system calls on fixed-size buffers: it may be forked from a
//! multi-threaded process. It watches at most [`MAX_RUNS`] runs at once, with marks and
//! cgroup paths of bounded length; a run beyond those bounds, or one the process's watchdog
//! cannot be reached for, gets a watchdog of its own, forked for it alone (which a pipe
//! stops, as above).
//!
//! A watchdog found gone (killed by someone) is replaced by the next run that registers. A
//! process forked from the engine's (Python's `multiprocessing`) closes its copies of the
//! watchdog's sockets as it starts, so the watchdog still sees the engine's death, and forks
//! a watchdog of its own for its own runs.

// Forking, socket messages with descriptors and raw system calls for the forked child need
// `unsafe`; each use says why it is sound.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use nix::libc;

use crate::cgroup::raw;

/// How many runs the process's watchdog watches at once; a run beyond them gets a watchdog
/// of its own.
pub const MAX_RUNS: usize = 64;
/// The longest mark (`ORCH_RUN_ID=RUN`) the process's watchdog keeps.
const MAX_MARK: usize = 128;
/// The longest cgroup path the process's watchdog keeps.
const MAX_CGROUP: usize = 1024;
/// A registration: `REGISTER`, the mark's length and the cgroup's (two bytes each, little
/// endian, 0: no cgroup), the mark, the cgroup; with the run's socket attached.
const HEADER: usize = 5;
const MAX_FRAME: usize = HEADER + MAX_MARK + MAX_CGROUP;

/// Control socket: a run to watch.
const REGISTER: u8 = b'R';
/// Run socket, engine to watchdog: the run ended normally.
const DONE: u8 = b'D';
/// Run socket, engine to watchdog: kill the run's processes now, then say so.
const KILL: u8 = b'K';
/// Run socket, watchdog to engine: the run is watched.
const WATCHED: u8 = b'W';
/// Run socket, watchdog to engine: the run's processes are gone.
const KILLED: u8 = b'X';
/// Run socket, watchdog to engine: the run cannot be watched (too many, too long).
const REFUSED: u8 = b'F';

/// The process-wide watchdog, as the engine sees it.
#[derive(Debug)]
struct Shared {
    pid: libc::pid_t,
    /// The engine's end of the control socket.
    ctl: RawFd,
    /// The process that forked it (a process forked from that one has a copy of this).
    owner: libc::pid_t,
}

static SHARED: Mutex<Option<Shared>> = Mutex::new(None);

const FREE: i32 = -1;
const CLAIMED: i32 = -2;

/// The engine's ends of the watchdog's sockets: the control socket, then one slot per run
/// ([`FREE`], [`CLAIMED`] or the descriptor). A process forked from this one closes them
/// all as it starts ([`close_in_child`]).
static FDS: [AtomicI32; MAX_RUNS + 1] = [const { AtomicI32::new(FREE) }; MAX_RUNS + 1];

static AT_FORK: Once = Once::new();

/// In a child just forked (by `fork`, never by a `vfork` that shares this memory): closes
/// its copies of the watchdog's sockets, so that the watchdog sees the end of the engine's
/// process even while the child lives. The child's copies of the guards and of [`SHARED`]
/// know they are copies ([`Shared::owner`], [`Watchdog::owner`]) and leave them alone.
extern "C" fn close_in_child() {
    for slot in &FDS {
        let fd = slot.swap(FREE, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: closes this child's copy of a descriptor of the engine's.
            unsafe { libc::close(fd) };
        }
    }
}

fn me() -> libc::pid_t {
    // SAFETY: no arguments, no failure.
    unsafe { libc::getpid() }
}

fn lock() -> MutexGuard<'static, Option<Shared>> {
    SHARED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forks the process's watchdog now, unless it runs already, and returns its process id.
///
/// A program that runs pipelines calls it first thing (before it reads its arguments or a
/// pipeline): the fork is cheapest then, and nothing the engine writes later is shared
/// copy-on-write with the watchdog. Without it, the process's first run forks the
/// watchdog. A process forked from this one forks its own when it first needs one.
pub fn start_early() -> io::Result<i32> {
    let mut shared = lock();
    Ok(current(&mut shared)?.pid)
}

/// The process's watchdog, forked now if there is none (or only a copy of the one of the
/// process this one was forked from).
fn current(shared: &mut Option<Shared>) -> io::Result<&Shared> {
    let s = match shared.take() {
        Some(s) if s.owner == me() => s,
        Some(s) => {
            s.discard();
            fork_shared()?
        }
        None => fork_shared()?,
    };
    Ok(shared.insert(s))
}

fn fork_shared() -> io::Result<Shared> {
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only closes descriptors.
        unsafe { libc::pthread_atfork(None, None, Some(close_in_child)) };
    });
    let (ours, theirs) = seqpacket_pair()?;
    // SAFETY: the child runs `serve`, which makes only async-signal-safe system calls on
    // its own stack, and never returns.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => unsafe { serve(theirs.as_raw_fd()) },
        pid => {
            drop(theirs);
            let ctl = ours.into_raw_fd();
            FDS[0].store(ctl, Ordering::Release);
            // A process that adopts orphans kills its other children at a run's end.
            crate::process::keep_alive(pid);
            Ok(Shared {
                pid,
                ctl,
                owner: me(),
            })
        }
    }
}

impl Shared {
    /// Lets go of a watchdog found gone, or of the copy of the one of the process this one
    /// was forked from (whose descriptor was closed at the fork, and which is not a child
    /// of this process).
    fn discard(self) {
        if self.owner == me() {
            FDS[0].store(FREE, Ordering::Release);
            // SAFETY: our own descriptor and our own child, which can do nothing more for us.
            unsafe {
                libc::close(self.ctl);
                libc::kill(self.pid, libc::SIGKILL);
            }
            reap(self.pid);
        }
    }
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: writes two descriptors into `fds`, which we own from then on.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Whether a failed send means the watchdog's end is gone.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ECONNREFUSED | libc::ENOTCONN)
    )
}

/// Sends `data` with the descriptor `fd` attached.
fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: a message header over `iov` and `control`, which outlive the call; the
    // control buffer holds one `SCM_RIGHTS` message (`CMSG_SPACE(4)` is 24 bytes).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        loop {
            if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Sends one byte; whether it was sent.
fn send_byte(sock: RawFd, b: u8) -> bool {
    loop {
        // SAFETY: sends one byte from the stack.
        let n = unsafe { libc::send(sock, [b].as_ptr().cast(), 1, libc::MSG_NOSIGNAL) };
        if n == 1 {
            return true;
        }
        if n >= 0 || errno() != libc::EINTR {
            return false;
        }
    }
}

/// Waits for one byte; `None` at end of file or on an error.
fn recv_byte(sock: RawFd) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: receives one byte on the stack.
        let n = unsafe { libc::recv(sock, b.as_mut_ptr().cast(), 1, 0) };
        if n == 1 {
            return Some(b[0]);
        }
        if n == 0 || errno() != libc::EINTR {
            return None;
        }
    }
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// The watchdog of one run; [`Watchdog::finish`] stops watching when the run ended
/// normally. Dropped without `finish`, it kills the run's processes (and the drop waits
/// until they are gone).
#[derive(Debug)]
pub struct Watchdog {
    pid: libc::pid_t,
    /// The process that started it; in a process forked from that one, a copy that does
    /// nothing.
    owner: libc::pid_t,
    how: Option<How>,
}

#[derive(Debug)]
enum How {
    /// Watched by the process's watchdog through `sock`, in `slot` of [`FDS`]; the mark
    /// and cgroup serve to kill the run's processes here if that watchdog is found gone.
    Shared {
        sock: RawFd,
        slot: usize,
        mark: Vec<u8>,
        cgroup: Option<CString>,
    },
    /// Watched by a watchdog of its own, which a byte on `tx` stops and whose end of file
    /// sets off.
    Own { tx: OwnedFd },
}

impl Watchdog {
    /// Has run `run_id`, whose processes are in the cgroup tree `cgroup` (when cgroups are
    /// used) and carry the mark `ORCH_RUN_ID=run_id`, watched: by the process's watchdog
    /// (forked now if it is not running, see [`start_early`]), else by one forked for the
    /// run alone.
    pub fn start(run_id: &str, cgroup: Option<&Path>) -> io::Result<Self> {
        let cgroup = cgroup
            .map(|d| CString::new(d.as_os_str().as_bytes()))
            .transpose()?;
        let mark = format!("ORCH_RUN_ID={run_id}").into_bytes();
        match register(&mark, cgroup.as_deref()) {
            Ok(Some((sock, slot, pid))) => {
                return Ok(Self {
                    pid,
                    owner: me(),
                    how: Some(How::Shared {
                        sock,
                        slot,
                        mark,
                        cgroup,
                    }),
                });
            }
            Ok(None) => tracing::debug!(
                "run {run_id} does not fit in the process's watchdog: it gets its own"
            ),
            Err(e) => tracing::debug!(
                "the process's watchdog cannot watch run {run_id} ({e}): it gets its own"
            ),
        }
        Self::start_own(&mark, cgroup.as_deref())
    }

    /// Forks a watchdog for this run alone.
    fn start_own(mark: &[u8], cgroup: Option<&CStr>) -> io::Result<Self> {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: the child runs `watch`, which makes only async-signal-safe system calls on
        // memory prepared before the fork, and never returns.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => unsafe { watch(rx.as_raw_fd(), cgroup, mark) },
            pid => Ok(Self {
                pid,
                owner: me(),
                how: Some(How::Own { tx }),
            }),
        }
    }

    /// The process id of the watchdog that watches the run (the process's, shared with
    /// its other runs, or the run's own).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The run ended normally: its watchdog forgets it (a watchdog of its own exits).
    pub fn finish(mut self) {
        self.stop(true);
    }

    fn stop(&mut self, clean: bool) {
        let Some(how) = self.how.take() else { return };
        let ours = self.owner == me();
        match how {
            How::Shared {
                sock,
                slot,
                mark,
                cgroup,
            } => {
                if !ours {
                    // A copy in a forked process: its descriptor was closed at the fork,
                    // and the run is the parent's.
                    return;
                }
                let done = if clean {
                    send_byte(sock, DONE)
                } else {
                    send_byte(sock, KILL) && recv_byte(sock) == Some(KILLED)
                };
                FDS[slot].store(FREE, Ordering::Release);
                // SAFETY: our own descriptor, closed once.
                unsafe { libc::close(sock) };
                if !clean && !done {
                    // The watchdog is gone: kill the run's processes from here.
                    // SAFETY: system calls on stack buffers, as in the watchdog.
                    unsafe { kill_run(cgroup.as_deref(), &mark) };
                }
            }
            How::Own { tx } => {
                if clean {
                    let _ = nix::unistd::write(&tx, b"1");
                }
                drop(tx);
                if ours {
                    reap(self.pid);
                }
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// Registers a run with the process's watchdog: its socket, slot and the watchdog's pid,
/// or `None` if the run does not fit (too many runs, a mark or path too long).
fn register(mark: &[u8], cgroup: Option<&CStr>) -> io::Result<Option<(RawFd, usize, i32)>> {
    let cg = cgroup.map_or(&[][..], CStr::to_bytes);
    if mark.len() > MAX_MARK || cg.len() > MAX_CGROUP {
        return Ok(None);
    }
    let mut frame = [0u8; MAX_FRAME];
    frame[0] = REGISTER;
    frame[1..3].copy_from_slice(&(mark.len() as u16).to_le_bytes());
    frame[3..5].copy_from_slice(&(cg.len() as u16).to_le_bytes());
    frame[HEADER..HEADER + mark.len()].copy_from_slice(mark);
    frame[HEADER + mark.len()..HEADER + mark.len() + cg.len()].copy_from_slice(cg);
    let frame = &frame[..HEADER + mark.len() + cg.len()];
    let Some(slot) = (1..=MAX_RUNS).find(|&i| {
        FDS[i]
            .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }) else {
        return Ok(None);
    };
    let r = register_in(slot, frame);
    if !matches!(r, Ok(Some(_))) {
        FDS[slot].store(FREE, Ordering::Release);
    }
    r
}

fn register_in(slot: usize, frame: &[u8]) -> io::Result<Option<(RawFd, usize, i32)>> {
    // A watchdog may be found gone twice (killed, then killed again as it answers).
    for _ in 0..3 {
        let (mine, theirs) = seqpacket_pair()?;
        FDS[slot].store(mine.as_raw_fd(), Ordering::Release);
        let sent = send_registration(frame, theirs.as_raw_fd());
        drop(theirs);
        let pid = match sent {
            Ok(pid) => pid,
            Err(e) => {
                FDS[slot].store(CLAIMED, Ordering::Release);
                return Err(e);
            }
        };
        match recv_byte(mine.as_raw_fd()) {
            Some(WATCHED) => return Ok(Some((mine.into_raw_fd(), slot, pid))),
            Some(_) => {
                FDS[slot].store(CLAIMED, Ordering::Release);
                return Ok(None);
            }
            None => {
                // It died before it answered: replace it, unless another run did.
                FDS[slot].store(CLAIMED, Ordering::Release);
                drop(mine);
                let mut shared = lock();
                if let Some(s) = shared.take_if(|s| s.pid == pid && s.owner == me()) {
                    s.discard();
                }
            }
        }
    }
    Ok(None)
}

/// Sends a registration to the process's watchdog (replacing it if it is found gone);
/// returns its pid.
fn send_registration(frame: &[u8], sock: RawFd) -> io::Result<i32> {
    let mut shared = lock();
    let mut tries = 0;
    loop {
        let s = current(&mut shared)?;
        match send_with_fd(s.ctl, frame, sock) {
            Ok(()) => return Ok(s.pid),
            Err(e) if gone(&e) && tries < 2 => {
                tries += 1;
                if let Some(s) = shared.take() {
                    s.discard();
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// What a forked watchdog does first: its own session, terminal signals ignored, nothing
/// inherited but `keep`.
///
/// # Safety
/// Only in a child just forked.
unsafe fn detach(keep: i32) {
    // SAFETY: async-signal-safe system calls on stack memory.
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
        close_all_but(keep);
    }
}

/// A run the process's watchdog watches.
#[derive(Clone, Copy)]
struct Run {
    /// Its socket; -1: a free entry.
    sock: i32,
    mark: [u8; MAX_MARK],
    mark_len: usize,
    /// NUL-terminated; empty: no cgroup.
    cgroup: [u8; MAX_CGROUP + 1],
}

impl Run {
    const FREE: Run = Run {
        sock: -1,
        mark: [0; MAX_MARK],
        mark_len: 0,
        cgroup: [0; MAX_CGROUP + 1],
    };

    /// # Safety
    /// As [`kill_run`].
    unsafe fn kill(&self) {
        let cgroup = CStr::from_bytes_until_nul(&self.cgroup)
            .ok()
            .filter(|c| !c.is_empty());
        // SAFETY: as the caller's.
        unsafe { kill_run(cgroup, &self.mark[..self.mark_len]) }
    }

    fn forget(&mut self) {
        // SAFETY: closes the watchdog's own descriptor, once.
        unsafe { libc::close(self.sock) };
        self.sock = -1;
    }
}

/// What a socket had to say.
enum Heard {
    Byte(u8),
    Nothing,
    End,
}

fn recv_now(sock: i32) -> Heard {
    let mut b = [0u8; 1];
    // SAFETY: receives one byte on the stack.
    let n = unsafe { libc::recv(sock, b.as_mut_ptr().cast(), 1, libc::MSG_DONTWAIT) };
    match n {
        1 => Heard::Byte(b[0]),
        0 => Heard::End,
        _ if matches!(errno(), libc::EAGAIN | libc::EINTR) => Heard::Nothing,
        _ => Heard::End,
    }
}

/// The process's watchdog.
///
/// # Safety
/// Only in a child just forked; never returns.
unsafe fn serve(ctl: i32) -> ! {
    // SAFETY (whole fn): async-signal-safe system calls only, on stack buffers.
    unsafe {
        detach(ctl);
        let mut runs = [Run::FREE; MAX_RUNS];
        let mut polled = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; MAX_RUNS + 1];
        loop {
            polled[0] = libc::pollfd {
                fd: ctl,
                events: libc::POLLIN,
                revents: 0,
            };
            for (p, r) in polled[1..].iter_mut().zip(&runs) {
                // A negative descriptor is skipped.
                *p = libc::pollfd {
                    fd: r.sock,
                    events: libc::POLLIN,
                    revents: 0,
                };
            }
            if libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) < 0 {
                if errno() != libc::EINTR {
                    pause_ms(10);
                }
                continue;
            }
            for (p, run) in polled[1..].iter().zip(runs.iter_mut()) {
                if p.revents == 0 || run.sock < 0 {
                    continue;
                }
                match recv_now(run.sock) {
                    Heard::Byte(DONE) => run.forget(),
                    Heard::Byte(KILL) => {
                        run.kill();
                        send_byte(run.sock, KILLED);
                        run.forget();
                    }
                    Heard::Byte(_) | Heard::Nothing => {}
                    Heard::End => {
                        run.kill();
                        run.forget();
                    }
                }
            }
            if polled[0].revents != 0 && !take_registration(ctl, &mut runs) {
                // The engine's process is gone: every run it did not finish dies with it.
                for run in runs.iter_mut().filter(|r| r.sock >= 0) {
                    if !matches!(recv_now(run.sock), Heard::Byte(DONE)) {
                        run.kill();
                    }
                    run.forget();
                }
                libc::_exit(0)
            }
        }
    }
}

/// Reads one message of the control socket: a run to watch, which it answers. Returns
/// `false` at the end of the control socket.
///
/// # Safety
/// In the watchdog: async-signal-safe system calls on stack buffers.
unsafe fn take_registration(ctl: i32, runs: &mut [Run; MAX_RUNS]) -> bool {
    // One byte more than the longest message, so that a longer one is seen truncated.
    let mut buf = [0u8; MAX_FRAME + 1];
    let mut control = [0u64; 8];
    // SAFETY: a message header over stack buffers that outlive the calls; the control
    // messages are walked with the kernel's macros, within `msg_controllen`.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        let n = libc::recvmsg(ctl, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC);
        if n == 0 {
            return false;
        }
        if n < 0 {
            return matches!(errno(), libc::EAGAIN | libc::EINTR);
        }
        let mut sock = -1;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let count =
                    ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<i32>();
                for k in 0..count {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>().add(k));
                    if sock < 0 {
                        sock = fd;
                    } else {
                        libc::close(fd);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if sock < 0 {
            return true;
        }
        let n = n as usize;
        let whole = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) == 0;
        let lengths = (n >= HEADER && buf[0] == REGISTER).then(|| {
            (
                usize::from(u16::from_le_bytes([buf[1], buf[2]])),
                usize::from(u16::from_le_bytes([buf[3], buf[4]])),
            )
        });
        let free = runs.iter().position(|r| r.sock < 0);
        match (whole, lengths, free) {
            (true, Some((m, c)), Some(i))
                if m <= MAX_MARK && c <= MAX_CGROUP && HEADER + m + c == n =>
            {
                let run = &mut runs[i];
                run.mark[..m].copy_from_slice(&buf[HEADER..HEADER + m]);
                run.mark_len = m;
                run.cgroup[..c].copy_from_slice(&buf[HEADER + m..n]);
                run.cgroup[c] = 0;
                run.sock = sock;
                send_byte(sock, WATCHED);
            }
            _ => {
                send_byte(sock, REFUSED);
                libc::close(sock);
            }
        }
        true
    }
}

/// A watchdog for one run alone: waits on the pipe `rx` whose write end only the engine
/// holds; a byte says the run ended normally, the end of file that the engine is gone.
///
/// # Safety
/// Only in a child just forked; never returns.
unsafe fn watch(rx: i32, cgroup: Option<&CStr>, mark: &[u8]) -> ! {
    // SAFETY (whole fn): async-signal-safe system calls only, on stack buffers and on
    // memory the parent prepared before the fork.
    unsafe {
        detach(rx);
        let mut byte = [0u8; 1];
        let clean = loop {
            let n = libc::read(rx, byte.as_mut_ptr().cast(), 1);
            if n == 1 {
                break true;
            }
            if n == 0 || errno() != libc::EINTR {
                break false;
            }
        };
        if !clean {
            kill_run(cgroup, mark);
        }
        libc::_exit(0)
    }
}

/// Kills a run's processes: its cgroup tree (which it then removes), and every process
/// marked `mark`.
///
/// # Safety
/// Async-signal-safe system calls on stack buffers only: callable in a forked child.
unsafe fn kill_run(cgroup: Option<&CStr>, mark: &[u8]) {
    // SAFETY (whole fn): raw system calls on descriptors owned here.
    unsafe {
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
                    if libc::rmdir(dir.as_ptr()) == 0 || errno() == libc::ENOENT {
                        break;
                    }
                }
                libc::close(fd);
            }
        }
        // Processes that left the cgroup (or all of them, without cgroups): by mark. A
        // process in the middle of `execve` shows no environment for a moment (nor does
        // one cloned but not yet executing its program: it shows the engine's), so the
        // search ends only after a few that find none.
        let mut none = 0;
        for _ in 0..200 {
            if kill_marked(mark) == 0 {
                none += 1;
                if none == 3 {
                    break;
                }
            } else {
                none = 0;
            }
            pause_ms(10);
        }
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
