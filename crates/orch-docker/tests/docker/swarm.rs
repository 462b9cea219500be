//! `docker.run` on a `swarm` agent, against the real three-node swarm of
//! `scripts/services/swarm.sh` (nodes orch-swarm-1..3, labels zone=a..c, node 1 the
//! manager) and the test registry as the nodes reach it.
//!
//! The test image is built once per test process on the manager's engine and pushed to
//! that registry; every test runs it by digest. After each test nothing with its run's
//! label is left: no service or secret on the manager, no container on any node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListSecretsOptionsBuilder,
    ListServicesOptionsBuilder, ListTasksOptionsBuilder,
};
use orch_core::{
    LoadOptions, PhaseStatus, Pipeline, RunControl, RunEvent, RunOptions, RunRecord, RunStatus,
    Runner,
};
use orch_docker::{DockerAgent, Endpoint, PHASE_LABEL, RUN_LABEL, SwarmAgent};
use tokio::sync::{OnceCell, RwLock};

use crate::support::{TestCtx, missing, nonce, phase_of};

/// The swarm of the service script.
pub struct Swarm {
    /// The manager's socket (`unix:///...`).
    pub host: String,
    /// Every node's socket, node 1 first.
    pub nodes: Vec<String>,
    /// The registry as the nodes reach it.
    pub registry: String,
    /// A Docker config directory with that registry's credentials.
    pub docker_config: String,
    /// The service script (to restart a killed node).
    pub script: String,
    /// The test image, by digest.
    pub image: String,
}

static SWARM: OnceCell<Option<Swarm>> = OnceCell::const_new();

/// Tests that kill a node hold this exclusively; every other test of this binary that uses
/// the swarm holds it shared (`NODES.read().await`), so no node dies under it.
pub static NODES: RwLock<()> = RwLock::const_new(());

fn swarm_env() -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ORCH_SWARM_"))
        .collect();
    if !vars.contains_key("ORCH_SWARM_HOST") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services/swarm.sh");
        if let Ok(out) = std::process::Command::new("bash")
            .arg(&script)
            .arg("env")
            .output()
            && out.status.success()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let line = line.trim_start_matches("export ");
                if let Some((k, v)) = line.split_once('=') {
                    vars.insert(k.to_owned(), v.trim_matches('\'').to_owned());
                }
            }
        }
    }
    vars
}

/// The swarm, with the test image pushed; `None` (the test skips) when there is no swarm
/// and services are not required.
pub async fn swarm() -> Option<&'static Swarm> {
    SWARM
        .get_or_init(|| async {
            let vars = swarm_env();
            let get = |k: &str| vars.get(k).cloned();
            let (Some(host), Some(nodes), Some(registry), Some(docker_config), Some(script)) = (
                get("ORCH_SWARM_HOST"),
                get("ORCH_SWARM_NODES"),
                get("ORCH_SWARM_REGISTRY"),
                get("ORCH_SWARM_DOCKER_CONFIG"),
                get("ORCH_SWARM_SCRIPT"),
            ) else {
                missing("no swarm (ORCH_SWARM_* unset): start it with `scripts/services/swarm.sh start`");
                return None;
            };
            let image = push_image(&host, &registry, &docker_config).await;
            Some(Swarm {
                host,
                nodes: nodes.split_whitespace().map(str::to_owned).collect(),
                registry,
                docker_config,
                script,
                image,
            })
        })
        .await
        .as_ref()
}

