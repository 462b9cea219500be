//! Containers never outlive their phase: a guard removes them when the phase's future is
//! dropped (timeout), and the cancel path stops them gracefully first.

use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{RemoveContainerOptionsBuilder, StopContainerOptionsBuilder};

use crate::agent::{Endpoint, describe};

/// How long a drop waits for the engine to remove a container.
const DROP_REMOVAL_LIMIT: Duration = Duration::from_secs(30);

/// Label on every container and image orch makes: the run that made it.
pub const RUN_LABEL: &str = "org.orch.run-id";
/// Label on every container and image orch makes: the phase that made it.
pub const PHASE_LABEL: &str = "org.orch.phase-id";

/// How long a removal may take before we stop waiting for the container to be gone.
const GONE_LIMIT: Duration = Duration::from_secs(15);

/// Force-removes a container (and its anonymous volumes) and returns once it is gone; a
/// container already gone is fine.
pub(crate) async fn force_remove(docker: &Docker, name: &str) -> Result<(), String> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        // "removal of container ... is already in progress" (the engine cleaning up a
        // cancelled build step): wait for it below.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(e) => return Err(describe(&e)),
    }
    wait_gone(docker, name, GONE_LIMIT).await
}

/// Polls until the engine no longer knows the container.
async fn wait_gone(docker: &Docker, name: &str, limit: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) => return Err(describe(&e)),
            Ok(_) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "container {name} still exists {}s after its removal",
                    limit.as_secs()
                ));
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Stops a container (SIGTERM, then SIGKILL after `grace`), then removes it.
pub(crate) async fn stop_and_remove(
    docker: &Docker,
    name: &str,
    grace: Duration,
) -> Result<(), String> {
    let secs = grace.as_secs_f64().ceil().clamp(0.0, i32::MAX as f64) as i32;
    let options = StopContainerOptionsBuilder::default().t(secs).build();
    match docker.stop_container(name, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304 | 404,
            ..
        }) => {}
        Err(e) => tracing::warn!("cannot stop container {name}: {}", describe(&e)),
    }
    force_remove(docker, name).await
}

/// Removes a container when dropped, unless [`ContainerGuard::disarm`] was called.
///
/// The removal is synchronous: a dedicated thread with its own runtime and connection
/// does it while the dropping thread waits (at most 30 s), so it happens even when the
/// dropping runtime is shutting down.
#[derive(Debug)]
pub(crate) struct ContainerGuard {
    endpoint: Endpoint,
    name: Option<String>,
}

impl ContainerGuard {
    /// Guards the container `name` (the name is known before the container exists, so a
    /// drop during creation is covered too).
    pub(crate) fn new(endpoint: Endpoint, name: impl Into<String>) -> Self {
        Self {
            endpoint,
            name: Some(name.into()),
        }
    }

    /// The guarded container's name or id (empty once disarmed).
    pub(crate) fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// The container is handled: do nothing on drop.
    pub(crate) fn disarm(&mut self) {
        self.name = None;
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            remove_blocking(&self.endpoint, &name, DROP_REMOVAL_LIMIT);
        }
    }
}

/// Force-removes a container from any context (async or not), waiting at most `limit`.
pub(crate) fn remove_blocking(endpoint: &Endpoint, name: &str, limit: Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let endpoint = endpoint.clone();
    let owned = name.to_owned();
    let spawned = std::thread::Builder::new()
        .name("orch-docker-cleanup".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(async {
                        let docker = endpoint.connect().await.map_err(|e| e.to_string())?;
                        force_remove(&docker, &owned).await
                    })
                });
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot remove container {name}: no thread: {e}");
        return;
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => tracing::debug!("removed container {name}"),
        Ok(Err(e)) => tracing::warn!("cannot remove container {name}: {e}"),
        Err(_) => tracing::warn!(
            "cannot remove container {name}: the engine did not answer within {}s",
            limit.as_secs()
        ),
    }
}
