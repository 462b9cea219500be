//! The `system.check` kind: a pipeline's own requirements on the machine, checked before
//! the work that needs them.
//!
//! ```toml
//! [phases.machine]
//! kind = "system.check"
//! with = { commands = ["git", "make"], min_memory = "4GiB", min_disk = "10GiB",
//!          path = "build", docker = true, gpu = false }
//! ```
//!
//! | key | meaning |
//! |---|---|
//! | `commands` | programs that must be on `PATH` (found, never run) |
//! | `min_memory` | memory of the machine, or of this process's cgroup when it is limited, at least this |
//! | `min_disk` | free space at `path` (default: the pipeline's directory) at least this |
//! | `path` | where disk space is measured (relative to the pipeline file) |
//! | `docker` | a Docker engine answers at `DOCKER_HOST` or the default socket |
//! | `gpu` | a GPU is present (`nvidia-smi` lists one, or `/dev/dri` has a render node); `false` (the default) does not require its absence |
//!
//! Sizes are `"4GiB"`, `"512MiB"`, `"10GB"` or a number of bytes. Outputs: `cpus`, `memory`
//! and `memory_available` (bytes), `disk` (free bytes) and `disk_path`, `gpu` (what was
//! found, or `none`), `commands` (`NAME=PATH` for each, comma-separated), and `docker` (the
//! engine's version) when `docker = true`. A failed check fails the phase with every
//! missing item and how to get it.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use orch_core::{
    Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext, Registry,
};
use serde::Deserialize;

use crate::probe::{self, ProbeEnv};
use crate::size::ByteSize;

/// The kind's name.
pub const KIND: &str = "system.check";

/// The `with` table of a `system.check` phase.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSettings {
    /// Programs that must be on `PATH`.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Least memory.
    pub min_memory: Option<ByteSize>,
    /// Least free disk at `path`.
    pub min_disk: Option<ByteSize>,
    /// Where disk space is measured (default: the pipeline's directory).
    pub path: Option<String>,
    /// A Docker engine must answer.
    #[serde(default)]
    pub docker: bool,
    /// A GPU must be present.
    #[serde(default)]
    pub gpu: bool,
}

/// Something a check did not find, and how to get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// What is missing, with what was found instead.
    pub what: String,
    /// How to get it.
    pub hint: String,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.what, self.hint)
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckResult {
    /// The phase's outputs, in order.
    pub outputs: Vec<(String, String)>,
    /// One line per item checked, for the log.
    pub log: Vec<String>,
    /// What is missing (empty when the check passed).
    pub missing: Vec<Missing>,
}

/// The Debian package that provides a command, for the commands orch and pipelines
/// commonly need.
pub fn package_of(command: &str) -> Option<&'static str> {
    Some(match command {
        "git" => "git",
        "docker" | "dockerd" => "docker.io",
        "haproxy" => "haproxy",
        "chromium" | "chromium-browser" => "chromium",
        "promtool" => "prometheus",
        "curl" => "curl",
        "make" => "make",
        "jq" => "jq",
        "python3" => "python3",
        "node" => "nodejs",
        "npm" => "npm",
        "pdftoppm" | "pdftotext" => "poppler-utils",
        "tar" => "tar",
        "gzip" => "gzip",
        "ssh" => "openssh-client",
        "rsync" => "rsync",
        _ => return None,
    })
}

/// How to get a command that is not on `PATH`.
pub fn command_hint(command: &str) -> String {
    match package_of(command) {
        Some(p) => {
            format!(
                "install it, e.g. `apt-get install {p}` on Debian, or add its directory to PATH"
            )
        }
        None => "install it or add its directory to PATH".to_owned(),
    }
}

/// How to get a Docker engine.
pub const DOCKER_HINT: &str = "install and start a Docker engine, e.g. `apt-get install docker.io` \
     then `dockerd` on Debian, or point DOCKER_HOST at one";

