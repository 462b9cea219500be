//! Deployments through the real binary, a real Docker engine and a real HAProxy: test
//! images built `FROM scratch` with busybox httpd (a CGI answers the image's version, or
//! 500 on every fifth request for the flaky one), and a client loop that runs against the
//! proxy during every deployment and counts responses by version and status.
//!
//! Services: `scripts/install/{docker,haproxy}.sh` and `scripts/services/docker.sh start`.
//! With `ORCH_REQUIRE_SERVICES=1` a missing one fails the test; otherwise it skips.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::Ws;

const IMAGE: &str = "orch-deploy-test";

fn required() -> bool {
    std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds the test images once; false (skip) when Docker or HAProxy is missing.
fn ready() -> bool {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        if !succeeds("docker", &["version"]) {
            return Err("no docker engine answers (run scripts/install/docker.sh && scripts/services/docker.sh start)".into());
        }
        if !succeeds("haproxy", &["-v"]) {
            return Err("haproxy is not installed (run scripts/install/haproxy.sh)".into());
        }
        if !Path::new("/bin/busybox").is_file() {
            return Err("no /bin/busybox (run scripts/install/docker.sh)".into());
        }
        build_images()
    });
    match r {
        Ok(()) => true,
        Err(e) => {
            assert!(!required(), "ORCH_REQUIRE_SERVICES=1 but {e}");
            eprintln!("skipping: {e}");
            false
        }
    }
}

const APP_CGI: &str = r#"#!/bin/sh
# Answers the image's version; with FAIL_EVERY=N, every Nth request gets a 500.
if [ -n "$FAIL_EVERY" ]; then
  n=$(( $(cat /tmp/count 2>/dev/null || echo 0) + 1 ))
  echo "$n" > /tmp/count
  if [ $(( n % FAIL_EVERY )) -eq 0 ]; then
    printf 'Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nfail %s\n' "$VERSION"
    exit 0
  fi
fi
printf 'Content-Type: text/plain\r\n\r\n%s\n' "$VERSION"
"#;

/// `orch-deploy-test:{v1,v2,v3,flaky,nohealth}`.
fn build_images() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ctx = dir.path();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(ctx.join("www/cgi-bin")).map_err(|e| e.to_string())?;
    std::fs::write(ctx.join("www/cgi-bin/app"), APP_CGI).map_err(|e| e.to_string())?;
    std::fs::write(ctx.join("www/health"), "ok\n").map_err(|e| e.to_string())?;
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         COPY www /www\n\
         RUN chmod 755 /www/cgi-bin/app && mkdir -p /tmp && chmod 1777 /tmp\n\
         ARG VERSION\n\
         ARG FAIL_EVERY=\n\
         ARG HEALTH=yes\n\
         RUN [ \"$HEALTH\" = yes ] || rm /www/health\n\
         ENV VERSION=$VERSION FAIL_EVERY=$FAIL_EVERY\n\
         EXPOSE 8080\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .map_err(|e| e.to_string())?;
    for (tag, args) in [
        ("v1", vec!["VERSION=v1"]),
        ("v2", vec!["VERSION=v2"]),
        ("v3", vec!["VERSION=v3"]),
        ("flaky", vec!["VERSION=flaky", "FAIL_EVERY=5"]),
        ("nohealth", vec!["VERSION=nohealth", "HEALTH=no"]),
    ] {
        let mut cmd = Command::new("docker");
        cmd.args(["build", "-q", "-t", &format!("{IMAGE}:{tag}")]);
        for a in args {
            cmd.args(["--build-arg", a]);
        }
        let out = cmd.arg(ctx).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "docker build {tag}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(())
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One GET through the proxy: (status, body) or None when no answer came.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_owned())?;
    Some((status, body))
}

/// Requests sent during a deployment, by `version status` (`none` when no answer came).
#[derive(Default, Debug, Clone)]
struct Tally {
    counts: BTreeMap<String, u64>,
    /// Answers in order: (version, status).
    seq: Vec<(String, u16)>,
}

impl Tally {
    fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    fn count(&self, key: &str) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// Requests that did not get a 200.
    fn failed(&self) -> u64 {
        self.counts
            .iter()
            .filter(|(k, _)| !k.ends_with(" 200"))
            .map(|(_, v)| v)
            .sum()
    }

    fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.seq.iter().map(|(v, _)| v.clone()).collect();
        v.dedup();
        v
    }
}

