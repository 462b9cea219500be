//! The engine dying under a running phase: a private dockerd (own socket, data and exec
//! roots and network namespace, no bridge, no iptables) is killed while a container runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use orch_core::PhaseError;
use orch_docker::{DockerAgent, Endpoint};

use crate::support::{TestCtx, build_phase, engine, eventually, phase_of, wait_for_line};

/// A dockerd of the test's own. Dropping it stops it and every process it left.
struct PrivateEngine {
    dir: tempfile::TempDir,
    child: Option<Child>,
    crashed: bool,
}

impl PrivateEngine {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    fn spawn(dir: &Path) -> Child {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .unwrap();
        // Its own network namespace: a second dockerd in the host's would delete the host
        // engine's `docker0` bridge (its `--bridge none` means "no docker0" to it).
        Command::new("unshare")
            .args(["--net", "dockerd"])
            .arg("--host")
            .arg(format!("unix://{}", dir.join("d.sock").display()))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("x"))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--shutdown-timeout",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Starts one, or `None` when dockerd cannot be started here (not root, not installed).
    async fn start() -> Option<Self> {
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .map(|u| u.split_whitespace().next() == Some("0"))
            })
            .unwrap_or(false);
        let installed = ["dockerd", "unshare"].iter().all(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !root || !installed {
            crate::support::missing(
                "a private dockerd needs root and dockerd (scripts/install/docker.sh)",
            );
            return None;
        }
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("orch-de")
            .tempdir_in("/tmp")
            .unwrap();
        let child = Self::spawn(dir.path());
        let engine = Self {
            dir,
            child: Some(child),
            crashed: false,
        };
        engine.wait_ready().await;
        Some(engine)
    }

    async fn wait_ready(&self) {
        let endpoint = Endpoint::Unix(self.socket());
        let ready = eventually(Duration::from_secs(60), || {
            let endpoint = endpoint.clone();
            async move { endpoint.connect().await.is_ok() }
        })
        .await;
        assert!(
            ready,
            "private dockerd did not answer: {}",
            std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
        );
    }

    /// SIGKILL: the engine dies without cleaning up (its containerd and the container
    /// keep running).
    fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
            self.crashed = true;
        }
    }

    /// After a crash: starts dockerd again on the same roots, so it adopts what the dead
    /// one left (the container's shim) and cleans it up, and waits until it answers.
    fn recover(&mut self) {
        if !self.crashed {
            return;
        }
        self.crashed = false;
        // The dead engine's containerd died with it; its pidfile would make the new
        // engine wait for it forever.
        let pidfile = self.dir.path().join("x/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let alive =
                std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).is_ok_and(|s| {
                    s.lines()
                        .any(|l| l.starts_with("State:") && !l.contains("Z ("))
                });
            if !alive {
                let _ = std::fs::remove_file(&pidfile);
                let _ = std::fs::remove_file(self.dir.path().join("x/containerd/containerd.sock"));
            }
        }
        let _ = std::fs::remove_file(self.socket());
        self.child = Some(Self::spawn(self.dir.path()));
        for _ in 0..600 {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait (dockerd stops its containers and its containerd).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            for _ in 0..300 {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        self.recover();
        self.stop();
        // dockerd bind-mounts its data root onto itself and leaves that mount behind.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let ok = Command::new("umount")
                .arg(&m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
        }
    }
}

#[tokio::test]
async fn the_engine_dying_under_a_running_container_fails_the_phase_clearly() {
    // Only where the shared engine runs too: this test needs the same setup.
    let Some(_shared) = engine().await else {
        return;
    };
    let Some(mut private) = PrivateEngine::start().await else {
        return;
    };
    let endpoint = Endpoint::Unix(private.socket());
    let agent = Arc::new(DockerAgent::new("private", endpoint.clone(), 1));

    let base = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", base.path().join("busybox")).unwrap();
    std::fs::write(
        base.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .unwrap();
    let t = TestCtx::configure(base.path(), |b| b.agent(agent.clone()));
    build_phase(r#"tags = ["private-base:1"]"#)
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));

    let run = phase_of(
        "docker.run",
        r#"image = "private-base:1"
network = "none"
command = "echo up; sleep 60""#,
    );
    let t = TestCtx::configure(base.path(), |b| b.agent(agent.clone()));
    let crash = async {
        wait_for_line(&t.events, "up", Duration::from_secs(60)).await;
        private.crash();
    };
    let started = std::time::Instant::now();
    let (result, ()) = tokio::join!(run.run(&t.ctx), crash);
    let err = result.unwrap_err();
    eprintln!("engine died: {err}");
    let PhaseError::Failed { message, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains(&format!("engine at {endpoint}")),
        "names the engine: {message}"
    );
    assert_eq!(message.lines().count(), 1);
    assert!(started.elapsed() < Duration::from_secs(45), "no hang");

    // The next attempt fails at once, naming the engine.
    let again = run.run(&t.ctx).await.unwrap_err().to_string();
    assert!(again.contains(&endpoint.to_string()), "{again}");

    // Bring the engine back on the same roots, so it reaps what the crash left; it
    // answers again, and the phase runs again. Then stop it for good.
    private.recover();
    private.wait_ready().await;
    let agent = Arc::new(DockerAgent::new("private", endpoint.clone(), 1));
    let t = TestCtx::configure(base.path(), |b| b.agent(agent.clone()));
    let quick = phase_of(
        "docker.run",
        r#"image = "private-base:1"
network = "none"
command = "echo back""#,
    );
    quick
        .run(&t.ctx)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", t.log_text()));
    private.stop();
}
