//! Probes of the machine: CPUs, memory, free disk, commands on `PATH` and their versions,
//! Docker engines and Swarm managers (the Engine API over its socket), GPUs. Each is
//! blocking and bounded in time; `orch doctor` and the `system.check` kind both use them.

use std::ffi::{OsStr, OsString};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::size::ByteSize;

/// Limit for a command that prints its version, and for each Engine API request.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The socket of a Docker engine when neither the agent nor `DOCKER_HOST` names one.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// Program names of Chromium looked up on `PATH`, in order (the names the `report` kind
/// prints PDFs with).
pub const CHROMIUM_NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// What the probes read from the environment, resolved once at the edge.
#[derive(Clone, Debug, Default)]
pub struct ProbeEnv {
    /// `PATH`, where commands are looked up.
    pub path: Option<OsString>,
    /// `DOCKER_HOST`, the engine of phases and agents that name none.
    pub docker_host: Option<String>,
}

impl ProbeEnv {
    /// The process's `PATH` and `DOCKER_HOST`.
    pub fn from_env() -> Self {
        Self {
            path: std::env::var_os("PATH"),
            docker_host: std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.trim().is_empty()),
        }
    }

    /// The engine of phases and agents that name none: `DOCKER_HOST`, else the default
    /// socket.
    pub fn default_engine(&self) -> Result<Endpoint, String> {
        match &self.docker_host {
            Some(h) => Endpoint::parse(h.trim()).map_err(|e| format!("DOCKER_HOST: {e}")),
            None => Ok(Endpoint::Unix(PathBuf::from(DEFAULT_DOCKER_SOCKET))),
        }
    }

    /// The full path of `name` on `PATH` (or `name` itself when it holds a `/` and is an
    /// executable file).
    pub fn find_command(&self, name: &str) -> Option<PathBuf> {
        if name.contains('/') {
            let p = PathBuf::from(name);
            return is_executable(&p).then_some(p);
        }
        let path = self.path.as_deref()?;
        std::env::split_paths(path)
            .map(|dir| dir.join(name))
            .find(|c| is_executable(c))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The number of CPUs this process may use.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Memory of the machine, and the limit of this process's cgroup when it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// `MemTotal` of `/proc/meminfo`.
    pub total: ByteSize,
    /// `MemAvailable` of `/proc/meminfo`.
    pub available: ByteSize,
    /// `memory.max` of this process's cgroup (v2), when it sets one.
    pub limit: Option<ByteSize>,
}

impl Memory {
    /// What processes started here may use at most: the total, or the cgroup's limit when
    /// it is lower.
    pub fn usable(&self) -> ByteSize {
        self.limit.map_or(self.total, |l| l.min(self.total))
    }
}

/// Reads `/proc/meminfo` and the cgroup's `memory.max`.
pub fn memory() -> Result<Memory, String> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| format!("cannot read /proc/meminfo: {e}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map(|kib| ByteSize(kib * 1024))
    };
    let total = field("MemTotal").ok_or("no MemTotal in /proc/meminfo")?;
    let available = field("MemAvailable").unwrap_or(total);
    Ok(Memory {
        total,
        available,
        limit: cgroup_memory_max(),
    })
}

fn cgroup_memory_max() -> Option<ByteSize> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let max = std::fs::read_to_string(
        Path::new("/sys/fs/cgroup")
            .join(rel.trim_start_matches('/'))
            .join("memory.max"),
    )
    .ok()?;
    max.trim().parse::<u64>().ok().map(ByteSize)
}

/// `path`, or its nearest ancestor that exists (`.` for a relative path none of whose
/// ancestors exists).
fn nearest_existing(path: &Path) -> &Path {
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => return Path::new("."),
        }
    }
    at
}

/// Free space of the file system that holds a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// The path measured: the one asked for, or its nearest existing ancestor.
    pub path: PathBuf,
    /// Space available to unprivileged users.
    pub free: ByteSize,
    /// Size of the file system.
    pub total: ByteSize,
}

/// The free space at `path` (at its nearest existing ancestor when it does not exist yet).
pub fn disk(path: &Path) -> Result<Disk, String> {
    let at = nearest_existing(path);
    let st = nix::sys::statvfs::statvfs(at)
        .map_err(|e| format!("cannot measure the disk at {}: {e}", at.display()))?;
    let frag = st.fragment_size();
    Ok(Disk {
        path: at.to_owned(),
        free: ByteSize(st.blocks_available().saturating_mul(frag)),
        total: ByteSize(st.blocks().saturating_mul(frag)),
    })
}

