//! `scaffold`: path safety, never overwriting, plans, and scaffolded services whose own
//! tests pass.

use std::path::Path;
use std::process::Command;

use orch_core::interpolate::{Reference, Scope};
use orch_core::{InterpolationError, PhaseId, PhaseSpec, PlanContext, WithTable};

use crate::common::{factory_error, fixtures, registry, run_phase, services_required, with, write};
use crate::discover::project;

const PYTHON_FILES: [&str; 10] = [
    ".dockerignore",
    "Dockerfile",
    "README.md",
    "app/__init__.py",
    "app/main.py",
    "openapi.yaml",
    "pytest.ini",
    "requirements-dev.txt",
    "requirements.txt",
    "tests/test_health.py",
];

fn json_list(text: &str) -> Vec<String> {
    orch_core::list_output::decode(text)
}

/// Skips (or, with ORCH_REQUIRE_SERVICES=1, fails) when a toolchain is missing.
fn toolchain(what: &str, probe: &mut Command) -> bool {
    let ok = probe.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        let message =
            format!("{what} is not available; run scripts/install/scaffold-deps.sh to install it");
        assert!(!services_required(), "{message}");
        eprintln!("skipping: {message}");
    }
    ok
}

/// Runs a command that must succeed; returns its stdout.
fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn a_scaffolded_python_service_passes_its_own_tests() {
    let dir = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let out = run_phase(
        "scaffold",
        with("modules = [\"billing-api\"]"),
        dir.path(),
        run.path(),
        &[],
        &[],
    )
    .await
    .ok();
    assert_eq!(out.outputs["created"], "10");
    assert_eq!(json_list(&out.outputs["services"]), ["billing-api"]);
    let expected: Vec<String> = PYTHON_FILES
        .iter()
        .map(|f| format!("services/billing-api/{f}"))
        .collect();
    assert_eq!(json_list(&out.outputs["files"]), expected);
    let svc = dir.path().join("services/billing-api");
    let dockerfile = std::fs::read_to_string(svc.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("EXPOSE 8000"));
    let openapi: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(svc.join("openapi.yaml")).unwrap())
            .unwrap();
    assert_eq!(openapi["info"]["title"], "Billing Api");
    assert!(openapi["paths"]["/health"]["get"].is_object());

    // Discovery sees a complete service.
    let d = orch_delivery::discover::discover(&orch_delivery::discover::DiscoverOptions::new(
        dir.path(),
    ))
    .unwrap();
    let found = &d.services[0];
    assert_eq!(
        (found.name.as_str(), found.tests, found.dockerfile.is_some()),
        ("billing-api", true, true)
    );

    if !toolchain(
        "python3 with fastapi, httpx and pytest",
        Command::new("python3").args(["-c", "import fastapi, httpx, pytest"]),
    ) {
        return;
    }
    let report = run_ok(
        Command::new("python3")
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(&svc),
        "pytest in the scaffolded service",
    );
    assert!(report.contains("2 passed"), "{report}");
}

#[tokio::test]
async fn a_scaffolded_node_service_passes_its_own_tests() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_phase(
        "scaffold",
        with("modules = \"notifier\"\ntemplate = \"node-express\"\ntarget = \"apps\"\nport = 4100"),
        dir.path(),
        dir.path(),
        &[],
        &[],
    )
    .await
    .ok();
    assert_eq!(out.outputs["created"], "8");
    let svc = dir.path().join("apps/notifier");
    let server = std::fs::read_to_string(svc.join("src/server.js")).unwrap();
    assert!(server.contains("process.env.PORT || 4100"), "{server}");
    let pkg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(svc.join("package.json")).unwrap()).unwrap();
    assert_eq!(pkg["scripts"]["test"], "node --test");

    if !toolchain("node", Command::new("node").arg("--version"))
        || !toolchain("npm", Command::new("npm").arg("--version"))
    {
        return;
    }
    run_ok(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&svc),
        "npm install in the scaffolded service",
    );
    let report = run_ok(
        Command::new("npm").arg("test").current_dir(&svc),
        "npm test in the scaffolded service",
    );
    assert!(
        report.contains("# pass 1") && report.contains("# fail 0"),
        "{report}"
    );
}

