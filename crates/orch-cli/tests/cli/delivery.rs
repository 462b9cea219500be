//! The delivery example (`examples/delivery/orch.toml`) run end to end by the real binary:
//! with a real Docker engine and registry, and without an engine (Docker phases skipped).
//!
//! Each test copies the example into a temp "host" git repository (as the orch repository
//! holds it, with `.orch/` ignored) and checks that the run leaves that repository's
//! HEAD, refs, index and files as they were: the example works on its own copy in the
//! state directory. Services: `scripts/install/{docker,chromium,scaffold-deps}.sh` and
//! `scripts/services/docker.sh start`. With `ORCH_REQUIRE_SERVICES=1` a missing one fails
//! the test; otherwise it says why and skips.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn required() -> bool {
    std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Fails (ORCH_REQUIRE_SERVICES=1) or prints why the test skips; returns false to skip.
fn available(what: &str, ok: bool, hint: &str) -> bool {
    if ok {
        return true;
    }
    let msg = format!("{what}; {hint}");
    assert!(!required(), "ORCH_REQUIRE_SERVICES=1 but {msg}");
    eprintln!("skipping: {msg}");
    false
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The host tools every run of the example needs: git, python3 (with fastapi, httpx and
/// pytest for the scaffolded services' tests), node, and chromium for the PDF.
fn host_tools() -> bool {
    let chromium = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .any(|c| succeeds("sh", &["-c", &format!("command -v {c}")]));
    available(
        "git is not installed",
        succeeds("git", &["--version"]),
        "install git",
    ) && available(
        "python3 with fastapi, httpx and pytest is not available",
        succeeds("python3", &["-c", "import fastapi, httpx, pytest"]),
        "run scripts/install/scaffold-deps.sh",
    ) && available(
        "node is not installed",
        succeeds("node", &["--version"]),
        "run scripts/install/scaffold-deps.sh",
    ) && available(
        "chromium is not installed (the PDF report)",
        chromium,
        "run scripts/install/chromium.sh",
    ) && available(
        "the quality tools (ruff, coverage, ESLint, c8) are not installed",
        succeeds("python3", &["-m", "ruff", "--version"])
            && succeeds("python3", &["-m", "coverage", "--version"])
            && node_tools().join("eslint").is_file()
            && node_tools().join("c8").is_file(),
        "run scripts/install/quality-tools.sh",
    )
}

/// Where scripts/install/quality-tools.sh put ESLint and c8; the example's copy finds them
/// through ORCH_NODE_TOOLS.
fn node_tools() -> PathBuf {
    std::env::var_os("ORCH_NODE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/node/node_modules/.bin"))
}

/// The registry the docker service script started: address, user, password.
fn registry() -> Option<(String, String, String)> {
    let mut vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ORCH_TEST_REGISTRY"))
        .collect();
    if !vars.contains_key("ORCH_TEST_REGISTRY")
        && let Ok(out) = Command::new("bash")
            .arg(repo_root().join("scripts/services/docker.sh"))
            .arg("env")
            .output()
        && out.status.success()
    {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.split_once('=') {
                vars.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    let hint = "run scripts/install/docker.sh && scripts/services/docker.sh start";
    let (Some(addr), Some(user), Some(file)) = (
        vars.get("ORCH_TEST_REGISTRY"),
        vars.get("ORCH_TEST_REGISTRY_USER"),
        vars.get("ORCH_TEST_REGISTRY_PASSWORD_FILE"),
    ) else {
        available("no test registry", false, hint);
        return None;
    };
    let password = std::fs::read_to_string(file).map(|p| p.trim().to_owned());
    if !available(
        &format!("cannot read the registry password file {file}"),
        password.is_ok(),
        hint,
    ) {
        return None;
    }
    Some((addr.clone(), user.clone(), password.unwrap_or_default()))
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == ".orch" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let ty = entry.file_type().unwrap();
        if ty.is_dir() {
            copy_tree(&src, &dst);
        } else if ty.is_file() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// A git repository holding a copy of the example at `examples/delivery`, committed, with
/// `.orch/` ignored as in the orch repository.
struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

/// What a run must not change in the host repository.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    head: String,
    refs: String,
    status: String,
    index: String,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("host");
        copy_tree(
            &repo_root().join("examples/delivery"),
            &root.join("examples/delivery"),
        );
        std::fs::write(root.join(".gitignore"), ".orch/\n**/.orch/\n").unwrap();
        git(&root, &["init", "-q", "-b", "main"]);
        git(&root, &["add", "-A"]);
        git(
            &root,
            &[
                "-c",
                "user.name=host",
                "-c",
                "user.email=host@example.invalid",
                "commit",
                "-q",
                "-m",
                "host",
            ],
        );
        Self { _dir: dir, root }
    }

    fn example(&self) -> PathBuf {
        self.root.join("examples/delivery")
    }

    fn state(&self) -> HostState {
        HostState {
            head: git(&self.root, &["rev-parse", "HEAD"]),
            refs: git(&self.root, &["for-each-ref"]),
            status: git(
                &self.root,
                &["status", "--porcelain", "--untracked-files=all"],
            ),
            index: git(&self.root, &["ls-files", "--stage"]),
        }
    }

    /// Runs `orch run orch.toml ARGS` in the example's directory.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_orch"))
            .arg("run")
            .arg("orch.toml")
            .args(args)
            .current_dir(self.example())
            .envs(env.iter().copied())
            .env("ORCH_NODE_TOOLS", node_tools())
            .env_remove("ORCH_JOBS")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .output()
            .expect("run orch");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    fn record(&self) -> serde_json::Value {
        let p = self.example().join(".orch/runs/latest/run.json");
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).expect("run.json is JSON")
    }
}

fn phases(record: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
    record["phases"].as_object().expect("phases")
}

fn output<'a>(record: &'a serde_json::Value, phase: &str, key: &str) -> &'a str {
    record["phases"][phase]["outputs"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no output {phase}.{key}"))
}

