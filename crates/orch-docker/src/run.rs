//! `docker.run`: runs a container as a phase; its exit code decides the status.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use orch_core::command::shell_quote;
use orch_core::errors::RegistryError;
use orch_core::registry::Kind;
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
    Stream,
};
use serde::Deserialize;

use crate::agent::Endpoint;
use crate::cleanup::{ContainerGuard, PHASE_LABEL, RUN_LABEL, force_remove, stop_and_remove};
use crate::common::{container_name, engine, engine_error, render, server_message};
use crate::credentials;
use crate::job::{ResourceSpec, Resources};
use crate::output::OutputLines;
use crate::reference::ImageRef;
use crate::swarm::SwarmAgent;

/// What the container runs.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ContainerCommand {
    /// A script run as `sh -c SCRIPT` (the image needs a `sh`). Interpolated values reach
    /// the script through environment variables, so they cannot inject shell syntax.
    Shell(String),
    /// An argv, replacing the image's `CMD` (its `ENTRYPOINT` stays).
    Argv(Vec<String>),
}

/// The `with` table of `docker.run`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// The image (template): a tag, an id, or `${{ phases.build.outputs.image_id }}`.
    pub image: String,
    /// The command; default: the image's own.
    #[serde(default)]
    pub command: Option<ContainerCommand>,
    /// Environment of the container (values are templates), on top of the phase's `env`,
    /// its secrets and `ORCH_RUN_ID`/`ORCH_PHASE_ID`/`ORCH_ATTEMPT`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Bind mounts `HOST:CONTAINER[:ro|rw]`; HOST is relative to the pipeline file.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Network mode (`none`, `host`, `bridge`, a network name).
    #[serde(default)]
    pub network: Option<String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub workdir: Option<String>,
    /// User (`uid`, `uid:gid`, a name) inside the container.
    #[serde(default)]
    pub user: Option<String>,
    /// Remove the container after a normal end (default true). A container is removed on
    /// timeout and cancellation whatever this says.
    #[serde(default = "yes")]
    pub remove: bool,
    /// Swarm placement constraints (templates), e.g. `node.labels.zone==b`; on a `swarm`
    /// agent only.
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Reservations and limits of the task; on a `swarm` agent only.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// How long a swarm task may wait for a node before the phase fails with Swarm's
    /// reason (`"30s"` by default); on a `swarm` agent only.
    #[serde(default)]
    pub placement_timeout: Option<String>,
}

fn yes() -> bool {
    true
}

/// A parsed bind mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Host path (template), relative to the pipeline file.
    pub host: String,
    /// Absolute path in the container.
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Mount {
    /// Parses `HOST:CONTAINER[:ro|rw]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (rest, read_only) = match text.rsplit_once(':') {
            Some((r, "ro")) => (r, true),
            Some((r, "rw")) => (r, false),
            _ => (text, false),
        };
        let (host, container) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("mount `{text}` is not `HOST:CONTAINER[:ro]`"))?;
        if host.is_empty() {
            return Err(format!("mount `{text}` has an empty host path"));
        }
        if !container.starts_with('/') {
            return Err(format!(
                "mount `{text}`: the container path must be absolute"
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            container: container.to_owned(),
            read_only,
        })
    }
}

/// Runs a container; see the crate docs for settings and outputs.
#[derive(Clone, Debug)]
pub struct RunPhase {
    settings: RunSettings,
    mounts: Vec<Mount>,
    resources: Option<ResourceSpec>,
    placement_timeout: Option<Duration>,
}