/// A client loop against `listen` (bounded: it stops by itself after 90 s).
struct Client {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(addr: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (s, t, a) = (stop.clone(), tally.clone(), addr.to_owned());
        let handle = std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(90);
            while !s.load(Ordering::Relaxed) && Instant::now() < until {
                let (key, entry) = match get(&a, "/cgi-bin/app") {
                    Some((status, body)) => {
                        let version = body.trim_start_matches("fail ").to_owned();
                        (format!("{version} {status}"), Some((version, status)))
                    }
                    None => ("none".to_owned(), None),
                };
                let mut t = t.lock().unwrap();
                *t.counts.entry(key).or_default() += 1;
                if let Some(e) = entry {
                    t.seq.push(e);
                }
                drop(t);
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        Self {
            stop,
            tally,
            handle: Some(handle),
        }
    }

    fn snapshot(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.snapshot()
    }
}

/// A workspace with a pipeline that deploys one service; `with` is the rest of the
/// phase's `with` table.
struct Service {
    ws: Ws,
    name: String,
    listen: String,
}

impl Service {
    fn new(name: &str) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let ws = Ws::new("[pipeline]\nname = \"deploy-test\"\n");
        Self {
            ws,
            name: name.to_owned(),
            listen,
        }
    }

    /// Writes a pipeline with one deploy phase and runs it.
    fn deploy(&self, tag: &str, strategy: &str, extra: &str) -> crate::support::Run {
        let pipeline = format!(
            "[pipeline]\nname = \"deploy-test\"\n\n\
             [phases.deploy]\nkind = \"deploy\"\ntimeout = \"90s\"\n\
             with = {{ service = \"{}\", image = \"{IMAGE}:{tag}\", strategy = \"{strategy}\", listen = \"{}\", port = 8080, \
             health = {{ path = \"/health\", interval = \"100ms\", timeout = \"1s\", healthy = 2, unhealthy = 3, within = \"10s\" }}, drain = \"200ms\"{extra} }}\n",
            self.name, self.listen
        );
        std::fs::write(self.ws.path().join("orch.toml"), pipeline).unwrap();
        self.ws.orch(&["run", "--progress", "plain"])
    }

    fn outputs(&self) -> serde_json::Value {
        self.ws.record()["phases"]["deploy"]["outputs"].clone()
    }

    fn reason(&self) -> String {
        self.ws.record()["phases"]["deploy"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn proxy_pid(&self) -> Option<i32> {
        let p = self
            .ws
            .path()
            .join(format!(".orch/deploy/{}/haproxy.pid", self.name));
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    }

    /// Ends the service and checks nothing of it is left: containers, proxy, socket.
    fn stop_and_check_clean(&self) {
        let pid = self.proxy_pid();
        let r = self.ws.orch(&["deploy", "stop", &self.name]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=org.orch.deploy.service={}", self.name),
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "containers left: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        if let Some(pid) = pid {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z ")),
                "haproxy {pid} still runs"
            );
        }
        assert!(
            !self
                .ws
                .path()
                .join(format!(".orch/deploy/{}", self.name))
                .exists(),
            "the service's state, config and socket are left"
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self
            .ws
            .path()
            .join(format!(".orch/deploy/{}", self.name))
            .exists()
        {
            let _ = self.ws.orch(&["deploy", "stop", &self.name]);
        }
    }
}

