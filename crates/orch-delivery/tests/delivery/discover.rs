//! `discover` on fixture trees.

use std::path::Path;

use orch_delivery::discover::{Discovery, Severity};
use tempfile::TempDir;

use crate::common::{copy_tree, factory_error, fixtures, run_phase, with, write};

/// The fixture project plus what must never be committed or reported: VCS data,
/// dependencies, virtualenvs, build output, caches, backups and ignored files.
pub fn project() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(&fixtures().join("project"), root);
    write(root, ".git/config", "[core]\n");
    write(root, ".git/Dockerfile", "FROM scratch\n");
    write(
        root,
        "services/email-worker/node_modules/express/package.json",
        "{\"name\":\"express\"}",
    );
    write(root, "services/auth/.venv/pyvenv.cfg", "home = /usr\n");
    write(root, "services/auth/.venv/lib/pkg/requirements.txt", "x\n");
    write(
        root,
        "services/auth/pyenv-local/pyvenv.cfg",
        "home = /usr\n",
    );
    write(root, "services/auth/pyenv-local/setup.py", "");
    write(root, "services/auth/app/__pycache__/Dockerfile", "");
    write(
        root,
        "services/payments-ledger/target/debug/build/Cargo.toml",
        "[package]\nname = \"x\"\n",
    );
    write(
        root,
        "vendor/github.com/lib/go.mod",
        "module github.com/lib\n",
    );
    write(root, "backup-2024/auth/Dockerfile", "FROM scratch\n");
    write(root, "services/auth.bak/Dockerfile", "FROM scratch\n");
    write(root, "services/old~/package.json", "{}");
    write(root, "services/auth/Dockerfile.bak", "FROM scratch\n");
    write(root, "generated/svc/package.json", "{}");
    write(root, "experiments/x/package.json", "{}");
    dir
}

pub fn read_discovery(path: &Path) -> Discovery {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn fixture_project_inventory() {
    let dir = project();
    let run = tempfile::tempdir().unwrap();
    let out = run_phase("discover", with(""), dir.path(), run.path(), &[], &[])
        .await
        .ok();
    let report = run.path().join("discovery.json");
    assert_eq!(out.outputs["report"], report.display().to_string());
    let mut d = read_discovery(&report);

    // Outputs agree with the file.
    assert_eq!(out.outputs["services"], d.services.len().to_string());
    assert_eq!(
        out.outputs["compose_files"],
        d.compose_files.len().to_string()
    );
    assert_eq!(
        out.outputs["compose_services"],
        d.compose_service_count().to_string()
    );
    assert_eq!(out.outputs["env_vars"], d.env_vars.len().to_string());
    assert_eq!(out.outputs["problems"], d.problems.len().to_string());
    assert_eq!(out.artifacts[0].kind, "report");

    // Nothing from skipped places.
    for s in &d.services {
        for bad in [
            ".git",
            "node_modules",
            ".venv",
            "pyenv-local",
            "__pycache__",
            "target",
            "vendor",
            "backup",
            ".bak",
            "~",
            "generated",
        ] {
            assert!(!s.path.contains(bad), "{} should have been skipped", s.path);
        }
    }
    let skipped: Vec<(&str, &str)> = d
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason.as_str()))
        .collect();
    for expected in [
        (".git", "vcs"),
        ("services/email-worker/node_modules", "node-modules"),
        ("services/auth/.venv", "virtualenv"),
        ("services/auth/pyenv-local", "virtualenv"),
        ("services/auth/app/__pycache__", "cache"),
        ("services/payments-ledger/target", "build-output"),
        ("vendor", "vendor"),
        ("backup-2024", "backup"),
        ("services/auth.bak", "backup"),
        ("services/old~", "backup"),
    ] {
        assert!(
            skipped.contains(&expected),
            "{expected:?} not in {skipped:?}"
        );
    }
    // `.gitignore`d directories are left out silently.
    assert!(!skipped.iter().any(|(p, _)| p.starts_with("generated")));

    // Malformed files are reported and the walk went on past them.
    let malformed: Vec<&str> = d
        .problems
        .iter()
        .filter(|p| p.kind == "malformed-file")
        .map(|p| p.file.as_str())
        .collect();
    assert_eq!(
        malformed,
        [
            "deploy/docker-compose.broken.yml",
            "legacy/broken/package.json"
        ]
    );
    assert!(d.services.iter().any(|s| s.path == "legacy/broken"));
    // A broken YAML file that is no Compose candidate is not read at all.
    assert!(!d.problems.iter().any(|p| p.file == "docs/notes.yaml"));

    // Values never reach the report.
    let text = std::fs::read_to_string(&report).unwrap();
    for secret in ["change-me", "smtp.local", "/run/secrets/db"] {
        assert!(
            !text.contains(secret),
            "value `{secret}` leaked into discovery.json"
        );
    }

    d.base = "[base]".to_owned();
    insta::assert_json_snapshot!("discovery_fixture_project", d);
}

