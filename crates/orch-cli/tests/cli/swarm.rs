//! `docker.run` on a `swarm` agent through the binary: the plan, secrets, Ctrl-C, and a
//! run killed with SIGKILL whose leftovers the next run removes. Against the real swarm of
//! `scripts/services/swarm.sh` (checked with the `docker` client).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Ws, redactions};

/// `ORCH_SWARM_*`, from the environment or `scripts/services/swarm.sh env`; `None` (the
/// test skips) when no swarm runs and services are not required.
fn swarm() -> Option<HashMap<String, String>> {
    let mut vars: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ORCH_SWARM_"))
        .collect();
    if !vars.contains_key("ORCH_SWARM_HOST") {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services/swarm.sh");
        if let Ok(out) = Command::new("bash").arg(&script).arg("env").output()
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
    if vars.contains_key("ORCH_SWARM_HOST") {
        return Some(vars);
    }
    let msg = "no swarm: start it with `scripts/services/swarm.sh start`";
    if std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("ORCH_REQUIRE_SERVICES=1 but {msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// `docker -H HOST ARGS...`'s stdout (it must succeed).
fn docker(host: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(host)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ids of services, secrets (on the manager) or containers (on every node) with a label.
fn labelled(vars: &HashMap<String, String>, label: &str) -> Vec<String> {
    let host = &vars["ORCH_SWARM_HOST"];
    let filter = format!("label={label}");
    let mut found = Vec::new();
    for what in ["service", "secret"] {
        for id in docker(host, &[what, "ls", "-q", "--filter", &filter]).lines() {
            found.push(format!("{what} {id}"));
        }
    }
    for node in vars["ORCH_SWARM_NODES"].split_whitespace() {
        for id in docker(node, &["ps", "-aq", "--filter", &filter]).lines() {
            found.push(format!("container {id} on {node}"));
        }
    }
    found
}

fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A pipeline that builds the test image on the manager, pushes it to the registry the
/// nodes reach and runs `jobs` (phases on agent `cluster`; `IMAGE` is the pushed digest).
fn pipeline(vars: &HashMap<String, String>, jobs: &str) -> String {
    format!(
        r#"[pipeline]
name = "swarm-cli"

[agents.manager]
type = "docker"
with = {{ host = "{host}" }}

[agents.cluster]
type = "swarm"
capacity = 4
with = {{ host = "{host}", docker_config = "{config}" }}

[phases.context]
run = "mkdir -p image && cp /bin/busybox image/ && printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n' > image/Dockerfile"

[phases.image]
kind = "docker.build"
agent = "manager"
needs = ["context"]
with = {{ context = "image", tags = ["{registry}/orch-test/swarm-cli:1"] }}

[phases.push]
kind = "docker.push"
agent = "manager"
needs = ["image"]
with = {{ docker_config = "{config}" }}
{jobs}"#,
        host = vars["ORCH_SWARM_HOST"],
        config = vars["ORCH_SWARM_DOCKER_CONFIG"],
        registry = vars["ORCH_SWARM_REGISTRY"],
        jobs = jobs.replace("IMAGE", "${{ phases.push.outputs.digest }}"),
    )
}

#[test]
fn plan_shows_the_agent_constraints_and_image_of_swarm_phases() {
    let ws = Ws::new(
        r#"[pipeline]
name = "plan"

[vars]
registry = "10.231.77.1:5000"

[agents.cluster]
type = "swarm"
capacity = 6
with = { host = "unix:///run/orch-test-none/docker.sock" }

[phases.test-b]
kind = "docker.run"
agent = "cluster"
with = { image = "${{ vars.registry }}/shop/api@sha256:0123", constraints = ["node.labels.zone==b", "node.role==worker"], resources = { cpus = 0.5, memory = "256MiB" }, placement_timeout = "1m", command = "make test" }
"#,
    );
    let r = ws.orch(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    redactions(&ws).bind(|| insta::assert_snapshot!("plan_of_swarm_phases", r.stdout));
}

/// Spawns `orch run ARGS` in the workspace with extra environment.
fn spawn(ws: &Ws, args: &[&str], env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_orch"))
        .arg("run")
        .args(args)
        .current_dir(ws.path())
        .envs(env.iter().copied())
        .env_remove("ORCH_JOBS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until a service of `phase` runs its task; returns the service's id.
fn running_service(vars: &HashMap<String, String>, phase: &str, child: &mut Child) -> String {
    let host = &vars["ORCH_SWARM_HOST"];
    let filter = format!("label=org.orch.phase-id={phase}");
    let mut id = String::new();
    wait_until(Duration::from_secs(120), "a running task", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("orch ended first: {status}");
        }
        id = docker(host, &["service", "ls", "-q", "--filter", &filter])
            .trim()
            .to_owned();
        !id.is_empty()
            && docker(
                host,
                &["service", "ps", "--format", "{{.CurrentState}}", &id],
            )
            .starts_with("Running")
    });
    id
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                continue;
            }
            if t.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_secret_reaches_the_job_as_a_swarm_secret_and_nowhere_in_clear() {
    let Some(vars) = swarm() else { return };
    let secret = "Swarm-T0ken-9f8e7d6c";
    let ws = Ws::new(&pipeline(
        &vars,
        r#"
[phases.job]
kind = "docker.run"
agent = "cluster"
needs = ["push"]
secrets = ["SWARM_TOKEN"]
with = { image = "IMAGE", command = "test \"$(cat \"$SWARM_TOKEN_FILE\")\" = \"$SWARM_TOKEN\" && echo \"token: $SWARM_TOKEN\" && echo \"::orch-output seen=$SWARM_TOKEN\" && sleep 5" }
"#,
    ));
    let mut child = spawn(&ws, &[], &[("SWARM_TOKEN", secret)]);
    let host = vars["ORCH_SWARM_HOST"].clone();
    let service = running_service(&vars, "job", &mut child);
    let spec = docker(&host, &["service", "inspect", &service]);
    assert!(
        !spec.contains(secret),
        "the service spec holds the secret: {spec}"
    );
    assert!(spec.contains("/run/secrets/SWARM_TOKEN"), "{spec}");
    let secrets = docker(
        &host,
        &[
            "secret",
            "ls",
            "-q",
            "--filter",
            "label=org.orch.phase-id=job",
        ],
    );
    assert_eq!(
        secrets.lines().count(),
        1,
        "one Swarm secret for the attempt: {secrets}"
    );
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    let record = ws.record();
    assert_eq!(record["phases"]["job"]["outputs"]["seen"], "***");
    assert!(
        ws.read(".orch/runs/latest/logs/job.log")
            .contains("token: ***")
    );
    for f in files_under(&ws.path().join(".orch")) {
        let text = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&text).contains(secret),
            "{} holds the secret",
            f.display()
        );
    }
    let run = record["run_id"].as_str().unwrap().to_owned();
    let label = format!("org.orch.run-id={run}");
    let now: Vec<_> = labelled(&vars, &label)
        .into_iter()
        .filter(|l| !l.starts_with("container"))
        .collect();
    assert!(now.is_empty(), "{now:?}");
    wait_until(Duration::from_secs(60), "no container left", || {
        labelled(&vars, &label).is_empty()
    });
}

#[test]
fn ctrl_c_removes_the_service_and_a_run_after_sigkill_removes_what_it_left() {
    let Some(vars) = swarm() else { return };
    let jobs = r#"
[vars]
sleep = "300"

[phases.long]
kind = "docker.run"
agent = "cluster"
needs = ["push"]
with = { image = "IMAGE", constraints = ["node.labels.zone==b"], command = "echo start; sleep ${{ vars.sleep }}; echo done" }
"#;
    let ws = Ws::new(&pipeline(&vars, jobs));
    let host = vars["ORCH_SWARM_HOST"].clone();

    // Ctrl-C: the run ends 130 and its service is gone at once.
    let mut child = spawn(&ws, &["--grace", "1s"], &[]);
    running_service(&vars, "long", &mut child);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let interrupted = ws.record()["run_id"].as_str().unwrap().to_owned();
    let services = docker(
        &host,
        &[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("label=org.orch.run-id={interrupted}"),
        ],
    );
    assert!(services.trim().is_empty(), "{services}");

    // SIGKILL: nothing can clean up; the service stays until the next run on this state
    // directory removes it before the phase runs again.
    let mut child = spawn(&ws, &[], &[]);
    let orphan = running_service(&vars, "long", &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = docker(
        &host,
        &[
            "service",
            "inspect",
            "--format",
            "{{index .Spec.Labels \"org.orch.run-id\"}}",
            &orphan,
        ],
    )
    .trim()
    .to_owned();
    assert!(
        !docker(
            &host,
            &["service", "ls", "-q", "--filter", &format!("id={orphan}")]
        )
        .trim()
        .is_empty()
    );

    let r = ws.orch(&["run", "--resume", "--var", "sleep=0"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let record = ws.record();
    for done in ["image", "push"] {
        assert_eq!(record["phases"][done]["status"], "skipped", "{record:#}");
    }
    assert_eq!(record["phases"]["long"]["status"], "succeeded");
    let log = ws.read(".orch/runs/latest/logs/long.log");
    assert!(log.contains("removed swarm service"), "{log}");
    assert!(
        docker(
            &host,
            &["service", "ls", "-q", "--filter", &format!("id={orphan}")]
        )
        .trim()
        .is_empty()
    );
    for run in [
        interrupted,
        killed,
        record["run_id"].as_str().unwrap().to_owned(),
    ] {
        let label = format!("org.orch.run-id={run}");
        wait_until(Duration::from_secs(60), "nothing of the runs left", || {
            labelled(&vars, &label).is_empty()
        });
    }
}

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

#[test]
fn the_delivery_example_runs_its_test_containers_on_the_swarm() {
    let Some(vars) = swarm() else { return };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/delivery");
    let work = tempfile::tempdir().unwrap();
    std::fs::copy(example.join("swarm.toml"), work.path().join("swarm.toml")).unwrap();
    copy_dir(&example.join("base"), &work.path().join("base"));
    for svc in ["gateway", "orders"] {
        copy_dir(
            &example.join("project/services").join(svc),
            &work.path().join("project/services").join(svc),
        );
    }
    let registry = format!("registry={}", vars["ORCH_SWARM_REGISTRY"]);
    // Its own repositories in the shared registry: the delivery example's test pushes the
    // same service names at the same time, and a tag moved under it changes its digests.
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args([
            "run",
            "swarm.toml",
            "--var",
            &registry,
            "--var",
            "image_prefix=orch-delivery-swarm-test",
        ])
        .current_dir(work.path())
        .env("DOCKER_HOST", &vars["ORCH_SWARM_HOST"])
        .env("DOCKER_CONFIG", &vars["ORCH_SWARM_DOCKER_CONFIG"])
        .env_remove("ORCH_JOBS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text =
        std::fs::read_to_string(work.path().join(".orch/swarm/runs/latest/run.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    for smoke in ["smoke-gateway", "smoke-orders"] {
        let outputs = &record["phases"][smoke]["outputs"];
        assert_eq!(outputs["health"], "ok", "{record:#}");
        assert!(
            outputs["node"].as_str().unwrap().starts_with("orch-swarm-"),
            "{outputs}"
        );
    }
    let run = record["run_id"].as_str().unwrap();
    let label = format!("org.orch.run-id={run}");
    wait_until(Duration::from_secs(60), "nothing of the run left", || {
        labelled(&vars, &label).is_empty()
    });
}
