//! `orch doctor`: what orch and a pipeline need from the machine, and whether it is there.
//!
//! The pipeline file is read as plain TOML, so agent types and kinds this build does not
//! know are still reported (as warnings) instead of stopping the check. What is asked for:
//!
//! - always: a writable state directory, free disk there, CPUs and memory, a GPU (reported,
//!   never required); `git` (required when the file has `[policy]`, whose input reads the
//!   branch with it; otherwise a warning when absent);
//! - `sh` when a phase's `run` is a string, and the program of each `run` argv;
//! - a Docker engine (its version) for each agent of type `docker` and for phases whose
//!   kind is served by the `docker` agent type when no agent of that type is declared
//!   (`DOCKER_HOST` or the default socket); a missing engine is only a warning for an agent
//!   with `unavailable = "skip"` (its phases are skipped without one);
//! - a Swarm manager for each agent of type `swarm`;
//! - Chromium when a `report` phase's `formats` include `pdf`;
//! - HAProxy when a phase has kind `deploy`.
//!
//! Each line is `ok`, `warn` (works, but something optional is absent or low) or `missing`
//! (needed and not there, with how to get it). `orch doctor` exits 0 when nothing is
//! missing and 1 otherwise.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use orch_core::Registry;
use serde::Serialize;

use crate::check::{DOCKER_HINT, command_hint};
use crate::errors::DoctorError;
use crate::probe::{self, Endpoint, ProbeEnv};
use crate::size::ByteSize;

/// Free disk below this is a warning.
pub const LOW_DISK: ByteSize = ByteSize(1 << 30);

/// Available memory below this is a warning.
pub const LOW_MEMORY: ByteSize = ByteSize(512 << 20);

/// How one item ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// There, and enough.
    Ok,
    /// Optional and absent, or low.
    Warn,
    /// Needed and not there.
    Missing,
}

impl Status {
    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Missing => "missing",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    /// What was checked (`git`, `docker (agent builder)`, `disk`).
    pub item: String,
    /// How it ended.
    pub status: Status,
    /// What was found (a version and path, a size), or what is wrong.
    pub found: String,
    /// Why the pipeline needs it, when it is the pipeline that does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_by: Option<String>,
    /// How to get it, for lines that are not `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Line {
    fn ok(item: impl Into<String>, found: impl Into<String>) -> Self {
        Self {
            item: item.into(),
            status: Status::Ok,
            found: found.into(),
            needed_by: None,
            hint: None,
        }
    }

    fn status(mut self, status: Status, hint: impl Into<String>) -> Self {
        self.status = status;
        self.hint = Some(hint.into());
        self
    }

    fn needed_by(mut self, why: Option<&str>) -> Self {
        self.needed_by = why.map(str::to_owned);
        self
    }
}

/// The report of `orch doctor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every item, in a fixed order: orch and the pipeline, the machine, commands, engines,
    /// the GPU.
    pub lines: Vec<Line>,
}

impl Report {
    /// Whether something needed is missing (`orch doctor` exits 1).
    pub fn missing(&self) -> bool {
        self.lines.iter().any(|l| l.status == Status::Missing)
    }

    /// The text of `orch doctor`: one line per item, then the hint under each item that is
    /// not ok, then a count.
    pub fn render(&self) -> String {
        let width = self
            .lines
            .iter()
            .map(|l| l.item.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for l in &self.lines {
            let mut found = l.found.clone();
            if let Some(why) = &l.needed_by {
                let _ = write!(found, " [{why}]");
            }
            let _ = writeln!(out, "{:<8} {:<width$}  {found}", l.status.as_str(), l.item);
            if let Some(hint) = &l.hint {
                let _ = writeln!(out, "{:<8} {:<width$}  to fix: {hint}", "", "");
            }
        }
        let count = |s: Status| self.lines.iter().filter(|l| l.status == s).count();
        let _ = writeln!(
            out,
            "\n{} ok, {} warn, {} missing",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Missing)
        );
        out
    }
}

/// A Docker engine the pipeline uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineNeed {
    /// The agent, or `None` for the default engine.
    pub agent: Option<String>,
    /// Where it is (or why its address is wrong).
    pub endpoint: Result<Endpoint, String>,
    /// It must be a Swarm manager.
    pub swarm: bool,
    /// The agent declares `unavailable = "skip"`: its phases are skipped without an engine,
    /// so a missing one is a warning.
    pub optional: bool,
    /// Who needs it.
    pub why: String,
}

