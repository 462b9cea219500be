//! The Docker engine side of a deployment (bollard): images, the service's containers,
//! their logs.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, RestartPolicy};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::state::Instance;

/// Label on every container a deployment starts: the service.
pub const SERVICE_LABEL: &str = "org.orch.deploy.service";
/// Label on every container a deployment starts: the version (tag or short digest).
pub const VERSION_LABEL: &str = "org.orch.deploy.version";
/// Label on every container a deployment starts: the run that started it.
pub const RUN_LABEL: &str = "org.orch.deploy.run-id";

/// The default engine: `DOCKER_HOST`, else the default socket.
pub fn default_endpoint() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_owned(),
        _ => "unix:///var/run/docker.sock".to_owned(),
    }
}

/// One line for an engine error: the engine's words for server errors, else the chain.
pub fn describe(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("the engine answered {status_code}: {}", message.trim()),
        other => {
            let mut message = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let text = s.to_string();
                if !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
                source = s.source();
            }
            message
        }
    }
}

/// Connects to `unix:///PATH` or `tcp://HOST:PORT` and negotiates the API version.
pub async fn connect(endpoint: &str) -> Result<Docker, String> {
    let client = if let Some(path) = endpoint.strip_prefix("unix://") {
        if !std::path::Path::new(path).exists() {
            return Err(format!(
                "no Docker engine at {endpoint} (no socket there; is dockerd running?)"
            ));
        }
        Docker::connect_with_unix(path, 600, bollard::API_DEFAULT_VERSION)
    } else if let Some(addr) = endpoint
        .strip_prefix("tcp://")
        .or_else(|| endpoint.strip_prefix("http://"))
    {
        Docker::connect_with_http(
            &format!("tcp://{}", addr.trim_end_matches('/')),
            600,
            bollard::API_DEFAULT_VERSION,
        )
    } else {
        return Err(format!(
            "`{endpoint}`: the Docker engine must be `unix:///PATH` or `tcp://HOST:PORT`"
        ));
    }
    .map_err(|e| {
        format!(
            "cannot connect to the Docker engine at {endpoint}: {}",
            describe(&e)
        )
    })?;
    match tokio::time::timeout(Duration::from_secs(10), client.negotiate_version()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!(
            "the Docker engine at {endpoint} does not answer: {}",
            describe(&e)
        )),
        Err(_) => Err(format!(
            "the Docker engine at {endpoint} did not answer within 10s"
        )),
    }
}

/// An image the engine holds.
#[derive(Clone, Debug)]
pub struct ImageInfo {
    /// `sha256:...`.
    pub id: String,
    /// `repo@sha256:...` for each registry it came from.
    pub digests: Vec<String>,
}

/// Finds an image, pulling it once when the engine does not hold it.
pub async fn ensure_image(docker: &Docker, image: &str) -> Result<ImageInfo, String> {
    match docker.inspect_image(image).await {
        Ok(i) => {
            return Ok(ImageInfo {
                id: i.id.unwrap_or_default(),
                digests: i.repo_digests.unwrap_or_default(),
            });
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(format!("cannot inspect image {image}: {}", describe(&e))),
    }
    let (repo, tag) = split_reference(image);
    let options = CreateImageOptionsBuilder::default()
        .from_image(&repo)
        .tag(&tag)
        .build();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            return Err(format!(
                "image {image} does not exist in the engine and cannot be pulled: {}",
                describe(&e)
            ));
        }
    }
    let i = docker.inspect_image(image).await.map_err(|e| {
        format!(
            "image {image} does not exist in the engine after a pull: {}",
            describe(&e)
        )
    })?;
    Ok(ImageInfo {
        id: i.id.unwrap_or_default(),
        digests: i.repo_digests.unwrap_or_default(),
    })
}

/// `repo[:tag][@digest]` as the pull API wants it: the repository and the tag or digest.
pub fn split_reference(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        let repo = strip_tag(repo);
        return (repo.to_owned(), digest.to_owned());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (
            image[..last_slash + i].to_owned(),
            image[last_slash + i + 1..].to_owned(),
        ),
        None => (image.to_owned(), "latest".to_owned()),
    }
}

fn strip_tag(repo: &str) -> &str {
    let last_slash = repo.rfind('/').map_or(0, |i| i + 1);
    match repo[last_slash..].rfind(':') {
        Some(i) => &repo[..last_slash + i],
        None => repo,
    }
}

/// A short version label for an image: its tag, else the first 12 hex digits of its
/// digest, else of its id; only `[A-Za-z0-9_.-]`.
pub fn version_label(image: &str, id: &str) -> String {
    let raw = if let Some((_, digest)) = image.split_once('@') {
        digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    } else {
        let last_slash = image.rfind('/').map_or(0, |i| i + 1);
        match image[last_slash..].rfind(':') {
            Some(i) => image[last_slash + i + 1..].to_owned(),
            None => id.trim_start_matches("sha256:").chars().take(12).collect(),
        }
    };
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    if clean.is_empty() {
        "latest".into()
    } else {
        clean
    }
}

