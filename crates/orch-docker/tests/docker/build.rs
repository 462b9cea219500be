//! `docker.build`: .dockerignore, labels, the up-to-date check, failures, cancellation.

use std::collections::BTreeSet;
use std::time::Duration;

use orch_core::{PhaseError, RunEvent, Stream};
use tokio_util::sync::CancellationToken;

use crate::support::{
    BASE_IMAGE, TestCtx, base_image, build_phase, containers_with_command, context, engine,
    eventually, nonce, phase_of, remove_images, wait_for_line,
};

#[tokio::test]
async fn build_honours_dockerignore_then_caches_then_forces() {
    let Some(docker) = engine().await else { return };
    base_image().await;
    let n = nonce();
    let dir = context(
        &format!("FROM {BASE_IMAGE}\nCOPY . /app/\nCMD [\"find\", \"/app\"]\n"),
        &[
            (
                ".dockerignore",
                "# not sent\nsecret.txt\nlogs\n!logs/keep.log\n**/*.tmp\n",
            ),
            ("secret.txt", "top secret"),
            ("kept.txt", &n),
            ("logs/a.log", "a"),
            ("logs/keep.log", "k"),
            ("sub/x.tmp", "t"),
            ("sub/y.txt", "y"),
        ],
    );
    let tag = format!("orch-test/ignore:{n}");
    let other_tag = format!("orch-test/ignore:{n}-again");
    let with = format!(
        r#"context = "."
tags = ["{tag}"]
labels = {{ "com.example.team" = "qa" }}
revision = "abc123""#
    );
    let phase = build_phase(&with);

    // First build: really built, output streamed, id and tags published.
    let t = TestCtx::configure(dir.path(), |b| b.var("version", "9.9.9"));
    let out = phase
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    assert_eq!(out.outputs["cached"], "false");
    let id = out.outputs["image_id"].clone();
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(out.outputs["tags"], format!(r#"["{tag}"]"#));
    let lines = t.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Step 2/") && l.ends_with(" : COPY . /app/")),
        "{lines:#?}"
    );
    let stdout_events = t
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            matches!(
                e,
                RunEvent::PhaseOutput {
                    stream: Stream::Stdout,
                    ..
                }
            )
        })
        .count();
    assert!(
        stdout_events >= 3,
        "build output is streamed as the phase's output"
    );

    // The artifact.
    assert_eq!(out.artifacts.len(), 1);
    let a = &out.artifacts[0];
    assert_eq!((a.kind.as_str(), a.name.as_str()), ("image", tag.as_str()));
    assert_eq!(a.digest.as_deref(), Some(id.as_str()));
    assert!(
        a.size.unwrap() > 1_000_000,
        "busybox is in it: {:?}",
        a.size
    );
    assert_eq!(a.details["cached"], serde_json::json!(false));
    assert_eq!(a.details["image_id"], serde_json::json!(id));

    // Labels: OCI ones filled in, the user's, the content hash, the run.
    let inspect = docker.inspect_image(&tag).await.unwrap();
    assert_eq!(inspect.id.as_deref(), Some(id.as_str()));
    let labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(labels["org.opencontainers.image.version"], "9.9.9");
    assert_eq!(labels["org.opencontainers.image.revision"], "abc123");
    assert!(labels["org.opencontainers.image.created"].starts_with("20"));
    assert_eq!(labels["com.example.team"], "qa");
    assert_eq!(
        labels[orch_docker::CONTENT_HASH_LABEL],
        out.outputs["content_hash"]
    );
    assert_eq!(labels[orch_docker::RUN_LABEL], t.run_id.as_str());

    // What is inside the image, seen by running it.
    let run = phase_of(
        "docker.run",
        &format!(
            r#"image = "{tag}"
network = "none""#
        ),
    );
    let rt = TestCtx::new(dir.path());
    run.run(&rt.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rt.log_text()));
    let files: BTreeSet<String> = rt
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("/app"))
        .collect();
    let want: BTreeSet<String> = [
        "/app",
        "/app/.dockerignore",
        "/app/Dockerfile",
        "/app/kept.txt",
        "/app/logs",
        "/app/logs/keep.log",
        "/app/sub",
        "/app/sub/y.txt",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(files, want);

    // Same content and settings: cached, nothing built.
    let t2 = TestCtx::configure(dir.path(), |b| b.var("version", "9.9.9"));
    let again = phase.run(&t2.ctx).await.unwrap();
    assert_eq!(again.outputs["cached"], "true");
    assert_eq!(again.outputs["image_id"], id);
    assert!(t2.lines().iter().any(|l| l.starts_with("up to date")));
    assert!(!t2.lines().iter().any(|l| l.starts_with("Step ")));
    assert_eq!(
        again.artifacts[0].details["cached"],
        serde_json::json!(true)
    );

    // An excluded file changing changes nothing; a new tag is just added.
    std::fs::write(dir.path().join("secret.txt"), "another secret").unwrap();
    let retag = build_phase(&format!(
        r#"context = "."
tags = ["{tag}", "{other_tag}"]
labels = {{ "com.example.team" = "qa" }}
revision = "abc123""#
    ));
    let t3 = TestCtx::configure(dir.path(), |b| b.var("version", "9.9.9"));
    let retagged = retag.run(&t3.ctx).await.unwrap();
    assert_eq!(retagged.outputs["cached"], "true");
    assert_eq!(
        docker
            .inspect_image(&other_tag)
            .await
            .unwrap()
            .id
            .as_deref(),
        Some(id.as_str())
    );

    // A sent file changing, or a setting, means a build.
    std::fs::write(dir.path().join("sub/y.txt"), "changed").unwrap();
    let t4 = TestCtx::configure(dir.path(), |b| b.var("version", "9.9.9"));
    let changed = phase.run(&t4.ctx).await.unwrap();
    assert_eq!(changed.outputs["cached"], "false");
    let t5 = TestCtx::configure(dir.path(), |b| b.var("version", "10.0.0"));
    let new_version = phase.run(&t5.ctx).await.unwrap();
    assert_eq!(new_version.outputs["cached"], "false");

    // `force` builds although an image has the hash.
    let forced = build_phase(&format!("{with}\nforce = true"));
    let t6 = TestCtx::configure(dir.path(), |b| b.var("version", "10.0.0"));
    let out6 = forced.run(&t6.ctx).await.unwrap();
    assert_eq!(out6.outputs["cached"], "false");
    assert!(
        t6.lines()
            .iter()
            .any(|l| l.starts_with("Step 1/") && l.ends_with(&format!(" : FROM {BASE_IMAGE}")))
    );

    let mut made = vec![tag, other_tag];
    for o in [&out, &changed, &new_version, &out6] {
        made.push(o.outputs["image_id"].clone());
    }
    remove_images(&docker, &made).await;
}

