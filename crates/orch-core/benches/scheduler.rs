//! Scheduling overhead of the engine with in-process no-op phases.
//!
//! Shapes: a chain (each phase needs the previous one), a wide fan-out (one root, every other
//! phase needs it) and a layered lattice (layers of 100, each phase needs two of the layer
//! before). Sizes: 1k, 10k, 100k phases. Criterion reports time per phase as throughput; the
//! `memory` lines give the peak bytes allocated per phase for building and running the
//! pipeline (and the two peaks apart: building it, then running it), measured with a
//! counting allocator (which counts only for those lines and the
//! `compare` lines: the timed runs do not pay for it).
//!
//! `recorded/Lattice/10000` runs the 10k lattice the way `orch run` does: with
//! `write_files` (journal synced by group commit, run.json, logs directory) into a
//! temporary state directory. The `compare` lines put it beside the same run in memory:
//! median time per phase, allocations and bytes allocated per phase, and the ratio; once
//! with no-op phases (they finish when first polled, on the engine's thread) and once
//! with phases that yield once (they run as tasks, like phases that do work); and, for
//! no-op phases, once more at 100k phases (the size of the `cpu` and `memory` lines).
//!
//! The `cpu` lines give the engine thread's CPU time per phase (the least of five runs of
//! 100k no-op phases, which run on that thread): steadier than wall time under load.
//!
//! `cargo bench -p orch-core --bench scheduler` (a filter such as `-- recorded` also limits
//! the `memory`, `cpu` and `compare` lines to the names it matches).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use orch_core::{
    Description, JournalMode, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec,
    Pipeline, PlanContext, RunControl, RunOptions, Runner,
};

struct Counting;
/// Whether allocations are counted: only while a `memory` or `compare` line measures, so
/// the timed runs do not pay for the counting (four atomic operations per allocation).
static COUNTING: AtomicBool = AtomicBool::new(false);
// Signed: a block allocated before counting started may be freed while it counts.
static CURRENT: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !COUNTING.load(Ordering::Relaxed) {
            // SAFETY: same layout contract as the caller's.
            return unsafe { System.alloc(layout) };
        }
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        let size = layout.size() as isize;
        let now = CURRENT.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !COUNTING.load(Ordering::Relaxed) {
            // SAFETY: ptr was allocated by System with this layout.
            return unsafe { System.dealloc(ptr, layout) };
        }
        CURRENT.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !COUNTING.load(Ordering::Relaxed) {
            // SAFETY: ptr was allocated by System with this layout; same contract as the
            // caller's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        let grown = new_size as isize - layout.size() as isize;
        let now = CURRENT.fetch_add(grown, Ordering::Relaxed) + grown;
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout; same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Turns counting on (for a `memory` or `compare` line) or off (while criterion times).
fn counting(on: bool) {
    COUNTING.store(on, Ordering::SeqCst);
}

struct Noop;

#[async_trait]
impl Phase for Noop {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("nothing")
    }
    async fn run(&self, _: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        Ok(PhaseOutcome::default())
    }
}

/// Returns at its second poll: the engine's first poll finds it pending, so it runs as a
/// task and its end reaches the engine through the task set (like phases that do work).
struct Yielding;

#[async_trait]
impl Phase for Yielding {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("nothing, after one yield")
    }
    async fn run(&self, _: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        tokio::task::yield_now().await;
        Ok(PhaseOutcome::default())
    }
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Chain,
    FanOut,
    Lattice,
}

fn id(i: usize) -> PhaseId {
    PhaseId::new(format!("p{i}")).expect("valid id")
}

fn pipeline(shape: Shape, n: usize) -> Pipeline {
    pipeline_of(shape, n, Arc::new(Noop))
}

