//! Scheduling overhead of the engine with in-process no-op phases.
//!
//! Shapes: a chain (each phase needs the previous one), a wide fan-out (one root, every other
//! phase needs it) and a layered lattice (layers of 100, each phase needs two of the layer
//! before). Sizes: 1k, 10k, 100k phases. Criterion reports time per phase as throughput; the
//! `memory` lines give the peak bytes allocated per phase for building and running the
//! pipeline, measured with a counting allocator.
//!
//! `cargo bench -p orch-core --bench scheduler`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use orch_core::{
    Description, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec, Pipeline,
    PlanContext, RunControl, RunOptions, Runner,
};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

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
    let noop: Arc<dyn Phase> = Arc::new(Noop);
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

fn bench(c: &mut Criterion) {
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

    // Memory: peak bytes above the baseline while building and running, per phase.
    for shape in [Shape::Chain, Shape::FanOut, Shape::Lattice] {
        let n = 100_000;
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let p = Arc::new(pipeline(shape, n));
        let record = rt
            .block_on(Runner::new(p, options()).run(RunControl::new()))
            .expect("run");
        let peak = PEAK.load(Ordering::Relaxed) - base;
        drop(record);
        println!(
            "memory {shape:?}/{n}: {} bytes per phase (peak {:.1} MiB)",
            peak / n,
            peak as f64 / (1024.0 * 1024.0)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