/// Builds the test image (scratch + static busybox) on the manager and pushes it to the
/// registry the nodes reach; returns its digest reference.
async fn push_image(host: &str, registry: &str, docker_config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    let tag = format!("{registry}/orch-test/swarm-busybox:1");
    let on_manager = |b: orch_core::phase::ContextBuilder| {
        b.agent(Arc::new(DockerAgent::new(
            "manager",
            Endpoint::parse(host).unwrap(),
            1,
        )))
    };
    let t = TestCtx::configure(dir.path(), on_manager);
    phase_of(
        "docker.build",
        &format!("context = \".\"\ntags = [\"{tag}\"]"),
    )
    .run(&t.ctx)
    .await
    .unwrap_or_else(|e| panic!("cannot build the swarm test image: {e}\n{}", t.log_text()));
    let t = TestCtx::configure(dir.path(), on_manager);
    let pushed = phase_of(
        "docker.push",
        &format!("tags = [\"{tag}\"]\ndocker_config = \"{docker_config}\""),
    )
    .run(&t.ctx)
    .await
    .unwrap_or_else(|e| panic!("cannot push the swarm test image: {e}\n{}", t.log_text()));
    pushed.outputs["digest"].clone()
}

async fn connect(host: &str) -> Docker {
    Endpoint::parse(host).unwrap().connect().await.unwrap()
}

/// A pipeline on the swarm: `[agents.cluster]` is prepended; `IMAGE` in `phases` is the
/// test image.
pub fn pipeline(s: &Swarm, phases: &str) -> String {
    format!(
        "[pipeline]\nname = \"swarm-test\"\njobs = 6\n\n\
         [agents.cluster]\ntype = \"swarm\"\ncapacity = 6\n\
         with = {{ host = \"{}\", docker_config = \"{}\" }}\n\n{}",
        s.host,
        s.docker_config,
        phases.replace("IMAGE", &s.image)
    )
}

/// A run of a pipeline text in a fresh directory, recording its events.
pub struct TestRun {
    pub dir: tempfile::TempDir,
    pipeline: Arc<Pipeline>,
    pub options: RunOptions,
    pub events: Arc<Mutex<Vec<RunEvent>>>,
}

impl TestRun {
    pub fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("orch.toml");
        std::fs::write(&file, text).unwrap();
        let mut registry = orch_core::Registry::with_builtins();
        orch_docker::register(&mut registry).expect("the kinds register once");
        let p = Pipeline::load(&file, &registry, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let options = RunOptions {
            state_dir: Some(dir.path().join(".orch")),
            ..RunOptions::default()
        };
        Self {
            dir,
            pipeline: Arc::new(p),
            options,
            events: Arc::default(),
        }
    }

    pub async fn run(&self, control: RunControl) -> RunRecord {
        let mut runner = Runner::new(self.pipeline.clone(), self.options.clone());
        let sink = self.events.clone();
        runner.subscribe(Arc::new(move |e: &orch_core::Event| {
            sink.lock().unwrap().push(e.kind.clone())
        }));
        runner.run(control).await.unwrap()
    }

    pub fn log(&self, record: &RunRecord, phase: &str) -> String {
        let p = self
            .dir
            .path()
            .join(".orch/runs")
            .join(record.run_id.as_str())
            .join("logs")
            .join(format!("{phase}.log"));
        std::fs::read_to_string(&p).unwrap_or_default()
    }

    /// The errors of attempts that were retried.
    pub fn retried(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                RunEvent::PhaseRetrying { error, .. } => Some(error.clone()),
                _ => None,
            })
            .collect()
    }
}

