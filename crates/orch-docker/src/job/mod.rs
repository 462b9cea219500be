//! `docker.run` on a `swarm` agent: each attempt is one Swarm service, `replicated` with one
//! replica and restart condition `none` (retries stay orch's), placed by Swarm.
//!
//! Why not a `replicated-job`: on Docker 20.10, removing a job service does not remove its
//! task, so a running job keeps running after a timeout (moby#44312, fixed in 24.0). A
//! replicated service's tasks are shut down and removed with it on every version.
//!
//! One attempt:
//! 1. earlier runs' leftovers on the swarm are removed (once per run, [`SwarmAgent`]);
//! 2. the image is resolved in its registry through the manager and pinned to its digest;
//!    an image the registry does not have (only in the manager's local store) is refused;
//! 3. each secret the phase declares becomes a Swarm secret of this attempt, mounted at
//!    `/run/secrets/NAME` (with `NAME_FILE` pointing at it); its value never enters the
//!    service spec;
//! 4. the service is created with the labels `org.orch.run-id`, `org.orch.phase-id`,
//!    `org.orch.attempt` and `org.orch.session` (on the service, its containers and its
//!    secrets), and its task is watched: not placed within `placement_timeout` fails with
//!    Swarm's reason; a node that goes down under the task fails the attempt naming it;
//!    the task's logs are followed into the phase log;
//! 5. whatever the end (exit, failure, timeout, cancellation), the service and the secrets
//!    are removed; Swarm then removes the task's container on its node.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use bollard::Docker;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount as SwarmMount, MountType,
    NetworkAttachmentConfig, ResourceObject, SecretSpec, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecSecrets, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use orch_core::{PhaseContext, PhaseError, PhaseOutcome};

use crate::agent::Endpoint;
use crate::cleanup::{PHASE_LABEL, RUN_LABEL};
use crate::credentials::{self, RegistryAuth};
use crate::output::OutputLines;
use crate::reference::ImageRef;
use crate::run::{ContainerCommand, RunPhase};
use crate::swarm::{SESSION_LABEL, SwarmAgent, call_error, session};

/// How long a task may wait for a node when `placement_timeout` is not set.
pub const DEFAULT_PLACEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Swarm mounts secrets in the container.
const SECRETS_DIR: &str = "/run/secrets";

/// The longest service name made (Swarm allows 63; secrets add a suffix).
const MAX_SERVICE_NAME: usize = 55;

/// How long reading the logs after the task ended may take.
const LOG_DRAIN_LIMIT: Duration = Duration::from_secs(15);

/// How long the manager may fail to answer before the attempt fails.
const MANAGER_SILENCE_LIMIT: Duration = Duration::from_secs(15);

/// How long a drop (a timeout) waits for the service's removal.
const DROP_REMOVAL_LIMIT: Duration = Duration::from_secs(30);

mod resources;
mod watch;

pub use resources::{ResourceSpec, Resources, parse_memory};
use watch::{Watch, WatchStop, node_name};

/// A mount on a swarm: a named volume (a host path means nothing on another node).
fn volume_mounts(phase: &RunPhase) -> Result<Vec<SwarmMount>, String> {
    phase
        .mounts()
        .iter()
        .map(|m| {
            let named = m
                .host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                && !m.host.starts_with('.')
                && !m.host.contains("${{");
            if !named {
                return Err(format!(
                    "mount `{}:{}`: a host path means nothing on the other nodes of a swarm; mount a named volume (`NAME:{}`) instead",
                    m.host, m.container, m.container
                ));
            }
            Ok(SwarmMount {
                source: Some(m.host.clone()),
                target: Some(m.container.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(m.read_only),
                ..SwarmMount::default()
            })
        })
        .collect()
}

/// A service name for an attempt: `orch-RUN-PHASE-ATTEMPT-RANDOM`, within Swarm's rules
/// (letters, digits and `-`; at most 63 characters).
fn service_name(ctx: &PhaseContext) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect()
    };
    let run: String = clean(ctx.run_id().as_str()).chars().take(24).collect();
    let tail = format!(
        "-{}-{}",
        ctx.attempt(),
        crate::context::hex(&fastrand::u32(..).to_le_bytes()[..3])
    );
    let budget = MAX_SERVICE_NAME.saturating_sub(5 + run.len() + 1 + tail.len());
    let phase: String = clean(ctx.phase_id().as_str())
        .chars()
        .take(budget)
        .collect();
    format!("orch-{run}-{phase}{tail}")
}

