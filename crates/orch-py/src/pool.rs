//! The threads that run Python phase functions.
//!
//! Each worker attaches to the interpreter once, when it starts, and keeps its thread
//! state: between calls it only releases the GIL (`Python::detach`), so a call costs a
//! GIL hand-over, not a thread state (CPython allocates and maps a fresh frame stack for
//! every new thread state). A worker that finishes a call takes the next queued one
//! before it releases the GIL.
//!
//! Waking a thread costs the waker a system call and the woken thread a context switch,
//! so a call queued while a worker is active (running a call, or on its way to the queue)
//! is left for that worker. A call must not wait behind one that blocks (`time.sleep`, a
//! socket) though: a rescuer thread, awake only while calls are queued, hands every call
//! that has waited [`RESCUE_AFTER`] to an idle worker or a new one. So with `jobs = N`, N
//! functions can block at once, like a `ThreadPoolExecutor(N)`, and a run of quick calls
//! is served by one hot thread. Workers live as long as the process (they never wake up on
//! their own, so none touches the interpreter during its shutdown).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// A call to make with the GIL held.
pub(crate) type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

/// How long a queued call may wait for a busy worker before another worker takes it.
pub const RESCUE_AFTER: Duration = Duration::from_micros(500);

struct Queued {
    at: Instant,
    job: Job,
    /// A worker was woken or started for it.
    rescued: bool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Workers waiting for a wake-up.
    idle: usize,
    /// Wake-ups handed to idle workers and not yet taken.
    tokens: usize,
    /// Workers running a call or on their way to the queue.
    active: usize,
    /// The rescuer thread exists.
    rescuer: bool,
    /// The rescuer sleeps until the queue gets a call.
    rescuer_asleep: bool,
    /// The fork generation the workers belong to.
    generation: u32,
}

struct Pool {
    state: Mutex<State>,
    /// Idle workers wait here.
    cond: Condvar,
    /// The rescuer waits here while the queue is empty.
    rescue: Condvar,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| Pool {
    state: Mutex::new(State::default()),
    cond: Condvar::new(),
    rescue: Condvar::new(),
});

/// Bumped in a forked child (`os.register_at_fork`): its pool starts empty, since only the
/// forking thread exists there.
static GENERATION: AtomicU32 = AtomicU32::new(0);

/// Forgets the parent's threads in a forked child.
#[pyfunction]
pub fn _after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

fn lock() -> MutexGuard<'static, State> {
    let mut s = POOL.state.lock().unwrap_or_else(|p| p.into_inner());
    let generation = GENERATION.load(Ordering::Relaxed);
    if s.generation != generation {
        *s = State {
            generation,
            ..State::default()
        };
    }
    s
}

/// Queues a call.
pub(crate) fn submit(job: Job) {
    let mut s = lock();
    s.queue.push_back(Queued {
        at: Instant::now(),
        job,
        rescued: false,
    });
    if s.active == 0 {
        let last = s.queue.len() - 1;
        s.queue[last].rescued = true;
        hand_over(&mut s);
    } else if !s.rescuer {
        s.rescuer = true;
        drop(s);
        if std::thread::Builder::new()
            .name("orch-python-rescue".into())
            .spawn(rescuer)
            .is_err()
        {
            // No rescuer: hand over every call at once instead.
            let mut s = lock();
            s.rescuer = false;
            hand_over(&mut s);
        }
    } else if s.rescuer_asleep {
        s.rescuer_asleep = false;
        drop(s);
        POOL.rescue.notify_one();
    }
}

/// Gets one more worker to the queue: an idle one, or a new one.
fn hand_over(s: &mut State) {
    s.active += 1;
    if s.idle > s.tokens {
        s.tokens += 1;
        POOL.cond.notify_one();
    } else if std::thread::Builder::new()
        .name("orch-python".into())
        .spawn(worker)
        .is_err()
    {
        s.active -= 1;
    }
}

/// Hands calls that waited too long to more workers; sleeps while the queue is empty.
fn rescuer() {
    let mut s = lock();
    loop {
        while s.queue.is_empty() {
            s.rescuer_asleep = true;
            s = POOL.rescue.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.rescuer_asleep = false;
        let now = Instant::now();
        let stale: Vec<usize> = s
            .queue
            .iter()
            .enumerate()
            .filter(|(_, q)| !q.rescued && now.duration_since(q.at) >= RESCUE_AFTER)
            .map(|(i, _)| i)
            .collect();
        for i in stale {
            s.queue[i].rescued = true;
            hand_over(&mut s);
        }
        drop(s);
        std::thread::sleep(RESCUE_AFTER / 2);
        s = lock();
    }
}

fn worker() {
    let attached = Python::try_attach(|py| {
        loop {
            let next = {
                let mut s = lock();
                match s.queue.pop_front() {
                    Some(q) => Some(q.job),
                    None => {
                        s.active = s.active.saturating_sub(1);
                        None
                    }
                }
            };
            let job = match next {
                Some(job) => job,
                None => py.detach(wait),
            };
            job(py);
        }
    });
    if attached.is_none() {
        // The interpreter is gone: drop the queued calls (their callers see no result).
        let mut s = lock();
        s.queue.clear();
        s.active = s.active.saturating_sub(1);
    }
}

/// Waits (without the GIL) for a wake-up and returns the call it was for; the waker
/// counted this worker active.
fn wait() -> Job {
    let mut s = lock();
    loop {
        s.idle += 1;
        loop {
            s = POOL.cond.wait(s).unwrap_or_else(|p| p.into_inner());
            if s.tokens > 0 {
                s.tokens -= 1;
                s.idle -= 1;
                break;
            }
        }
        if let Some(q) = s.queue.pop_front() {
            return q.job;
        }
        // Another worker took it.
        s.active = s.active.saturating_sub(1);
    }
}
