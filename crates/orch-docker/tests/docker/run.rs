//! `docker.run`: exit codes, output, settings, timeout and cancellation.

use std::time::Duration;

use orch_core::{PhaseError, RunEvent, Stream};
use tokio_util::sync::CancellationToken;

use crate::support::{
    BASE_IMAGE, TestCtx, base_image, containers_of_run, engine, phase_of, wait_for_line,
};

#[tokio::test]
async fn exit_code_decides_and_output_is_streamed() {
    let Some(docker) = engine().await else { return };
    base_image().await;
    let dir = tempfile::tempdir().unwrap();

    let ok = phase_of(
        "docker.run",
        &format!(
            r#"image = "{BASE_IMAGE}"
network = "none"
               command = "echo out-$GREETING-$ORCH_PHASE_ID; echo to-stderr >&2"
               env = {{ GREETING = "hi" }}"#
        ),
    );
    let t = TestCtx::new(dir.path());
    let out = ok
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    assert_eq!(out.outputs["exit_code"], "0");
    assert_eq!(out.exit_code, Some(0));
    let events = t.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| matches!(e,
        RunEvent::PhaseOutput { stream: Stream::Stdout, line, .. } if line == "out-hi-p")));
    assert!(events.iter().any(|e| matches!(e,
        RunEvent::PhaseOutput { stream: Stream::Stderr, line, .. } if line == "to-stderr")));
    assert!(containers_of_run(&docker, &t.run_id).await.is_empty());

    let failing = phase_of(
        "docker.run",
        &format!(
            r#"image = "{BASE_IMAGE}"
network = "none"
command = ["sh", "-c", "exit 3"]"#
        ),
    );
    let t = TestCtx::new(dir.path());
    let err = failing.run(&t.ctx).await.unwrap_err();
    let PhaseError::Failed { message, exit_code } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*exit_code, Some(3));
    assert!(
        message.ends_with(&format!("({BASE_IMAGE}) exited with code 3")),
        "{message}"
    );
    assert!(containers_of_run(&docker, &t.run_id).await.is_empty());
}

#[tokio::test]
async fn mounts_workdir_user_and_safe_interpolation() {
    let Some(_docker) = engine().await else {
        return;
    };
    base_image().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/input.txt"), "from-the-host\n").unwrap();
    let phase = phase_of(
        "docker.run",
        &format!(
            r#"image = "{BASE_IMAGE}"
network = "none"
mounts = ["data:/data:ro"]
workdir = "/data"
user = "1234:1234"
command = "cat input.txt; id -u; pwd; echo '${{{{ vars.tricky }}}}'; touch /data/x || echo read-only""#
        ),
    );
    let t = TestCtx::configure(dir.path(), |b| b.var("tricky", "$(echo pwned)'; exit 9; '"));
    phase
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    let lines = t.lines();
    for want in [
        "from-the-host",
        "1234",
        "/data",
        "$(echo pwned)'; exit 9; '",
        "read-only",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "{want:?} not in {lines:#?}"
        );
    }
}

#[tokio::test]
async fn a_run_past_its_timeout_leaves_no_container() {
    let Some(docker) = engine().await else { return };
    base_image().await;
    let dir = tempfile::tempdir().unwrap();
    let phase = phase_of(
        "docker.run",
        &format!(
            r#"image = "{BASE_IMAGE}"
network = "none"
command = "sleep 60""#
        ),
    );
    let t = TestCtx::new(dir.path());
    let mut fut = phase.run(&t.ctx);
    tokio::select! {
        r = &mut fut => panic!("ended early: {r:?}"),
        () = wait_for_line(&t.events, "started container", Duration::from_secs(60)) => {}
    }
    assert_eq!(containers_of_run(&docker, &t.run_id).await.len(), 1);
    // What the engine does on timeout: the future is dropped.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fut)
            .await
            .is_err()
    );
    assert!(
        containers_of_run(&docker, &t.run_id).await.is_empty(),
        "the container is removed by the time the dropped future is gone"
    );
}

#[tokio::test]
async fn cancelling_a_run_stops_and_removes_the_container() {
    let Some(docker) = engine().await else { return };
    base_image().await;
    let dir = tempfile::tempdir().unwrap();
    let phase = phase_of(
        "docker.run",
        &format!(
            r#"image = "{BASE_IMAGE}"
network = "none"
command = "echo up; sleep 60""#
        ),
    );
    let token = CancellationToken::new();
    let t = TestCtx::configure(dir.path(), |b| {
        b.cancel(token.clone()).grace(Duration::from_secs(1))
    });
    let canceller = async {
        wait_for_line(&t.events, "up", Duration::from_secs(60)).await;
        assert_eq!(containers_of_run(&docker, &t.run_id).await.len(), 1);
        token.cancel();
    };
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(phase.run(&t.ctx), canceller);
    assert_eq!(result.unwrap_err(), PhaseError::Cancelled);
    assert!(containers_of_run(&docker, &t.run_id).await.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped within the grace period, not after the sleep"
    );
}

#[tokio::test]
async fn output_lines_become_outputs_and_stay_out_of_the_log() {
    let Some(docker) = engine().await else { return };
    base_image().await;
    let dir = tempfile::tempdir().unwrap();
    let phase = phase_of(
        "docker.run",
        &format!(
            r#"image = "{BASE_IMAGE}"
network = "none"
command = "echo before; echo ::orch-output version=1.2.3; printf '::orch-output last=a=b'""#
        ),
    );
    let t = TestCtx::new(dir.path());
    let out = phase
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    assert_eq!(out.outputs["version"], "1.2.3");
    assert_eq!(out.outputs["last"], "a=b");
    assert_eq!(out.outputs["exit_code"], "0");
    let stdout: Vec<String> = t
        .events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            RunEvent::PhaseOutput {
                stream: Stream::Stdout,
                line,
                ..
            } => Some(line.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stdout, ["before"]);
    assert!(containers_of_run(&docker, &t.run_id).await.is_empty());
}

#[tokio::test]
async fn swarm_settings_on_a_docker_agent_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let phase = phase_of(
        "docker.run",
        r#"image = "busybox"
constraints = ["node.labels.zone==a"]"#,
    );
    let t = TestCtx::new(dir.path());
    let err = phase.run(&t.ctx).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "`constraints` places a task on a swarm: run this phase on a `swarm` agent (agent `docker` is a `docker` agent)"
    );
}