fn summary(record: &RunRecord) -> String {
    record
        .phases
        .iter()
        .map(|(id, p)| {
            format!(
                "{id}: {} attempts={} {:?} {:?}",
                p.status, p.attempts, p.reason, p.outputs
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What carries `label=value` on the swarm: services and secrets on the manager,
/// containers (running or not) and networks on every node.
pub async fn labelled(s: &Swarm, label: &str, value: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("{label}={value}")])]);
    let manager = connect(&s.host).await;
    let mut found = Vec::new();
    for svc in manager
        .list_services(Some(
            ListServicesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
    {
        found.push(format!("service {}", svc.id.unwrap_or_default()));
    }
    for sec in manager
        .list_secrets(Some(
            ListSecretsOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
    {
        found.push(format!("secret {}", sec.id.unwrap_or_default()));
    }
    for (i, node) in s.nodes.iter().enumerate() {
        let Ok(d) = Endpoint::parse(node).unwrap().connect().await else {
            found.push(format!("node {} does not answer", i + 1));
            continue;
        };
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for c in d.list_containers(Some(options)).await.unwrap_or_default() {
            found.push(format!(
                "container {} on node {}",
                c.id.unwrap_or_default(),
                i + 1
            ));
        }
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        for n in d.list_networks(Some(options)).await.unwrap_or_default() {
            found.push(format!(
                "network {} on node {}",
                n.id.unwrap_or_default(),
                i + 1
            ));
        }
    }
    found
}

/// Asserts that nothing of the run is left on the swarm: services and secrets at once,
/// containers once their nodes have removed them (Swarm does that after the service).
pub async fn assert_no_leftovers(s: &Swarm, record: &RunRecord) {
    let run = record.run_id.as_str();
    let now = labelled(s, RUN_LABEL, run).await;
    let immediate: Vec<_> = now.iter().filter(|l| !l.starts_with("container")).collect();
    assert!(immediate.is_empty(), "left after the run: {immediate:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = labelled(s, RUN_LABEL, run).await;
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left 60s after the run: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn jobs_land_on_their_nodes_and_publish_outputs_for_later_phases() {
    let Some(s) = swarm().await else { return };
    let _nodes = NODES.read().await;
    let text = pipeline(
        s,
        r#"
[phases.zone-a]
kind = "docker.run"
agent = "cluster"
with = { image = "IMAGE", constraints = ["node.labels.zone==a"], command = "echo working in $ORCH_PHASE_ID; echo ::orch-output greeting=hello-a; echo ::orch-output attempt=$ORCH_ATTEMPT" }

[phases.zone-b]
kind = "docker.run"
agent = "cluster"
with = { image = "IMAGE", constraints = ["node.labels.zone==b"], command = ["sh", "-c", "echo ::orch-output greeting=hello-b"] }

[phases.zone-c]
kind = "docker.run"
agent = "cluster"
with = { image = "IMAGE", constraints = ["node.labels.zone==c"], resources = { cpus = 0.1, memory = "32MiB" }, command = "printf '::orch-output greeting=hello-c'" }

[phases.use]
needs = ["zone-a", "zone-b", "zone-c"]
env = { A = "${{ phases.zone-a.outputs.greeting }}", B = "${{ phases.zone-b.outputs.greeting }}", C = "${{ phases.zone-c.outputs.greeting }}" }
run = 'test "$A $B $C" = "hello-a hello-b hello-c" && echo "got=$A,$B,$C" >> "$ORCH_OUTPUT"'

[phases.downstream]
kind = "docker.run"
agent = "cluster"
needs = ["use"]
with = { image = "IMAGE", constraints = ["node.role==worker"], command = "test \"$GOT\" = hello-a,hello-b,hello-c", env = { GOT = "${{ phases.use.outputs.got }}" } }
"#,
    );
    let run = TestRun::new(&text);
    let record = run.run(RunControl::new()).await;
    assert_eq!(record.status, RunStatus::Succeeded, "{}", summary(&record));
    for (phase, node) in [
        ("zone-a", "orch-swarm-1"),
        ("zone-b", "orch-swarm-2"),
        ("zone-c", "orch-swarm-3"),
    ] {
        let out = &record.phases[phase].outputs;
        assert_eq!(out["node"], node, "{phase}: {out:?}");
        assert_eq!(out["exit_code"], "0");
        assert!(!out["task"].is_empty());
    }
    assert_eq!(record.phases["zone-a"].outputs["attempt"], "1");
    let node = &record.phases["downstream"].outputs["node"];
    assert!(node == "orch-swarm-2" || node == "orch-swarm-3", "{node}");
    // Output lines are outputs, not log lines; the rest of the output is in the log.
    let log = run.log(&record, "zone-a");
    assert!(log.contains("working in zone-a"), "{log}");
    assert!(!log.contains("::orch-output"), "{log}");
    assert_no_leftovers(s, &record).await;
}

#[tokio::test]
async fn a_failing_job_fails_with_its_exit_code_and_node() {
    let Some(s) = swarm().await else { return };
    let _nodes = NODES.read().await;
    let text = pipeline(
        s,
        r#"
[phases.fails]
kind = "docker.run"
agent = "cluster"
with = { image = "IMAGE", constraints = ["node.labels.zone==b"], command = "echo about to fail >&2; exit 3" }
"#,
    );
    let run = TestRun::new(&text);
    let record = run.run(RunControl::new()).await;
    let p = &record.phases["fails"];
    assert_eq!(p.status, PhaseStatus::Failed, "{}", summary(&record));
    assert_eq!(p.exit_code, Some(3));
    let reason = p.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("on node orch-swarm-2 exited with code 3"),
        "{reason}"
    );
    assert!(run.log(&record, "fails").contains("about to fail"));
    assert_no_leftovers(s, &record).await;
}

#[tokio::test]
async fn an_unplaceable_job_fails_within_its_bound_with_swarms_reason() {
    let Some(s) = swarm().await else { return };
    let _nodes = NODES.read().await;
    let text = pipeline(
        s,
        r#"
[phases.nowhere]
kind = "docker.run"
agent = "cluster"
with = { image = "IMAGE", constraints = ["node.labels.zone==nowhere"], placement_timeout = "2s", command = "true" }

[phases.too-big]
kind = "docker.run"
agent = "cluster"
with = { image = "IMAGE", resources = { memory = "4096GiB" }, placement_timeout = "2s", command = "true" }
"#,
    );
    let run = TestRun::new(&text);
    let started = Instant::now();
    let record = run.run(RunControl::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    for (phase, says) in [
        ("nowhere", "scheduling constraints not satisfied"),
        ("too-big", "insufficient resources"),
    ] {
        let p = &record.phases[phase];
        assert_eq!(p.status, PhaseStatus::Failed, "{}", summary(&record));
        let reason = p.reason.clone().unwrap_or_default();
        assert!(reason.contains("could not place task"), "{reason}");
        assert!(reason.contains(says), "{reason}");
    }
    assert_no_leftovers(s, &record).await;
}

/// The services of a phase (by its label) that exist now.
async fn services_of_phase(s: &Swarm, phase: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("{PHASE_LABEL}={phase}")])]);
    connect(&s.host)
        .await
        .list_services(Some(
            ListServicesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|svc| svc.spec.and_then(|sp| sp.name))
        .collect()
}

/// Waits until a task of a phase (by label) runs; returns the node it runs on.
async fn running_task_node(s: &Swarm, phase: &str) -> String {
    let manager = connect(&s.host).await;
    let filters = HashMap::from([
        ("label", vec![format!("{PHASE_LABEL}={phase}")]),
        ("desired-state", vec!["running".to_owned()]),
    ]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = manager
            .list_tasks(Some(options.clone()))
            .await
            .unwrap_or_default();
        if let Some(t) = tasks.into_iter().find(|t| {
            t.status.as_ref().and_then(|st| st.state) == Some(bollard::models::TaskState::RUNNING)
        }) {
            let id = t.node_id.unwrap_or_default();
            let n = manager.inspect_node(&id).await.unwrap();
            return n.description.and_then(|d| d.hostname).unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no running task of {phase} within 60s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_timeout_and_a_cancellation_remove_the_service_at_once() {
    let Some(s) = swarm().await else { return };
    let _nodes = NODES.read().await;
    let phase = format!("sleeper-{}", nonce());
    let text = pipeline(
        s,
        &format!(
            r#"
[phases.{phase}]
kind = "docker.run"
agent = "cluster"
timeout = "4s"
with = {{ image = "IMAGE", command = "echo sleeping; sleep 120" }}
"#
        ),
    );
    let run = TestRun::new(&text);
    let record = run.run(RunControl::new()).await;
    let p = &record.phases[phase.as_str()];
    assert_eq!(p.status, PhaseStatus::TimedOut, "{}", summary(&record));
    assert!(services_of_phase(s, &phase).await.is_empty());
    assert_no_leftovers(s, &record).await;

    // Cancelled (Ctrl-C) while the task runs.
    let phase = format!("cancelled-{}", nonce());
    let text = pipeline(
        s,
        &format!(
            r#"
[phases.{phase}]
kind = "docker.run"
agent = "cluster"
with = {{ image = "IMAGE", command = "echo still running; sleep 120" }}
"#
        ),
    );
    let run = TestRun::new(&text);
    let events = run.events.clone();
    let control = RunControl::new();
    let stopper = control.clone();
    let handle = tokio::spawn(async move {
        let record = run.run(control).await;
        (run, record)
    });
    running_task_node(s, &phase).await;
    // The task's output reaches the phase's events while it runs (logs followed).
    crate::support::wait_for_line(&events, "still running", Duration::from_secs(30)).await;
    let asked = Instant::now();
    stopper.stop();
    let (_run, record) = handle.await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(record.status, RunStatus::Cancelled, "{}", summary(&record));
    assert_eq!(record.phases[phase.as_str()].status, PhaseStatus::Cancelled);
    assert!(services_of_phase(s, &phase).await.is_empty());
    assert_no_leftovers(s, &record).await;
}

/// The pidfile of the engine of the node whose socket is `sock` (its directory holds both).
fn engine_pid(sock: &str) -> i32 {
    let path = PathBuf::from(sock.trim_start_matches("unix://"));
    let pidfile = path.parent().unwrap().join("docker.pid");
    std::fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_node_killed_under_a_job_fails_that_attempt_and_the_retry_lands_elsewhere() {
    let Some(s) = swarm().await else { return };
    let _nodes = NODES.write().await;
    let phase = format!("survivor-{}", nonce());
    let text = pipeline(
        s,
        &format!(
            r#"
[phases.{phase}]
kind = "docker.run"
agent = "cluster"
retries = 1
backoff = {{ initial = "100ms" }}
with = {{ image = "IMAGE", constraints = ["node.role==worker"], command = "if [ \"$ORCH_ATTEMPT\" = 1 ]; then echo first; sleep 120; fi; echo second" }}
"#
        ),
    );
    let run = TestRun::new(&text);
    let handle = tokio::spawn(async move {
        let record = run.run(RunControl::new()).await;
        (run, record)
    });
    let victim = running_task_node(s, &phase).await;
    let n: usize = victim
        .strip_prefix("orch-swarm-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected node {victim}"));
    assert!(n == 2 || n == 3, "a worker: {victim}");
    let pid = engine_pid(&s.nodes[n - 1]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (run, record) = handle.await.unwrap();

    // Bring the node back before asserting, so a failure leaves the swarm whole.
    let status = std::process::Command::new("bash")
        .arg(&s.script)
        .arg("start")
        .status()
        .unwrap();
    assert!(status.success(), "{} start failed", s.script);

    let p = &record.phases[phase.as_str()];
    assert_eq!(p.status, PhaseStatus::Succeeded, "{}", summary(&record));
    assert_eq!(p.attempts, 2, "{}", summary(&record));
    let survivor = &p.outputs["node"];
    assert_ne!(survivor, &victim);
    assert!(survivor.starts_with("orch-swarm-"), "{survivor}");
    let retried = run.retried();
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert!(
        retried[0].contains(&format!("node {victim} went down while swarm task")),
        "{retried:?}"
    );
    assert_no_leftovers(s, &record).await;
}

#[tokio::test]
async fn an_image_only_in_the_managers_store_is_refused_before_any_job() {
    let Some(s) = swarm().await else { return };
    let _nodes = NODES.read().await;
    let manager = connect(&s.host).await;
    // Tagged for the registry but never pushed: the usual mistake.
    let local = format!("{}/orch-test/local-only:{}", s.registry, nonce());
    let (repo, tag) = local.rsplit_once(':').unwrap();
    let pulled = s.image.clone();
    manager
        .tag_image(
            &pulled,
            Some(
                bollard::query_parameters::TagImageOptionsBuilder::default()
                    .repo(repo)
                    .tag(tag)
                    .build(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("tag {pulled} as {local} on the manager: {e}"));
    let text = pipeline(
        s,
        &format!(
            r#"
[phases.local]
kind = "docker.run"
agent = "cluster"
with = {{ image = "{local}", command = "true" }}
"#
        ),
    );
    let run = TestRun::new(&text);
    let record = run.run(RunControl::new()).await;
    crate::support::remove_images(&manager, std::slice::from_ref(&local)).await;
    let p = &record.phases["local"];
    assert_eq!(p.status, PhaseStatus::Failed, "{}", summary(&record));
    let reason = p.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("is only in the local image store of the manager"),
        "{reason}"
    );
    assert!(reason.contains("docker.push"), "{reason}");
    assert!(!run.log(&record, "local").contains("created swarm service"));
    assert!(
        labelled(s, RUN_LABEL, record.run_id.as_str())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn host_paths_are_refused_and_named_volumes_mount() {
    let Some(s) = swarm().await else { return };
    let _nodes = NODES.read().await;
    let volume = format!("orch-test-cache-{}", nonce());
    let text = pipeline(
        s,
        &format!(
            r#"
[phases.host-path]
kind = "docker.run"
agent = "cluster"
with = {{ image = "IMAGE", mounts = ["./data:/data"], command = "true" }}

[phases.volume]
kind = "docker.run"
agent = "cluster"
with = {{ image = "IMAGE", mounts = ["{volume}:/cache"], constraints = ["node.labels.zone==c"], command = "echo kept > /cache/file && cat /cache/file" }}
"#
        ),
    );
    let mut run = TestRun::new(&text);
    run.options.keep_going = true;
    let record = run.run(RunControl::new()).await;
    let host = &record.phases["host-path"];
    assert_eq!(host.status, PhaseStatus::Failed);
    let reason = host.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(
            "mount `./data:/data`: a host path means nothing on the other nodes of a swarm"
        ),
        "{reason}"
    );
    assert_eq!(
        record.phases["volume"].status,
        PhaseStatus::Succeeded,
        "{}",
        summary(&record)
    );
    assert!(run.log(&record, "volume").contains("kept"));
    assert_no_leftovers(s, &record).await;
    let node3 = Endpoint::parse(&s.nodes[2])
        .unwrap()
        .connect()
        .await
        .unwrap();
    node3
        .remove_volume(
            &volume,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
        .unwrap_or_else(|e| panic!("the volume {volume} was made on node 3: {e}"));
}

#[tokio::test]
async fn health_needs_a_manager_of_an_active_swarm() {
    let Some(s) = swarm().await else { return };
    let _nodes = NODES.read().await;
    use orch_core::Agent as _;
    let manager = SwarmAgent::new("cluster", Endpoint::parse(&s.host).unwrap(), 4);
    manager.health().await.unwrap();
    let worker = SwarmAgent::new("cluster", Endpoint::parse(&s.nodes[1]).unwrap(), 4);
    let err = worker.health().await.unwrap_err().to_string();
    assert!(
        err.contains("the engine is a swarm worker, not a manager"),
        "{err}"
    );
    // The engine of scripts/services/docker.sh is in no swarm.
    let Some(_) = crate::support::engine().await else {
        return;
    };
    let single = SwarmAgent::new("cluster", Endpoint::from_env().unwrap(), 4);
    let err = single.health().await.unwrap_err().to_string();
    assert!(
        err.contains("the engine is not part of a swarm (its swarm state is `inactive`)"),
        "{err}"
    );
}
