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
//!
//! Phases of a pipeline arrive one after another as the engine finishes their needs, so
//! both sides wait for each other briefly before they sleep ([`Spin`]): a worker that ran
//! out of calls watches the queue, and the engine thread, about to park while Python calls
//! are in progress, watches for their completion. Each wait has a budget that halves when
//! it runs out and comes back when a wait pays: on a machine with no core to spare the
//! other side is not running, and waiting for it would only take its CPU.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// A call to make with the GIL held.
pub(crate) type Job = Box<dyn for<'py> FnOnce(Python<'py>) + Send>;

/// How long a queued call may wait for a busy worker before another worker takes it.
pub const RESCUE_AFTER: Duration = Duration::from_micros(500);

/// The longest a worker watches the queue, or the engine thread waits for a Python call
/// to complete, before it sleeps.
pub const SPIN_FOR: Duration = Duration::from_micros(50);

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
    /// The queue's length, readable without the lock (by lingering workers).
    queued: AtomicUsize,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| Pool {
    state: Mutex::new(State::default()),
    cond: Condvar::new(),
    rescue: Condvar::new(),
    queued: AtomicUsize::new(0),
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
        POOL.queued.store(0, Ordering::Release);
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
    POOL.queued.store(s.queue.len(), Ordering::Release);
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
            // Not one expression: the guard of `lock()` must not live through `linger`.
            let queued = pop(&mut lock());
            let job = match queued.or_else(|| py.detach(linger)) {
                Some(job) => job,
                None => py.detach(idle),
            };
            job(py);
        }
    });
    if attached.is_none() {
        // The interpreter is gone: drop the queued calls (their callers see no result).
        let mut s = lock();
        s.queue.clear();
        POOL.queued.store(0, Ordering::Release);
        s.active = s.active.saturating_sub(1);
    }
}

/// Takes the first queued call.
fn pop(s: &mut State) -> Option<Job> {
    let q = s.queue.pop_front()?;
    POOL.queued.store(s.queue.len(), Ordering::Release);
    Some(q.job)
}

/// Watches the queue (without the GIL) for a moment; `None` if no call came.
fn linger() -> Option<Job> {
    WORKER_SPIN.until(|| {
        if POOL.queued.load(Ordering::Acquire) > 0 {
            return pop(&mut lock());
        }
        None
    })
}

/// Bumped each time a Python call completes (wakes its engine task).
static COMPLETIONS: AtomicU64 = AtomicU64::new(0);

/// Counts a completed call; the engine thread may be waiting for it.
pub(crate) fn completed() {
    COMPLETIONS.fetch_add(1, Ordering::Release);
}

/// Called by the runtime just before the engine thread parks: while Python calls are in
/// progress, waits a moment for one to complete rather than sleep and be woken for it.
pub(crate) fn engine_parking() {
    let busy = POOL.queued.load(Ordering::Acquire) > 0 || lock().active > 0;
    if busy {
        let seen = COMPLETIONS.load(Ordering::Acquire);
        ENGINE_SPIN.until(|| (COMPLETIONS.load(Ordering::Acquire) != seen).then_some(()));
    }
}

static WORKER_SPIN: Spin = Spin::new(SPIN_FOR);
static ENGINE_SPIN: Spin = Spin::new(SPIN_FOR);

/// Busy-waiting with an adaptive budget: a wait that runs out halves the budget (below an
/// eighth of the maximum: no waiting at all, but every 16th wait tries the maximum again),
/// a wait that pays restores it.
struct Spin {
    max_ns: u32,
    budget_ns: AtomicU32,
    skipped: AtomicU32,
}

impl Spin {
    const fn new(max: Duration) -> Self {
        let max_ns = max.as_nanos() as u32;
        Self {
            max_ns,
            budget_ns: AtomicU32::new(max_ns),
            skipped: AtomicU32::new(0),
        }
    }

    /// Calls `ready` until it returns something or the budget is spent.
    fn until<T>(&self, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
        let mut budget = self.budget_ns.load(Ordering::Relaxed);
        if budget == 0 {
            if self.skipped.fetch_add(1, Ordering::Relaxed) % 16 != 15 {
                return ready();
            }
            budget = self.max_ns;
        }
        let start = Instant::now();
        let limit = Duration::from_nanos(u64::from(budget));
        loop {
            for _ in 0..32 {
                if let Some(v) = ready() {
                    self.budget_ns.store(self.max_ns, Ordering::Relaxed);
                    return Some(v);
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= limit {
                let half = budget / 2;
                let next = if half < self.max_ns / 8 { 0 } else { half };
                self.budget_ns.store(next, Ordering::Relaxed);
                return None;
            }
        }
    }
}

/// Sleeps (without the GIL) until a call comes: counts this worker idle unless one is
/// queued already, then waits for a wake-up (whose waker counts it active again).
fn idle() -> Job {
    let mut s = lock();
    if let Some(job) = pop(&mut s) {
        return job;
    }
    s.active = s.active.saturating_sub(1);
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
        if let Some(job) = pop(&mut s) {
            return job;
        }
        // Another worker took it.
        s.active = s.active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spin_that_runs_out_halves_its_budget_and_one_that_pays_restores_it() {
        let spin = Spin::new(Duration::from_micros(40));
        let max = spin.max_ns;
        assert_eq!(spin.until(|| None::<()>), None);
        assert_eq!(spin.budget_ns.load(Ordering::Relaxed), max / 2);
        assert_eq!(spin.until(|| None::<()>), None);
        assert_eq!(spin.budget_ns.load(Ordering::Relaxed), max / 4);
        // Halving again would go under an eighth: no more waiting.
        assert_eq!(spin.until(|| None::<()>), None);
        assert_eq!(spin.until(|| None::<()>), None);
        assert_eq!(spin.budget_ns.load(Ordering::Relaxed), 0);

        // Without a budget, `ready` is asked once, except every 16th time, which waits the
        // whole maximum again.
        let mut asked = Vec::new();
        for _ in 0..16 {
            let mut n = 0;
            assert_eq!(
                spin.until(|| {
                    n += 1;
                    None::<()>
                }),
                None
            );
            asked.push(n);
        }
        assert!(asked[..15].iter().all(|&n| n == 1), "{asked:?}");
        assert!(asked[15] > 1, "{asked:?}");

        // A wait that pays restores the whole budget: the next probe waits, and `ready`
        // answers on its second call.
        let mut paid = false;
        for _ in 0..16 {
            let mut n = 0;
            if spin
                .until(|| {
                    n += 1;
                    (n == 2).then_some(())
                })
                .is_some()
            {
                paid = true;
                break;
            }
        }
        assert!(paid);
        assert_eq!(spin.budget_ns.load(Ordering::Relaxed), max);
    }
}