/// What a pipeline file asks of the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The file, its pipeline name and its numbers of phases and agents; `None`: no file,
    /// only the machine is checked.
    pub pipeline: Option<(PathBuf, String, usize, usize)>,
    /// Whether the file loads (`Err`: the first problem), when the caller checked it.
    pub valid: Option<Result<(), String>>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Commands that must be on `PATH`, and who needs each.
    pub commands: BTreeMap<String, String>,
    /// Why `git` is required (else it is only recommended).
    pub git: Option<String>,
    /// Docker engines, in the file's order.
    pub engines: Vec<EngineNeed>,
    /// Why Chromium is needed.
    pub chromium: Option<String>,
    /// Why HAProxy is needed.
    pub haproxy: Option<String>,
    /// Agents whose type this build does not know: name and type.
    pub unknown_agents: Vec<(String, String)>,
}

impl Needs {
    /// Only the machine, for a state directory (no pipeline file).
    pub fn machine(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            ..Self::default()
        }
    }

    /// What the pipeline file `path` asks for; `state_dir` is where its runs go.
    pub fn of_file(
        path: &Path,
        state_dir: PathBuf,
        registry: &Registry,
        env: &ProbeEnv,
    ) -> Result<Self, DoctorError> {
        let text = orch_core::input::read_regular_text(path, orch_core::input::MAX_PIPELINE_FILE)
            .map_err(|source| DoctorError::Read {
            path: path.to_owned(),
            source,
        })?;
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| DoctorError::Toml {
                path: path.to_owned(),
                message: e.message().trim_end().to_owned(),
            })?;
        Ok(Self::of_table(path, &doc, state_dir, registry, env))
    }

    /// What a parsed pipeline file asks for.
    pub fn of_table(
        path: &Path,
        doc: &toml::Table,
        state_dir: PathBuf,
        registry: &Registry,
        env: &ProbeEnv,
    ) -> Self {
        fn table(v: Option<&toml::Value>) -> Option<&toml::Table> {
            v.and_then(toml::Value::as_table)
        }
        let empty = toml::Table::new();
        let agents = table(doc.get("agents")).unwrap_or(&empty);
        let phases = table(doc.get("phases")).unwrap_or(&empty);
        let name = table(doc.get("pipeline"))
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let mut n = Self {
            pipeline: Some((path.to_owned(), name, phases.len(), agents.len())),
            state_dir,
            ..Self::default()
        };
        if doc.contains_key("policy") {
            n.git = Some("[policy] reads the branch with it".into());
        }
        // Agents: their type and the engine they talk to.
        let mut agent_types = BTreeMap::new();
        for (name, a) in agents {
            let ty = a
                .get("type")
                .and_then(toml::Value::as_str)
                .unwrap_or("local")
                .to_owned();
            let host = a
                .get("with")
                .and_then(|w| w.get("host"))
                .and_then(toml::Value::as_str);
            let endpoint = || match host {
                Some(h) => Endpoint::parse(h),
                None => env.default_engine(),
            };
            match ty.as_str() {
                "docker" | "swarm" => n.engines.push(EngineNeed {
                    agent: Some(name.clone()),
                    endpoint: endpoint(),
                    swarm: ty == "swarm",
                    optional: a.get("unavailable").and_then(toml::Value::as_str) == Some("skip"),
                    why: format!("agent {name}"),
                }),
                "local" => {}
                other if !registry.has_agent_type(other) => {
                    n.unknown_agents.push((name.clone(), other.to_owned()));
                }
                _ => {}
            }
            agent_types.insert(name.clone(), ty);
        }
        let mut default_docker: Vec<String> = Vec::new();
        for (id, p) in phases {
            let run = p.get("run");
            let kind = p
                .get("kind")
                .and_then(toml::Value::as_str)
                .unwrap_or("command");
            match run {
                Some(toml::Value::String(_)) => {
                    n.commands
                        .entry("sh".into())
                        .or_insert_with(|| format!("phase {id}"));
                }
                Some(toml::Value::Array(argv)) => {
                    if let Some(program) = argv.first().and_then(toml::Value::as_str)
                        && !program.contains("${{")
                        && (!program.contains('/') || program.starts_with('/'))
                    {
                        n.commands
                            .entry(program.to_owned())
                            .or_insert_with(|| format!("phase {id}"));
                    }
                }
                _ => {}
            }
            let served_by = registry.kind(kind).map(|k| k.agent_type.as_str());
            let agent = p.get("agent").and_then(toml::Value::as_str);
            // A phase without `agent` runs on a declared agent of the type serving its kind
            // when there is one.
            let on_declared_engine = match agent {
                Some(a) => agent_types
                    .get(a)
                    .is_some_and(|t| t == "docker" || t == "swarm"),
                None => agent_types.values().any(|t| t == "docker"),
            };
            if (served_by == Some("docker") || kind.starts_with("docker.")) && !on_declared_engine {
                default_docker.push(id.clone());
            }
            if kind == "report"
                && p.get("with")
                    .and_then(|w| w.get("formats"))
                    .and_then(toml::Value::as_array)
                    .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("pdf")))
            {
                n.chromium
                    .get_or_insert_with(|| format!("phase {id} prints PDF"));
            }
            if kind == "deploy" {
                n.haproxy
                    .get_or_insert_with(|| format!("phase {id} (kind deploy)"));
            }
        }
        if let Some(first) = default_docker.first() {
            let more = default_docker.len() - 1;
            n.engines.insert(
                0,
                EngineNeed {
                    agent: None,
                    endpoint: env.default_engine(),
                    swarm: false,
                    optional: false,
                    why: if more == 0 {
                        format!("phase {first}")
                    } else {
                        format!("phase {first} and {more} more")
                    },
                },
            );
        }
        n
    }
}

