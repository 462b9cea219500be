//! The `report` phase kind: renders reports of the run it is part of.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use orch_core::errors::RegistryError;
use orch_core::registry::Kind;
use orch_core::{
    Artifact, Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
    Registry,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{Format, ReportOptions};

/// The formats a `report` phase writes when `formats` is not set.
pub const DEFAULT_PHASE_FORMATS: [Format; 3] = [Format::Markdown, Format::Junit, Format::Html];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    formats: Option<Vec<String>>,
    #[serde(default)]
    output: Option<String>,
}

/// Registers the `report` kind (served by `local` agents).
pub fn register(registry: &mut Registry) -> Result<(), RegistryError> {
    registry.add_kind(
        Kind::new(
            "report",
            "render reports (md, junit, html, json, compliance, pdf) of the run so far",
        ),
        |spec: &PhaseSpec, settings: Settings| {
            let formats = match settings.formats {
                None => DEFAULT_PHASE_FORMATS.to_vec(),
                Some(names) => {
                    if names.is_empty() {
                        return Err(spec.with.error(
                            "`formats` is empty: name at least one of md, junit, html, json, \
                             compliance, pdf",
                        ));
                    }
                    let mut formats = Vec::new();
                    for name in &names {
                        let f = name
                            .parse::<Format>()
                            .map_err(|e| spec.with.error(e.to_string()))?;
                        if !formats.contains(&f) {
                            formats.push(f);
                        }
                    }
                    formats
                }
            };
            Ok(ReportPhase {
                formats,
                output: settings.output,
            })
        },
    )
}

/// Renders reports of the run so far (the phases finished before it) into a directory.
///
/// Outputs: `paths`, a JSON array of the files written. Artifacts: one of kind `report`
/// per file, with its SHA-256 digest and size.
#[derive(Clone, Debug)]
pub struct ReportPhase {
    formats: Vec<Format>,
    output: Option<String>,
}

impl ReportPhase {
    /// A phase writing `formats` into `output` (relative to the pipeline's directory;
    /// `None`: the run directory).
    pub fn new(formats: Vec<Format>, output: Option<String>) -> Self {
        Self { formats, output }
    }
}

/// Sets a flag when dropped: the engine drops the phase's future on timeout.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((format!("sha256:{hex}"), size))
}

#[async_trait]
impl Phase for ReportPhase {
    fn wants_run_snapshot(&self) -> bool {
        true
    }

    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let dir = self.output.as_deref().map_or_else(
            || "RUN_DIR".to_owned(),
            |o| ctx.resolve(o).display().to_string(),
        );
        let names: Vec<&str> = self.formats.iter().map(|f| f.as_str()).collect();
        let mut d = Description::new(format!("render {} reports into {dir}", names.join(", ")))
            .detail("formats", names.join(", "));
        for f in &self.formats {
            if f == &Format::Pdf {
                d = d.detail("pdf", "printed with headless chromium");
            }
            d = d.change(format!("write {dir}/{}", f.file_name()));
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let record = ctx.run_snapshot().ok_or_else(|| {
            PhaseError::failed("no run snapshot: the `report` kind runs inside a run")
        })?;
        let out_dir: PathBuf = match &self.output {
            Some(o) => ctx.resolve(o).map_err(|e| PhaseError::from_error(&e))?,
            None => ctx.run_dir().to_owned(),
        };
        let run_dir = ctx.run_dir().to_owned();
        let formats = self.formats.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let flag = cancel.clone();
        let redactor = ctx.redactor().clone();
        let task = tokio::task::spawn_blocking(move || {
            crate::write_reports_cancellable(
                &record,
                &run_dir,
                &formats,
                &out_dir,
                &ReportOptions::default(),
                &redactor,
                &flag,
            )
        });
        let result = tokio::select! {
            r = task => r.map_err(|e| PhaseError::failed(format!("report task failed: {e}")))?,
            () = ctx.cancelled().cancelled() => {
                cancel.store(true, Ordering::Relaxed);
                return Err(PhaseError::Cancelled);
            }
        };
        let paths = result.map_err(|e| PhaseError::from_error(&e))?;
        let mut outcome = PhaseOutcome::default();
        for path in &paths {
            ctx.log(format!("wrote {}", path.display()));
            let mut artifact = Artifact::new(
                "report",
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            artifact.path = Some(path.display().to_string());
            if let Ok((digest, size)) = sha256_file(path) {
                artifact.digest = Some(digest);
                artifact.size = Some(size);
            }
            outcome.artifacts.push(artifact);
        }
        let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        outcome
            .outputs
            .insert("paths".to_owned(), orch_core::list_output::encode(&list));
        Ok(outcome)
    }
}
