//! `docker.push`: digests as the registry reports them; credentials never leak.

use base64::Engine as _;
use orch_core::PhaseError;

use crate::support::{
    BASE_IMAGE, TestCtx, base_image, build_phase, context, docker_config, engine, nonce,
    phase_with, registry, registry_digest, remove_images,
};

/// Builds a small image with two tags in the test registry's namespace.
async fn build_two_tags(reg_addr: &str, n: &str) -> (tempfile::TempDir, Vec<String>, String) {
    let dir = context(
        &format!("FROM {BASE_IMAGE}\nCOPY stamp /stamp\n"),
        &[("stamp", n)],
    );
    let repo = format!("{reg_addr}/orch-test/push-{n}");
    let tags = vec![format!("{repo}:1.0"), format!("{repo}:latest")];
    let with = format!(r#"tags = ["{}", "{}"]"#, tags[0], tags[1]);
    let t = TestCtx::new(dir.path());
    let out = build_phase(&with)
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    let tags_output = out.outputs["tags"].clone();
    (dir, tags, tags_output)
}

#[tokio::test]
async fn push_with_config_file_credentials_records_the_registry_digest() {
    let Some(docker) = engine().await else { return };
    let Some(reg) = registry() else { return };
    base_image().await;
    let n = nonce();
    let (dir, tags, tags_output) = build_two_tags(&reg.addr, &n).await;
    let config = docker_config(
        &format!("http://{}/v2/", reg.addr),
        &reg.user,
        &reg.password,
    );

    // Default tags: those of the build it needs.
    let push = phase_with(
        "docker.push",
        &format!(r#"docker_config = "{}""#, config.path().display()),
        &["build"],
        &[],
    );
    let t = TestCtx::configure(dir.path(), |b| b.output("build", "tags", &tags_output));
    let out = push
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));

    let repo = format!("{}/orch-test/push-{n}", reg.addr);
    let reported = registry_digest(&reg, &format!("orch-test/push-{n}"), "1.0").await;
    assert!(reported.starts_with("sha256:"), "{reported}");
    assert_eq!(out.outputs["digest"], format!("{repo}@{reported}"));
    let digests: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&out.outputs["digests"]).unwrap();
    assert_eq!(digests.len(), 2);
    assert_eq!(digests[&tags[0]], format!("{repo}@{reported}"));
    let latest = registry_digest(&reg, &format!("orch-test/push-{n}"), "latest").await;
    assert_eq!(digests[&tags[1]], format!("{repo}@{latest}"));

    assert_eq!(out.artifacts.len(), 2);
    let a = &out.artifacts[0];
    assert_eq!(a.kind, "image");
    assert_eq!(a.name, tags[0]);
    assert_eq!(a.digest.as_deref(), Some(reported.as_str()));
    assert_eq!(
        a.details["registry_digest"],
        serde_json::json!(format!("{repo}@{reported}"))
    );

    let text = t.log_text();
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", reg.user, reg.password));
    assert!(!text.contains(&reg.password) && !text.contains(&b64));
    assert!(text.contains("credentials from"), "{text}");

    // Credentials from a secret push as well.
    let push = phase_with(
        "docker.push",
        &format!(
            r#"tags = ["{}"]
username = "{}"
password_secret = "REG_PW""#,
            tags[0], reg.user
        ),
        &[],
        &["REG_PW"],
    );
    let t = TestCtx::configure(dir.path(), |b| b.secret("REG_PW", &reg.password));
    let out = push
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    assert_eq!(out.outputs["digest"], format!("{repo}@{reported}"));
    assert!(!t.log_text().contains(&reg.password));

    remove_images(&docker, &tags).await;
}

#[tokio::test]
async fn wrong_credentials_fail_clearly_and_never_leak() {
    let Some(docker) = engine().await else { return };
    let Some(reg) = registry() else { return };
    base_image().await;
    let n = nonce();
    let (dir, tags, _) = build_two_tags(&reg.addr, &n).await;

    // From a secret.
    let wrong = format!("wrong-pw-{n}");
    let push = phase_with(
        "docker.push",
        &format!(
            r#"tags = ["{}"]
username = "{}"
password_secret = "REG_PW""#,
            tags[0], reg.user
        ),
        &[],
        &["REG_PW"],
    );
    let t = TestCtx::configure(dir.path(), |b| b.secret("REG_PW", &wrong));
    let err = push.run(&t.ctx).await.unwrap_err();
    let PhaseError::Failed { message, .. } = &err else {
        panic!("{err:?}")
    };
    eprintln!("wrong secret: {message}");
    assert!(
        message.starts_with(&format!("push of {} failed: ", tags[0])),
        "{message}"
    );
    assert!(
        message.contains("unauthorized") || message.contains("authentication required"),
        "{message}"
    );
    assert!(
        message.contains("credentials from secret REG_PW"),
        "{message}"
    );
    assert!(!message.contains(&wrong));
    assert!(!t.log_text().contains(&wrong), "{}", t.log_text());

    // From the config file (not a declared secret: the phase must mask it itself).
    let wrong = format!("bad-config-pw-{n}");
    let config = docker_config(&reg.addr, &reg.user, &wrong);
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{}:{wrong}", reg.user));
    let push = phase_with(
        "docker.push",
        &format!(
            r#"tags = ["{}"]
docker_config = "{}""#,
            tags[0],
            config.path().display()
        ),
        &[],
        &[],
    );
    let t = TestCtx::new(dir.path());
    let message = push.run(&t.ctx).await.unwrap_err().to_string();
    eprintln!("wrong config: {message}");
    assert!(
        message.contains(&format!(
            "credentials from {}",
            config.path().join("config.json").display()
        )),
        "{message}"
    );
    for leak in [&wrong, &b64] {
        assert!(!message.contains(leak.as_str()), "{message}");
        assert!(!t.log_text().contains(leak.as_str()));
    }

    // No credentials at all.
    let empty = tempfile::tempdir().unwrap();
    let push = phase_with(
        "docker.push",
        &format!(
            r#"tags = ["{}"]
docker_config = "{}""#,
            tags[0],
            empty.path().display()
        ),
        &[],
        &[],
    );
    let t = TestCtx::new(dir.path());
    let message = push.run(&t.ctx).await.unwrap_err().to_string();
    eprintln!("no credentials: {message}");
    assert!(
        message.contains(&format!("no credentials found for {}", reg.addr)),
        "{message}"
    );

    remove_images(&docker, &tags).await;
}