fn assert_run(r: &crate::support::Run, code: i32) {
    assert_eq!(r.code, code, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
}

/// The last `n` answers after the client stopped come from `version`.
fn settled_on(listen: &str, version: &str) {
    for _ in 0..10 {
        let (status, body) = get(listen, "/cgi-bin/app").expect("an answer");
        assert_eq!((status, body.as_str()), (200, version));
    }
}

#[test]
fn blue_green_switches_without_a_failed_request_and_rollback_restores_the_previous_version() {
    if !ready() {
        return;
    }
    let svc = Service::new("bg-good");
    assert_run(&svc.deploy("v1", "blue-green", ""), 0);
    let out = svc.outputs();
    assert_eq!(out["status"], "deployed");
    assert_eq!(out["previous"], "");
    assert_eq!(out["url"], format!("http://{}/", svc.listen));
    settled_on(&svc.listen, "v1");

    let client = Client::start(&svc.listen);
    while client.snapshot().total() < 20 {
        std::thread::yield_now();
    }
    let r = svc.deploy("v2", "blue-green", "");
    let tally = client.finish();
    assert_run(&r, 0);
    let out = svc.outputs();
    assert_eq!(out["status"], "deployed");
    assert_eq!(out["version"], format!("{IMAGE}:v2"));
    assert_eq!(out["previous"], format!("{IMAGE}:v1"));
    assert_eq!(out["drift"], "0");
    assert_eq!(tally.failed(), 0, "{tally:?}");
    assert!(tally.count("v2 200") > 0, "{tally:?}");
    // One switch: v1 answers, then v2 only.
    assert_eq!(tally.versions(), ["v1", "v2"], "{:?}", tally.counts);
    settled_on(&svc.listen, "v2");

    // Redeploying the same image changes nothing.
    assert_run(&svc.deploy("v2", "blue-green", ""), 0);
    assert!(
        svc.ws
            .read(".orch/runs/latest/logs/deploy.log")
            .contains("nothing to change")
    );

    // `orch rollback`: back to v1 at once, recorded as a run.
    let client = Client::start(&svc.listen);
    let r = svc.ws.orch(&["rollback", &svc.name]);
    let tally = client.finish();
    assert_run(&r, 0);
    let rec = svc.ws.record();
    let phase = &rec["phases"][format!("rollback-{}", svc.name)];
    assert_eq!(phase["status"], "succeeded");
    assert_eq!(phase["outputs"]["version"], format!("{IMAGE}:v1"));
    assert_eq!(tally.failed(), 0, "{tally:?}");
    settled_on(&svc.listen, "v1");

    let status = svc.ws.orch(&["deploy", "status", &svc.name]);
    assert_run(&status, 0);
    assert!(
        status
            .stdout
            .contains(&format!("serving        {IMAGE}:v1")),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains(&format!("standby        {IMAGE}:v2")),
        "{}",
        status.stdout
    );

    svc.stop_and_check_clean();
}

#[test]
fn a_version_that_fails_its_health_check_never_gets_traffic() {
    if !ready() {
        return;
    }
    let svc = Service::new("bg-health");
    assert_run(&svc.deploy("v1", "blue-green", ""), 0);
    let client = Client::start(&svc.listen);
    let r = svc.deploy("nohealth", "blue-green", "");
    let tally = client.finish();
    assert_run(&r, 1);
    let out = svc.outputs();
    assert_eq!(out["status"], "rolled_back");
    assert_eq!(out["version"], format!("{IMAGE}:v1"));
    let reason = svc.reason();
    assert!(
        reason.contains("failed its health check: GET /health answered 404 3 times in a row"),
        "{reason}"
    );
    assert!(reason.contains("keeps serving"), "{reason}");
    assert_eq!(tally.failed(), 0, "{tally:?}");
    assert_eq!(tally.versions(), ["v1"], "{tally:?}");
    // The new container's logs are in the phase log, and the container is gone.
    let log = svc.ws.read(".orch/runs/latest/logs/deploy.log");
    assert!(log.contains("--- logs of bg-health-nohealth-g2-1"), "{log}");
    settled_on(&svc.listen, "v1");
    svc.stop_and_check_clean();
}

#[test]
fn a_canary_that_answers_500_to_a_fifth_of_requests_is_rolled_back_at_its_first_step() {
    if !ready() {
        return;
    }
    let svc = Service::new("canary-bad");
    assert_run(&svc.deploy("v1", "blue-green", ""), 0);
    let client = Client::start(&svc.listen);
    let r = svc.deploy(
        "flaky",
        "canary",
        ", steps = [20, 100], analysis = { interval = \"5s\", max_error_rate = 0.05, min_requests = 10 }",
    );
    let tally = client.finish();
    assert_run(&r, 1);
    let out = svc.outputs();
    assert_eq!(out["status"], "rolled_back");
    let reason = svc.reason();
    assert!(
        reason.contains("canary step 20% failed: error rate"),
        "{reason}"
    );
    assert!(reason.contains("> max_error_rate 0.05"), "{reason}");
    let steps: serde_json::Value = serde_json::from_str(out["steps"].as_str().unwrap()).unwrap();
    assert_eq!(steps.as_array().unwrap().len(), 1, "{steps}");
    assert_eq!(steps[0]["verdict"], "fail");
    assert!(steps[0]["errors"].as_u64().unwrap() >= 1);
    // Only the canary's share of the traffic met the bad version, and a fifth of that failed.
    let flaky = tally.count("flaky 200") + tally.count("flaky 500");
    let failed = tally.failed();
    assert_eq!(failed, tally.count("flaky 500"), "{tally:?}");
    assert!(
        flaky * 100 <= tally.total() * 40,
        "the canary got more than its share: {tally:?}"
    );
    assert!(failed * 100 <= tally.total() * 10, "{tally:?}");
    settled_on(&svc.listen, "v1");
    svc.stop_and_check_clean();
}

#[test]
fn a_good_canary_reaches_all_traffic_and_too_little_traffic_is_inconclusive() {
    if !ready() {
        return;
    }
    let svc = Service::new("canary-good");
    assert_run(&svc.deploy("v1", "blue-green", ""), 0);
    let client = Client::start(&svc.listen);
    let r = svc.deploy(
        "v2",
        "canary",
        ", replicas = 2, steps = [25, 100], analysis = { interval = \"1s\", max_error_rate = 0.01, min_requests = 5, inconclusive = \"extend\", max_windows = 10 }",
    );
    let tally = client.finish();
    assert_run(&r, 0);
    let steps: serde_json::Value =
        serde_json::from_str(svc.outputs()["steps"].as_str().unwrap()).unwrap();
    let verdicts: Vec<&str> = steps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["pass", "pass"], "{steps}");
    assert_eq!(steps[1]["percent"], 100);
    assert_eq!(tally.failed(), 0, "{tally:?}");
    settled_on(&svc.listen, "v2");

    // No client: each step sees nothing, which never passes.
    let r = svc.deploy(
        "v3",
        "canary",
        ", steps = [50, 100], analysis = { interval = \"500ms\", min_requests = 5 }",
    );
    assert_run(&r, 1);
    assert_eq!(svc.outputs()["status"], "rolled_back");
    let reason = svc.reason();
    assert!(
        reason.contains("canary step 50% was inconclusive: 0 responses"),
        "{reason}"
    );
    assert!(reason.contains("fewer than min_requests 5"), "{reason}");
    settled_on(&svc.listen, "v2");
    svc.stop_and_check_clean();
}

