//! `system.check` through the engine: a passing check and its outputs, a failing one naming
//! what is missing and how to get it, bad `with` values as located errors; the Engine API
//! probe on the test engine.

// Test code unwraps freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use orch_core::{
    LoadError, LoadOptions, PhaseStatus, Pipeline, Registry, RunControl, RunOptions, RunRecord,
    Runner,
};

fn registry() -> Registry {
    let mut r = Registry::with_builtins();
    orch_system::register(&mut r).expect("the kinds register once");
    r
}

fn load(dir: &std::path::Path, toml: &str) -> Result<Pipeline, LoadError> {
    let file = dir.join("orch.toml");
    std::fs::write(&file, toml).unwrap();
    Pipeline::load(&file, &registry(), &LoadOptions::default())
}

async fn run(toml: &str) -> (tempfile::TempDir, RunRecord) {
    let dir = tempfile::tempdir().unwrap();
    let p = load(dir.path(), toml).unwrap_or_else(|e| panic!("{e}"));
    let record = Runner::new(Arc::new(p), RunOptions::default())
        .run(RunControl::new())
        .await
        .unwrap();
    (dir, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_check_publishes_what_it_found() {
    let (dir, record) = run(r#"
[pipeline]
name = "sys"

[phases.machine]
kind = "system.check"
with = { commands = ["sh"], min_memory = "1MiB", min_disk = "1KiB", path = "work/not-yet" }

[phases.after]
run = "test ${{ phases.machine.outputs.memory }} -gt 1048576"
needs = ["machine"]
"#)
    .await;
    let m = &record.phases["machine"];
    assert_eq!(m.status, PhaseStatus::Succeeded, "{:?}", m.reason);
    assert_eq!(record.phases["after"].status, PhaseStatus::Succeeded);
    let o = &m.outputs;
    assert!(o["cpus"].parse::<usize>().unwrap() >= 1);
    assert!(
        o["memory"].parse::<u64>().unwrap() >= o["memory_available"].parse::<u64>().unwrap() / 2
    );
    assert!(o["disk"].parse::<u64>().unwrap() > 1024);
    // Measured at the nearest directory that exists.
    assert_eq!(o["disk_path"], dir.path().display().to_string());
    assert!(o["commands"].starts_with("sh=/"), "{}", o["commands"]);
    assert!(!o["gpu"].is_empty());
    assert!(
        !o.contains_key("docker"),
        "docker is probed only when asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_names_what_is_missing_and_how_to_get_it() {
    let (_dir, record) = run(r#"
[pipeline]
name = "sys"

[phases.machine]
kind = "system.check"
with = { commands = ["sh", "no-such-tool-orch", "promtool"], min_memory = "1000TiB", min_disk = "1000000TiB", docker = true }
# promtool is installed in /usr/local/bin (scripts/install/promtool.sh): not on this PATH.
env = { PATH = "/nonexistent-bin:/bin:/usr/bin", DOCKER_HOST = "unix:///nonexistent/docker.sock" }

[phases.build]
run = "true"
needs = ["machine"]
"#)
    .await;
    let m = &record.phases["machine"];
    assert_eq!(m.status, PhaseStatus::Failed);
    assert_eq!(record.phases["build"].status, PhaseStatus::Blocked);
    let reason = m.reason.clone().unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)", "[SIZE]");
    settings.add_filter(r"free at /\S+", "free at [DIR]");
    settings.bind(|| insta::assert_snapshot!("failed_check", reason.replace("; ", ";\n")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_true_requires_one() {
    let (_dir, record) = run(r#"
[pipeline]
name = "sys"

[phases.gpu]
kind = "system.check"
with = { gpu = true }
"#)
    .await;
    let found = !orch_system::probe::gpus(&orch_system::probe::ProbeEnv::from_env()).is_empty();
    let p = &record.phases["gpu"];
    if found {
        assert_eq!(p.status, PhaseStatus::Succeeded, "{:?}", p.reason);
        assert_ne!(p.outputs["gpu"], "none");
    } else {
        assert_eq!(p.status, PhaseStatus::Failed);
        assert!(
            p.reason.as_deref().unwrap().contains("gpu: none found"),
            "{:?}",
            p.reason
        );
    }
}

#[test]
fn bad_with_values_are_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    let check = |with: &str| {
        let toml = format!(
            "[pipeline]\nname = \"sys\"\n\n[phases.machine]\nkind = \"system.check\"\nwith = {with}\n"
        );
        match load(dir.path(), &toml) {
            Err(LoadError::Invalid(d)) => d
                .render()
                .replace(&dir.path().display().to_string(), "[DIR]"),
            Err(e) => panic!("{with}: {e}"),
            Ok(_) => panic!("{with}: loaded"),
        }
    };
    let all = [
        r#"{ min_memory = "lots" }"#,
        r#"{ min_disk = 1.5 }"#,
        r#"{ commands = "git" }"#,
        r#"{ docker = "yes" }"#,
        r#"{ min_mem = "4GiB" }"#,
        r#"{ commands = ["git", ""] }"#,
    ]
    .map(check)
    .join("\n");
    insta::assert_snapshot!("bad_with", all);
}

#[test]
fn the_engine_probe_reads_the_test_engine() {
    let env = orch_system::probe::ProbeEnv::from_env();
    let endpoint = env.default_engine().unwrap();
    match orch_system::probe::docker_engine(&endpoint) {
        Ok(engine) => {
            assert!(!engine.version.is_empty() && engine.version != "?");
            assert!(engine.api_version.starts_with("1."), "{engine:?}");
            let swarm = orch_system::probe::docker_swarm(&endpoint).unwrap();
            assert!(
                ["inactive", "pending", "active", "error", "locked"]
                    .contains(&swarm.state.as_str()),
                "{swarm:?}"
            );
        }
        Err(e) => {
            assert!(
                !std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1"),
                "ORCH_REQUIRE_SERVICES=1 but no Docker engine answers at {endpoint}: {e}; run \
                 scripts/services/docker.sh start"
            );
            eprintln!("skipping: no Docker engine at {endpoint}: {e}");
        }
    }
}