#[tokio::test]
async fn existing_files_are_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services/api/README.md", "mine\n");
    let ran = run_phase(
        "scaffold",
        with("modules = [\"api\"]"),
        dir.path(),
        dir.path(),
        &[],
        &[],
    )
    .await;
    assert!(
        ran.log
            .iter()
            .any(|l| l == "exists, skipped: services/api/README.md"),
        "{:?}",
        ran.log
    );
    let out = ran.ok();
    assert_eq!(
        (
            out.outputs["created"].as_str(),
            out.outputs["skipped"].as_str()
        ),
        ("9", "1")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("services/api/README.md")).unwrap(),
        "mine\n"
    );
    // Twice: nothing more to write.
    let again = run_phase(
        "scaffold",
        with("modules = [\"api\"]"),
        dir.path(),
        dir.path(),
        &[],
        &[],
    )
    .await
    .ok();
    assert_eq!(
        (
            again.outputs["created"].as_str(),
            again.outputs["skipped"].as_str()
        ),
        ("0", "10")
    );
}

#[tokio::test]
async fn unsafe_module_names_are_refused() {
    for bad in ["../evil", "/abs", "a/b", "..", ""] {
        let e = factory_error("scaffold", with(&format!("modules = [{bad:?}]")), &[]);
        assert!(e.contains("is not allowed"), "{bad}: {e}");
    }
    // Names that arrive at run time are checked too.
    let outer = tempfile::tempdir().unwrap();
    let base = outer.path().join("project");
    std::fs::create_dir(&base).unwrap();
    let e = run_phase(
        "scaffold",
        with("modules = '[\"ok\", \"../../evil\"]'"),
        &base,
        &base,
        &[],
        &[],
    )
    .await
    .err();
    assert!(e.contains("`../../evil` is not allowed"), "{e}");
    // Nothing was written, not even for the good name before it.
    assert!(!base.join("services").exists());
    assert!(!outer.path().join("evil").exists());
}

#[tokio::test]
async fn template_symlinks_and_escaping_paths_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.txt", "s\n");

    // A symlink inside a template.
    write(base, "tpl-link/README.md", "{{ name }}\n");
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        base.join("tpl-link/leak.txt"),
    )
    .unwrap();
    // A path that renders to `..`.
    write(base, "tpl-dotdot/x/{{ \"..\" }}/escape.txt", "x\n");
    // A path that renders to an absolute path.
    write(base, "tpl-abs/{{ \"\" }}/evil.txt", "x\n");
    for (template, needle) in [
        ("./tpl-link", "refusing symlink"),
        ("./tpl-dotdot", "has a `.` or `..` component"),
        ("./tpl-abs", "is absolute"),
    ] {
        let e = run_phase(
            "scaffold",
            with(&format!("modules = [\"api\"]\ntemplate = {template:?}")),
            base,
            base,
            &[],
            &[],
        )
        .await
        .err();
        assert!(e.contains(needle), "{template}: {e}");
        assert!(
            !base.join("services").exists(),
            "{template} wrote something"
        );
    }

    // A symlink where the service directory would be.
    std::fs::create_dir_all(base.join("services")).unwrap();
    std::os::unix::fs::symlink(outside.path(), base.join("services/api")).unwrap();
    let e = run_phase(
        "scaffold",
        with("modules = [\"api\"]"),
        base,
        base,
        &[],
        &[],
    )
    .await
    .err();
    assert!(
        e.contains("refusing symlink") && e.contains("services/api"),
        "{e}"
    );
    let leaked: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert_eq!(leaked.len(), 1, "only secret.txt may be there");

    // An unknown template name.
    let e = factory_error(
        "scaffold",
        with("modules = [\"a\"]\ntemplate = \"django\""),
        &[],
    );
    assert!(e.contains("unknown template `django`"), "{e}");
}

/// `O_NONBLOCK`: opening a FIFO for writing does not wait for a reader.
fn nix_nonblock() -> i32 {
    0o4000
}

#[tokio::test]
async fn template_fifos_are_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    write(base, "tpl-fifo/README.md", "{{ name }}\n");
    let fifo = base.join("tpl-fifo/config/pipe");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    run_ok(Command::new("mkfifo").arg(&fifo), "mkfifo");
    // Reading the FIFO would block for ever: the phase must refuse it at once.
    let e = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        run_phase(
            "scaffold",
            with("modules = [\"api\"]\ntemplate = \"./tpl-fifo\""),
            base,
            base,
            &[],
            &[],
        ),
    )
    .await;
    let Ok(e) = e else {
        // Unblock the reader so the test fails instead of hanging.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix_nonblock())
            .open(&fifo);
        panic!("a FIFO in a template blocked the phase");
    };
    let e = e.err();
    assert!(
        e.contains("not a regular file") && e.contains("tpl-fifo/config/pipe"),
        "{e}"
    );
    assert!(!base.join("services").exists(), "nothing is written");
}

