//! HAProxy, started and driven by orch: one process per service, one frontend on the
//! service's `listen` address, one backend with a server per container, active HTTP health
//! checks, and weights changed live through the runtime API (a Unix socket; no reload).
//!
//! The proxy serves users, so it outlives the run that started it: it runs as a daemon
//! (its own session, no `ORCH_*` marks, kept out of the run's orphan sweep through
//! [`orch_core::keep_alive`]). Its config, socket and pid file live beside the
//! service's state; a later run finds it there, and one that finds it dead starts it again
//! from the state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::errors::ProxyError;
use crate::settings::Health;
use crate::state::{ServiceDir, ServiceState};

/// Limit of one runtime API exchange.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The backend of a service.
pub fn backend(service: &str) -> String {
    format!("be_{service}")
}

/// Total weight a version gets when it takes all traffic, split among its servers.
pub const FULL_WEIGHT: u32 = 100;

/// Weight of each of `count` servers that share `percent` of the traffic (0 for 0 %,
/// at least 1 otherwise, at most 256).
pub fn server_weight(percent: u32, count: usize) -> u32 {
    if percent == 0 || count == 0 {
        return 0;
    }
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    (percent * FULL_WEIGHT / 100).div_ceil(count).clamp(1, 256)
}

/// The server options of a health-checked server.
fn check_options(h: &Health) -> String {
    format!(
        "check inter {}ms fall {} rise {}",
        h.interval.as_millis().max(1),
        h.unhealthy,
        h.healthy
    )
}

/// The config of a service's proxy: the frontend, and the servers of the current release
/// (sharing all traffic) and of the previous one (standing by, weight 0).
pub fn render_config(sd: &ServiceDir, state: &ServiceState) -> String {
    let h = &state.health;
    let mut cfg = format!(
        "# Written by orch for service `{service}`; orch changes weights through the socket.\n\
         global\n\
         \x20 stats socket {sock} mode 600 level admin\n\
         \x20 pidfile {pid}\n\
         \x20 daemon\n\
         \x20 maxconn 4096\n\
         \x20 # Two proxies must never share a port: a taken `listen` is an error.\n\
         \x20 noreuseport\n\
         \n\
         defaults\n\
         \x20 mode http\n\
         \x20 option redispatch\n\
         \x20 retries 3\n\
         \x20 timeout connect 2s\n\
         \x20 timeout client 60s\n\
         \x20 timeout server 60s\n\
         \x20 timeout check {check_timeout}ms\n\
         \n\
         frontend fe_{service}\n\
         \x20 bind {listen}\n\
         \x20 default_backend be_{service}\n\
         \n\
         backend be_{service}\n\
         \x20 balance roundrobin\n\
         \x20 option httpchk GET {path}\n\
         \x20 http-check expect status 200-399\n",
        service = state.service,
        sock = sd.socket().display(),
        pid = sd.pid_file().display(),
        check_timeout = h.timeout.as_millis().max(1),
        listen = state.listen,
        path = h.path,
    );
    let check = check_options(h);
    if let Some(cur) = &state.current {
        let w = server_weight(100, cur.containers.len());
        for c in &cur.containers {
            cfg.push_str(&format!(
                "  server {} 127.0.0.1:{} weight {w} {check}\n",
                c.name, c.host_port
            ));
        }
    }
    if let Some(prev) = &state.previous {
        for c in &prev.containers {
            cfg.push_str(&format!(
                "  server {} 127.0.0.1:{} weight 0 {check}\n",
                c.name, c.host_port
            ));
        }
    }
    cfg
}

/// Whether a pid names a live `haproxy` process.
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"haproxy"))
        })
        .unwrap_or(false)
}

/// The pid in the pid file, when it names a live haproxy.
pub fn running_pid(sd: &ServiceDir) -> Option<i32> {
    let text = std::fs::read_to_string(sd.pid_file()).ok()?;
    let pid = text.trim().parse::<i32>().ok()?;
    alive(pid).then_some(pid)
}