#[test]
fn bad_input_and_faults_are_clear_errors_or_documented_recoveries() {
    if !ready() {
        return;
    }
    // Steps that do not increase: an invalid file, located.
    let svc = Service::new("faults");
    let r = svc.deploy("v1", "canary", ", steps = [50, 20, 100]");
    assert_run(&r, 2);
    assert!(
        r.stderr
            .contains("`steps` must increase: `steps[1]` = 20 follows 50"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("orch.toml:"), "{}", r.stderr);

    // An image that does not exist.
    let r = svc.deploy("does-not-exist", "blue-green", "");
    assert_run(&r, 1);
    assert!(
        svc.reason()
            .contains("does not exist in the engine and cannot be pulled"),
        "{}",
        svc.reason()
    );

    // A listen address another program holds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = Service {
        ws: Ws::new(""),
        name: "faults-busy".into(),
        listen: taken.local_addr().unwrap().to_string(),
    };
    let r = busy.deploy("v1", "blue-green", "");
    assert_run(&r, 1);
    assert!(
        busy.reason()
            .contains("the address is in use by another program"),
        "{}",
        busy.reason()
    );
    drop(taken);

    // A port the container does not serve: no answer, rolled back with a hint.
    assert_run(&svc.deploy("v1", "blue-green", ""), 0);
    let pipeline = svc
        .ws
        .read("orch.toml")
        .replace("port = 8080", "port = 9999")
        .replace("within = \"10s\"", "within = \"2s\"");
    std::fs::write(
        svc.ws.path().join("orch.toml"),
        pipeline.replace(":v1", ":v2"),
    )
    .unwrap();
    let r = svc.ws.orch(&["run"]);
    assert_run(&r, 1);
    let reason = svc.reason();
    assert!(
        reason.contains("does the container serve HTTP on port 9999?"),
        "{reason}"
    );
    settled_on(&svc.listen, "v1");

    // The proxy killed between runs: the next run restarts it from the state, and says so.
    let pid = svc.proxy_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&svc.listen, "/cgi-bin/app").is_some() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    let status = svc.ws.orch(&["deploy", "status", &svc.name]);
    assert!(status.stdout.contains("not running"), "{}", status.stdout);
    assert_run(&svc.deploy("v2", "blue-green", ""), 0);
    let log = svc.ws.read(".orch/runs/latest/logs/deploy.log");
    assert!(log.contains("was not running: restarting it from"), "{log}");
    settled_on(&svc.listen, "v2");

    // A state file edited by hand: a located error that says how to recover.
    let state = svc.ws.path().join(".orch/deploy/faults/state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(
        &state,
        text.replacen("\"port\": 8080", "\"port\": \"eighty\"", 1),
    )
    .unwrap();
    let r = svc.deploy("v1", "blue-green", "");
    assert_run(&r, 1);
    let reason = svc.reason();
    assert!(
        reason.contains("state.json:") && reason.contains("the deployment state is damaged"),
        "{reason}"
    );
    assert!(reason.contains("orch deploy stop faults"), "{reason}");
    // Still serving what it served.
    settled_on(&svc.listen, "v2");
    std::fs::write(&state, text).unwrap();
    svc.stop_and_check_clean();
    // A service that was never deployed.
    let r = svc.ws.orch(&["rollback", "faults"]);
    assert_run(&r, 1);
    assert!(
        r.stderr.contains("no service `faults` is deployed"),
        "{}",
        r.stderr
    );
    let _ = PathBuf::new();
}