#[tokio::test]
async fn user_templates_render_variables_and_fail_on_undefined_ones() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    write(
        base,
        "tpl/{{ snake_name }}.txt",
        "{{ title }} on {{ port }}{% if category %} ({{ category }}){% endif %}\n",
    );
    let out = run_phase(
        "scaffold",
        with("modules = [\"order-sync\"]\ntemplate = \"./tpl\""),
        base,
        base,
        &[],
        &[],
    )
    .await
    .ok();
    assert_eq!(
        json_list(&out.outputs["files"]),
        ["services/order-sync/order_sync.txt"]
    );
    assert_eq!(
        std::fs::read_to_string(base.join("services/order-sync/order_sync.txt")).unwrap(),
        "Order Sync on 8080\n"
    );
    write(base, "bad/x.txt", "{{ nope }}\n");
    let e = run_phase(
        "scaffold",
        with("modules = [\"y\"]\ntemplate = \"./bad\""),
        base,
        base,
        &[],
        &[],
    )
    .await
    .err();
    assert!(
        e.contains("cannot render template x.txt") && e.contains("undefined"),
        "{e}"
    );
}

#[tokio::test]
async fn from_a_parity_phase() {
    let dir = project();
    let run = tempfile::tempdir().unwrap();
    let found = run_phase("discover", with(""), dir.path(), run.path(), &[], &[])
        .await
        .ok();
    let spec = fixtures().join("parity/spec.toml");
    let parity = run_phase(
        "parity",
        with(&format!("spec = {:?}", spec.display().to_string())),
        dir.path(),
        run.path(),
        &["discover"],
        &[("discover", "report", &found.outputs["report"])],
    )
    .await
    .ok();
    let out = run_phase(
        "scaffold",
        with("from = \"parity\"\ntarget = \"new\""),
        dir.path(),
        run.path(),
        &["parity"],
        &[("parity", "report", &parity.outputs["report"])],
    )
    .await
    .ok();
    assert_eq!(json_list(&out.outputs["services"]), ["ai", "analytics"]);
    assert_eq!(out.outputs["created"], "20");
    let readme = std::fs::read_to_string(dir.path().join("new/ai/README.md")).unwrap();
    assert!(readme.contains("The `ai` service (ml)"), "{readme}");

    let e = factory_error("scaffold", with("from = \"parity\""), &[]);
    assert!(e.contains("not in `needs`"), "{e}");
    let e = factory_error(
        "scaffold",
        with("from = \"parity\"\nmodules = [\"a\"]"),
        &["parity"],
    );
    assert!(e.contains("not both"), "{e}");
}

struct NoOutputs;

impl Scope for NoOutputs {
    fn lookup(&self, r: &Reference) -> Result<std::borrow::Cow<'_, str>, InterpolationError> {
        Ok(std::borrow::Cow::Owned(format!("<{r}>")))
    }
}

#[test]
fn plan_lists_every_file_it_would_write() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "services/api/Dockerfile", "FROM mine\n");
    let id = PhaseId::new("scaffold").unwrap();
    let mut spec = PhaseSpec::new(id.clone(), "scaffold");
    spec.with = WithTable::new(with("modules = [\"api\"]"));
    let phase = registry().build_phase(&spec).unwrap();
    let d = phase.describe(&PlanContext::new(&id, dir.path(), &NoOutputs));
    let svc = dir.path().join("services/api");
    let expected: Vec<String> = PYTHON_FILES
        .iter()
        .map(|f| {
            let p = svc.join(f).display().to_string();
            if *f == "Dockerfile" {
                format!("keep {p} (exists)")
            } else {
                format!("write {p}")
            }
        })
        .collect();
    assert_eq!(d.changes, expected);
    // Describing wrote nothing.
    assert!(!svc.join("README.md").exists());

    // With `from`, the files are listed per module placeholder.
    let mut spec = PhaseSpec::new(id.clone(), "scaffold");
    spec.with = WithTable::new(with("from = \"parity\"\ntemplate = \"node-express\""));
    spec.needs = vec![PhaseId::new("parity").unwrap()].into();
    let d = registry()
        .build_phase(&spec)
        .unwrap()
        .describe(&PlanContext::new(&id, dir.path(), &NoOutputs));
    assert_eq!(d.changes.len(), 8);
    assert!(
        d.changes.iter().all(|c| c.contains("/<module>/")),
        "{:?}",
        d.changes
    );
    assert!(Path::new(&dir.path().join("services")).is_dir());
}
