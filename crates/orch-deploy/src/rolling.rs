//! Strategy `rolling`: a Swarm service created or updated with an update config
//! (parallelism, start-first unless a host port is published, failure action `rollback`,
//! a monitor window) and a health check; orch follows the update status until Swarm
//! completes it or rolls it back, and fails the phase when Swarm rolled back (the docker
//! CLI exits 0 in that case; orch does not).

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum,
    HealthConfig, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
    ServiceUpdateStatusStateEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListTasksOptionsBuilder, LogsOptionsBuilder, UpdateServiceOptionsBuilder,
};
use futures_util::StreamExt;
use orch_core::record::Outputs;
use orch_core::{PhaseContext, PhaseError, PhaseOutcome};

use crate::deploy::{DeploymentReport, endpoint_of, fail, state_dir_of, write_report};
use crate::engine::{self, SERVICE_LABEL, VERSION_LABEL, describe};
use crate::settings::DeployPlan;
use crate::state::{Release, ServiceDir, ServiceState, SwarmService, now};

/// The Swarm service's name for an orch service.
pub fn swarm_name(service: &str) -> String {
    format!("orch-{service}")
}

const NANOS: i64 = 1_000_000_000;

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// The service spec of a deployment.
fn spec(
    plan: &DeployPlan,
    name: &str,
    image: &str,
    version: &str,
    env: Vec<String>,
) -> ServiceSpec {
    let published = plan.published_port.or_else(|| {
        crate::settings::check_listen(&plan.listen)
            .ok()
            .map(|a| a.port())
    });
    // Two tasks of one node cannot both hold a host port: start-first only without one.
    let start_first = published.is_none();
    let h = &plan.health;
    let health_check = HealthConfig {
        test: Some(vec![
            "CMD-SHELL".into(),
            format!(
                "wget -q -O /dev/null http://127.0.0.1:{}{} || exit 1",
                plan.port, h.path
            ),
        ]),
        interval: Some(nanos(h.interval)),
        timeout: Some(nanos(h.timeout)),
        retries: Some(i64::from(h.unhealthy)),
        start_period: Some(nanos(h.within)),
        start_interval: None,
    };
    let labels = HashMap::from([
        (SERVICE_LABEL.to_owned(), plan.service.clone()),
        (VERSION_LABEL.to_owned(), version.to_owned()),
    ]);
    ServiceSpec {
        name: Some(name.to_owned()),
        labels: Some(labels.clone()),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(image.to_owned()),
                labels: Some(labels),
                env: Some(env),
                health_check: Some(health_check),
                ..TaskSpecContainerSpec::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                delay: Some(NANOS / 2),
                max_attempts: None,
                window: None,
            }),
            ..TaskSpec::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated {
                replicas: Some(i64::from(plan.replicas)),
            }),
            ..ServiceSpecMode::default()
        }),
        update_config: Some(ServiceSpecUpdateConfig {
            parallelism: Some(i64::try_from(plan.parallelism).unwrap_or(1)),
            delay: Some(0),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(nanos(plan.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(if start_first {
                ServiceSpecUpdateConfigOrderEnum::START_FIRST
            } else {
                ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
            }),
        }),
        rollback_config: Some(ServiceSpecRollbackConfig {
            parallelism: Some(0),
            delay: Some(0),
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
            monitor: Some(nanos(plan.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(if start_first {
                ServiceSpecRollbackConfigOrderEnum::START_FIRST
            } else {
                ServiceSpecRollbackConfigOrderEnum::STOP_FIRST
            }),
        }),
        // This kernel family has no IPVS: no routing mesh, no VIP; DNS round robin and
        // ports published on each task's node.
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: published.map(|p| {
                vec![EndpointPortConfig {
                    target_port: Some(i64::from(plan.port)),
                    published_port: Some(i64::from(p)),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..EndpointPortConfig::default()
                }]
            }),
        }),
        ..ServiceSpec::default()
    }
}