fn pipeline_of(shape: Shape, n: usize, noop: Arc<dyn Phase>) -> Pipeline {
    let mut b = Pipeline::builder("bench", std::env::temp_dir()).jobs(2);
    const WIDTH: usize = 100;
    for i in 0..n {
        let needs: Vec<PhaseId> = match shape {
            Shape::Chain if i > 0 => vec![id(i - 1)],
            Shape::FanOut if i > 0 => vec![id(0)],
            Shape::Lattice if i >= WIDTH => {
                let layer_start = i - i % WIDTH - WIDTH;
                let col = i % WIDTH;
                vec![id(layer_start + col), id(layer_start + (col + 1) % WIDTH)]
            }
            _ => Vec::new(),
        };
        b = b.custom(PhaseSpec::new(id(i), "noop").needs(needs), noop.clone());
    }
    b.build().expect("valid pipeline")
}

fn options() -> RunOptions {
    RunOptions {
        jobs: Some(2),
        write_files: false,
        ..RunOptions::default()
    }
}

/// Options of a recorded run into `state_dir`: what `orch run` does (durable journal).
fn recorded_options(state_dir: &Path) -> RunOptions {
    RunOptions {
        jobs: Some(2),
        write_files: true,
        state_dir: Some(state_dir.to_owned()),
        journal: Some(JournalMode::Durable),
        ..RunOptions::default()
    }
}

/// The criterion filter given on the command line, if any.
fn filter() -> Option<String> {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a != "bench" && !a.is_empty())
}

fn selected(name: &str) -> bool {
    filter().is_none_or(|f| name.contains(&f))
}

/// One run: wall time, allocations and bytes allocated (zero unless counting). A recorded run's directory is
/// removed afterwards (untimed) so the state directory does not grow.
fn measure(
    rt: &tokio::runtime::Runtime,
    p: &Arc<Pipeline>,
    state_dir: Option<&Path>,
) -> (Duration, usize, usize) {
    let opts = match state_dir {
        Some(d) => recorded_options(d),
        None => options(),
    };
    let (allocs, bytes) = (
        ALLOCS.load(Ordering::Relaxed),
        ALLOCATED.load(Ordering::Relaxed),
    );
    let t = Instant::now();
    let record = rt
        .block_on(Runner::new(p.clone(), opts).run(RunControl::new()))
        .expect("run");
    let took = t.elapsed();
    let counts = (
        ALLOCS.load(Ordering::Relaxed) - allocs,
        ALLOCATED.load(Ordering::Relaxed) - bytes,
    );
    assert_eq!(record.phases.len(), p.len());
    if let Some(d) = state_dir {
        std::fs::remove_dir_all(d.join("runs").join(record.run_id.as_str())).expect("cleanup");
    }
    (took, counts.0, counts.1)
}

/// CPU time of the calling thread so far (Linux: `/proc/thread-self/schedstat`, in ns).
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Prints a `compare` line: the median of `runs` runs of `p` in memory and recorded into
/// `state_dir`, per phase (time, allocations, bytes allocated) and their ratio.
fn compare(
    rt: &tokio::runtime::Runtime,
    p: &Arc<Pipeline>,
    what: &str,
    state_dir: &Path,
    runs: usize,
) {
    let n = p.len();
    let median = |state_dir: Option<&Path>| {
        let mut all: Vec<_> = (0..runs).map(|_| measure(rt, p, state_dir)).collect();
        all.sort_by_key(|r| r.0);
        all[all.len() / 2]
    };
    let mem = median(None);
    let rec = median(Some(state_dir));
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "compare Lattice/{n} {what}: in memory {:.2} us/phase ({} allocs, {} bytes/phase), \
         recorded {:.2} us/phase ({} allocs, {} bytes/phase): recorded/in memory {:.2}x",
        us(mem.0),
        mem.1 / n,
        mem.2 / n,
        us(rec.0),
        rec.1 / n,
        rec.2 / n,
        us(rec.0) / us(mem.0),
    );
}

