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
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};

use pyo3::prelude::*;

/// A call to make with the GIL held.
pub(crate) type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Workers waiting for a job.
    idle: usize,
    /// Wake-ups handed to idle workers and not yet taken.
    tokens: usize,
    /// The process that owns the workers (a forked child starts with none).
    pid: u32,
}

struct Pool {
    state: Mutex<State>,
    cond: Condvar,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| Pool {
    state: Mutex::new(State::default()),
    cond: Condvar::new(),
});

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
    }
    s.queue.push_back(job);
    if s.idle > s.tokens {
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
    s.queue.pop_front()
}

/// Waits (without the GIL) until a job is handed over.
fn wait() -> Job {
    let mut s = lock();
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
