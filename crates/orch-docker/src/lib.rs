//! `orch-docker`: Docker phases for orch, on a real engine through [`bollard`].
//!
//! - the `docker` agent type ([`DockerAgent`]): one engine, from the agent's
//!   `with = { host = "unix:///..." | "tcp://..." }`, else `DOCKER_HOST`, else
//!   `unix:///var/run/docker.sock`; the API version is negotiated, so dockerd 20.10
//!   (API 1.41) and current engines both work; health check = ping; capacity default 2.
//! - `docker.build` ([`BuildPhase`]): builds a context (honouring `.dockerignore`), skips
//!   the build when one of its tags already names an image built with the same content
//!   hash. Outputs `image_id`,
//!   `tags` (JSON array), `cached` (`true`/`false`), `content_hash`.
//! - `docker.push` ([`PushPhase`]): pushes tags with credentials from the Docker config
//!   file or a secret. Outputs `digest` (`repo@sha256:...` of the first tag), `digests`
//!   (JSON object tag -> `repo@sha256:...`), `tags`.
//! - `docker.run` ([`RunPhase`]): runs a container; its exit code decides the status.
//!   Output `exit_code`, plus what the container prints as `::orch-output KEY=VALUE`
//!   lines (kept out of the log). Timeout and cancellation stop and remove the container.
//! - the `swarm` agent type ([`SwarmAgent`]): a Docker Swarm through a manager's API. A
//!   `docker.run` phase on it runs as a one-shot service placed by Swarm ([`job`]):
//!   `constraints`, `resources`, `placement_timeout`; secrets as Swarm secrets; outputs
//!   `node` and `task` too; the service is removed however the attempt ends, and what a
//!   killed run left is removed by the next run on the same state directory.
//! - [`artifacts_manifest`]: every image a run built or pushed, for
//!   `artifacts_manifest.json`.
//!
//! Every container and image orch makes carries the label `org.orch.run-id`.
//!
//! # Example
//!
//! Register the kinds and plan a build (no engine needed: building a phase and describing
//! it do no I/O):
//!
//! ```
//! use std::borrow::Cow;
//! use std::path::Path;
//!
//! use orch_core::interpolate::{Reference, Scope};
//! use orch_core::{InterpolationError, PhaseId, PhaseSpec, PlanContext, Registry, WithTable};
//!
//! let mut registry = Registry::with_builtins();
//! orch_docker::register(&mut registry).unwrap();
//!
//! let mut spec = PhaseSpec::new(PhaseId::new("build")?, "docker.build");
//! spec.with = WithTable::new(toml::toml! {
//!     context = "services/api"
//!     tags = ["127.0.0.1:5000/api:${{ vars.version }}"]
//!     build_args = { PROFILE = "release" }
//! });
//! let phase = registry.build_phase(&spec)?;
//!
//! struct Vars;
//! impl Scope for Vars {
//!     fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError> {
//!         match r {
//!             Reference::Var(k) if k == "version" => Ok(Cow::Borrowed("1.2.0")),
//!             other => Err(InterpolationError::UnknownVar { name: other.to_string() }),
//!         }
//!     }
//! }
//! let plan = phase.describe(&PlanContext::new(&spec.id, Path::new("/src"), &Vars));
//! assert_eq!(plan.summary, "build image 127.0.0.1:5000/api:1.2.0 from /src/services/api");
//! assert_eq!(plan.changes, ["image 127.0.0.1:5000/api:1.2.0 in the docker engine"]);
//!
//! // Settings are checked when the pipeline loads.
//! let mut bad = PhaseSpec::new(PhaseId::new("push")?, "docker.push");
//! bad.with = WithTable::new(toml::toml! { tags = "app:1"  username = "ci" });
//! let err = registry.build_phase(&bad).err().expect("username without password_secret");
//! assert!(err.message.contains("`username` needs `password_secret`"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod agent;
pub mod build;
pub mod cleanup;
mod common;
pub mod context;
pub mod credentials;
pub mod dockerignore;
pub mod errors;
pub mod job;
pub mod manifest;
mod output;
pub mod push;
pub mod reference;
pub mod run;
pub mod swarm;

use std::sync::Arc;

use orch_core::{Agent, AgentSpec, Registry};

pub use agent::{DEFAULT_CAPACITY, DockerAgent, Endpoint};
pub use build::{BuildPhase, BuildSettings, CONTENT_HASH_LABEL};
pub use cleanup::{PHASE_LABEL, RUN_LABEL};
pub use common::OneOrMany;
pub use errors::{ConnectError, ContextError, CredentialsError};
pub use job::{DEFAULT_PLACEMENT_TIMEOUT, ResourceSpec, Resources};
pub use manifest::{MANIFEST_FILE, artifacts_manifest, write_artifacts_manifest};
pub use output::MARKER as OUTPUT_MARKER;
pub use push::{PushPhase, PushSettings};
pub use run::{ContainerCommand, RunPhase, RunSettings};
pub use swarm::{DEFAULT_SWARM_CAPACITY, SESSION_LABEL, SwarmAgent};

/// Registers the `docker` and `swarm` agent types and the `docker.build`, `docker.push`
/// and `docker.run` kinds (`docker.run` also runs on `swarm` agents).
pub fn register(registry: &mut Registry) -> Result<(), orch_core::errors::RegistryError> {
    registry.register_agent_type(
        "docker",
        Arc::new(|spec: &AgentSpec, _jobs: usize| {
            Ok(Arc::new(DockerAgent::from_spec(spec)?) as Arc<dyn Agent>)
        }),
    )?;
    registry.register_agent_type(
        "swarm",
        Arc::new(|spec: &AgentSpec, _jobs: usize| {
            Ok(Arc::new(SwarmAgent::from_spec(spec)?) as Arc<dyn Agent>)
        }),
    )?;
    build::register(registry)?;
    push::register(registry)?;
    run::register(registry)?;
    registry.allow_agent_type("docker.run", "swarm");
    Ok(())
}