/// Runs the checks of `settings`; `disk_path` is where disk space is measured. Blocking
/// (runs commands and reads sockets, each within [`probe::PROBE_TIMEOUT`]).
pub fn evaluate(settings: &CheckSettings, disk_path: &Path, env: &ProbeEnv) -> CheckResult {
    let mut r = CheckResult::default();
    let cpus = probe::cpus();
    r.outputs.push(("cpus".into(), cpus.to_string()));
    r.log.push(format!("cpus: {cpus}"));

    match probe::memory() {
        Ok(m) => {
            r.outputs.push(("memory".into(), m.usable().0.to_string()));
            r.outputs
                .push(("memory_available".into(), m.available.0.to_string()));
            let limit = m
                .limit
                .filter(|l| *l < m.total)
                .map(|l| format!(", cgroup limit {l}"))
                .unwrap_or_default();
            r.log.push(format!(
                "memory: {} total, {} available{limit}",
                m.total, m.available
            ));
            if let Some(min) = settings.min_memory
                && m.usable() < min
            {
                r.missing.push(Missing {
                    what: format!("memory: {} is below min_memory {min}", m.usable()),
                    hint: "run on a machine or in a container limit with more memory".into(),
                });
            }
        }
        Err(e) => {
            r.log.push(format!("memory: {e}"));
            if settings.min_memory.is_some() {
                r.missing.push(Missing {
                    what: format!("memory: cannot be measured: {e}"),
                    hint: "run where /proc/meminfo is readable".into(),
                });
            }
        }
    }

    match probe::disk(disk_path) {
        Ok(d) => {
            r.outputs.push(("disk".into(), d.free.0.to_string()));
            r.outputs
                .push(("disk_path".into(), d.path.display().to_string()));
            r.log.push(format!(
                "disk: {} free of {} at {}",
                d.free,
                d.total,
                d.path.display()
            ));
            if let Some(min) = settings.min_disk
                && d.free < min
            {
                r.missing.push(Missing {
                    what: format!(
                        "disk: {} free at {} is below min_disk {min}",
                        d.free,
                        d.path.display()
                    ),
                    hint: "free space on that file system, or measure elsewhere with `path`".into(),
                });
            }
        }
        Err(e) => {
            r.log.push(format!("disk: {e}"));
            if settings.min_disk.is_some() {
                r.missing.push(Missing {
                    what: format!("disk: {e}"),
                    hint: "point `path` at a directory that exists".into(),
                });
            }
        }
    }

    let mut found = Vec::new();
    for name in &settings.commands {
        match env.find_command(name) {
            Some(p) => {
                r.log.push(format!("command {name}: {}", p.display()));
                found.push(format!("{name}={}", p.display()));
            }
            None => {
                r.log.push(format!("command {name}: not found"));
                r.missing.push(Missing {
                    what: format!("command `{name}` is not on PATH"),
                    hint: command_hint(name),
                });
            }
        }
    }
    r.outputs.push(("commands".into(), found.join(",")));

    if settings.docker {
        let engine = env
            .default_engine()
            .and_then(|e| probe::docker_engine(&e).map(|v| (e, v)));
        match engine {
            Ok((at, v)) => {
                r.log.push(format!(
                    "docker: engine {} (API {}) at {at}",
                    v.version, v.api_version
                ));
                r.outputs.push(("docker".into(), v.version));
            }
            Err(e) => {
                r.log.push(format!("docker: {e}"));
                r.missing.push(Missing {
                    what: format!("docker: no engine answers: {e}"),
                    hint: DOCKER_HINT.into(),
                });
            }
        }
    }

    let gpus = probe::gpus(env);
    let gpu = if gpus.is_empty() {
        "none".to_owned()
    } else {
        gpus.iter()
            .map(|g| g.description.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    r.log.push(format!("gpu: {gpu}"));
    if settings.gpu && gpus.is_empty() {
        r.missing.push(Missing {
            what: "gpu: none found (no GPU listed by nvidia-smi, no render node in /dev/dri)"
                .into(),
            hint: "run on a machine with a GPU and its driver".into(),
        });
    }
    r.outputs.push(("gpu".into(), gpu));
    r
}

/// The `system.check` phase.
#[derive(Clone, Debug)]
pub struct CheckPhase {
    settings: CheckSettings,
}

impl CheckPhase {
    /// A phase checking `settings`.
    pub fn new(settings: CheckSettings) -> Self {
        Self { settings }
    }
}

/// Registers `system.check`, served by agents of type `local`.
pub fn register(r: &mut Registry) -> Result<(), orch_core::errors::RegistryError> {
    r.add_kind(
        orch_core::registry::Kind::new(
            KIND,
            "check the machine: commands, memory, disk, a Docker engine, a GPU",
        ),
        |spec: &PhaseSpec, settings: CheckSettings| {
            if let Some(bad) = settings
                .commands
                .iter()
                .find(|c| c.trim().is_empty() || c.contains('\0'))
            {
                return Err(spec.with.error(format!(
                    "`commands` holds `{bad}`, which is not a command name"
                )));
            }
            Ok(CheckPhase { settings })
        },
    )
}

#[async_trait]
impl Phase for CheckPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let s = &self.settings;
        let mut d = Description::new("check the machine");
        if !s.commands.is_empty() {
            d = d.detail("commands", s.commands.join(", "));
        }
        if let Some(m) = s.min_memory {
            d = d.detail("min_memory", m.to_string());
        }
        if let Some(m) = s.min_disk {
            let at = s
                .path
                .as_deref()
                .map_or_else(|| ctx.base_dir().to_owned(), |p| ctx.resolve(p));
            d = d.detail("min_disk", format!("{m} free at {}", at.display()));
        }
        if s.docker {
            d = d.detail("docker", "an engine must answer");
        }
        if s.gpu {
            d = d.detail("gpu", "required");
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let disk_path: PathBuf = match &self.settings.path {
            Some(p) => ctx
                .resolve(p)
                .map_err(|e| PhaseError::failed(format!("cannot render `path`: {e}")))?,
            None => ctx.base_dir().to_owned(),
        };
        // The phase's own `env` may set PATH or DOCKER_HOST.
        let mut env = ProbeEnv::from_env();
        if let Some(p) = ctx.env_var("PATH") {
            env.path = Some(p.into());
        }
        if let Some(h) = ctx.env_var("DOCKER_HOST").filter(|h| !h.trim().is_empty()) {
            env.docker_host = Some(h.to_owned());
        }
        let settings = self.settings.clone();
        let handle = tokio::task::spawn_blocking(move || evaluate(&settings, &disk_path, &env));
        let result = tokio::select! {
            joined = handle => joined
                .map_err(|e| PhaseError::failed(format!("the check's thread failed: {e}")))?,
            () = ctx.cancelled().cancelled() => return Err(PhaseError::Cancelled),
        };
        for line in &result.log {
            ctx.log(line);
        }
        if !result.missing.is_empty() {
            let list: Vec<String> = result.missing.iter().map(ToString::to_string).collect();
            return Err(PhaseError::failed(format!(
                "system check failed: {}",
                list.join("; ")
            )));
        }
        Ok(PhaseOutcome::with_outputs(result.outputs))
    }
}