impl RunPhase {
    /// A phase with these settings.
    pub fn new(settings: RunSettings) -> Result<Self, String> {
        let mounts = settings
            .mounts
            .iter()
            .map(|m| Mount::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(ContainerCommand::Argv(argv)) = &settings.command
            && argv.is_empty()
        {
            return Err("`command` is an empty array".into());
        }
        if settings.image.trim().is_empty() {
            return Err("`image` is empty".into());
        }
        if let Some(c) = settings.constraints.iter().find(|c| c.trim().is_empty()) {
            return Err(format!("`constraints` holds an empty constraint (`{c}`)"));
        }
        let resources = settings
            .resources
            .as_ref()
            .map(Resources::to_spec)
            .transpose()?;
        let placement_timeout = settings
            .placement_timeout
            .as_deref()
            .map(|t| {
                humantime::parse_duration(t)
                    .map_err(|e| format!("`placement_timeout = \"{t}\"`: {e} (`30s`, `2m`)"))
            })
            .transpose()?;
        Ok(Self {
            settings,
            mounts,
            resources,
            placement_timeout,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// The mounts, parsed.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The swarm task's reservations and limits, checked.
    pub fn resources(&self) -> Option<ResourceSpec> {
        self.resources
    }

    /// How long a swarm task may wait for a node.
    pub fn placement_timeout(&self) -> Duration {
        self.placement_timeout
            .unwrap_or(crate::job::DEFAULT_PLACEMENT_TIMEOUT)
    }

    /// Whether settings that only mean something on a swarm are set.
    fn wants_swarm(&self) -> Option<&'static str> {
        let s = &self.settings;
        if !s.constraints.is_empty() {
            Some("constraints")
        } else if s.resources.is_some() {
            Some("resources")
        } else if s.placement_timeout.is_some() {
            Some("placement_timeout")
        } else {
            None
        }
    }

    /// Checks a declaration and its parsed `with` settings (no I/O).
    pub fn from_settings(spec: &PhaseSpec, settings: RunSettings) -> Result<Self, KindError> {
        Self::new(settings).map_err(|message| KindError {
            message: format!("phase `{}`: {message}", spec.id),
            span: spec.with.span(),
        })
    }
}

/// The container spec after rendering.
struct Prepared {
    image: String,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    binds: Vec<String>,
}

impl RunPhase {
    fn prepare(&self, ctx: &PhaseContext) -> Result<Prepared, PhaseError> {
        let s = &self.settings;
        let image = render(ctx, "image", &s.image)?;
        let mut env: Vec<String> = ctx.env().iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (k, v) in &s.env {
            env.push(format!("{k}={}", render(ctx, &format!("env.{k}"), v)?));
        }
        let cmd = match &s.command {
            None => None,
            Some(ContainerCommand::Shell(script)) => {
                let rendered = ctx
                    .render_shell(script)
                    .map_err(|e| PhaseError::failed(format!("cannot render `command`: {e}")))?;
                env.extend(rendered.env.iter().map(|(k, v)| format!("{k}={v}")));
                Some(vec!["sh".into(), "-c".into(), rendered.script])
            }
            Some(ContainerCommand::Argv(argv)) => Some(
                argv.iter()
                    .map(|a| render(ctx, "command", a))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let mut binds = Vec::new();
        for m in &self.mounts {
            let host = ctx
                .resolve(&m.host)
                .map_err(|e| PhaseError::failed(format!("cannot render `mounts`: {e}")))?;
            let mode = if m.read_only { ":ro" } else { "" };
            binds.push(format!("{}:{}{mode}", host.display(), m.container));
        }
        Ok(Prepared {
            image,
            cmd,
            env,
            binds,
        })
    }

    fn body(&self, ctx: &PhaseContext, p: &Prepared) -> ContainerCreateBody {
        let s = &self.settings;
        let labels = HashMap::from([
            (RUN_LABEL.to_owned(), ctx.run_id().to_string()),
            (PHASE_LABEL.to_owned(), ctx.phase_id().to_string()),
            ("org.orch.attempt".to_owned(), ctx.attempt().to_string()),
        ]);
        ContainerCreateBody {
            image: Some(p.image.clone()),
            cmd: p.cmd.clone(),
            env: Some(p.env.clone()),
            working_dir: s.workdir.clone(),
            user: s.user.clone(),
            labels: Some(labels),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            host_config: Some(HostConfig {
                binds: (!p.binds.is_empty()).then(|| p.binds.clone()),
                network_mode: s.network.clone(),
                auto_remove: Some(false),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }
}

#[async_trait]
impl Phase for RunPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let s = &self.settings;
        let image = ctx.render(&s.image);
        let what = match &s.command {
            None => "its default command".to_owned(),
            Some(ContainerCommand::Shell(script)) => {
                format!("sh -c {}", shell_quote(&ctx.render(script)))
            }
            Some(ContainerCommand::Argv(argv)) => argv
                .iter()
                .map(|a| shell_quote(&ctx.render(a)))
                .collect::<Vec<_>>()
                .join(" "),
        };
        let mut d = Description::new(format!("run {image}: {what}"));
        for c in &s.constraints {
            d = d.detail("constraint", ctx.render(c));
        }
        if let Some(r) = &s.resources {
            let mut parts = Vec::new();
            if let Some(c) = r.cpus {
                parts.push(format!("cpus {c}"));
            }
            if let Some(m) = &r.memory {
                parts.push(format!("memory {m}"));
            }
            if let Some(c) = r.limit_cpus {
                parts.push(format!("cpu limit {c}"));
            }
            if let Some(m) = &r.limit_memory {
                parts.push(format!("memory limit {m}"));
            }
            d = d.detail("resources", parts.join(", "));
        }
        if let Some(t) = &s.placement_timeout {
            d = d.detail("placement timeout", t);
        }
        if let Some(n) = &s.network {
            d = d.detail("network", n);
        }
        if let Some(w) = &s.workdir {
            d = d.detail("workdir", w);
        }
        if let Some(u) = &s.user {
            d = d.detail("user", u);
        }
        for m in &self.mounts {
            d = d.detail(
                "mount",
                format!(
                    "{}:{}{}",
                    ctx.resolve(&m.host).display(),
                    m.container,
                    if m.read_only { ":ro" } else { "" }
                ),
            );
            if !m.read_only {
                d = d.change(format!(
                    "files under {} (mounted read-write)",
                    ctx.resolve(&m.host).display()
                ));
            }
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        if let Some(agent) = ctx.agent_as::<SwarmAgent>() {
            return crate::job::run(self, agent, ctx).await;
        }
        if let Some(key) = self.wants_swarm() {
            return Err(PhaseError::failed(format!(
                "`{key}` places a task on a swarm: run this phase on a `swarm` agent (agent `{}` is a `{}` agent)",
                ctx.agent().name(),
                ctx.agent().agent_type()
            )));
        }
        let prepared = self.prepare(ctx)?;
        let (docker, endpoint) = engine(ctx).await?;
        let name = container_name(ctx);
        // From here on, whatever happens to this future, the container goes away.
        let mut guard = ContainerGuard::new(endpoint.clone(), name.clone());
        let body = self.body(ctx, &prepared);
        create(ctx, &docker, &endpoint, &name, &prepared.image, body).await?;

        let attach = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(true)
            .build();
        let mut output = docker
            .attach_container(&name, Some(attach))
            .await
            .map_err(|e| engine_error(&endpoint, &format!("attach to container {name}"), &e))?
            .output;
        docker
            .start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .map_err(|e| {
                PhaseError::failed(format!(
                    "cannot start container {name} from {}: {} (engine at {endpoint})",
                    prepared.image,
                    server_message(&e)
                ))
            })?;
        ctx.log(format!("started container {name} from {}", prepared.image));

        let mut wait = docker.wait_container(&name, None::<WaitContainerOptions>);
        let mut output_open = true;
        let mut lines = OutputLines::new();
        let waited = loop {
            tokio::select! {
                biased;
                () = ctx.cancelled().cancelled() => {
                    ctx.log(format!(
                        "cancelled: stopping container {name} (grace {}s)",
                        ctx.grace().as_secs_f64()
                    ));
                    match stop_and_remove(&docker, &name, ctx.grace()).await {
                        Ok(()) => guard.disarm(),
                        Err(e) => ctx.log(format!("cannot remove container {name}: {e}")),
                    }
                    return Err(PhaseError::Cancelled);
                }
                chunk = output.next(), if output_open => match chunk {
                    Some(Ok(log)) => write_log(ctx, &mut lines, log),
                    Some(Err(_)) | None => output_open = false,
                },
                w = wait.next() => break w,
            }
        };
        let exit_code: i64 = match waited {
            Some(Ok(response)) => response.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => {
                return Err(engine_error(
                    &endpoint,
                    &format!("wait for container {name}"),
                    &e,
                ));
            }
            None => {
                return Err(PhaseError::failed(format!(
                    "the engine at {endpoint} ended the wait for container {name} without an exit code"
                )));
            }
        };
        // The attach stream ends once the container's output is drained.
        if output_open {
            let drain = async {
                while let Some(Ok(log)) = output.next().await {
                    write_log(ctx, &mut lines, log);
                }
            };
            if tokio::time::timeout(Duration::from_secs(10), drain)
                .await
                .is_err()
            {
                ctx.log("container output did not end within 10s after exit");
            }
        }
        lines.finish(ctx);
        if self.settings.remove {
            force_remove(&docker, &name).await.map_err(|e| {
                PhaseError::failed(format!(
                    "container {name} exited with {exit_code} but cannot be removed: {e}"
                ))
            })?;
        } else {
            ctx.log(format!("kept container {name} (`remove = false`)"));
        }
        guard.disarm();

        let code = i32::try_from(exit_code).unwrap_or(i32::MAX);
        if code != 0 {
            return Err(PhaseError::Failed {
                message: format!(
                    "container {name} ({}) exited with code {code}",
                    prepared.image
                ),
                exit_code: Some(code),
            });
        }
        let mut outputs: Vec<(String, String)> = lines
            .outputs()
            .iter()
            .filter(|(k, _)| k.as_str() != "exit_code")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        outputs.push(("exit_code".into(), code.to_string()));
        let mut outcome = PhaseOutcome::with_outputs(outputs);
        outcome.exit_code = Some(code);
        Ok(outcome)
    }
}

fn write_log(ctx: &PhaseContext, lines: &mut OutputLines, log: LogOutput) {
    match log {
        LogOutput::StdErr { message } => lines.push(ctx, Stream::Stderr, &message),
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            lines.push(ctx, Stream::Stdout, &message)
        }
        LogOutput::StdIn { .. } => {}
    }
}

/// Creates the container, pulling the image once if the engine does not have it.
async fn create(
    ctx: &PhaseContext,
    docker: &Docker,
    endpoint: &Endpoint,
    name: &str,
    image: &str,
    body: ContainerCreateBody,
) -> Result<(), PhaseError> {
    let options = CreateContainerOptionsBuilder::default().name(name).build();
    match docker
        .create_container(Some(options.clone()), body.clone())
        .await
    {
        Ok(_) => return Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => {
            return Err(PhaseError::failed(format!(
                "cannot create a container from {image}: {} (engine at {endpoint})",
                server_message(&e)
            )));
        }
    }
    pull(ctx, docker, endpoint, image).await?;
    docker
        .create_container(Some(options), body)
        .await
        .map(|_| ())
        .map_err(|e| {
            PhaseError::failed(format!(
                "cannot create a container from {image}: {} (engine at {endpoint})",
                server_message(&e)
            ))
        })
}

async fn pull(
    ctx: &PhaseContext,
    docker: &Docker,
    endpoint: &Endpoint,
    image: &str,
) -> Result<(), PhaseError> {
    let r = ImageRef::parse(image).map_err(|e| {
        PhaseError::failed(format!(
            "image {image} is not in the engine at {endpoint}, and cannot be pulled: {e}"
        ))
    })?;
    let auth = credentials::from_docker_config(r.registry())
        .await
        .map_err(|e| PhaseError::from_error(&e))?;
    let secrets = auth.as_ref().map(|a| a.secrets()).unwrap_or_default();
    ctx.log(format!("image {image} not found locally; pulling it"));
    let mut options = CreateImageOptionsBuilder::default().from_image(&r.repository);
    if let Some(d) = &r.digest {
        options = options.tag(d);
    } else {
        options = options.tag(r.tag_or_latest());
    }
    let mut stream = docker.create_image(
        Some(options.build()),
        None,
        auth.as_ref().map(|a| a.to_docker(r.registry())),
    );
    while let Some(item) = tokio::select! {
        biased;
        () = ctx.cancelled().cancelled() => return Err(PhaseError::Cancelled),
        i = stream.next() => i,
    } {
        if let Err(e) = item {
            return Err(PhaseError::failed(format!(
                "image {image} is not in the engine at {endpoint}, and pulling it failed: {}",
                credentials::scrub(&server_message(&e), &secrets)
            )));
        }
    }
    Ok(())
}

/// Registers `docker.run`.
pub(crate) fn register(registry: &mut orch_core::Registry) -> Result<(), RegistryError> {
    registry.add_kind(
        Kind::new(
            "docker.run",
            "run a container; its exit code decides the status",
        )
        .agent_type("docker"),
        RunPhase::from_settings,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse() {
        assert_eq!(
            Mount::parse("data:/data:ro").unwrap(),
            Mount {
                host: "data".into(),
                container: "/data".into(),
                read_only: true
            }
        );
        assert!(!Mount::parse("./a:/b").unwrap().read_only);
        assert!(!Mount::parse("./a:/b:rw").unwrap().read_only);
        for bad in ["/only", ":/x", "a:relative", "a:b:ro"] {
            assert!(Mount::parse(bad).is_err(), "{bad}");
        }
    }
}