#[tokio::test]
async fn problems_name_file_line_and_kind() {
    let dir = project();
    let d = orch_delivery::discover::discover(&orch_delivery::discover::DiscoverOptions::new(
        dir.path(),
    ))
    .unwrap();
    let has = |kind: &str, file: &str, needle: &str| {
        d.problems
            .iter()
            .any(|p| p.kind == kind && p.file == file && p.message.contains(needle))
    };
    assert!(has("obsolete-key", "docker-compose.yml", "`version`"));
    assert!(has(
        "missing-build-context",
        "docker-compose.yml",
        "./services/reports"
    ));
    assert!(has(
        "missing-dockerfile",
        "docker-compose.yml",
        "Dockerfile.prod"
    ));
    assert!(has(
        "missing-env-file",
        "docker-compose.yml",
        "./config/missing.env"
    ));
    assert!(has(
        "undefined-required-variable",
        "docker-compose.yml",
        "API_TOKEN"
    ));
    // DB_PASSWORD is required too, but .env.example defines it.
    assert!(!has(
        "undefined-required-variable",
        "docker-compose.yml",
        "DB_PASSWORD"
    ));
    assert!(has("duplicate-key", "compose.override.yaml", "`image`"));
    assert!(has("unknown-dependency", "docker-compose.yml", "`queue`"));
    let clash = |port: &str| {
        d.problems
            .iter()
            .find(|p| p.kind == "host-port-clash" && p.message.contains(port))
            .unwrap_or_else(|| panic!("no clash on {port}: {:#?}", d.problems))
    };
    // auth and reports both publish 8001 (reports through `${REPORTS_PORT:-8001}`).
    assert_eq!(clash("8001/tcp").severity, Severity::Error);
    // web and admin publish 8080 but in disjoint profiles: a warning.
    assert_eq!(clash("8080/tcp").severity, Severity::Warning);
    let dup = d
        .problems
        .iter()
        .find(|p| p.kind == "duplicate-key")
        .unwrap();
    assert_eq!(dup.line, Some(4));
}

#[tokio::test]
async fn compose_details_anchors_profiles_and_long_forms() {
    let dir = project();
    let d = orch_delivery::discover::discover(&orch_delivery::discover::DiscoverOptions::new(
        dir.path(),
    ))
    .unwrap();
    let file = d
        .compose_files
        .iter()
        .find(|f| f.path == "docker-compose.yml")
        .unwrap();
    assert_eq!(file.detected_by, "name");
    assert_eq!(file.anchors, ["common", "common-env"]);
    assert_eq!(file.extensions, ["x-common"]);
    let svc = |name: &str| file.services.iter().find(|s| s.name == name).unwrap();
    // The anchor's `restart`/`env_file` reached auth through `<<: *common`; its own
    // environment merged `*common-env`.
    assert_eq!(
        svc("auth").environment,
        ["DB_PASSWORD", "JWT_SECRET", "LOG_LEVEL", "TZ"]
    );
    assert_eq!(svc("auth").env_file[0].path, ".env.example");
    let dep = &svc("auth").depends_on[0];
    assert_eq!(
        (dep.service.as_str(), dep.condition.as_str(), dep.restart),
        ("db", "service_healthy", true)
    );
    assert_eq!(svc("web").profiles, ["web"]);
    assert_eq!(svc("cache").extensions, ["x-notes"]);
    assert_eq!(svc("admin").ports[0].published.as_deref(), Some("8080"));
    assert_eq!(
        svc("web").service_path.as_deref(),
        Some("services/frontend")
    );
    let by_content = d
        .compose_files
        .iter()
        .find(|f| f.path == "deploy/stack.yml")
        .unwrap();
    assert_eq!(by_content.detected_by, "content");
    // deploy/k8s.yaml has `services:` but not of Compose services.
    assert!(!d.compose_files.iter().any(|f| f.path == "deploy/k8s.yaml"));
}