/// The swarm of `scripts/services/swarm.sh` (its `env`), with the test images pushed to the
/// registry its nodes pull from: (manager socket, image prefix as the nodes see it, Docker
/// config with that registry's credentials).
fn swarm() -> Option<(String, String, String)> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = repo.join("scripts/services/swarm.sh");
    let mut vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("ORCH_SWARM_") || k.starts_with("ORCH_TEST_REGISTRY"))
        .collect();
    // `scripts/test` exports the swarm's variables but not the registry's (docker.sh prints
    // plain KEY=VALUE lines): whatever the environment lacks comes from the scripts.
    if script.is_file() {
        for s in [&script, &repo.join("scripts/services/docker.sh")] {
            if let Ok(out) = Command::new("bash").arg(s).arg("env").output()
                && out.status.success()
            {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let line = line.trim_start_matches("export ");
                    if let Some((k, v)) = line.split_once('=') {
                        vars.entry(k.trim().to_owned()).or_insert_with(|| {
                            v.trim().trim_matches('"').trim_matches('\'').to_owned()
                        });
                    }
                }
            }
        }
    }
    let get = |k: &str| vars.get(k).cloned().filter(|v| !v.is_empty());
    let (Some(host), Some(node_registry), Some(config), Some(local), Some(user), Some(pw_file)) = (
        get("ORCH_SWARM_HOST"),
        get("ORCH_SWARM_REGISTRY"),
        get("ORCH_SWARM_DOCKER_CONFIG"),
        get("ORCH_TEST_REGISTRY"),
        get("ORCH_TEST_REGISTRY_USER"),
        get("ORCH_TEST_REGISTRY_PASSWORD_FILE"),
    ) else {
        let msg = "no swarm (run scripts/services/swarm.sh start)";
        assert!(
            !(required() && script.is_file()),
            "ORCH_REQUIRE_SERVICES=1 but {msg}"
        );
        eprintln!("skipping: {msg}");
        return None;
    };
    // Push the test images where the nodes pull them from.
    let login = tempfile::tempdir().unwrap();
    let password = std::fs::read_to_string(&pw_file).unwrap();
    let mut child = Command::new("docker")
        .args(["--config"])
        .arg(login.path())
        .args(["login", &local, "-u", &user, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.trim().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "docker login {local}");
    for tag in ["v1", "nohealth"] {
        let target = format!("{local}/{IMAGE}:{tag}");
        assert!(succeeds(
            "docker",
            &["tag", &format!("{IMAGE}:{tag}"), &target]
        ));
        let out = Command::new("docker")
            .arg("--config")
            .arg(login.path())
            .args(["push", &target])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "push {target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let host = if host.starts_with("unix://") || host.starts_with("tcp://") {
        host
    } else {
        format!("unix://{host}")
    };
    Some((host, format!("{node_registry}/{IMAGE}"), config))
}