fn is_docker(phase: &serde_json::Value) -> bool {
    phase["kind"]
        .as_str()
        .is_some_and(|k| k.starts_with("docker.") || k.starts_with("deploy"))
}

/// A free port on 127.0.0.1.
fn free_listen() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Ends the example's deployed services (their proxies and containers outlive the run).
fn stop_services(host: &Host) {
    for service in ["staging", "production"] {
        let _ = Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(["deploy", "stop", service])
            .current_dir(host.example())
            .output();
    }
}

/// The manifest digest the registry itself reports for REPO:TAG (HEAD on the v2 API).
fn registry_digest(addr: &str, user: &str, password: &str, repo: &str, tag: &str) -> String {
    let script = r#"
import base64, sys, urllib.request
addr, user, password, repo, tag = sys.argv[1:]
req = urllib.request.Request(f"http://{addr}/v2/{repo}/manifests/{tag}", method="HEAD")
req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
req.add_header("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
with urllib.request.urlopen(req, timeout=10) as r:
    print(r.headers["Docker-Content-Digest"])
"#;
    let out = Command::new("python3")
        .args(["-c", script, addr, user, password, repo, tag])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "registry HEAD {repo}:{tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn sha256_file(path: &str) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The text of HTML that minijinja escaped (`/` becomes `&#x2f;`).
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

const SERVICES: [&str; 5] = [
    "gateway",
    "identity",
    "orders",
    "payments-ledger",
    "email-worker",
];

#[test]
fn the_delivery_example_runs_end_to_end_with_docker_and_a_registry() {
    if !host_tools()
        || !available(
            "no docker engine answers (`docker version`)",
            succeeds("docker", &["version"]),
            "run scripts/install/docker.sh && scripts/services/docker.sh start",
        )
    {
        return;
    }
    if !available(
        "haproxy is not installed",
        succeeds("haproxy", &["-v"]),
        "run scripts/install/haproxy.sh",
    ) {
        return;
    }
    let Some((registry, user, password)) = registry() else {
        return;
    };
    let host = Host::new();
    let before = host.state();
    let (staging, production) = (free_listen(), free_listen());
    let (code, out) = host.run(
        &[
            "--var",
            &format!("registry={registry}"),
            "--var",
            &format!("registry_user={user}"),
            "--var",
            "push=true",
            "--var",
            &format!("staging_listen={staging}"),
            "--var",
            &format!("production_listen={production}"),
        ],
        &[("ORCH_REGISTRY_PASSWORD", password.as_str())],
    );
    stop_services(&host);
    assert_eq!(code, 0, "orch run failed:\n{out}");
    let rec = host.record();
    assert_eq!(rec["status"], "succeeded");

    // Every phase ran and succeeded, Docker ones included.
    let not_ok: Vec<String> = phases(&rec)
        .iter()
        .filter(|(_, p)| p["status"] != "succeeded")
        .map(|(id, p)| format!("{id}={} ({})", p["status"], p["reason"]))
        .collect();
    assert!(not_ok.is_empty(), "phases that did not succeed: {not_ok:?}");
    assert_eq!(
        phases(&rec).values().filter(|p| is_docker(p)).count(),
        11,
        "base, five builds, the smoke test, the push, two deployments and their audit"
    );

    // The gateway went to staging (blue-green), passed its smoke test, and went to
    // production by canary, behind orch's proxies; the audit found no drift.
    let gateway = format!("{registry}/orch-delivery/gateway:1.0.0");
    assert_eq!(output(&rec, "staging", "status"), "deployed");
    assert_eq!(output(&rec, "staging", "version"), gateway);
    assert_eq!(output(&rec, "staging", "url"), format!("http://{staging}/"));
    assert_eq!(output(&rec, "smoke", "status"), "200");
    assert_eq!(output(&rec, "production", "status"), "deployed");
    assert_eq!(output(&rec, "production", "strategy"), "canary");
    assert_eq!(
        output(&rec, "production", "url"),
        format!("http://{production}/")
    );
    assert_eq!(output(&rec, "deployed", "drift"), "0");

    // Discovery, parity and the gate: the numbers the example is built to give.
    assert_eq!(output(&rec, "discover", "services"), "5");
    assert_eq!(output(&rec, "discover", "problems"), "0");
    assert_eq!(output(&rec, "parity", "required"), "12");
    assert_eq!(output(&rec, "parity", "present"), "5");
    assert_eq!(output(&rec, "parity", "critical_missing"), "1");
    assert_eq!(output(&rec, "parity", "parity_percent"), "41.7");
    assert_eq!(
        output(&rec, "scaffold", "services"),
        r#"["inventory","search","ai"]"#
    );
    assert_eq!(output(&rec, "gate", "passed"), "true");

    // Tests: every unit phase published JUnit results, none failed.
    let mut tests = 0;
    for (id, p) in phases(&rec) {
        if p["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "test"))
        {
            assert_eq!(output(&rec, id, "failures"), "0", "{id}");
            tests += output(&rec, id, "tests").parse::<u32>().unwrap();
        }
    }
    assert!(tests >= 24, "only {tests} tests ran");

    // Images: a registry digest for every pushed image, the one the registry serves.
    let digests: BTreeMap<String, String> =
        serde_json::from_str(output(&rec, "push", "digests")).expect("digests is JSON");
    assert_eq!(digests.len(), SERVICES.len(), "{digests:?}");
    for service in SERVICES {
        let repo = format!("orch-delivery/{service}");
        let tag = format!("{registry}/{repo}:1.0.0");
        let digest = digests
            .get(&tag)
            .unwrap_or_else(|| panic!("no digest for {tag}: {digests:?}"));
        let served = registry_digest(&registry, &user, &password, &repo, "1.0.0");
        assert!(
            served.starts_with("sha256:") && served.len() == 71,
            "{served}"
        );
        assert_eq!(digest, &format!("{registry}/{repo}@{served}"));
    }
    assert_eq!(
        output(&rec, "smoke-gateway", "exit_code"),
        "0",
        "the test container ran"
    );

    // The bundle: its checksum is the file's, and the verification checked every file.
    let bundle = output(&rec, "package", "path");
    let sha = output(&rec, "package", "sha256");
    assert_eq!(sha, sha256_file(bundle));
    assert_eq!(
        output(&rec, "package", "files"),
        output(&rec, "verify", "files")
    );

    // The release tag, on the working copy's HEAD, with its branch.
    let work = host.example().join(".orch/work/project");
    let tag_commit = output(&rec, "tag", "commit");
    assert_eq!(output(&rec, "tag", "tag"), "verified_release_v1.0.0");
    assert_eq!(
        git(&work, &["rev-parse", "verified_release_v1.0.0^{commit}"]).trim(),
        tag_commit
    );
    assert_eq!(
        git(&work, &["rev-parse", "verified_release"]).trim(),
        tag_commit
    );
    assert_eq!(output(&rec, "facts", "head"), tag_commit);
    assert_eq!(output(&rec, "facts", "dirty"), "false");
    assert_eq!(output(&rec, "changelog", "commits"), "2");

    // The compliance report shows all of it.
    let reports = host.example().join(".orch/runs/latest/compliance");
    let html = unescape(
        &std::fs::read_to_string(reports.join("compliance.html")).expect("compliance.html"),
    );
    for needle in [
        "7. Deployments",
        "Service <code>production</code> (canary",
        "Discovery",
        "Parity",
        "41.7",
        "Test results",
        &format!("{tests} of {tests} tests passed"),
        sha,
        "verified_release_v1.0.0",
        tag_commit,
    ] {
        assert!(html.contains(needle), "compliance.html lacks {needle:?}");
    }
    for digest in digests.values() {
        assert!(html.contains(digest), "compliance.html lacks {digest}");
    }
    let pdf = std::fs::read(reports.join("compliance.pdf")).expect("compliance.pdf");
    assert!(pdf.starts_with(b"%PDF-"), "compliance.pdf is not a PDF");
    let md = std::fs::read_to_string(reports.join("report.md")).expect("report.md");
    assert!(md.contains("verified_release_v1.0.0"), "{md}");

    // The host repository is as it was: the run worked on its own copy.
    assert_eq!(host.state(), before);
    assert_eq!(
        git(&work, &["rev-parse", "--show-toplevel"]).trim(),
        std::fs::canonicalize(&work).unwrap().display().to_string()
    );
}

#[test]
fn without_an_engine_the_docker_phases_are_skipped_and_everything_else_runs() {
    if !host_tools() {
        return;
    }
    let host = Host::new();
    let before = host.state();
    let socket = host.root.join("no-engine.sock");
    let docker_host = format!("unix://{}", socket.display());
    let (code, out) = host.run(
        // push=true: the push phase reaches the agent, which has no engine.
        &["--var", "push=true"],
        &[
            ("DOCKER_HOST", docker_host.as_str()),
            ("ORCH_REGISTRY_PASSWORD", "not-used-without-an-engine"),
        ],
    );
    assert_eq!(code, 0, "orch run failed:\n{out}");
    let rec = host.record();
    assert_eq!(rec["status"], "succeeded");
    let mut skipped = Vec::new();
    for (id, p) in phases(&rec) {
        if id == "smoke" || id == "traffic" {
            // They need a deployment: `when` says there is none.
            assert_eq!(p["status"], "skipped", "{id}: {p}");
            assert!(
                p["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("`when` is false"),
                "{id}: {p}"
            );
        } else if is_docker(p) {
            assert_eq!(p["status"], "skipped", "{id}: {p}");
            let reason = p["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("is unavailable") && reason.contains(&docker_host),
                "{id}: {reason}"
            );
            skipped.push(id.clone());
        } else {
            assert_eq!(p["status"], "succeeded", "{id}: {}", p["reason"]);
        }
    }
    assert_eq!(
        skipped,
        [
            "base",
            "image-gateway",
            "image-identity",
            "image-orders",
            "image-payments-ledger",
            "image-email-worker",
            "smoke-gateway",
            "push",
            "staging",
            "production",
            "deployed"
        ]
    );
    // Visibly: the run's summary says why.
    assert!(
        out.contains("skipped") && out.contains("is unavailable"),
        "{out}"
    );
    assert_eq!(output(&rec, "tag", "tag"), "verified_release_v1.0.0");
    let reports = host.example().join(".orch/runs/latest/compliance");
    assert!(reports.join("compliance.pdf").is_file());

    // The release was gated on what ruff, ESLint, coverage.py, c8, pytest and the secrets
    // scan measured, and the compliance report shows those numbers.
    assert_eq!(output(&rec, "secrets", "findings"), "0");
    assert_eq!(output(&rec, "quality", "passed"), "true");
    assert_eq!(output(&rec, "quality", "findings_error"), "0");
    assert_eq!(output(&rec, "quality", "tests_failed"), "0");
    let coverage: f64 = output(&rec, "quality", "coverage").parse().unwrap();
    assert!(coverage >= 80.0, "coverage {coverage}");
    let score = output(&rec, "quality", "score");
    let html = unescape(
        &std::fs::read_to_string(reports.join("compliance.html")).expect("compliance.html"),
    );
    for needle in [
        "Quality gates: measured by the tools",
        &format!("Score <strong>{score}</strong> / 100 (threshold 85)"),
        "coverage >= 80",
        "Coverage by service",
        "<td>gateway</td>",
        "<td>identity</td>",
        "quality.sarif",
    ] {
        assert!(html.contains(needle), "compliance.html lacks {needle:?}");
    }
    assert_eq!(host.state(), before);
}