/// Writes the config and starts the proxy; returns its pid once the runtime API answers.
pub async fn start(sd: &ServiceDir, state: &ServiceState) -> Result<i32, ProxyError> {
    let sock = sd.socket();
    if sock.as_os_str().len() > 100 {
        return Err(ProxyError::SocketPathTooLong { path: sock });
    }
    let write = |path: PathBuf, source| ProxyError::Write { path, source };
    std::fs::create_dir_all(&sd.dir).map_err(|e| write(sd.dir.clone(), e))?;
    let config = sd.config_file();
    std::fs::write(&config, render_config(sd, state)).map_err(|e| write(config.clone(), e))?;
    let _ = std::fs::remove_file(sd.pid_file());
    let _ = std::fs::remove_file(&sock);
    let output = tokio::process::Command::new("haproxy")
        .arg("-f")
        .arg(&config)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir(&sd.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ProxyError::NotInstalled
            } else {
                ProxyError::Start {
                    service: state.service.clone(),
                    config: config.clone(),
                    message: e.to_string(),
                }
            }
        })?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        if text.contains("cannot bind socket") || text.contains("Address already in use") {
            return Err(ProxyError::ListenInUse {
                service: state.service.clone(),
                listen: state.listen.clone(),
            });
        }
        let message = text
            .lines()
            .filter(|l| l.contains("ALERT") || l.contains("error"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(ProxyError::Start {
            service: state.service.clone(),
            config,
            message: if message.is_empty() {
                format!("exit status {}", output.status)
            } else {
                message
            },
        });
    }
    // The daemon writes its pid file before the parent exits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let pid = loop {
        if let Some(pid) = running_pid(sd) {
            break pid;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProxyError::Start {
                service: state.service.clone(),
                config,
                message: format!("no live haproxy in {}", sd.pid_file().display()),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    orch_core::keep_alive(pid);
    let api = Runtime::new(sock);
    loop {
        match api.command("show info").await {
            Ok(_) => return Ok(pid),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Stops a proxy: SIGTERM, then SIGKILL after 5 s. A proxy already gone is fine.
pub async fn stop(pid: i32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if !alive(pid) {
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Reap it when it was our child (it is when this process adopts orphans).
    let _ = nix::sys::wait::waitpid(
        Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// One row of `show stat`, for a server or a backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStat {
    /// Backend name.
    pub backend: String,
    /// Server name (`BACKEND` for the backend's own row).
    pub server: String,
    /// `UP`, `DOWN`, `MAINT`, `UP 1/3`, ...
    pub status: String,
    /// Current weight.
    pub weight: u32,
    /// Last check's status (`L7OK`, `L7STS`, `L4CON`, ...).
    pub check_status: String,
    /// Last check's HTTP code, when it got one.
    pub check_code: String,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub responses: [u64; 6],
    /// Failed responses (the server closed or broke the connection).
    pub eresp: u64,
    /// Failed connections to the server.
    pub econ: u64,
    /// Sessions now.
    pub scur: u64,
    /// Address `IP:PORT`.
    pub addr: String,
}

impl ServerStat {
    /// Every response counted: all status classes and broken responses.
    pub fn total(&self) -> u64 {
        self.responses.iter().sum::<u64>() + self.eresp
    }

    /// Responses that count as errors: 5xx and broken responses.
    pub fn errors(&self) -> u64 {
        self.responses[4] + self.eresp
    }

    /// Whether the proxy sends it traffic when its weight allows: up after its checks.
    pub fn is_up(&self) -> bool {
        self.status == "UP" || self.status == "DRAIN"
    }
}

/// Parses the CSV of `show stat`.
pub fn parse_stat(text: &str) -> Vec<ServerStat> {
    let mut lines = text.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
        return Vec::new();
    };
    let cols: HashMap<&str, usize> = header.split(',').enumerate().map(|(i, c)| (c, i)).collect();
    let mut out = Vec::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let s = |name: &str| {
            cols.get(name)
                .and_then(|&i| f.get(i))
                .copied()
                .unwrap_or("")
        };
        let n = |name: &str| s(name).parse::<u64>().unwrap_or(0);
        out.push(ServerStat {
            backend: s("pxname").to_owned(),
            server: s("svname").to_owned(),
            status: s("status").to_owned(),
            weight: u32::try_from(n("weight")).unwrap_or(u32::MAX),
            check_status: s("check_status").to_owned(),
            check_code: s("check_code").to_owned(),
            responses: [
                n("hrsp_1xx"),
                n("hrsp_2xx"),
                n("hrsp_3xx"),
                n("hrsp_4xx"),
                n("hrsp_5xx"),
                n("hrsp_other"),
            ],
            eresp: n("eresp"),
            econ: n("econ"),
            scur: n("scur"),
            addr: s("addr").to_owned(),
        });
    }
    out
}

/// The runtime API of one proxy (its admin socket).
#[derive(Clone, Debug)]
pub struct Runtime {
    socket: PathBuf,
}

impl Runtime {
    /// The API behind a socket.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one command and returns the answer.
    pub async fn command(&self, command: &str) -> Result<String, ProxyError> {
        let io = |source| ProxyError::Socket {
            socket: self.socket.clone(),
            source,
        };
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
            stream
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(io)?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.map_err(io)?;
            Ok(answer)
        };
        match tokio::time::timeout(API_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s", API_TIMEOUT.as_secs()),
            ))),
        }
    }

    /// Sends a command whose success is an empty answer or one of `ok`.
    async fn expect(&self, command: &str, ok: &[&str]) -> Result<(), ProxyError> {
        let answer = self.command(command).await?;
        let text = answer.trim();
        if text.is_empty() || ok.iter().any(|o| text.starts_with(o)) {
            Ok(())
        } else {
            Err(ProxyError::Refused {
                command: command.to_owned(),
                answer: text.to_owned(),
            })
        }
    }

    /// Every row of `show stat`.
    pub async fn stats(&self) -> Result<Vec<ServerStat>, ProxyError> {
        Ok(parse_stat(&self.command("show stat").await?))
    }

    /// The servers of a backend (no backend or frontend rows).
    pub async fn servers(&self, backend: &str) -> Result<Vec<ServerStat>, ProxyError> {
        Ok(self
            .stats()
            .await?
            .into_iter()
            .filter(|s| s.backend == backend && s.server != "BACKEND" && s.server != "FRONTEND")
            .collect())
    }

    /// Sets a server's weight.
    pub async fn set_weight(
        &self,
        backend: &str,
        server: &str,
        weight: u32,
    ) -> Result<(), ProxyError> {
        self.expect(
            &format!("set server {backend}/{server} weight {weight}"),
            &[],
        )
        .await
    }

    /// Adds a health-checked server with weight 0 and enables it.
    pub async fn add_server(
        &self,
        backend: &str,
        server: &str,
        port: u16,
        health: &Health,
    ) -> Result<(), ProxyError> {
        self.expect(
            &format!(
                "add server {backend}/{server} 127.0.0.1:{port} weight 0 {}",
                check_options(health)
            ),
            &["New server registered"],
        )
        .await?;
        self.expect(&format!("enable health {backend}/{server}"), &[])
            .await?;
        self.expect(&format!("enable server {backend}/{server}"), &[])
            .await
    }

    /// Takes a server out (maintenance, its sessions ended) and deletes it. A server that
    /// does not exist is fine.
    pub async fn remove_server(&self, backend: &str, server: &str) -> Result<(), ProxyError> {
        let answer = self
            .command(&format!("set server {backend}/{server} state maint"))
            .await?;
        if answer.contains("No such server") {
            return Ok(());
        }
        let _ = self
            .command(&format!("shutdown sessions server {backend}/{server}"))
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let answer = self
                .command(&format!("del server {backend}/{server}"))
                .await?;
            let text = answer.trim();
            if text.starts_with("Server deleted") || text.contains("No such server") {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProxyError::Refused {
                    command: format!("del server {backend}/{server}"),
                    answer: text.to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_split_a_share() {
        assert_eq!(server_weight(100, 1), 100);
        assert_eq!(server_weight(100, 2), 50);
        assert_eq!(server_weight(10, 1), 10);
        assert_eq!(server_weight(90, 2), 45);
        assert_eq!(server_weight(1, 3), 1);
        assert_eq!(server_weight(0, 3), 0);
    }

    #[test]
    fn the_config_serves_the_current_release_and_keeps_the_previous_one_standing_by() {
        use crate::settings::{Health, HealthSettings};
        use crate::state::{Instance, Release};
        let dir = std::path::Path::new("/state");
        let sd = ServiceDir::new(dir, "web");
        let mut st = ServiceState::new(
            "web",
            "127.0.0.1:8080",
            8080,
            Health::from(&HealthSettings::default()),
        );
        let release = |v: &str, ports: &[u16]| Release {
            image: format!("web:{v}"),
            image_id: format!("sha256:{v}"),
            digests: vec![],
            version: v.into(),
            port: 8080,
            containers: ports
                .iter()
                .enumerate()
                .map(|(i, p)| Instance {
                    name: format!("web-{v}-g1-{}", i + 1),
                    id: String::new(),
                    host_port: *p,
                })
                .collect(),
            deployed_at: String::new(),
            run_id: String::new(),
        };
        st.current = Some(release("2", &[40001, 40002]));
        st.previous = Some(release("1", &[40003]));
        let cfg = render_config(&sd, &st);
        for line in [
            "  stats socket /state/deploy/web/haproxy.sock mode 600 level admin",
            "  noreuseport",
            "  bind 127.0.0.1:8080",
            "  option httpchk GET /health",
            "  server web-2-g1-1 127.0.0.1:40001 weight 50 check inter 1000ms fall 3 rise 2",
            "  server web-2-g1-2 127.0.0.1:40002 weight 50 check inter 1000ms fall 3 rise 2",
            "  server web-1-g1-1 127.0.0.1:40003 weight 0 check inter 1000ms fall 3 rise 2",
        ] {
            assert!(cfg.lines().any(|l| l == line), "{line:?} not in\n{cfg}");
        }
    }

    #[test]
    fn stat_rows_are_read_by_column_name() {
        let text = "# pxname,svname,qcur,status,weight,check_status,check_code,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,eresp,econ,scur,addr\n\
                    fe,FRONTEND,,OPEN,,,,0,7,0,0,2,0,,,0,\n\
                    be,s1,0,UP,10,L7OK,200,0,5,0,0,2,0,1,0,0,127.0.0.1:1\n";
        let rows = parse_stat(text);
        assert_eq!(rows.len(), 2);
        let s1 = &rows[1];
        assert_eq!((s1.server.as_str(), s1.weight), ("s1", 10));
        assert_eq!((s1.total(), s1.errors()), (8, 3));
        assert!(s1.is_up());
        assert_eq!(s1.addr, "127.0.0.1:1");
    }
}