#[test]
fn a_rolling_update_to_a_bad_version_is_rolled_back_by_swarm_and_fails_the_phase() {
    if !ready() {
        return;
    }
    let Some((host, image, config)) = swarm() else {
        return;
    };
    let ws = Ws::new("");
    let pipeline = |tag: &str| {
        format!(
            "[pipeline]\nname = \"rolling-test\"\n\n\
             [agents.cluster]\ntype = \"swarm\"\nwith = {{ host = \"{host}\" }}\n\n\
             [phases.deploy]\nkind = \"deploy\"\nagent = \"cluster\"\ntimeout = \"120s\"\n\
             with = {{ service = \"rolling\", image = \"{image}:{tag}\", strategy = \"rolling\", port = 8080, replicas = 2, \
             parallelism = 1, monitor = \"2s\", health = {{ path = \"/health\", interval = \"500ms\", timeout = \"1s\", unhealthy = 2, within = \"30s\" }} }}\n"
        )
    };
    let running_images = || {
        let out = Command::new("docker")
            .args([
                "-H",
                &host,
                "service",
                "ps",
                "orch-rolling",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Image}} {{.CurrentState}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let env = [("DOCKER_CONFIG", config.as_str())];
    std::fs::write(ws.path().join("orch.toml"), pipeline("v1")).unwrap();
    assert_run(&ws.orch(&["validate"]), 0);
    let r = ws.orch_env(&["run"], &env);
    let cleanup = || {
        let _ = ws.orch(&["deploy", "stop", "rolling"]);
    };
    if r.code != 0 {
        cleanup();
    }
    assert_run(&r, 0);
    assert_eq!(
        ws.record()["phases"]["deploy"]["outputs"]["status"],
        "deployed"
    );

    std::fs::write(ws.path().join("orch.toml"), pipeline("nohealth")).unwrap();
    let r = ws.orch_env(&["run"], &env);
    let rec = ws.record();
    let reason = rec["phases"]["deploy"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let images = running_images();
    cleanup();
    assert_run(&r, 1);
    assert_eq!(rec["phases"]["deploy"]["outputs"]["status"], "rolled_back");
    assert!(reason.contains("Swarm rolled the update back"), "{reason}");
    // The old tasks keep serving: both running tasks run v1.
    let lines: Vec<&str> = images.lines().filter(|l| l.contains("Running")).collect();
    assert_eq!(lines.len(), 2, "{images}");
    assert!(lines.iter().all(|l| l.contains(":v1")), "{images}");
    let out = Command::new("docker")
        .args([
            "-H",
            &host,
            "service",
            "ls",
            "-q",
            "--filter",
            "name=orch-rolling",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the Swarm service is left"
    );
}

/// A tiny HTTP server on 127.0.0.1 for `http.check`: `/ok` answers 200 "status ok", the
/// rest 404; it serves `n` requests and ends.
fn tiny_server(n: usize) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        for stream in l.incoming().take(n) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 2048];
            let got = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..got]);
            let (status, body) = if req.starts_with("GET /ok ") {
                ("200 OK", "status ok")
            } else {
                ("404 Not Found", "no such page")
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, h)
}

#[test]
fn http_check_probes_urls_for_status_and_body_with_retries() {
    // 1 request for `ok`, 1 + 1 retry for `missing`, 1 for `wrong-body`.
    let (addr, server) = tiny_server(4);
    let ws = Ws::new(&format!(
        "[pipeline]\nname = \"check\"\n\n\
         [phases.ok]\nkind = \"http.check\"\nwith = {{ urls = [\"http://{addr}/ok\"], body = \"status ok\" }}\n\n\
         [phases.missing]\nkind = \"http.check\"\nneeds = [\"ok\"]\nallow_failure = true\n\
         with = {{ urls = \"http://{addr}/missing\", retries = 1, interval = \"50ms\" }}\n\n\
         [phases.wrong-body]\nkind = \"http.check\"\nneeds = [\"missing\"]\n\
         with = {{ urls = [\"http://{addr}/ok\"], body = \"status degraded\", retries = 0 }}\n"
    ));
    let r = ws.orch(&["run"]);
    server.join().unwrap();
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let rec = ws.record();
    assert_eq!(rec["phases"]["ok"]["status"], "succeeded");
    assert_eq!(rec["phases"]["ok"]["outputs"]["status"], "200");
    assert_eq!(
        rec["phases"]["missing"]["reason"],
        format!(
            "GET http://{addr}/missing answered 404, expected 200 (body: no such page), after 2 attempts"
        )
    );
    assert_eq!(
        rec["phases"]["wrong-body"]["reason"],
        format!(
            "GET http://{addr}/ok answered 200 without `status degraded` in its body (body: status ok), after 1 attempt"
        )
    );

    // Bad settings are errors at load time, located.
    let ws = Ws::new(
        "[pipeline]\nname = \"check\"\n\n[phases.c]\nkind = \"http.check\"\nwith = { urls = [\"https://example.invalid/\"] }\n",
    );
    let r = ws.orch(&["validate"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not an http:// URL"), "{}", r.stderr);
    assert!(r.stderr.contains("orch.toml:"), "{}", r.stderr);
}