/// Whether `dir` can be written: a file is created in it and removed. A directory that does
/// not exist yet is writable when its nearest existing ancestor is (orch creates it).
pub fn writable(dir: &Path) -> Result<PathBuf, String> {
    let at = nearest_existing(dir);
    if !at.is_dir() {
        return Err(format!("{} is not a directory", at.display()));
    }
    let probe = at.join(format!(".orch-doctor-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(at.to_owned())
        }
        Err(e) => Err(format!("cannot create a file in {}: {e}", at.display())),
    }
}

/// Runs `program args` and returns the first non-empty line it printed (stdout, else
/// stderr), within [`PROBE_TIMEOUT`]; the process is killed past it.
pub fn version_line(program: &Path, args: &[&str]) -> Result<String, String> {
    let out = output(program, args)?;
    let text = if out.0.trim().is_empty() {
        out.1
    } else {
        out.0
    };
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("{} printed no version", program.display()))
}

/// Stdout and stderr of a command run with a time limit.
fn output(program: &Path, args: &[&str]) -> Result<(String, String), String> {
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(Ok(out)) if out.status.success() => Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )),
        Ok(Ok(out)) => Err(format!(
            "{} {} exited with {}: {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(Err(e)) => Err(format!("cannot run {}: {e}", program.display())),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!(
                "{} {} did not answer within {}s",
                program.display(),
                args.join(" "),
                PROBE_TIMEOUT.as_secs()
            ))
        }
    }
}

/// A command found on `PATH`, with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Where it is.
    pub path: PathBuf,
    /// The first line it printed for `--version` (or the probe's error).
    pub version: Result<String, String>,
}

/// Looks `names` up on `PATH` in order; the first found is asked for its version with
/// `args`.
pub fn command(env: &ProbeEnv, names: &[&str], args: &[&str]) -> Option<Command> {
    let path = names.iter().find_map(|n| env.find_command(n))?;
    let version = version_line(&path, args);
    Some(Command { path, version })
}

/// Where a Docker engine listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A Unix socket (`unix:///var/run/docker.sock`).
    Unix(PathBuf),
    /// A TCP address without TLS (`tcp://host:2375`), as `host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path`, `tcp://host:port` or `http://host:port` (the forms the
    /// `docker` agent takes).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.starts_with('/') {
                return Ok(Self::Unix(PathBuf::from(path)));
            }
            return Err(format!("`{text}`: a unix endpoint needs an absolute path"));
        }
        for scheme in ["tcp://", "http://"] {
            if let Some(addr) = text.strip_prefix(scheme) {
                let addr = addr.trim_end_matches('/');
                if addr.is_empty() || addr.contains('/') {
                    return Err(format!("`{text}`: expected `{scheme}HOST:PORT`"));
                }
                return Ok(Self::Tcp(addr.to_owned()));
            }
        }
        Err(format!(
            "`{text}`: a docker host is `unix:///PATH` or `tcp://HOST:PORT`"
        ))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// What a Docker engine says of itself (`GET /version`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Engine {
    /// The engine's version (`20.10.24+dfsg1`).
    pub version: String,
    /// Its newest API version (`1.41`).
    pub api_version: String,
}

/// Asks the engine at `endpoint` for its version.
pub fn docker_engine(endpoint: &Endpoint) -> Result<Engine, String> {
    let v = engine_get(endpoint, "/version")?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_owned();
    Ok(Engine {
        version: field("Version"),
        api_version: field("ApiVersion"),
    })
}

/// The engine's place in a swarm (`GET /info`, its `Swarm` part).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swarm {
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    pub state: String,
    /// Whether the engine is a manager (it can create services).
    pub manager: bool,
    /// Nodes in the swarm (known to managers only).
    pub nodes: u64,
    /// Managers in the swarm (known to managers only).
    pub managers: u64,
}

/// Asks the engine at `endpoint` about its swarm.
pub fn docker_swarm(endpoint: &Endpoint) -> Result<Swarm, String> {
    let v = engine_get(endpoint, "/info")?;
    let s = v
        .get("Swarm")
        .ok_or("the engine's /info has no Swarm part")?;
    Ok(Swarm {
        state: s
            .get("LocalNodeState")
            .and_then(|x| x.as_str())
            .unwrap_or("inactive")
            .to_owned(),
        manager: s
            .get("ControlAvailable")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        nodes: s
            .get("Nodes")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        managers: s
            .get("Managers")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
    })
}