fn bench(c: &mut Criterion) {
    // As `orch` does: the watchdog is forked while the process is small, not by the first
    // run, once a large pipeline is built.
    let _ = orch_core::watchdog::start_early();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("schedule");
    group.sample_size(10);
    for shape in [Shape::Chain, Shape::FanOut, Shape::Lattice] {
        for n in [1_000, 10_000, 100_000] {
            let p = Arc::new(pipeline(shape, n));
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(format!("{shape:?}"), n), &p, |b, p| {
                b.iter(|| {
                    let record = rt
                        .block_on(Runner::new(p.clone(), options()).run(RunControl::new()))
                        .expect("run");
                    assert_eq!(record.phases.len(), n);
                });
            });
        }
    }
    group.finish();

    // Recorded: the 10k lattice as `orch run` runs it, into a temporary state directory.
    let state = tempfile::tempdir().expect("temp state dir");
    let lattice = Arc::new(pipeline(Shape::Lattice, 10_000));
    let mut group = c.benchmark_group("recorded");
    group.sample_size(10);
    group.throughput(Throughput::Elements(10_000));
    group.bench_function(BenchmarkId::new("Lattice", 10_000), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| measure(&rt, &lattice, Some(state.path())).0)
                .sum()
        });
    });
    group.finish();

    // Recorded beside in memory: medians of a few runs each.
    if selected("compare/Lattice/10000") || selected("recorded/Lattice/10000") {
        counting(true);
        let yielding = Arc::new(pipeline_of(Shape::Lattice, 10_000, Arc::new(Yielding)));
        for (what, p) in [("no-op", &lattice), ("yielding", &yielding)] {
            compare(&rt, p, what, state.path(), 7);
        }
        // The same at the size of the in-process lines below (no-op phases).
        if selected("compare/Lattice/100000") || selected("recorded/Lattice/100000") {
            let big = Arc::new(pipeline(Shape::Lattice, 100_000));
            compare(&rt, &big, "no-op", state.path(), 5);
        }
        counting(false);
    }

    // CPU: the engine's thread time per phase (no-op phases run on it, inline), the least
    // of five runs: steadier than wall time on a loaded machine.
    for shape in [Shape::Chain, Shape::FanOut, Shape::Lattice] {
        if !selected(&format!("cpu/{shape:?}/100000")) {
            continue;
        }
        let n = 100_000;
        let p = Arc::new(pipeline(shape, n));
        let least = (0..5)
            .filter_map(|_| {
                let before = thread_cpu()?;
                let record = rt
                    .block_on(Runner::new(p.clone(), options()).run(RunControl::new()))
                    .expect("run");
                drop(record);
                Some(thread_cpu()? - before)
            })
            .min();
        match least {
            Some(d) => println!(
                "cpu {shape:?}/{n}: {:.2} us/phase on the engine's thread (least of 5 runs)",
                d.as_secs_f64() * 1e6 / n as f64
            ),
            None => println!("cpu {shape:?}/{n}: /proc/thread-self/schedstat is not readable"),
        }
    }

    // Memory: peak bytes above the baseline while building and running, per phase.
    for shape in [Shape::Chain, Shape::FanOut, Shape::Lattice] {
        if !selected(&format!("memory/{shape:?}/100000"))
            && !selected(&format!("schedule/{shape:?}/100000"))
        {
            continue;
        }
        let n = 100_000;
        counting(true);
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let p = Arc::new(pipeline(shape, n));
        let built = (CURRENT.load(Ordering::Relaxed) - base) as usize;
        let build_peak = (PEAK.load(Ordering::Relaxed) - base) as usize;
        // The run's own peak, from where building left it.
        PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
        let record = rt
            .block_on(Runner::new(p.clone(), options()).run(RunControl::new()))
            .expect("run");
        let run_peak = (PEAK.load(Ordering::Relaxed) - base) as usize;
        let peak = build_peak.max(run_peak);
        let kept = (CURRENT.load(Ordering::Relaxed) - base) as usize;
        drop((record, p));
        counting(false);
        println!(
            "memory {shape:?}/{n}: {} bytes per phase (peak {:.1} MiB; while building the \
             pipeline {} and while running {} bytes per phase; kept: the pipeline {} and the \
             run's record {} bytes per phase)",
            peak / n,
            peak as f64 / (1024.0 * 1024.0),
            build_peak / n,
            run_peak / n,
            built / n,
            kept.saturating_sub(built) / n,
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