#[tokio::test]
async fn a_failing_step_is_named_in_the_error() {
    let Some(docker) = engine().await else { return };
    base_image().await;
    let n = nonce();
    let marker = format!("fail-{n}");
    let dir = context(
        &format!(
            "FROM {BASE_IMAGE}\nRUN echo building {n}\nRUN exit 3 # {marker}\nCMD [\"true\"]\n"
        ),
        &[],
    );
    let phase = build_phase(&format!(r#"tags = ["orch-test/fail:{n}"]"#));
    let t = TestCtx::new(dir.path());
    let err = phase.run(&t.ctx).await.unwrap_err();
    let PhaseError::Failed { message, .. } = &err else {
        panic!("{err:?}")
    };
    eprintln!("failing step: {message}");
    assert!(
        message.starts_with("build failed at step 3/")
            && message.contains(&format!(" (RUN exit 3 # {marker}): ")),
        "{message}"
    );
    assert!(message.contains("returned a non-zero code: 3"), "{message}");
    assert!(containers_with_command(&docker, &marker).await.is_empty());

    // A Dockerfile the engine cannot parse.
    let bad = context("FROM scratch\nNOPE nothing\n", &[]);
    let t = TestCtx::new(bad.path());
    let err = build_phase(r#"tags = []"#).run(&t.ctx).await.unwrap_err();
    eprintln!("bad dockerfile: {err}");
    assert!(err.to_string().contains("unknown instruction"), "{err}");
}

#[tokio::test]
async fn cancelling_or_dropping_a_build_leaves_no_container() {
    let Some(docker) = engine().await else { return };
    base_image().await;

    // Cancelled while a RUN step is running.
    let n = nonce();
    let marker = format!("cancel-{n}");
    let dir = context(
        &format!("FROM {BASE_IMAGE}\nRUN sleep 60 # {marker}\n"),
        &[],
    );
    let phase = build_phase(&format!(r#"tags = ["orch-test/cancel:{n}"]"#));
    let token = CancellationToken::new();
    let t = TestCtx::configure(dir.path(), |b| {
        b.cancel(token.clone()).grace(Duration::from_secs(1))
    });
    let canceller = async {
        wait_for_line(&t.events, "Running in", Duration::from_secs(60)).await;
        assert_eq!(containers_with_command(&docker, &marker).await.len(), 1);
        token.cancel();
    };
    let (result, ()) = tokio::join!(phase.run(&t.ctx), canceller);
    assert_eq!(result.unwrap_err(), PhaseError::Cancelled);
    assert!(
        containers_with_command(&docker, &marker).await.is_empty(),
        "the step's container is gone when the phase returns"
    );

    // Dropped (as the engine does on timeout) while a RUN step is running.
    let n = nonce();
    let marker = format!("drop-{n}");
    let dir = context(
        &format!("FROM {BASE_IMAGE}\nRUN sleep 60 # {marker}\n"),
        &[],
    );
    let phase = build_phase(&format!(r#"tags = ["orch-test/drop:{n}"]"#));
    let t = TestCtx::new(dir.path());
    let mut fut = phase.run(&t.ctx);
    tokio::select! {
        r = &mut fut => panic!("the build ended early: {r:?}"),
        () = wait_for_line(&t.events, "Running in", Duration::from_secs(60)) => {}
    }
    assert_eq!(containers_with_command(&docker, &marker).await.len(), 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fut)
            .await
            .is_err()
    );
    assert!(
        containers_with_command(&docker, &marker).await.is_empty(),
        "dropping the build removed the step's container"
    );
    // And the engine does not bring one back.
    assert!(
        !eventually(Duration::from_secs(2), || async {
            !containers_with_command(&docker, &marker).await.is_empty()
        })
        .await
    );
}

#[tokio::test]
async fn a_target_stage_and_a_dockerfile_outside_the_context() {
    let Some(docker) = engine().await else { return };
    base_image().await;
    let n = nonce();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("ctx")).unwrap();
    std::fs::create_dir_all(root.path().join("docker")).unwrap();
    std::fs::write(root.path().join("ctx/data.txt"), &n).unwrap();
    std::fs::write(
        root.path().join("docker/app.Dockerfile"),
        format!(
            "FROM {BASE_IMAGE} AS first\nCOPY . /ctx/\nRUN echo one > /stage\n\
             FROM {BASE_IMAGE} AS second\nRUN echo two > /stage\n"
        ),
    )
    .unwrap();
    let tag = format!("orch-test/target:{n}");
    let phase = build_phase(&format!(
        r#"context = "ctx"
dockerfile = "docker/app.Dockerfile"
target = "first"
tags = ["{tag}"]"#
    ));
    let t = TestCtx::new(root.path());
    let out = phase
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    let labels = docker
        .inspect_image(&tag)
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(
        labels[orch_docker::CONTENT_HASH_LABEL],
        out.outputs["content_hash"]
    );

    let run = phase_of(
        "docker.run",
        &format!(
            r#"image = "{tag}"
network = "none"
command = "cat /stage; ls -a /ctx""#
        ),
    );
    let rt = TestCtx::new(root.path());
    run.run(&rt.ctx).await.unwrap();
    let lines = rt.lines();
    assert!(lines.iter().any(|l| l == "one"), "{lines:#?}");
    assert!(lines.iter().any(|l| l == "data.txt"), "{lines:#?}");
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("Dockerfile") || l == ".dockerignore"),
        "the generated build files stay out of the image: {lines:#?}"
    );
    remove_images(&docker, &[tag, out.outputs["image_id"].clone()]).await;
}

#[tokio::test]
async fn an_inherited_content_hash_is_not_a_cache_hit() {
    let Some(docker) = engine().await else { return };
    base_image().await;
    let n = nonce();
    let dir = context(
        &format!("FROM {BASE_IMAGE}\nCOPY stamp /stamp\n"),
        &[("stamp", &n)],
    );
    let first = format!("orch-test/inherit:{n}");
    let t = TestCtx::new(dir.path());
    let built = build_phase(&format!(r#"tags = ["{first}"]"#))
        .run(&t.ctx)
        .await
        .unwrap();

    // An image made from it by other means carries its labels, content hash included.
    let derived = format!("orch-test/inherit-derived:{n}");
    let body = bollard::models::ContainerCreateBody {
        image: Some(first.clone()),
        cmd: Some(vec!["true".into()]),
        ..Default::default()
    };
    let c = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .unwrap();
    let options = bollard::query_parameters::CommitContainerOptionsBuilder::default()
        .container(&c.id)
        .repo("orch-test/inherit-derived")
        .tag(&n)
        .build();
    docker
        .commit_container(options, bollard::models::ContainerConfig::default())
        .await
        .unwrap();
    docker
        .remove_container(
            &c.id,
            None::<bollard::query_parameters::RemoveContainerOptions>,
        )
        .await
        .unwrap();
    let labels = docker
        .inspect_image(&derived)
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(
        labels[orch_docker::CONTENT_HASH_LABEL],
        built.outputs["content_hash"]
    );

    // The same build, tagged as the derived image: the label alone does not make it
    // up to date.
    let t = TestCtx::new(dir.path());
    let out = build_phase(&format!(r#"tags = ["{derived}"]"#))
        .run(&t.ctx)
        .await
        .unwrap();
    assert_eq!(out.outputs["cached"], "false");
    assert_eq!(out.outputs["content_hash"], built.outputs["content_hash"]);

    // While the image it really built is.
    let t = TestCtx::new(dir.path());
    let again = build_phase(&format!(r#"tags = ["{first}"]"#))
        .run(&t.ctx)
        .await
        .unwrap();
    assert_eq!(again.outputs["cached"], "true");
    remove_images(
        &docker,
        &[
            first,
            derived,
            built.outputs["image_id"].clone(),
            out.outputs["image_id"].clone(),
        ],
    )
    .await;
}
