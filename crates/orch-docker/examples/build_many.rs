//! Builds several contexts concurrently through `docker.build`, at most `--jobs` at once
//! (as the engine's job limit would), and prints the wall time. Used by
//! `benches/docker_build.sh`.
//!
//! ```sh
//! cargo run -p orch-docker --example build_many -- --jobs 4 [--no-cache] DIR=TAG...
//! ```

use std::sync::Arc;
use std::time::Instant;

use orch_core::{Phase, PhaseContext, PhaseId, PhaseSpec, Registry, WithTable};
use orch_docker::DockerAgent;
use tokio::sync::Semaphore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut jobs = 4usize;
    let mut no_cache = false;
    let mut builds = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--jobs" => jobs = args.next().ok_or("--jobs needs a number")?.parse()?,
            "--no-cache" => no_cache = true,
            other => {
                let (dir, tag) = other
                    .split_once('=')
                    .ok_or_else(|| format!("expected DIR=TAG, got {other}"))?;
                builds.push((dir.to_owned(), tag.to_owned()));
            }
        }
    }
    if builds.is_empty() {
        return Err("usage: build_many [--jobs N] [--no-cache] DIR=TAG...".into());
    }

    let mut registry = Registry::with_builtins();
    orch_docker::register(&mut registry)?;
    let agent = Arc::new(DockerAgent::from_env("docker")?);
    let limit = Arc::new(Semaphore::new(jobs.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (dir, tag)) in builds.into_iter().enumerate() {
        let mut spec = PhaseSpec::new(PhaseId::new(format!("build-{i}"))?, "docker.build");
        let mut table = toml::Table::new();
        table.insert("context".into(), ".".into());
        table.insert("tags".into(), toml::Value::Array(vec![tag.clone().into()]));
        table.insert("no_cache".into(), no_cache.into());
        spec.with = WithTable::new(table);
        let phase: Arc<dyn Phase> = registry.build_phase(&spec)?;
        let agent = agent.clone();
        let limit = limit.clone();
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
            let t = Instant::now();
            let ctx = PhaseContext::builder(spec.id.clone(), &dir)
                .agent(agent)
                .build();
            let out = phase.run(&ctx).await.map_err(|e| format!("{tag}: {e}"))?;
            Ok::<_, String>((tag, out.outputs["cached"].clone(), t.elapsed()))
        });
    }
    let mut failed = false;
    while let Some(joined) = tasks.join_next().await {
        match joined? {
            Ok((tag, cached, took)) => {
                println!("{tag}: {:.2}s cached={cached}", took.as_secs_f64());
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    println!("wall {:.3}", started.elapsed().as_secs_f64());
    if failed {
        return Err("some builds failed".into());
    }
    Ok(())
}
