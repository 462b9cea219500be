//! Helpers: the real engine and registry, test contexts, event capture.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveImageOptionsBuilder};
use orch_core::phase::ContextBuilder;
use orch_core::{PhaseContext, PhaseId, RunEvent, RunId};
use orch_docker::{DockerAgent, Endpoint, RUN_LABEL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

/// The registry the service script started.
#[derive(Clone, Debug)]
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub user: String,
    pub password: String,
}

fn required() -> bool {
    std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Fails (ORCH_REQUIRE_SERVICES=1) or prints why the test skips.
pub fn missing(what: &str) {
    let msg = format!(
        "{what}; start it with `scripts/install/docker.sh && scripts/services/docker.sh start`"
    );
    if required() {
        panic!("ORCH_REQUIRE_SERVICES=1 but {msg}");
    }
    eprintln!("skipping: {msg}");
}

/// A connected engine, or `None` (test skips) when there is none and services are not
/// required.
pub async fn engine() -> Option<Docker> {
    let endpoint = match Endpoint::from_env() {
        Ok(e) => e,
        Err(e) => {
            missing(&format!("DOCKER_HOST is invalid: {e}"));
            return None;
        }
    };
    match endpoint.connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            missing(&format!("no docker engine: {e}"));
            None
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The registry's address and credentials, from `ORCH_TEST_REGISTRY*` or from
/// `scripts/services/docker.sh env`.
pub fn registry() -> Option<Registry> {
    let mut vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ORCH_TEST_REGISTRY"))
        .collect();
    if !vars.contains_key("ORCH_TEST_REGISTRY") {
        let script = repo_root().join("scripts/services/docker.sh");
        if let Ok(out) = std::process::Command::new("bash")
            .arg(&script)
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
    }
    let (Some(addr), Some(user), Some(file)) = (
        vars.get("ORCH_TEST_REGISTRY"),
        vars.get("ORCH_TEST_REGISTRY_USER"),
        vars.get("ORCH_TEST_REGISTRY_PASSWORD_FILE"),
    ) else {
        missing(
            "no test registry (ORCH_TEST_REGISTRY* unset and `scripts/services/docker.sh env` found none)",
        );
        return None;
    };
    let password = match std::fs::read_to_string(file) {
        Ok(p) => p.trim().to_owned(),
        Err(e) => {
            missing(&format!(
                "cannot read the registry password file {file}: {e}"
            ));
            return None;
        }
    };
    Some(Registry {
        addr: addr.clone(),
        user: user.clone(),
        password,
    })
}

/// A fresh value for names and for making contexts unique (so no earlier run's image
/// can satisfy the content-hash check).
pub fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:x}{:x}{}",
        t & 0xffff_ffff_ffff,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Tag of the shared base image: scratch + static busybox with its applets installed.
pub const BASE_IMAGE: &str = "orch-test-base:busybox";

static BASE: OnceCell<()> = OnceCell::const_new();

/// Builds [`BASE_IMAGE`] once per test process (through `docker.build` itself).
pub async fn base_image() {
    BASE.get_or_init(|| async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap_or_else(|e| {
            panic!("/bin/busybox (static) is needed for test images: {e}; run scripts/install/docker.sh")
        });
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        )
        .unwrap();
        let phase = build_phase(&format!(r#"context = "."
tags = ["{BASE_IMAGE}"]"#));
        let t = TestCtx::new(dir.path());
        phase
            .run(&t.ctx)
            .await
            .unwrap_or_else(|e| panic!("cannot build the base image: {e}\n{}", t.log_text()));
    })
    .await;
}

/// Builds a phase of a kind from a `with` table in TOML.
pub fn phase_of(kind: &str, with: &str) -> Arc<dyn orch_core::Phase> {
    phase_with(kind, with, &[], &[])
}

/// Like [`phase_of`], with needs and secrets.
pub fn phase_with(
    kind: &str,
    with: &str,
    needs: &[&str],
    secrets: &[&str],
) -> Arc<dyn orch_core::Phase> {
    let mut registry = orch_core::Registry::with_builtins();
    orch_docker::register(&mut registry).expect("the kinds register once");
    let mut spec = orch_core::PhaseSpec::new(PhaseId::new("p").unwrap(), kind);
    spec.with = orch_core::WithTable::new(toml::from_str(with).unwrap());
    spec.needs = needs.iter().map(|n| PhaseId::new(n).unwrap()).collect();
    spec.secrets = secrets.iter().map(|s| (*s).to_owned()).collect();
    registry
        .build_phase(&spec)
        .unwrap_or_else(|e| panic!("{kind} {with}: {e}"))
}

/// A `docker.build` phase.
pub fn build_phase(with: &str) -> Arc<dyn orch_core::Phase> {
    phase_of("docker.build", with)
}

/// A context for one phase attempt, on a real `docker` agent, recording every event.
pub struct TestCtx {
    pub ctx: PhaseContext,
    pub events: Arc<Mutex<Vec<RunEvent>>>,
    pub run_id: RunId,
    pub log_path: PathBuf,
    _state: tempfile::TempDir,
}

impl TestCtx {
    pub fn new(base: &Path) -> Self {
        Self::configure(base, |b| b)
    }

    pub fn configure(base: &Path, f: impl FnOnce(ContextBuilder) -> ContextBuilder) -> Self {
        let state = tempfile::tempdir().unwrap();
        let events: Arc<Mutex<Vec<RunEvent>>> = Arc::default();
        let sink = events.clone();
        let run_id = RunId::generate();
        let log_path = state.path().join("p.log");
        let agent = DockerAgent::from_env("docker").unwrap();
        let b = orch_core::PhaseContext::builder(PhaseId::new("p").unwrap(), base)
            .run_id(run_id.clone())
            .run_dir(state.path().join("run"))
            .log_path(&log_path)
            .agent(Arc::new(agent))
            .sink(Arc::new(move |e: &orch_core::Event| {
                sink.lock().unwrap().push(e.kind.clone())
            }));
        let ctx = f(b).build();
        Self {
            ctx,
            events,
            run_id,
            log_path,
            _state: state,
        }
    }

    /// Every output line so far.
    pub fn lines(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                RunEvent::PhaseOutput { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// The log file and every event, as text (to search for leaks).
    pub fn log_text(&self) -> String {
        self.ctx.flush_output();
        let file = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let events = format!("{:?}", self.events.lock().unwrap());
        format!("{file}\n{events}")
    }
}

/// A build context directory: a Dockerfile on the base image, plus files.
pub fn context(dockerfile: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    for (rel, content) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

/// Containers (running or not) carrying this run's label: `docker ps -a --filter label=`.
pub async fn containers_of_run(docker: &Docker, run_id: &RunId) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("{RUN_LABEL}={run_id}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Every container (running or not) whose command contains `marker`: build steps carry
/// no labels, so they are found by a unique word in their `RUN` line.
pub async fn containers_with_command(docker: &Docker, marker: &str) -> Vec<String> {
    let options = ListContainersOptionsBuilder::default().all(true).build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.command.as_deref().is_some_and(|cmd| cmd.contains(marker)))
        .filter_map(|c| c.id)
        .collect()
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until an output line contains `needle` (polling the recorded events).
pub async fn wait_for_line(events: &Arc<Mutex<Vec<RunEvent>>>, needle: &str, limit: Duration) {
    let found = eventually(limit, || {
        let hit = events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, RunEvent::PhaseOutput { line, .. } if line.contains(needle)));
        async move { hit }
    })
    .await;
    assert!(found, "no output line with {needle:?} within {limit:?}");
}

/// Removes images by reference, best effort.
pub async fn remove_images(docker: &Docker, refs: &[String]) {
    for r in refs {
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        let _ = docker.remove_image(r, Some(options), None).await;
    }
}

/// `GET /v2/NAME/manifests/TAG` with basic auth: the `Docker-Content-Digest` the registry
/// reports for a tag.
pub async fn registry_digest(reg: &Registry, path: &str, tag: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(&reg.addr).await.unwrap();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", reg.user, reg.password));
    let request = format!(
        "GET /v2/{path}/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\n\
         Accept: application/vnd.docker.distribution.manifest.v2+json\r\n\
         Accept: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
        reg.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "registry answered: {head}"
    );
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("Docker-Content-Digest")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Docker-Content-Digest in: {head}"))
}

/// A Docker config directory with an `auths` entry for `registry`.
pub fn docker_config(registry: &str, user: &str, password: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    dir
}