/// The shell lines that export each secret from its file into the environment of a
/// `sh -c` command (`$(cat)` would drop trailing newlines: a sentinel keeps them).
fn export_secrets(names: &[String]) -> String {
    let mut prelude = String::new();
    for n in names {
        prelude.push_str(&format!(
            "{n}=$(cat {SECRETS_DIR}/{n} && printf x) || exit 125; {n}=${{{n}%x}}; export {n}\n"
        ));
    }
    prelude
}

/// How an attempt ended on the swarm.
enum End {
    /// The container exited with this code.
    Exited(i64),
    /// Swarm ended the task without an exit code of ours.
    Failed(String),
    /// The task was not placed within the bound.
    Unplaced(String),
    /// The node running the task went down.
    NodeDown(String),
}

/// Removes the service and the attempt's secrets when dropped (a timeout drops the
/// attempt), unless disarmed.
struct ServiceGuard {
    endpoint: Endpoint,
    service: Option<String>,
    secrets: Vec<String>,
}

impl ServiceGuard {
    fn disarm(&mut self) {
        self.service = None;
        self.secrets.clear();
    }
}

impl Drop for ServiceGuard {
    fn drop(&mut self) {
        let Some(service) = self.service.take() else {
            return;
        };
        let secrets = std::mem::take(&mut self.secrets);
        let endpoint = self.endpoint.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let name = service.clone();
        let spawned = std::thread::Builder::new()
            .name("orch-swarm-cleanup".into())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(async {
                            let docker = endpoint.connect().await.map_err(|e| e.to_string())?;
                            remove(&docker, &name, &secrets).await
                        })
                    });
                let _ = tx.send(result);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot remove swarm service {service}: no thread: {e}");
            return;
        }
        match rx.recv_timeout(DROP_REMOVAL_LIMIT) {
            Ok(Ok(())) => tracing::debug!("removed swarm service {service}"),
            Ok(Err(e)) => tracing::warn!("cannot remove swarm service {service}: {e}"),
            Err(_) => tracing::warn!(
                "cannot remove swarm service {service}: the manager did not answer within {}s",
                DROP_REMOVAL_LIMIT.as_secs()
            ),
        }
    }
}

