//! The threads that run Python phase functions.
//!
//! Each worker attaches to the interpreter once, when it starts, and keeps its thread
//! state: between calls it only releases the GIL (`Python::detach`), so a call costs a
//! GIL hand-over, not a thread state (CPython allocates and maps a fresh frame stack for
//! every new thread state). A worker that finishes a call takes the next queued one
//! before it releases the GIL.
//!
//! The pool grows when a call is queued and no worker is idle, so calls that block (a
//! `time.sleep`, a socket) never hold up others: with `jobs = N`, N functions can run at
//! once, like a `ThreadPoolExecutor(N)`. Workers live as long as the process (they never
//! wake up on their own, so none touches the interpreter during its shutdown); their
//! number is the highest number of calls that were ever in progress at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// A call to make with the GIL held.
pub(crate) type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Workers waiting for a job.
    idle: usize,
    /// Workers watching the queue before they sleep.
    spinning: usize,
    /// Wake-ups handed to idle workers and not yet taken.
    tokens: usize,
    /// The process that owns the workers (a forked child starts with none).
    pid: u32,
}

struct Pool {
    state: Mutex<State>,
    cond: Condvar,
    /// `state.queue.len()`, readable without the lock.
    queued: AtomicUsize,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| Pool {
    state: Mutex::new(State::default()),
    cond: Condvar::new(),
    queued: AtomicUsize::new(0),
});

/// How long a worker that ran out of calls watches the queue before it sleeps: phases
/// of a pipeline arrive one after another as the engine finishes their needs, and a
/// worker still awake takes the next one without a thread wake-up.
const SPIN: Duration = Duration::from_micros(40);

fn lock() -> MutexGuard<'static, State> {
    POOL.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queues a call; an idle worker takes it, or a new worker is started for it.
pub(crate) fn submit(job: Job) {
    let pid = std::process::id();
    let mut s = lock();
    if s.pid != pid {
        // After a fork only the forking thread exists: forget the parent's workers.
        *s = State {
            pid,
            ..State::default()
        };
        POOL.queued.store(0, Ordering::Release);
    }
    s.queue.push_back(job);
    POOL.queued.store(s.queue.len(), Ordering::Release);
    if s.queue.len() <= s.spinning {
        // A worker watching the queue takes it.
    } else if s.idle > s.tokens {
        s.tokens += 1;
        drop(s);
        POOL.cond.notify_one();
    } else {
        drop(s);
        spawn_worker();
    }
}

fn spawn_worker() {
    let started = std::thread::Builder::new()
        .name("orch-python".into())
        .spawn(worker);
    if started.is_err() {
        // No thread: run what is queued here rather than never.
        while let Some(job) = pop(&mut lock()) {
            let _ = Python::try_attach(job);
        }
    }
}

fn worker() {
    let attached = Python::try_attach(|py| {
        loop {
            let next = pop(&mut lock());
            let job = match next {
                Some(job) => job,
                None => py.detach(wait),
            };
            job(py);
        }
    });
    if attached.is_none() {
        // The interpreter is gone: drop the queued calls (their callers see no result).
        lock().queue.clear();
    }
}

fn pop(s: &mut State) -> Option<Job> {
    let job = s.queue.pop_front();
    POOL.queued.store(s.queue.len(), Ordering::Release);
    job
}

/// Waits (without the GIL) until a job is handed over: first watching the queue for a
/// moment, then asleep.
fn wait() -> Job {
    let mut s = lock();
    if let Some(job) = pop(&mut s) {
        return job;
    }
    s.spinning += 1;
    drop(s);
    let deadline = Instant::now() + SPIN;
    loop {
        if POOL.queued.load(Ordering::Acquire) > 0 {
            let mut s = lock();
            if let Some(job) = pop(&mut s) {
                s.spinning -= 1;
                return job;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        // Give the core to whoever needs it (often the engine thread about to queue the
        // next call) rather than burn it.
        std::thread::yield_now();
    }
    let mut s = lock();
    s.spinning -= 1;
    loop {
        if let Some(job) = pop(&mut s) {
            return job;
        }
        s.idle += 1;
        loop {
            s = POOL.cond.wait(s).unwrap_or_else(|p| p.into_inner());
            if s.tokens > 0 {
                s.tokens -= 1;
                s.idle -= 1;
                break;
            }
        }
    }
}
