//! A hand-written DAG runner on tokio, the yardstick `benches/delivery_speed.sh` puts beside
//! `make`, `ninja` and `orch run`: it reads a DAG, spawns one process per node as soon as its
//! needs have exited successfully (at most JOBS at once, the earliest-declared ready node
//! first) and does nothing else: no journal, no records, no containment, no logs.
//!
//! The DAG file has one line per node, in declaration order: the indices of the nodes it
//! needs, separated by spaces (an empty line for a root).
//!
//! ```text
//! handwritten_runner DAG_FILE JOBS [PROGRAM]     # PROGRAM defaults to `true`
//! cargo bench -p orch-core --bench handwritten_runner   # a built-in 1,000-node lattice
//! ```
//!
//! It exits 0 when every node succeeded, 1 when one failed (nothing after it starts), 2 on
//! bad arguments.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::process::{ExitCode, Stdio};
use std::time::Instant;

use tokio::task::JoinSet;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (needs, jobs, program) = match args.as_slice() {
        [] => (lattice(1000, 100), 2, "true".to_owned()),
        [file, jobs, rest @ ..] if rest.len() <= 1 => {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read {file}: {e}");
                    return ExitCode::from(2);
                }
            };
            let needs = match parse(&text) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("error: {file}: {e}");
                    return ExitCode::from(2);
                }
            };
            let Ok(jobs) = jobs.parse::<usize>() else {
                eprintln!("error: JOBS must be a number, not {jobs:?}");
                return ExitCode::from(2);
            };
            let program = rest.first().cloned().unwrap_or_else(|| "true".to_owned());
            (needs, jobs.max(1), program)
        }
        _ => {
            eprintln!("usage: handwritten_runner DAG_FILE JOBS [PROGRAM]");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let n = needs.len();
    let t0 = Instant::now();
    let ok = runtime.block_on(run(needs, jobs, &program));
    if args.is_empty() {
        println!("{n} nodes, jobs 2: {:.3}s", t0.elapsed().as_secs_f64());
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs the DAG; false when a node failed.
async fn run(needs: Vec<Vec<u32>>, jobs: usize, program: &str) -> bool {
    let n = needs.len();
    let mut dependents = vec![Vec::new(); n];
    let mut remaining = vec![0u32; n];
    for (i, ns) in needs.iter().enumerate() {
        remaining[i] = ns.len() as u32;
        for &d in ns {
            dependents[d as usize].push(i as u32);
        }
    }
    let mut ready: BinaryHeap<Reverse<u32>> = (0..n as u32)
        .filter(|&i| remaining[i as usize] == 0)
        .map(Reverse)
        .collect();
    let mut running = JoinSet::new();
    loop {
        while running.len() < jobs {
            let Some(Reverse(i)) = ready.pop() else { break };
            let mut cmd = tokio::process::Command::new(program);
            cmd.stdin(Stdio::null());
            running.spawn(async move { (i, cmd.status().await) });
        }
        let Some(joined) = running.join_next().await else {
            return true;
        };
        let Ok((i, status)) = joined else {
            return false;
        };
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("node {i}: {s}");
                return false;
            }
            Err(e) => {
                eprintln!("node {i}: cannot start {program}: {e}");
                return false;
            }
        }
        for &d in &dependents[i as usize] {
            remaining[d as usize] -= 1;
            if remaining[d as usize] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
}

/// One line per node: the indices it needs, each smaller than its own.
fn parse(text: &str) -> Result<Vec<Vec<u32>>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            line.split_whitespace()
                .map(|w| match w.parse::<u32>() {
                    Ok(d) if (d as usize) < i => Ok(d),
                    _ => Err(format!("line {}: {w:?} is not an earlier node", i + 1)),
                })
                .collect()
        })
        .collect()
}

/// Layers of `width`, each node needing two of the layer before.
fn lattice(n: u32, width: u32) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            if i < width {
                return Vec::new();
            }
            let start = i - i % width - width;
            let col = i % width;
            let mut v = vec![start + col, start + (col + 1) % width];
            v.sort_unstable();
            v.dedup();
            v
        })
        .collect()
}
