//! The agent: version negotiation, health, and an engine that is not there.

use std::sync::Arc;

use orch_core::{Agent, AgentSpec, PhaseContext, PhaseError, PhaseId, WithTable};
use orch_docker::{DockerAgent, Endpoint};

use crate::support::{build_phase, engine, nonce};

#[tokio::test]
async fn agent_negotiates_the_api_version_and_is_healthy() {
    let Some(docker) = engine().await else { return };
    let endpoint = Endpoint::from_env().unwrap();
    let mut registry = orch_core::Registry::with_builtins();
    orch_docker::register(&mut registry).expect("the kinds register once");
    let spec = AgentSpec {
        name: "builder".into(),
        agent_type: "docker".into(),
        capacity: None,
        with: WithTable::new(toml::from_str(&format!("host = \"{endpoint}\"")).unwrap()),
        breaker: Default::default(),
        unavailable: Default::default(),
    };
    let agent = registry.build_agent(&spec, 8).unwrap();
    assert_eq!(agent.agent_type(), "docker");
    assert_eq!(agent.capacity(), orch_docker::DEFAULT_CAPACITY);
    assert_eq!(agent.endpoint(), endpoint.to_string());
    agent.health().await.unwrap();

    let any: &dyn std::any::Any = &*agent;
    let docker_agent = any.downcast_ref::<DockerAgent>().unwrap();
    let client = docker_agent.client().await.unwrap();
    let server = docker.version().await.unwrap();
    let server_api = server.api_version.unwrap();
    let (major, minor) = server_api.split_once('.').unwrap();
    let negotiated = client.client_version();
    assert!(
        (negotiated.major_version, negotiated.minor_version)
            <= (major.parse().unwrap(), minor.parse().unwrap()),
        "client speaks {negotiated} to a server of API {server_api}"
    );

    // Unknown settings are load errors that name the key.
    let bad = AgentSpec {
        with: WithTable::new(toml::from_str("hots = \"unix:///x\"").unwrap()),
        ..spec.clone()
    };
    let err = registry.build_agent(&bad, 1).err().unwrap();
    assert!(err.message.contains("hots"), "{}", err.message);
}

#[tokio::test]
async fn an_unreachable_engine_is_one_clear_error_naming_it() {
    // A socket path that does not exist.
    let dead = format!("/tmp/orch-dead-{}.sock", nonce());
    let agent = DockerAgent::new("builder", Endpoint::Unix(dead.clone().into()), 2);
    let err = agent.health().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "agent `builder` (unix://{dead}) is unavailable: no socket at {dead} (is the engine running?)"
        )
    );

    // A phase sent to it fails the same way.
    let dir = tempfile::tempdir().unwrap();
    let ctx = PhaseContext::builder(PhaseId::new("build").unwrap(), dir.path())
        .agent(Arc::new(agent))
        .build();
    let phase = build_phase(
        r#"context = "."
tags = ["x:1"]"#,
    );
    assert_eq!(
        phase.run(&ctx).await.unwrap_err(),
        PhaseError::failed(format!(
            "cannot reach the docker engine at unix://{dead}: no socket at {dead} (is the engine running?)"
        ))
    );

    // A socket file nobody listens on (an engine that died).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let agent = DockerAgent::new("builder", Endpoint::Unix(stale.clone()), 2);
    let err = agent.health().await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "agent `builder` (unix://{}) is unavailable: ",
            stale.display()
        )) && err.to_lowercase().contains("connection refused"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // A TCP port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let agent = DockerAgent::new(
        "remote",
        Endpoint::parse(&format!("tcp://127.0.0.1:{port}")).unwrap(),
        2,
    );
    let err = agent.health().await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "agent `remote` (tcp://127.0.0.1:{port}) is unavailable: "
        )) && err.to_lowercase().contains("connection refused"),
        "{err}"
    );
}
