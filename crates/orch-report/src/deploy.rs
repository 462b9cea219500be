//! The deployments section: what `deploy` phases left in `RUN_DIR/deploy/PHASE.json`
//! (format version 1, written by orch-deploy; read here as JSON, without depending on that
//! crate), or their outputs when the file is missing.

use std::path::Path;

use orch_core::RunRecord;
use serde::{Deserialize, Serialize};

use crate::sources::read_capped;

#[derive(Deserialize, Default)]
struct Doc {
    #[serde(default)]
    service: String,
    #[serde(default)]
    strategy: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    previous: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    steps: Vec<DocStep>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    switch_ms: Option<u64>,
    #[serde(default)]
    rollback_ms: Option<u64>,
    #[serde(default)]
    drift: Vec<String>,
}

#[derive(Deserialize, Clone)]
struct DocStep {
    percent: u64,
    #[serde(default)]
    window_ms: u64,
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    error_rate: f64,
    #[serde(default)]
    old_requests: u64,
    #[serde(default)]
    verdict: String,
}

/// One canary step, as the reports show it.
#[derive(Serialize)]
pub(crate) struct StepView {
    percent: u64,
    window_ms: u64,
    requests: u64,
    errors: u64,
    rate: String,
    old_requests: u64,
    verdict: String,
}

/// One deployment, as the reports show it.
#[derive(Serialize)]
pub(crate) struct DeploymentView {
    phase: String,
    service: String,
    strategy: String,
    /// `deployed`, `rolled_back`, or the phase's status when it did not get that far.
    status: String,
    class: &'static str,
    image: String,
    version: String,
    previous: String,
    url: String,
    steps: Vec<StepView>,
    reason: String,
    timing: String,
    drift: Vec<String>,
}

/// The deployments of a run, in phase order.
pub(crate) fn sections(record: &RunRecord, run_dir: &Path) -> Vec<DeploymentView> {
    record
        .phases
        .iter()
        .filter(|(_, p)| p.kind == "deploy" || p.kind == "deploy.rollback")
        .filter(|(_, p)| p.status.as_str() != "skipped")
        .map(|(id, p)| {
            let path = run_dir.join("deploy").join(format!("{id}.json"));
            let doc: Doc = read_capped(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_else(|| {
                    let o = |k: &str| p.outputs.get(k).cloned().unwrap_or_default();
                    Doc {
                        service: o("service"),
                        strategy: o("strategy"),
                        status: o("status"),
                        image: o("version"),
                        version: o("version"),
                        previous: o("previous"),
                        url: o("url"),
                        reason: p.reason.clone().unwrap_or_default(),
                        ..Doc::default()
                    }
                });
            let status = if doc.status.is_empty() {
                p.status.as_str().to_owned()
            } else {
                doc.status.clone()
            };
            let class = match status.as_str() {
                "deployed" | "succeeded" | "rolled_back" if p.kind == "deploy.rollback" => {
                    "succeeded"
                }
                "deployed" => "succeeded",
                _ => "failed",
            };
            let mut timing = Vec::new();
            if let Some(ms) = doc.switch_ms {
                timing.push(format!("switch {ms} ms after healthy"));
            }
            if let Some(ms) = doc.rollback_ms {
                timing.push(format!("traffic back {ms} ms after the failure"));
            }
            DeploymentView {
                phase: id.to_string(),
                service: doc.service,
                strategy: if p.kind == "deploy.rollback" {
                    "orch rollback".into()
                } else {
                    doc.strategy
                },
                status: status.replace('_', " "),
                class,
                image: doc.image,
                version: doc.version,
                previous: doc.previous,
                url: doc.url,
                steps: doc
                    .steps
                    .into_iter()
                    .map(|s| StepView {
                        percent: s.percent,
                        window_ms: s.window_ms,
                        requests: s.requests,
                        errors: s.errors,
                        rate: format!("{:.3}", s.error_rate),
                        old_requests: s.old_requests,
                        verdict: s.verdict,
                    })
                    .collect(),
                reason: if doc.reason.is_empty() {
                    p.reason.clone().unwrap_or_default()
                } else {
                    doc.reason
                },
                timing: timing.join("; "),
                drift: doc.drift,
            }
        })
        .collect()
}
