//! The example pipeline, run by the engine: three builds in parallel, a test container,
//! a push of all three; then the artifacts manifest.

use std::path::Path;
use std::sync::Arc;

use orch_core::{LoadOptions, PhaseStatus, Pipeline, RunControl, RunOptions, RunStatus, Runner};

use crate::support::{
    BASE_IMAGE, base_image, docker_config, engine, nonce, registry, registry_digest, remove_images,
};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test]
async fn example_pipeline_builds_tests_and_pushes_with_a_manifest() {
    let Some(docker) = engine().await else { return };
    let Some(reg) = registry() else { return };
    let work = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipeline"),
        work.path(),
    );
    let config = docker_config(&reg.addr, &reg.user, &reg.password);
    let version = format!("0.0.0-{}", nonce());

    let mut registry_of_kinds = orch_core::Registry::with_builtins();
    orch_docker::register(&mut registry_of_kinds).expect("the kinds register once");
    let file = work.path().join("orch.toml");
    let options = LoadOptions {
        vars: vec![
            ("registry".into(), reg.addr.clone()),
            ("version".into(), version.clone()),
            ("docker_config".into(), config.path().display().to_string()),
        ],
    };
    let pipeline =
        Pipeline::load(&file, &registry_of_kinds, &options).unwrap_or_else(|e| panic!("{e}"));
    let state = work.path().join(".orch");
    let runner = Runner::new(
        Arc::new(pipeline),
        RunOptions {
            state_dir: Some(state.clone()),
            ..RunOptions::default()
        },
    );
    let record = runner.run(RunControl::new()).await.unwrap();
    let summary: Vec<_> = record
        .phases
        .iter()
        .map(|(id, p)| format!("{id}: {} {:?}", p.status, p.reason))
        .collect();
    assert_eq!(record.status, RunStatus::Succeeded, "{summary:#?}");
    for p in record.phases.values() {
        assert_eq!(p.status, PhaseStatus::Succeeded);
    }
    assert_eq!(record.phases["test-api"].outputs["exit_code"], "0");

    let run_dir = state.join("runs").join(record.run_id.as_str());
    let path = orch_docker::write_artifacts_manifest(&record, &run_dir).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(manifest["run_id"], record.run_id.as_str());
    let images = manifest["images"].as_array().unwrap();
    assert_eq!(images.len(), 4, "{manifest:#}");
    let mut pushed = 0;
    for image in images {
        assert!(image["image_id"].as_str().unwrap().starts_with("sha256:"));
        assert_eq!(image["cached"], false);
        assert!(image["size"].as_u64().unwrap() > 0);
        assert!(image["build_duration_ms"].as_u64().is_some());
        let name = image["name"].as_str().unwrap();
        if name.starts_with(&reg.addr) {
            pushed += 1;
            assert_eq!(image["pushed_by"], serde_json::json!(["push"]));
            let service = name
                .trim_start_matches(&format!("{}/", reg.addr))
                .split(':')
                .next()
                .unwrap();
            let digest = registry_digest(&reg, service, &version).await;
            let want = format!("{}/{service}@{digest}", reg.addr);
            assert_eq!(image["registry_digests"][name], want.as_str(), "{image:#}");
        } else {
            assert_eq!(image["built_by"], "base");
            assert_eq!(image["pushed_by"], serde_json::json!([]));
        }
    }
    assert_eq!(pushed, 3);

    let mut tags: Vec<String> = ["api", "web", "worker"]
        .iter()
        .map(|s| format!("{}/orch-example/{s}:{version}", reg.addr))
        .collect();
    tags.push(format!("orch-example/base:{version}"));
    remove_images(&docker, &tags).await;
}

#[tokio::test]
async fn push_after_a_test_container_pushes_the_tags_of_the_build_before_it() {
    let Some(docker) = engine().await else { return };
    let Some(reg) = registry() else { return };
    base_image().await;
    let n = nonce();
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("ctx")).unwrap();
    std::fs::write(
        work.path().join("ctx/Dockerfile"),
        format!("FROM {BASE_IMAGE}\nCOPY stamp /stamp\n"),
    )
    .unwrap();
    std::fs::write(work.path().join("ctx/stamp"), &n).unwrap();
    let config = docker_config(&reg.addr, &reg.user, &reg.password);
    let repo = format!("orch-test/pushrun-{n}");
    let tag = format!("{}/{repo}:1.0", reg.addr);
    // push needs test, test needs build: no tags set, none published by `test`.
    let text = format!(
        r#"
[pipeline]
name = "push-after-test"
[agents.engine]
type = "docker"
[phases.build]
kind = "docker.build"
with = {{ context = "ctx", tags = ["{tag}"] }}
[phases.test]
kind = "docker.run"
needs = ["build"]
with = {{ image = "${{{{ phases.build.outputs.image_id }}}}", network = "none", command = "test -f /stamp" }}
[phases.push]
kind = "docker.push"
needs = ["test"]
with = {{ docker_config = "{}" }}
"#,
        config.path().display()
    );
    let mut kinds = orch_core::Registry::with_builtins();
    orch_docker::register(&mut kinds).expect("the kinds register once");
    let pipeline = Pipeline::from_str(
        &text,
        &work.path().join("orch.toml"),
        &kinds,
        &LoadOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let runner = Runner::new(
        Arc::new(pipeline),
        RunOptions {
            state_dir: Some(work.path().join(".orch")),
            ..RunOptions::default()
        },
    );
    let record = runner.run(RunControl::new()).await.unwrap();
    let summary: Vec<_> = record
        .phases
        .iter()
        .map(|(id, p)| format!("{id}: {} {:?}", p.status, p.reason))
        .collect();
    assert_eq!(record.status, RunStatus::Succeeded, "{summary:#?}");
    let digest = registry_digest(&reg, &repo, "1.0").await;
    assert_eq!(
        record.phases["push"].outputs["digest"],
        format!("{}/{repo}@{digest}", reg.addr)
    );
    remove_images(&docker, &[tag]).await;
}
