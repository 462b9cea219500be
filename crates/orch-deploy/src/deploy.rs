//! The `deploy` kind, strategies `blue-green` and `canary`: new containers on a Docker
//! engine behind the service's HAProxy, health-checked before they get traffic, switched
//! at once or through canary steps judged from the proxy's own counters, and rolled back
//! automatically when anything fails.
//!
//! This module holds the phase and the report it leaves; `deployment.rs` runs a
//! blue-green or canary deployment, `canary.rs` judges canary steps, [`crate::traffic`]
//! moves traffic on the proxy and [`crate::rolling`] updates Swarm services.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use orch_core::{Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PlanContext};
use serde::Serialize;

use crate::deployment::Deployment;
use crate::engine;
use crate::settings::{DeployPlan, Strategy};

/// The state dir of the run a phase belongs to (`STATE_DIR/runs/RUN_ID` → `STATE_DIR`).
pub fn state_dir_of(ctx: &PhaseContext) -> PathBuf {
    ctx.run_dir()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ctx.base_dir().join(".orch"))
}

/// The engine a phase runs on: its agent's endpoint when the agent is a Docker or Swarm
/// engine, else `DOCKER_HOST` or the default socket.
pub fn endpoint_of(ctx: &PhaseContext) -> String {
    let agent = ctx.agent();
    match agent.agent_type() {
        "docker" | "swarm" => agent.endpoint(),
        _ => engine::default_endpoint(),
    }
}

/// A failure before anything changed for users.
pub(crate) fn fail(message: impl Into<String>) -> PhaseError {
    PhaseError::failed(message)
}

/// The `deploy` kind.
#[derive(Clone, Debug)]
pub struct DeployPhase {
    plan: DeployPlan,
}

impl DeployPhase {
    /// A phase for checked settings.
    pub fn new(plan: DeployPlan) -> Self {
        Self { plan }
    }
}

#[async_trait]
impl Phase for DeployPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let p = &self.plan;
        let image = ctx.render(&p.image);
        let how = match p.strategy {
            Strategy::BlueGreen => "blue-green".to_owned(),
            Strategy::Canary => format!(
                "canary {}",
                p.steps
                    .iter()
                    .map(|s| format!("{s}%"))
                    .collect::<Vec<_>>()
                    .join(" → ")
            ),
            Strategy::Rolling => format!("rolling, {} at a time", p.parallelism),
        };
        let mut d = Description::new(format!(
            "deploy {image} to `{}` ({how}, {} replica{})",
            p.service,
            p.replicas,
            if p.replicas == 1 { "" } else { "s" }
        ));
        if !p.listen.is_empty() {
            d = d.detail("listen", ctx.render(&p.listen));
        }
        d = d
            .detail(
                "health",
                format!("GET {} on port {}", p.health.path, p.port),
            )
            .change(format!("service `{}` serves {image}", p.service));
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        match self.plan.strategy {
            Strategy::Rolling => crate::rolling::run(ctx, &self.plan).await,
            _ => Deployment::prepare(ctx, &self.plan).await?.run().await,
        }
    }
}

/// One canary step, as judged.
#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    /// Traffic share of the new version (percent).
    pub percent: u8,
    /// Length of the observation.
    pub window_ms: u64,
    /// Responses of the new version.
    pub requests: u64,
    /// Of which errors (>= 500, broken).
    pub errors: u64,
    /// `errors / requests` (0 when none).
    pub error_rate: f64,
    /// Responses of the old version in the same window.
    pub old_requests: u64,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
}

/// What a deployment leaves for reports: `STATE_DIR/runs/RUN_ID/deploy/PHASE.json`.
#[derive(Clone, Debug, Serialize)]
pub struct DeploymentReport {
    /// Format version of this file.
    pub format_version: u32,
    /// The service.
    pub service: String,
    /// The strategy.
    pub strategy: String,
    /// `deployed` or `rolled_back`.
    pub status: String,
    /// The image deployed.
    pub image: String,
    /// The image now serving.
    pub version: String,
    /// The image served before.
    pub previous: String,
    /// Where users reach it.
    pub url: String,
    /// Canary steps, in order.
    pub steps: Vec<StepResult>,
    /// Why it rolled back.
    pub reason: String,
    /// Milliseconds from "new version healthy" to "all traffic on it" (blue-green).
    pub switch_ms: Option<u64>,
    /// Milliseconds from "failure detected" to "all traffic back" (rollbacks).
    pub rollback_ms: Option<u64>,
    /// Drift the post-deployment audit found.
    pub drift: Vec<String>,
}

/// Writes the report of a deployment into the run directory (a failure is logged).
pub(crate) fn write_report(ctx: &PhaseContext, report: &DeploymentReport) {
    let path = ctx
        .run_dir()
        .join("deploy")
        .join(format!("{}.json", ctx.phase_id()));
    if let Err(e) = ctx.write_json(&path, report) {
        ctx.log(format!("cannot write the deployment report: {e}"));
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `sha256:0123456789ab`.
pub(crate) fn short_id(id: &str) -> String {
    id.chars().take(19).collect()
}