/// The image a Swarm service runs (without the digest Swarm pins).
fn service_image(s: &bollard::models::Service) -> String {
    s.spec
        .as_ref()
        .and_then(|s| s.task_template.as_ref())
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn same_image(running: &str, wanted: &str) -> bool {
    running == wanted || running.starts_with(&format!("{wanted}@"))
}

/// Credentials for the registry of `image` from the Docker config file (`DOCKER_CONFIG`,
/// else `~/.docker/config.json`; `auths.REGISTRY.auth`), so that every node can pull it.
pub fn registry_auth(image: &str) -> Option<bollard::auth::DockerCredentials> {
    let first = image.split('/').next()?;
    if !image.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost")
    {
        return None;
    }
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker"))
        })?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let doc: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = doc.get("auths")?.as_object()?;
    let entry = auths.iter().find(|(k, _)| {
        k.as_str() == first
            || k.trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
                == first
    })?;
    let encoded = entry.1.get("auth")?.as_str()?;
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(bollard::auth::DockerCredentials {
        username: Some(user.to_owned()),
        password: Some(password.to_owned()),
        serveraddress: Some(first.to_owned()),
        ..Default::default()
    })
}

/// Runs a rolling deployment.
pub async fn run(ctx: &PhaseContext, plan: &DeployPlan) -> Result<PhaseOutcome, PhaseError> {
    if ctx.agent().agent_type() != "swarm" {
        return Err(fail(format!(
            "strategy `rolling` updates a Swarm service: run this phase on a `swarm` agent (`agent = \"NAME\"`), not on the {} agent `{}`",
            ctx.agent().agent_type(),
            ctx.agent().name()
        )));
    }
    let image = ctx
        .render(&plan.image)
        .map_err(|e| fail(format!("cannot render `image`: {e}")))?;
    let endpoint = endpoint_of(ctx);
    let docker = engine::connect(&endpoint).await.map_err(fail)?;
    let sd = ServiceDir::new(&state_dir_of(ctx), &plan.service);
    let mut state = match sd.load().map_err(|e| fail(e.to_string()))? {
        Some(s) if s.swarm.is_none() && s.current.is_some() => {
            return Err(fail(format!(
                "service `{}` runs behind orch's proxy (strategy {}); it cannot become a Swarm service: run `orch deploy stop {}` first",
                plan.service, s.strategy, plan.service
            )));
        }
        Some(s) => s,
        None => ServiceState::new(&plan.service, "", plan.port, plan.health.clone()),
    };
    let name = swarm_name(&plan.service);
    let version = engine::version_label(&image, "");
    let mut env = Vec::new();
    for (k, v) in &plan.env {
        let v = ctx
            .render(v)
            .map_err(|e| fail(format!("cannot render `env.{k}`: {e}")))?;
        env.push(format!("{k}={v}"));
    }
    let wanted = spec(plan, &name, &image, &version, env);
    let existing = match docker
        .inspect_service(&name, None::<InspectServiceOptions>)
        .await
    {
        Ok(s) => Some(s),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(e) => {
            return Err(fail(format!(
                "cannot inspect Swarm service {name} on {endpoint}: {}",
                describe(&e)
            )));
        }
    };
    let previous_image = existing.as_ref().map(service_image).unwrap_or_default();
    let url = if plan.listen.is_empty() {
        String::new()
    } else {
        format!("http://{}/", ctx.render(&plan.listen).unwrap_or_default())
    };
    let outputs = |status: &str, version: &str, previous: &str| {
        Outputs::from([
            ("status".to_owned(), status.to_owned()),
            ("version".to_owned(), version.to_owned()),
            ("previous".to_owned(), previous.to_owned()),
            ("url".to_owned(), url.clone()),
            ("service".to_owned(), plan.service.clone()),
            ("strategy".to_owned(), "rolling".to_owned()),
        ])
    };
    let id = match &existing {
        None => {
            ctx.log(format!(
                "creating Swarm service {name} ({} replicas of {image})",
                plan.replicas
            ));
            let created = docker
                .create_service(wanted, registry_auth(&image))
                .await
                .map_err(|e| {
                    fail(format!(
                        "cannot create Swarm service {name}: {}",
                        describe(&e)
                    ))
                })?;
            let id = created.id.unwrap_or_else(|| name.clone());
            wait_running(ctx, &docker, &name, plan).await?;
            id
        }
        Some(_) if same_image(&previous_image, &image) => {
            ctx.log(format!("{name} already runs {image}: nothing to change"));
            return Ok(PhaseOutcome {
                outputs: outputs("deployed", &image, &previous_image),
                ..PhaseOutcome::default()
            });
        }
        Some(s) => {
            let index = s.version.as_ref().and_then(|v| v.index).unwrap_or(0);
            let options = UpdateServiceOptionsBuilder::default()
                .version(i32::try_from(index).unwrap_or(i32::MAX))
                .build();
            ctx.log(format!(
                "updating Swarm service {name}: {previous_image} -> {image} ({} at a time, monitor {}s, failure action rollback)",
                plan.parallelism,
                plan.monitor.as_secs_f64()
            ));
            docker
                .update_service(&name, wanted, options, registry_auth(&image))
                .await
                .map_err(|e| {
                    fail(format!(
                        "cannot update Swarm service {name}: {}",
                        describe(&e)
                    ))
                })?;
            let id = s.id.clone().unwrap_or_else(|| name.clone());
            if let Err(reason) = follow(ctx, &docker, &name).await {
                report_failed_tasks(ctx, &docker, &name).await;
                state.swarm = Some(SwarmService {
                    endpoint: endpoint.clone(),
                    id,
                    name: name.clone(),
                });
                state.record("rolled_back", &image, &reason);
                let _ = sd.save(&state);
                let mut out = outputs("rolled_back", &previous_image, &previous_image);
                out.insert("reason".into(), reason.clone());
                write_report(
                    ctx,
                    &DeploymentReport {
                        format_version: 1,
                        service: plan.service.clone(),
                        strategy: "rolling".into(),
                        status: "rolled_back".into(),
                        image: image.clone(),
                        version: previous_image.clone(),
                        previous: previous_image.clone(),
                        url: url.clone(),
                        steps: Vec::new(),
                        reason: reason.clone(),
                        switch_ms: None,
                        rollback_ms: None,
                        drift: Vec::new(),
                    },
                );
                return Err(PhaseError::FailedWithOutputs {
                    message: format!(
                        "rolling update of `{}` to {image} rolled back: {reason}; {previous_image} keeps serving",
                        plan.service
                    ),
                    outputs: out,
                });
            }
            id
        }
    };
    state.swarm = Some(SwarmService {
        endpoint: endpoint.clone(),
        id,
        name: name.clone(),
    });
    state.engine = endpoint;
    state.strategy = "rolling".into();
    state.generation += 1;
    state.previous = state.current.take();
    state.current = Some(Release {
        image: image.clone(),
        image_id: String::new(),
        digests: Vec::new(),
        version,
        port: plan.port,
        containers: Vec::new(),
        deployed_at: now(),
        run_id: ctx.run_id().to_string(),
    });
    state.record("deployed", &image, "");
    sd.save(&state).map_err(|e| fail(e.to_string()))?;
    let drift = audit(&docker, &state).await;
    for d in &drift {
        ctx.log(format!("drift: {d}"));
    }
    let mut out = outputs("deployed", &image, &previous_image);
    out.insert("drift".into(), drift.len().to_string());
    write_report(
        ctx,
        &DeploymentReport {
            format_version: 1,
            service: plan.service.clone(),
            strategy: "rolling".into(),
            status: "deployed".into(),
            image: image.clone(),
            version: image.clone(),
            previous: previous_image,
            url,
            steps: Vec::new(),
            reason: String::new(),
            switch_ms: None,
            rollback_ms: None,
            drift,
        },
    );
    Ok(PhaseOutcome {
        outputs: out,
        ..PhaseOutcome::default()
    })
}