/// Removes a service (Swarm then shuts its task down and removes its container), then the
/// secrets it used. Already gone is fine.
async fn remove(docker: &Docker, service: &str, secrets: &[String]) -> Result<(), String> {
    let gone = |e: &bollard::errors::Error| {
        matches!(
            e,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }
        )
    };
    let mut problems = Vec::new();
    if let Err(e) = docker.delete_service(service).await
        && !gone(&e)
    {
        problems.push(call_error(&format!("remove service {service}"), &e));
    }
    for s in secrets {
        if let Err(e) = docker.delete_secret(s).await
            && !gone(&e)
        {
            problems.push(call_error(&format!("remove secret {s}"), &e));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Resolves the image in its registry through the manager (as `docker service create`
/// does) and pins it to the digest, so every node runs the same bytes. An image the
/// registry does not know is refused before anything is created.
async fn resolve_image(
    agent: &SwarmAgent,
    docker: &Docker,
    image: &str,
    auth: Option<&RegistryAuth>,
) -> Result<String, PhaseError> {
    let r = ImageRef::parse(image).map_err(|e| PhaseError::failed(format!("`image`: {e}")))?;
    if let Some(pinned) = agent.pinned(image) {
        return Ok(pinned);
    }
    let secrets = auth.map(RegistryAuth::secrets).unwrap_or_default();
    match docker
        .inspect_registry_image(image, auth.map(|a| a.to_docker(r.registry())))
        .await
    {
        Ok(found) => {
            let Some(digest) = found.descriptor.digest.filter(|d| !d.is_empty()) else {
                return Err(PhaseError::failed(format!(
                    "the registry of image {image} answered without a digest"
                )));
            };
            let pinned = match &r.tag {
                Some(t) => format!("{}:{t}@{digest}", r.repository),
                None => format!("{}@{digest}", r.repository),
            };
            if r.digest.is_some() {
                agent.remember_pinned(image, &pinned);
            }
            Ok(pinned)
        }
        Err(e) => {
            let why = credentials::scrub(&crate::common::server_message(&e), &secrets);
            let local = docker.inspect_image(image).await.is_ok();
            Err(PhaseError::failed(if local {
                format!(
                    "image {image} is only in the local image store of the manager at {}; the swarm's nodes pull images from a registry, and its registry does not have it ({why}): push it with a `docker.push` phase and run the digest it publishes (`image = \"${{{{ phases.PUSH.outputs.digest }}}}\"`)",
                    agent.docker_endpoint()
                )
            } else {
                format!(
                    "image {image} cannot be found in its registry {} through the manager at {}: {why}",
                    r.registry(),
                    agent.docker_endpoint()
                )
            }))
        }
    }
}

/// Runs one attempt of `phase` on the swarm of `agent`.
pub(crate) async fn run(
    phase: &RunPhase,
    agent: &SwarmAgent,
    ctx: &PhaseContext,
) -> Result<PhaseOutcome, PhaseError> {
    let s = phase.settings();
    if !s.remove {
        return Err(PhaseError::failed(
            "`remove = false` keeps the container of a local engine; on a swarm the service and its task are always removed",
        ));
    }
    let mounts = volume_mounts(phase).map_err(PhaseError::failed)?;
    let secret_names: Vec<String> = ctx
        .declared(ctx.phase_id().as_str())
        .map(|spec| spec.secrets.clone())
        .unwrap_or_default();

    // The container's environment: the phase's, without the secrets' values.
    let mut env: Vec<String> = ctx
        .env()
        .iter()
        .filter(|(k, _)| !secret_names.contains(k))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for (k, v) in &s.env {
        env.push(format!(
            "{k}={}",
            crate::common::render(ctx, &format!("env.{k}"), v)?
        ));
    }
    for n in &secret_names {
        env.push(format!("{n}_FILE={SECRETS_DIR}/{n}"));
    }
    let args = match &s.command {
        None => None,
        Some(ContainerCommand::Shell(script)) => {
            let rendered = ctx
                .render_shell(script)
                .map_err(|e| PhaseError::failed(format!("cannot render `command`: {e}")))?;
            env.extend(rendered.env.iter().map(|(k, v)| format!("{k}={v}")));
            let script = format!("{}{}", export_secrets(&secret_names), rendered.script);
            Some(vec!["sh".to_owned(), "-c".to_owned(), script])
        }
        Some(ContainerCommand::Argv(argv)) => Some(
            argv.iter()
                .map(|a| crate::common::render(ctx, "command", a))
                .collect::<Result<_, _>>()?,
        ),
    };
    // Secret values reach the task only as Swarm secrets: never in its spec.
    for e in env.iter().chain(args.iter().flatten()) {
        if ctx.redact(e) != e.as_str() {
            let what = e.split_once('=').map_or("the command", |(k, _)| k);
            return Err(PhaseError::failed(format!(
                "the service spec would hold a secret in clear (in {what}); secrets reach a swarm task only as files under {SECRETS_DIR}: list the secret in the phase's `secrets` and read it there"
            )));
        }
    }
    let image = crate::common::render(ctx, "image", &s.image)?;
    let network = s
        .network
        .as_deref()
        .map(|n| crate::common::render(ctx, "network", n))
        .transpose()?;
    let constraints = s
        .constraints
        .iter()
        .map(|c| crate::common::render(ctx, "constraints", c))
        .collect::<Result<Vec<_>, _>>()?;

    let docker = agent
        .client()
        .await
        .map_err(|e| PhaseError::failed(e.to_string()))?;
    let endpoint = agent.docker_endpoint().clone();
    agent.sweep_once(&docker, ctx).await;

    let registry = ImageRef::parse(&image)
        .map(|r| r.registry().to_owned())
        .map_err(|e| PhaseError::failed(format!("`image`: {e}")))?;
    let auth = match agent.docker_config_file(ctx.base_dir()) {
        Some(f) => credentials::from_config_file(&f, &registry)
            .await
            .map_err(|e| PhaseError::from_error(&e))?,
        None => None,
    };
    let pinned = resolve_image(agent, &docker, &image, auth.as_ref()).await?;

    let name = service_name(ctx);
    let labels = HashMap::from([
        (RUN_LABEL.to_owned(), ctx.run_id().to_string()),
        (PHASE_LABEL.to_owned(), ctx.phase_id().to_string()),
        ("org.orch.attempt".to_owned(), ctx.attempt().to_string()),
        (SESSION_LABEL.to_owned(), session().to_owned()),
    ]);
    // From here on, whatever happens to this future, the service and secrets go away.
    let mut guard = ServiceGuard {
        endpoint: endpoint.clone(),
        service: Some(name.clone()),
        secrets: Vec::new(),
    };
    let mut secret_refs = Vec::new();
    for (i, n) in secret_names.iter().enumerate() {
        let value = ctx.env_var(n).ok_or_else(|| {
            PhaseError::failed(format!("secret `{n}` has no value for this phase"))
        })?;
        let secret_name = format!("{name}-s{i}");
        let created = docker
            .create_secret(SecretSpec {
                name: Some(secret_name.clone()),
                labels: Some(labels.clone()),
                data: Some(base64::engine::general_purpose::STANDARD.encode(value)),
                ..SecretSpec::default()
            })
            .await
            .map_err(|e| {
                PhaseError::failed(format!(
                    "{} (manager at {endpoint})",
                    call_error(&format!("create the swarm secret for `{n}`"), &e)
                ))
            })?;
        let id = created.id;
        guard.secrets.push(id.clone());
        secret_refs.push(TaskSpecContainerSpecSecrets {
            file: Some(TaskSpecContainerSpecFile {
                name: Some(n.clone()),
                uid: Some("0".into()),
                gid: Some("0".into()),
                mode: Some(0o444),
            }),
            secret_id: Some(id),
            secret_name: Some(secret_name),
        });
    }

    let resources = phase.resources().map(|r| TaskSpecResources {
        limits: (r.limit_nano_cpus.or(r.reserve_nano_cpus).is_some()
            || r.limit_memory.or(r.reserve_memory).is_some())
        .then(|| Limit {
            nano_cpus: r.limit_nano_cpus.or(r.reserve_nano_cpus),
            memory_bytes: r.limit_memory.or(r.reserve_memory),
            ..Limit::default()
        }),
        reservations: Some(ResourceObject {
            nano_cpus: r.reserve_nano_cpus,
            memory_bytes: r.reserve_memory,
            ..ResourceObject::default()
        }),
        ..TaskSpecResources::default()
    });
    let grace_ns = i64::try_from(ctx.grace().as_nanos()).unwrap_or(i64::MAX);
    let spec = ServiceSpec {
        name: Some(name.clone()),
        labels: Some(labels.clone()),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..ServiceSpecMode::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(pinned.clone()),
                labels: Some(labels.clone()),
                args,
                env: Some(env),
                dir: s.workdir.clone(),
                user: s.user.clone(),
                mounts: (!mounts.is_empty()).then_some(mounts),
                secrets: (!secret_refs.is_empty()).then_some(secret_refs),
                stop_grace_period: Some(grace_ns),
                ..TaskSpecContainerSpec::default()
            }),
            resources,
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..TaskSpecRestartPolicy::default()
            }),
            placement: (!constraints.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(constraints.clone()),
                ..TaskSpecPlacement::default()
            }),
            networks: network.map(|n| {
                vec![NetworkAttachmentConfig {
                    target: Some(n),
                    ..NetworkAttachmentConfig::default()
                }]
            }),
            ..TaskSpec::default()
        }),
        // No VIP: this kernel family may lack IPVS, and a one-shot task needs none.
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ..EndpointSpec::default()
        }),
        ..ServiceSpec::default()
    };
    let created = docker
        .create_service(spec, auth.as_ref().map(|a| a.to_docker(&registry)))
        .await
        .map_err(|e| {
            let secrets = auth.as_ref().map(RegistryAuth::secrets).unwrap_or_default();
            PhaseError::failed(credentials::scrub(
                &format!(
                    "{} (manager at {endpoint})",
                    call_error(&format!("create swarm service {name} from {pinned}"), &e)
                ),
                &secrets,
            ))
        })?;
    for w in created.warnings.unwrap_or_default() {
        ctx.log(format!("swarm: {w}"));
    }
    ctx.log(format!(
        "created swarm service {name} from {pinned}{}",
        if constraints.is_empty() {
            String::new()
        } else {
            format!(" (constraints: {})", constraints.join(", "))
        }
    ));

    let mut watch = Watch {
        docker: &docker,
        service: &name,
        ctx,
        filter: OutputLines::new(),
        frames: [0, 0],
    };
    let placement_limit = phase.placement_timeout();
    let watched = watch.until_end(placement_limit).await;
    let (end, task, node_id) = match watched {
        Ok(v) => v,
        Err(WatchStop::Cancelled) => {
            ctx.log(format!("cancelled: removing swarm service {name}"));
            let secrets = std::mem::take(&mut guard.secrets);
            match remove(&docker, &name, &secrets).await {
                Ok(()) => guard.disarm(),
                Err(e) => ctx.log(e),
            }
            return Err(PhaseError::Cancelled);
        }
        Err(WatchStop::Manager(message)) => {
            return Err(PhaseError::failed(format!(
                "{message} (manager at {endpoint})"
            )));
        }
    };
    let node = match &node_id {
        Some(id) => node_name(&docker, id).await,
        None => String::new(),
    };
    if matches!(end, End::Exited(_)) || (matches!(end, End::Failed(_)) && node_id.is_some()) {
        watch.drain().await;
    }
    watch.filter.finish(ctx);
    let container_outputs = watch.filter.outputs().clone();

    let secrets = std::mem::take(&mut guard.secrets);
    match remove(&docker, &name, &secrets).await {
        Ok(()) => guard.disarm(),
        Err(e) => ctx.log(format!("cannot remove swarm service {name}: {e}")),
    }

    let on = |node: &str| {
        if node.is_empty() {
            String::new()
        } else {
            format!(" on node {node}")
        }
    };
    match end {
        End::Exited(0) => {
            let mut outputs: Vec<(String, String)> = container_outputs
                .into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "exit_code" | "node" | "task"))
                .collect();
            outputs.push(("exit_code".into(), "0".into()));
            outputs.push(("node".into(), node));
            outputs.push(("task".into(), task));
            let mut outcome = PhaseOutcome::with_outputs(outputs);
            outcome.exit_code = Some(0);
            Ok(outcome)
        }
        End::Exited(code) => {
            let code = i32::try_from(code).unwrap_or(i32::MAX);
            Err(PhaseError::Failed {
                message: format!(
                    "swarm task {task}{} exited with code {code} ({pinned})",
                    on(&node)
                ),
                exit_code: Some(code),
            })
        }
        End::Failed(why) => Err(PhaseError::failed(format!(
            "swarm task {task}{} failed: {why}",
            on(&node)
        ))),
        End::Unplaced(why) => Err(PhaseError::failed(format!(
            "Swarm could not place task {task} on any node within {}: {why}",
            humantime::format_duration(placement_limit)
        ))),
        End::NodeDown(why) => Err(PhaseError::failed(format!(
            "node {node} went down while swarm task {task} ran on it ({why}); the attempt is lost"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_prelude_keeps_values_exact() {
        let script = format!(
            "{}printf '[%s]' \"$TOKEN\"",
            export_secrets(&["TOKEN".to_owned()])
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("TOKEN"), "a b\n\n").unwrap();
        let script = script.replace(SECRETS_DIR, &dir.path().display().to_string());
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "[a b\n\n]");
    }
}