/// Checks `needs` on this machine. `orch_version` opens the report.
pub fn check(needs: &Needs, env: &ProbeEnv, orch_version: &str) -> Report {
    let mut lines = vec![Line::ok("orch", orch_version)];
    match &needs.pipeline {
        Some((path, name, phases, agents)) => {
            let found = format!(
                "{}: pipeline `{name}`, {phases} phase{}, {agents} agent{}",
                path.display(),
                if *phases == 1 { "" } else { "s" },
                if *agents == 1 { "" } else { "s" },
            );
            lines.push(match &needs.valid {
                Some(Err(e)) => Line::ok("pipeline", format!("{found}; invalid: {e}")).status(
                    Status::Warn,
                    format!("run `orch validate {}` for every problem", path.display()),
                ),
                _ => Line::ok("pipeline", found),
            });
        }
        None => lines.push(
            Line::ok("pipeline", "no pipeline file: the machine only").status(
                Status::Warn,
                "name a pipeline file (`orch doctor path/orch.toml`) to check what it needs",
            ),
        ),
    }
    let cpus = probe::cpus();
    lines.push(Line::ok(
        "cpu",
        format!("{cpus} CPU{}", if cpus == 1 { "" } else { "s" }),
    ));
    lines.push(match probe::memory() {
        Ok(m) => {
            let limit = m
                .limit
                .filter(|l| *l < m.total)
                .map(|l| format!(", cgroup limit {l}"))
                .unwrap_or_default();
            let line = Line::ok(
                "memory",
                format!("{} total, {} available{limit}", m.total, m.available),
            );
            if m.available < LOW_MEMORY {
                line.status(Status::Warn, "phases may run out of memory: free some")
            } else {
                line
            }
        }
        Err(e) => Line::ok("memory", e).status(Status::Warn, "/proc/meminfo is not readable"),
    });
    let state = needs.state_dir.display().to_string();
    lines.push(match probe::writable(&needs.state_dir) {
        Ok(at) if at == needs.state_dir => Line::ok("state dir", format!("{state} is writable")),
        Ok(at) => Line::ok(
            "state dir",
            format!("{state} will be created in {} (writable)", at.display()),
        ),
        Err(e) => Line::ok("state dir", format!("{state}: {e}")).status(
            Status::Missing,
            "fix its permissions, or choose another with `[pipeline] state_dir` or --state-dir",
        ),
    });
    lines.push(match probe::disk(&needs.state_dir) {
        Ok(d) => {
            let line = Line::ok(
                "disk",
                format!("{} free of {} at {}", d.free, d.total, d.path.display()),
            );
            if d.free < LOW_DISK {
                line.status(
                    Status::Warn,
                    format!("under {LOW_DISK} free: runs, logs and images need room"),
                )
            } else {
                line
            }
        }
        Err(e) => Line::ok("disk", e).status(
            Status::Warn,
            "the state directory's disk cannot be measured",
        ),
    });

    let git = probe::command(env, &["git"], &["--version"]);
    lines.push(match git {
        Some(c) => Line::ok("git", found_command(&c)),
        None => {
            let line = Line::ok("git", "not on PATH").needed_by(needs.git.as_deref());
            if needs.git.is_some() {
                line.status(Status::Missing, command_hint("git"))
            } else {
                line.status(
                    Status::Warn,
                    format!(
                        "{}; without it, policies see no `input.git`",
                        command_hint("git")
                    ),
                )
            }
        }
    });
    for (name, why) in &needs.commands {
        let item = format!("command {name}");
        lines.push(match env.find_command(name) {
            Some(p) => Line::ok(item, p.display().to_string()).needed_by(Some(why)),
            None => Line::ok(item, "not on PATH")
                .needed_by(Some(why))
                .status(Status::Missing, command_hint(name)),
        });
    }

    for e in &needs.engines {
        let item = match (&e.agent, e.swarm) {
            (Some(a), true) => format!("swarm (agent {a})"),
            (Some(a), false) => format!("docker (agent {a})"),
            (None, _) => "docker".to_owned(),
        };
        lines.push(engine_line(item, e));
    }
    if let Some(why) = &needs.chromium {
        lines.push(
            match probe::command(env, &probe::CHROMIUM_NAMES, &["--version"]) {
                Some(c) => Line::ok("chromium", found_command(&c)).needed_by(Some(why)),
                None => Line::ok(
                    "chromium",
                    format!("none of {} on PATH", probe::CHROMIUM_NAMES.join(", ")),
                )
                .needed_by(Some(why))
                .status(Status::Missing, command_hint("chromium")),
            },
        );
    }
    if let Some(why) = &needs.haproxy {
        lines.push(match probe::command(env, &["haproxy"], &["-v"]) {
            Some(c) => Line::ok("haproxy", found_command(&c)).needed_by(Some(why)),
            None => Line::ok("haproxy", "not on PATH")
                .needed_by(Some(why))
                .status(Status::Missing, command_hint("haproxy")),
        });
    }
    for (name, ty) in &needs.unknown_agents {
        lines.push(
            Line::ok(
                format!("agent {name}"),
                format!("type `{ty}` is not known to this orch: nothing checked"),
            )
            .status(
                Status::Warn,
                "use a type this orch knows (`orch schema` lists them)",
            ),
        );
    }
    let gpus = probe::gpus(env);
    lines.push(Line::ok(
        "gpu",
        if gpus.is_empty() {
            "none (not required)".to_owned()
        } else {
            gpus.iter()
                .map(|g| g.description.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        },
    ));
    Report { lines }
}

fn found_command(c: &probe::Command) -> String {
    match &c.version {
        Ok(v) => format!("{v} ({})", c.path.display()),
        Err(e) => format!("{} (version unknown: {e})", c.path.display()),
    }
}

fn engine_line(item: String, need: &EngineNeed) -> Line {
    let mut line = engine_line_required(item, need);
    if need.optional && line.status == Status::Missing {
        line.status = Status::Warn;
        line.found
            .push_str(": its phases will be skipped (unavailable = \"skip\")");
    }
    line
}

fn engine_line_required(item: String, need: &EngineNeed) -> Line {
    let why = Some(need.why.as_str());
    let endpoint = match &need.endpoint {
        Ok(e) => e,
        Err(e) => {
            return Line::ok(item, e.clone()).needed_by(why).status(
                Status::Missing,
                "give the agent a `host` of the form unix:///PATH or tcp://HOST:PORT",
            );
        }
    };
    let engine = match probe::docker_engine(endpoint) {
        Ok(v) => v,
        Err(e) => {
            return Line::ok(item, e).needed_by(why).status(
                Status::Missing,
                if need.swarm {
                    format!("{DOCKER_HINT}; then make it a Swarm manager (`docker swarm init`)")
                } else {
                    DOCKER_HINT.to_owned()
                },
            );
        }
    };
    let found = format!(
        "engine {} (API {}) at {endpoint}",
        engine.version, engine.api_version
    );
    if !need.swarm {
        return Line::ok(item, found).needed_by(why);
    }
    match probe::docker_swarm(endpoint) {
        Ok(s) if s.state == "active" && s.manager => Line::ok(
            item,
            format!(
                "{found}, swarm manager: {} node{}, {} manager{}",
                s.nodes,
                if s.nodes == 1 { "" } else { "s" },
                s.managers,
                if s.managers == 1 { "" } else { "s" }
            ),
        )
        .needed_by(why),
        Ok(s) if s.state == "active" => {
            Line::ok(item, format!("{found}: a swarm worker, not a manager"))
                .needed_by(why)
                .status(
                    Status::Missing,
                    "point the agent's `host` at a manager (`docker node promote` makes one)",
                )
        }
        Ok(s) => Line::ok(item, format!("{found}: swarm state `{}`", s.state))
            .needed_by(why)
            .status(
                Status::Missing,
                "make the engine a Swarm manager (`docker swarm init`) or point `host` at one",
            ),
        Err(e) => Line::ok(item, format!("{found}: {e}"))
            .needed_by(why)
            .status(Status::Missing, "the engine must answer /info"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(text: &str) -> Needs {
        let doc: toml::Table = text.parse().expect("toml");
        let mut r = Registry::with_builtins();
        crate::register(&mut r).expect("the kinds register once");
        Needs::of_table(
            Path::new("orch.toml"),
            &doc,
            PathBuf::from(".orch"),
            &r,
            &ProbeEnv::default(),
        )
    }

    #[test]
    fn docker_kinds_without_an_agent_run_on_the_declared_docker_agent() {
        let n = needs(
            r#"
            [pipeline]
            name = "x"
            [agents.engine]
            type = "docker"
            unavailable = "skip"
            [phases.img]
            kind = "docker.build"
            "#,
        );
        let engines: Vec<_> = n
            .engines
            .iter()
            .map(|e| (e.agent.as_deref(), e.optional))
            .collect();
        assert_eq!(engines, [(Some("engine"), true)]);
    }

    #[test]
    fn needs_are_read_from_the_file_generically() {
        let n = needs(
            r#"
            [pipeline]
            name = "x"
            [policy]
            files = []
            [agents.builder]
            type = "docker"
            with = { host = "tcp://10.0.0.9:2375" }
            [agents.cluster]
            type = "swarm"
            [agents.gpu]
            type = "kubernetes"
            [phases.a]
            run = "echo"
            [phases.b]
            run = ["make", "all"]
            [phases.c]
            run = ["./rel"]
            [phases.r]
            kind = "report"
            with = { formats = ["html", "pdf"] }
            [phases.d]
            kind = "deploy"
            [phases.img]
            kind = "docker.build"
            "#,
        );
        assert_eq!(n.pipeline.as_ref().map(|p| p.2), Some(6));
        assert!(n.git.is_some());
        assert_eq!(
            n.commands.keys().collect::<Vec<_>>(),
            ["make", "sh"],
            "relative argv programs are not looked up"
        );
        assert_eq!(n.chromium.as_deref(), Some("phase r prints PDF"));
        assert_eq!(n.haproxy.as_deref(), Some("phase d (kind deploy)"));
        let engines: Vec<_> = n
            .engines
            .iter()
            .map(|e| (e.agent.clone(), e.swarm, e.endpoint.clone()))
            .collect();
        assert_eq!(
            engines,
            // `img` names no agent: it runs on `builder`, the declared docker agent.
            [
                (
                    Some("builder".into()),
                    false,
                    Ok(Endpoint::Tcp("10.0.0.9:2375".into()))
                ),
                (
                    Some("cluster".into()),
                    true,
                    Ok(Endpoint::Unix(probe::DEFAULT_DOCKER_SOCKET.into()))
                ),
            ]
        );
        assert_eq!(
            n.unknown_agents,
            [("gpu".to_owned(), "kubernetes".to_owned())]
        );
    }
}