/// One `GET` of the Engine API (HTTP/1.0, so the answer is the whole body up to the
/// connection's end), its JSON body.
fn engine_get(endpoint: &Endpoint, path: &str) -> Result<serde_json::Value, String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\nUser-Agent: orch\r\n\r\n");
    let mut response = Vec::new();
    let io = |e: std::io::Error| format!("{endpoint}: {e}");
    match endpoint {
        Endpoint::Unix(socket) => {
            if !socket.exists() {
                return Err(format!(
                    "no socket at {} (is the engine running?)",
                    socket.display()
                ));
            }
            let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(io)?;
            s.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(io)?;
            s.set_write_timeout(Some(PROBE_TIMEOUT)).map_err(io)?;
            s.write_all(request.as_bytes()).map_err(io)?;
            s.take(4 << 20).read_to_end(&mut response).map_err(io)?;
        }
        Endpoint::Tcp(addr) => {
            use std::net::ToSocketAddrs as _;
            let sa = addr
                .to_socket_addrs()
                .map_err(io)?
                .next()
                .ok_or_else(|| format!("{endpoint}: no address"))?;
            let mut s = std::net::TcpStream::connect_timeout(&sa, PROBE_TIMEOUT).map_err(io)?;
            s.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(io)?;
            s.set_write_timeout(Some(PROBE_TIMEOUT)).map_err(io)?;
            s.write_all(request.as_bytes()).map_err(io)?;
            s.take(4 << 20).read_to_end(&mut response).map_err(io)?;
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{endpoint}: not an HTTP answer"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!(
            "{endpoint}: GET {path} answered {status}: {}",
            body.trim()
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("{endpoint}: GET {path}: {e}"))
}

/// A GPU seen on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    /// What it is: `nvidia-smi`'s name, driver and memory, or a DRI render node and its
    /// kernel driver.
    pub description: String,
}

/// The GPUs `nvidia-smi` lists, else the DRI render nodes under `/dev/dri`; empty when
/// there is none.
pub fn gpus(env: &ProbeEnv) -> Vec<Gpu> {
    if let Some(smi) = env.find_command("nvidia-smi")
        && let Ok((out, _)) = output(
            &smi,
            &[
                "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader",
            ],
        )
    {
        let found: Vec<Gpu> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| Gpu {
                description: format!("NVIDIA {l}"),
            })
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    let Ok(dir) = std::fs::read_dir("/dev/dri") else {
        return Vec::new();
    };
    let mut nodes: Vec<String> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("renderD"))
        .collect();
    nodes.sort();
    nodes
        .into_iter()
        .map(|n| {
            let driver = std::fs::read_link(format!("/sys/class/drm/{n}/device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(OsStr::to_string_lossy).map(String::from));
            Gpu {
                description: match driver {
                    Some(d) => format!("/dev/dri/{n} ({d})"),
                    None => format!("/dev/dri/{n}"),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///run/d.sock"),
            Ok(Endpoint::Unix("/run/d.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://10.0.0.1:2375"),
            Ok(Endpoint::Tcp("10.0.0.1:2375".into()))
        );
        assert!(Endpoint::parse("unix://rel").is_err());
        assert!(Endpoint::parse("ssh://host").is_err());
    }

    #[test]
    fn the_machine_has_cpus_memory_and_disk() {
        assert!(cpus() >= 1);
        let m = memory().expect("memory");
        assert!(m.total.0 > 0 && m.available <= m.total && m.usable() <= m.total);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = disk(&dir.path().join("not/yet")).expect("disk");
        assert_eq!(d.path, dir.path());
        assert!(d.free <= d.total);
        assert_eq!(
            writable(&dir.path().join("state")).as_deref(),
            Ok(dir.path())
        );
    }

    #[test]
    fn commands_are_found_on_the_given_path_only() {
        let env = ProbeEnv {
            path: Some("/nonexistent".into()),
            docker_host: None,
        };
        assert_eq!(env.find_command("sh"), None);
        let env = ProbeEnv::from_env();
        let sh =
            command(&env, &["no-such-command-x", "sh"], &["-c", "echo v1.2"]).expect("sh on PATH");
        assert_eq!(sh.version.as_deref(), Ok("v1.2"));
    }
}