#[tokio::test]
async fn ignore_setting_roots_and_output() {
    let dir = project();
    let run = tempfile::tempdir().unwrap();
    let out = run_phase(
        "discover",
        with(
            "roots = [\"services\", \"legacy\"]\nignore = [\"legacy/inventory/\", \"**/admin\"]\noutput = \"reports/found.json\"",
        ),
        dir.path(),
        run.path(),
        &[],
        &[],
    )
    .await
    .ok();
    let report = dir.path().join("reports/found.json");
    assert_eq!(out.outputs["report"], report.display().to_string());
    let d = read_discovery(&report);
    assert_eq!(d.roots, ["services", "legacy"]);
    let paths: Vec<&str> = d.services.iter().map(|s| s.path.as_str()).collect();
    assert!(paths.contains(&"legacy/notifier"), "{paths:?}");
    assert!(!paths.contains(&"legacy/inventory"), "{paths:?}");
    assert!(!paths.contains(&"services/frontend/admin"), "{paths:?}");
    // Compose files live at the top, outside the roots.
    assert!(d.compose_files.is_empty());
}

#[tokio::test]
async fn the_state_directory_is_left_out() {
    let dir = project();
    let run_dir = dir.path().join("state/runs/r1");
    write(dir.path(), "state/copy/api/package.json", "{}");
    let out = run_phase("discover", with(""), dir.path(), &run_dir, &[], &[])
        .await
        .ok();
    let d = read_discovery(Path::new(&out.outputs["report"]));
    assert!(d.services.iter().all(|s| !s.path.starts_with("state")));
    assert!(
        d.skipped
            .iter()
            .any(|s| s.path == "state" && s.reason == "state-dir")
    );
}

#[test]
fn settings_are_checked_when_loading() {
    let e = factory_error("discover", with("rooot = \"x\""), &[]);
    assert!(e.contains("rooot"), "{e}");
    let e = factory_error("discover", with("root = \"a\"\nroots = [\"b\"]"), &[]);
    assert!(e.contains("not both"), "{e}");
}

#[tokio::test]
async fn a_missing_root_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let e = run_phase(
        "discover",
        with("root = \"nope\""),
        dir.path(),
        dir.path(),
        &[],
        &[],
    )
    .await
    .err();
    assert!(e.contains("nope") && e.contains("not a directory"), "{e}");
}

#[tokio::test]
async fn a_cancelled_run_stops() {
    let dir = project();
    let r = crate::common::run_cancelled("discover", with(""), dir.path()).await;
    assert_eq!(r, Err(orch_core::PhaseError::Cancelled));
    assert!(!dir.path().join(".orch").exists(), "nothing written");
}

#[tokio::test]
async fn credentials_and_secrets_never_reach_discovery_json() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "compose.yaml",
        "services:\n  app:\n    build: https://builder:pa55w0rd-build@git.example/app.git#main\n    \
         image: https://ghp_imagetoken@registry.example/app:1\n    \
         environment:\n      DATABASE_URL: postgres://app:pa55w0rd-env@db/app\n    \
         profiles: [\"team-s3cr3t-value\"]\n  \
         web:\n    build:\n      context: https://x-token:pa55w0rd-ctx@git.example/web.git\n",
    );
    let run = tempfile::tempdir().unwrap();
    let phase = crate::common::registry()
        .build_phase(&{
            let mut spec =
                orch_core::PhaseSpec::new(orch_core::PhaseId::new("p").unwrap(), "discover");
            spec.with = orch_core::WithTable::new(with(""));
            spec
        })
        .unwrap();
    let ctx = orch_core::PhaseContext::builder(orch_core::PhaseId::new("p").unwrap(), dir.path())
        .run_dir(run.path())
        .secret("TEAM_SECRET", "s3cr3t-value")
        .build();
    let out = phase.run(&ctx).await.unwrap();
    let text = std::fs::read_to_string(&out.outputs["report"]).unwrap();
    for leak in ["pa55w0rd", "ghp_imagetoken", "s3cr3t-value", "x-token:p"] {
        assert!(!text.contains(leak), "{leak} in discovery.json:\n{text}");
    }
    let d: Discovery = serde_json::from_str(&text).unwrap();
    let app = &d.compose_files[0].services[0];
    assert_eq!(
        app.build.as_ref().unwrap().context,
        "https://builder:***@git.example/app.git#main"
    );
    assert_eq!(
        app.image.as_deref(),
        Some("https://***@registry.example/app:1")
    );
    assert_eq!(app.profiles, ["team-***"]);
    // The artifact's digest is that of the file as written.
    let digest = out.artifacts[0].digest.as_deref().unwrap();
    assert_eq!(
        digest,
        format!(
            "sha256:{}",
            sha256_hex(&std::fs::read(&out.outputs["report"]).unwrap())
        )
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