/// What a new container runs.
#[derive(Clone, Debug)]
pub struct ContainerSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// The image (its id, so that a moving tag cannot change what starts).
    pub image: &'a str,
    /// The service.
    pub service: &'a str,
    /// The version label.
    pub version: &'a str,
    /// The run.
    pub run_id: &'a str,
    /// The container port served on 127.0.0.1.
    pub port: u16,
    /// `KEY=VALUE`s.
    pub env: Vec<String>,
}

/// Creates and starts a container whose port is published on an ephemeral port of
/// 127.0.0.1; returns it with that port.
pub async fn start_container(
    docker: &Docker,
    spec: &ContainerSpec<'_>,
) -> Result<Instance, String> {
    let port_key = format!("{}/tcp", spec.port);
    let labels = HashMap::from([
        (SERVICE_LABEL.to_owned(), spec.service.to_owned()),
        (VERSION_LABEL.to_owned(), spec.version.to_owned()),
        (RUN_LABEL.to_owned(), spec.run_id.to_owned()),
    ]);
    let body = ContainerCreateBody {
        image: Some(spec.image.to_owned()),
        env: Some(spec.env.clone()),
        labels: Some(labels),
        exposed_ports: Some(vec![port_key.clone()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                port_key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            restart_policy: Some(RestartPolicy {
                name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let options = CreateContainerOptionsBuilder::default()
        .name(spec.name)
        .build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| format!("cannot create container {}: {}", spec.name, describe(&e)))?;
    docker
        .start_container(
            spec.name,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(|e| format!("cannot start container {}: {}", spec.name, describe(&e)))?;
    let host_port = published_port(docker, spec.name, spec.port).await?;
    Ok(Instance {
        name: spec.name.to_owned(),
        id: created.id,
        host_port,
    })
}

/// The 127.0.0.1 port where a container's port is published.
pub async fn published_port(docker: &Docker, name: &str, port: u16) -> Result<u16, String> {
    let info = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .map_err(|e| format!("cannot inspect container {name}: {}", describe(&e)))?;
    info.network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| format!("container {name} has no published port for {port}/tcp"))
}

/// What the engine says of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Whether it runs.
    pub running: bool,
    /// `running`, `exited`, ...
    pub status: String,
    /// Its exit code, when it ended.
    pub exit_code: Option<i64>,
    /// The image id it runs.
    pub image_id: String,
    /// The published host port of the service port, if any.
    pub host_port: Option<u16>,
}

/// Inspects a container; `None` when the engine does not know it.
pub async fn status(
    docker: &Docker,
    name: &str,
    port: u16,
) -> Result<Option<ContainerStatus>, String> {
    match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => {
            let state = info.state.unwrap_or_default();
            let host_port = info
                .network_settings
                .and_then(|n| n.ports)
                .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
                .and_then(|b| b.into_iter().find_map(|b| b.host_port))
                .and_then(|p| p.parse::<u16>().ok());
            Ok(Some(ContainerStatus {
                running: state.running.unwrap_or(false),
                status: state.status.map(|s| s.to_string()).unwrap_or_default(),
                exit_code: state.exit_code,
                image_id: info.image.unwrap_or_default(),
                host_port,
            }))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(format!("cannot inspect container {name}: {}", describe(&e))),
    }
}

/// The last `tail` lines a container wrote (stdout and stderr).
pub async fn logs(docker: &Docker, name: &str, tail: usize) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&tail.to_string())
        .build();
    let mut stream = docker.logs(name, Some(options));
    let mut out = String::new();
    let collect = async {
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), collect).await;
    out
}

/// Stops (1 s grace) and removes a container; one already gone is fine.
pub async fn remove(docker: &Docker, name: &str) -> Result<(), String> {
    let stop = StopContainerOptionsBuilder::default().t(1).build();
    let _ = docker.stop_container(name, Some(stop)).await;
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(name, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(e) => Err(format!("cannot remove container {name}: {}", describe(&e))),
    }
}

/// Names of every container (running or not) labelled with the service.
pub async fn service_containers(docker: &Docker, service: &str) -> Result<Vec<String>, String> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{SERVICE_LABEL}={service}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker.list_containers(Some(options)).await.map_err(|e| {
        format!(
            "cannot list the containers of `{service}`: {}",
            describe(&e)
        )
    })?;
    let mut names: Vec<String> = list
        .into_iter()
        .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
        .map(|n| n.trim_start_matches('/').to_owned())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_for_pulls() {
        assert_eq!(
            split_reference("127.0.0.1:5000/shop/web:1.2"),
            ("127.0.0.1:5000/shop/web".into(), "1.2".into())
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/web"),
            ("127.0.0.1:5000/web".into(), "latest".into())
        );
        assert_eq!(
            split_reference("r:5000/web:1@sha256:abc"),
            ("r:5000/web".into(), "sha256:abc".into())
        );
    }

    #[test]
    fn versions_label_images() {
        assert_eq!(
            version_label("127.0.0.1:5000/web:1.2.0", "sha256:ff"),
            "1.2.0"
        );
        assert_eq!(
            version_label("r/web@sha256:0123456789abcdef", "sha256:ff"),
            "0123456789ab"
        );
        assert_eq!(
            version_label("web", "sha256:aabbccddeeff0011"),
            "aabbccddeeff"
        );
    }
}