/// Waits until a new service runs its replicas (each task running).
async fn wait_running(
    ctx: &PhaseContext,
    docker: &Docker,
    name: &str,
    plan: &DeployPlan,
) -> Result<(), PhaseError> {
    let deadline = tokio::time::Instant::now() + plan.health.within;
    loop {
        let tasks = tasks(docker, name).await.map_err(fail)?;
        let running = tasks
            .iter()
            .filter(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
                    && t.desired_state == Some(TaskState::RUNNING)
            })
            .count();
        if running >= plan.replicas as usize {
            ctx.log(format!("{name}: {running} task(s) running"));
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            report_failed_tasks(ctx, docker, name).await;
            return Err(fail(format!(
                "Swarm service {name} has {running} of {} tasks running after {}s",
                plan.replicas,
                plan.health.within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Follows an update until Swarm completes it (Ok) or rolls it back or pauses (Err, with
/// Swarm's message).
async fn follow(ctx: &PhaseContext, docker: &Docker, name: &str) -> Result<(), String> {
    let mut last = None;
    loop {
        let s = docker
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
            .map_err(|e| format!("cannot inspect Swarm service {name}: {}", describe(&e)))?;
        let status = s.update_status.unwrap_or_default();
        let state = status.state;
        let message = status.message.unwrap_or_default();
        if state != last {
            ctx.log(format!(
                "{name}: update {} {message}",
                state.map_or("pending".into(), |s| s.to_string())
            ));
            last = state;
        }
        match state {
            Some(ServiceUpdateStatusStateEnum::COMPLETED) => return Ok(()),
            Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                return Err(format!("Swarm rolled the update back ({message})"));
            }
            Some(ServiceUpdateStatusStateEnum::PAUSED) => {
                return Err(format!("Swarm paused the update ({message})"));
            }
            Some(ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED) => {
                return Err(format!("Swarm paused the rollback ({message})"));
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn tasks(docker: &Docker, name: &str) -> Result<Vec<bollard::models::Task>, String> {
    let filters = HashMap::from([("service".to_owned(), vec![name.to_owned()])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    docker
        .list_tasks(Some(options))
        .await
        .map_err(|e| format!("cannot list the tasks of {name}: {}", describe(&e)))
}

/// Logs the tasks that failed (their error and their last log lines).
async fn report_failed_tasks(ctx: &PhaseContext, docker: &Docker, name: &str) {
    let Ok(list) = tasks(docker, name).await else {
        return;
    };
    for t in list {
        let st = t.status.clone().unwrap_or_default();
        let failed =
            matches!(st.state, Some(TaskState::FAILED | TaskState::REJECTED)) || st.err.is_some();
        if !failed {
            continue;
        }
        let id = t.id.clone().unwrap_or_default();
        ctx.log(format!(
            "task {id} ({}): {} {}",
            t.spec
                .as_ref()
                .and_then(|s| s.container_spec.as_ref())
                .and_then(|c| c.image.clone())
                .unwrap_or_default(),
            st.state.map(|s| s.to_string()).unwrap_or_default(),
            st.err.or(st.message).unwrap_or_default()
        ));
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("50")
            .build();
        let mut stream = docker.task_logs(&id, Some(options));
        let collect = async {
            while let Some(Ok(chunk)) = stream.next().await {
                for line in String::from_utf8_lossy(&chunk.into_bytes()).lines() {
                    ctx.log(format!("[task {id}] {line}"));
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), collect).await;
    }
}

/// Swarm's rollback of a `rolling` service (what `orch rollback` does for one).
pub async fn rollback(
    ctx: &PhaseContext,
    sd: &ServiceDir,
    state: &mut ServiceState,
) -> Result<Outputs, String> {
    let Some(sw) = state.swarm.clone() else {
        return Err("not a Swarm service".into());
    };
    let docker = engine::connect(&sw.endpoint).await?;
    let s = docker
        .inspect_service(&sw.name, None::<InspectServiceOptions>)
        .await
        .map_err(|e| format!("cannot inspect Swarm service {}: {}", sw.name, describe(&e)))?;
    let spec = s.spec.clone().unwrap_or_default();
    let before = service_image(&s);
    let index = s.version.as_ref().and_then(|v| v.index).unwrap_or(0);
    let options = UpdateServiceOptionsBuilder::default()
        .version(i32::try_from(index).unwrap_or(i32::MAX))
        .rollback("previous")
        .build();
    docker
        .update_service(&sw.name, spec, options, None)
        .await
        .map_err(|e| {
            format!(
                "cannot roll back Swarm service {}: {}",
                sw.name,
                describe(&e)
            )
        })?;
    loop {
        let s = docker
            .inspect_service(&sw.name, None::<InspectServiceOptions>)
            .await
            .map_err(|e| format!("cannot inspect Swarm service {}: {}", sw.name, describe(&e)))?;
        match s.update_status.as_ref().and_then(|u| u.state) {
            Some(ServiceUpdateStatusStateEnum::ROLLBACK_COMPLETED) => {
                let after = service_image(&s);
                ctx.log(format!("{}: rolled back from {before} to {after}", sw.name));
                std::mem::swap(&mut state.current, &mut state.previous);
                state.record("rollback", &after, "orch rollback");
                sd.save(state).map_err(|e| e.to_string())?;
                return Ok(Outputs::from([
                    ("status".to_owned(), "rolled_back".to_owned()),
                    ("version".to_owned(), after),
                    ("previous".to_owned(), before),
                    ("url".to_owned(), String::new()),
                ]));
            }
            Some(
                ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED
                | ServiceUpdateStatusStateEnum::PAUSED,
            ) => {
                return Err(format!(
                    "Swarm paused the rollback of {}: {}",
                    sw.name,
                    s.update_status.and_then(|u| u.message).unwrap_or_default()
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Drift of a `rolling` service: the Swarm service's image and running tasks against the
/// state.
pub async fn audit(docker: &Docker, state: &ServiceState) -> Vec<String> {
    let Some(sw) = &state.swarm else {
        return Vec::new();
    };
    let mut drift = Vec::new();
    let s = match docker
        .inspect_service(&sw.name, None::<InspectServiceOptions>)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return vec![format!(
                "Swarm service {} is gone: {}",
                sw.name,
                describe(&e)
            )];
        }
    };
    let running_image = service_image(&s);
    if let Some(cur) = &state.current
        && !same_image(&running_image, &cur.image)
    {
        drift.push(format!(
            "Swarm service {} runs {running_image}, but {} was deployed",
            sw.name, cur.image
        ));
    }
    let want = s
        .spec
        .as_ref()
        .and_then(|s| s.mode.as_ref())
        .and_then(|m| m.replicated.as_ref())
        .and_then(|r| r.replicas)
        .unwrap_or(0);
    if let Ok(list) = tasks(docker, &sw.name).await {
        let running = list
            .iter()
            .filter(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
                    && t.desired_state == Some(TaskState::RUNNING)
            })
            .count();
        if i64::try_from(running).unwrap_or(i64::MAX) != want {
            drift.push(format!(
                "Swarm service {} has {running} running tasks, {want} wanted",
                sw.name
            ));
        }
    }
    drift
}

/// Removes a Swarm service (one already gone is fine).
pub async fn remove_service(docker: &Docker, name: &str) -> Result<(), String> {
    match docker.delete_service(name).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(format!(
            "cannot remove Swarm service {name}: {}",
            describe(&e)
        )),
    }
}
