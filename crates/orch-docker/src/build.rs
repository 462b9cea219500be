//! `docker.build`: builds an image from a context directory.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, TagImageOptionsBuilder};
use futures_util::StreamExt;
use orch_core::errors::RegistryError;
use orch_core::interpolate::Reference;
use orch_core::registry::Kind;
use orch_core::{
    Artifact, Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec,
    PlanContext, Stream,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::agent::Endpoint;
use crate::cleanup::{ContainerGuard, PHASE_LABEL, RUN_LABEL};
use crate::common::{OneOrMany, engine, engine_error, millis, render, server_message};
use crate::context::{self, PackedContext, hex};
use crate::reference::ImageRef;

/// Label holding the content hash of the context and build settings.
pub const CONTENT_HASH_LABEL: &str = "org.orch.content-hash";

const OCI_CREATED: &str = "org.opencontainers.image.created";
const OCI_VERSION: &str = "org.opencontainers.image.version";
const OCI_REVISION: &str = "org.opencontainers.image.revision";
const OCI_SOURCE: &str = "org.opencontainers.image.source";

/// The `with` table of `docker.build`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSettings {
    /// The context directory, relative to the pipeline file (default `.`).
    #[serde(default)]
    pub context: Option<String>,
    /// The Dockerfile, relative to the pipeline file, else to the context (default
    /// `CONTEXT/Dockerfile`).
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Tags to give the image (templates).
    #[serde(default)]
    pub tags: OneOrMany,
    /// `--build-arg` values (templates).
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// The stage to build.
    #[serde(default)]
    pub target: Option<String>,
    /// Labels (templates); they override the OCI labels filled by default.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Build without the engine's layer cache (and without the up-to-date check).
    #[serde(default)]
    pub no_cache: bool,
    /// Build even when an image with the same content hash exists.
    #[serde(default)]
    pub force: bool,
    /// `org.opencontainers.image.revision` (template; default `${{ vars.revision }}`
    /// when that var exists).
    #[serde(default)]
    pub revision: Option<String>,
    /// `org.opencontainers.image.source` (template; default `${{ vars.source }}` when
    /// that var exists).
    #[serde(default)]
    pub source: Option<String>,
}

/// Builds an image; see the crate docs for settings and outputs.
#[derive(Clone, Debug)]
pub struct BuildPhase {
    settings: BuildSettings,
}

impl BuildPhase {
    /// A phase with these settings.
    pub fn new(settings: BuildSettings) -> Self {
        Self { settings }
    }

    /// Checks a declaration and its parsed `with` settings (no I/O).
    pub fn from_settings(spec: &PhaseSpec, settings: BuildSettings) -> Result<Self, KindError> {
        let bad = |message: String| KindError {
            message: format!("phase `{}`: {message}", spec.id),
            span: spec.with.span(),
        };
        for tag in settings.tags.to_vec() {
            if !tag.contains("${{") {
                ImageRef::parse(&tag).map_err(|e| bad(format!("`tags`: {e}")))?;
            }
        }
        if settings.context.as_deref() == Some("") {
            return Err(bad("`context` is empty".into()));
        }
        Ok(Self::new(settings))
    }

    /// The settings.
    pub fn settings(&self) -> &BuildSettings {
        &self.settings
    }
}

/// Settings after rendering.
#[derive(Debug)]
struct Rendered {
    context: std::path::PathBuf,
    dockerfile: Option<String>,
    tags: Vec<ImageRef>,
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    /// OCI defaults merged with the user's labels, without `created`.
    labels: BTreeMap<String, String>,
}

fn var(ctx: &PhaseContext, name: &str) -> Option<String> {
    ctx.lookup(&Reference::Var(name.to_owned()))
        .ok()
        .map(|v| v.into_owned())
        .filter(|v| !v.is_empty())
}

impl BuildPhase {
    fn render(&self, ctx: &PhaseContext) -> Result<Rendered, PhaseError> {
        let s = &self.settings;
        let context = ctx
            .resolve(s.context.as_deref().unwrap_or("."))
            .map_err(|e| PhaseError::failed(format!("cannot render `context`: {e}")))?;
        let dockerfile = s
            .dockerfile
            .as_deref()
            .map(|d| render(ctx, "dockerfile", d))
            .transpose()?;
        let mut tags = Vec::new();
        for t in s.tags.to_vec() {
            let text = render(ctx, "tags", &t)?;
            let r =
                ImageRef::parse(&text).map_err(|e| PhaseError::failed(format!("`tags`: {e}")))?;
            if r.digest.is_some() {
                return Err(PhaseError::failed(format!(
                    "`tags`: `{text}` has a digest; a tag cannot"
                )));
            }
            tags.push(r);
        }
        let mut build_args = BTreeMap::new();
        for (k, v) in &s.build_args {
            build_args.insert(k.clone(), render(ctx, &format!("build_args.{k}"), v)?);
        }
        let target = s
            .target
            .as_deref()
            .map(|t| render(ctx, "target", t))
            .transpose()?
            .filter(|t| !t.is_empty());
        let mut labels = BTreeMap::new();
        if let Some(v) = var(ctx, "version") {
            labels.insert(OCI_VERSION.to_owned(), v);
        }
        let revision = match &s.revision {
            Some(r) => Some(render(ctx, "revision", r)?),
            None => var(ctx, "revision"),
        };
        if let Some(r) = revision.filter(|r| !r.is_empty()) {
            labels.insert(OCI_REVISION.to_owned(), r);
        }
        let source = match &s.source {
            Some(r) => Some(render(ctx, "source", r)?),
            None => var(ctx, "source"),
        };
        if let Some(r) = source.filter(|r| !r.is_empty()) {
            labels.insert(OCI_SOURCE.to_owned(), r);
        }
        for (k, v) in &s.labels {
            labels.insert(k.clone(), render(ctx, &format!("labels.{k}"), v)?);
        }
        Ok(Rendered {
            context,
            dockerfile,
            tags,
            build_args,
            target,
            labels,
        })
    }
}

/// `sha256:` over the packed context and every setting that changes the image (not the
/// tags, not the `created` time, not the run id).
fn content_hash(packed: &PackedContext, r: &Rendered) -> String {
    let settings = serde_json::json!({
        "format": 1,
        "context": packed.content_sha256,
        "dockerfile": packed.dockerfile,
        "build_args": r.build_args,
        "target": r.target,
        "labels": r.labels,
    });
    let mut h = Sha256::new();
    h.update(settings.to_string().as_bytes());
    format!("sha256:{}", hex(&h.finalize()))
}

/// What one build (or cache hit) produced.
struct Built {
    image_id: String,
    size: Option<u64>,
    cached: bool,
}

#[async_trait]
impl Phase for BuildPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let s = &self.settings;
        let context = ctx.resolve(s.context.as_deref().unwrap_or("."));
        let tags: Vec<String> = s.tags.to_vec().iter().map(|t| ctx.render(t)).collect();
        let summary = if tags.is_empty() {
            format!("build an image from {}", context.display())
        } else {
            format!("build image {} from {}", tags.join(", "), context.display())
        };
        let mut d = Description::new(summary);
        if let Some(df) = &s.dockerfile {
            d = d.detail("dockerfile", ctx.render(df));
        }
        if let Some(t) = &s.target {
            d = d.detail("target", ctx.render(t));
        }
        if !s.build_args.is_empty() {
            d = d.detail(
                "build_args",
                s.build_args.keys().cloned().collect::<Vec<_>>().join(", "),
            );
        }
        if s.no_cache || s.force {
            d = d.detail("cache", if s.no_cache { "no_cache" } else { "force" });
        } else {
            d = d.detail(
                "cache",
                "skipped when a tag already names an image with the same content hash",
            );
        }
        for t in tags {
            d = d.change(format!("image {t} in the docker engine"));
        }
        if s.tags.to_vec().is_empty() {
            d = d.change("an untagged image in the docker engine");
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let started = Instant::now();
        let r = self.render(ctx)?;
        let (docker, endpoint) = engine(ctx).await?;
        let context_dir = r.context.clone();
        let base = ctx.base_dir().to_owned();
        let dockerfile_setting = r.dockerfile.clone();
        let labels_in_dockerfile = r.target.is_none();
        let packed = tokio::task::spawn_blocking(move || {
            let df =
                context::locate_dockerfile(&base, &context_dir, dockerfile_setting.as_deref())?;
            // Labels go into the Dockerfile as one `LABEL` line (the classic builder makes a
            // step per build label); with a `target` they must reach that stage, so they
            // stay build labels then.
            context::pack(&context_dir, &df, labels_in_dockerfile)
        })
        .await
        .map_err(|e| PhaseError::failed(format!("packing the context failed: {e}")))?
        .map_err(|e| PhaseError::from_error(&e))?;
        let hash = content_hash(&packed, &r);
        ctx.log(format!(
            "context {}: {} files, {} bytes; content hash {hash}",
            r.context.display(),
            packed.files,
            packed.bytes
        ));

        let skip_check = self.settings.force || self.settings.no_cache;
        let cached = if skip_check {
            None
        } else {
            find_cached(&docker, &endpoint, &r.tags, &hash).await?
        };
        let built = match cached {
            Some(image_id) => {
                ctx.log(format!(
                    "up to date: image {image_id} already has content hash {hash}; not building (set `force = true` to rebuild)"
                ));
                Built {
                    image_id,
                    size: None,
                    cached: true,
                }
            }
            None => {
                self.build(ctx, &docker, &endpoint, &r, packed, &hash)
                    .await?
            }
        };
        for t in &r.tags {
            tag(&docker, &endpoint, &built.image_id, t).await?;
        }
        let size = match built.size {
            Some(s) => Some(s),
            None => docker
                .inspect_image(&built.image_id)
                .await
                .ok()
                .and_then(|i| i.size)
                .and_then(|s| u64::try_from(s).ok()),
        };
        let duration_ms = millis(started.elapsed());
        let tags: Vec<String> = r.tags.iter().map(ToString::to_string).collect();
        let tags_json = orch_core::list_output::encode(&tags);
        if !tags.is_empty() {
            ctx.log(format!("tagged {}", tags.join(", ")));
        }

        let mut artifact = Artifact::new(
            "image",
            tags.first()
                .cloned()
                .unwrap_or_else(|| built.image_id.clone()),
        );
        artifact.digest = Some(built.image_id.clone());
        artifact.size = size;
        artifact.details = BTreeMap::from([
            ("tags".to_owned(), serde_json::json!(tags)),
            ("image_id".to_owned(), serde_json::json!(built.image_id)),
            ("registry_digest".to_owned(), serde_json::Value::Null),
            (
                "build_duration_ms".to_owned(),
                serde_json::json!(duration_ms),
            ),
            ("cached".to_owned(), serde_json::json!(built.cached)),
            ("content_hash".to_owned(), serde_json::json!(hash)),
        ]);
        let mut outcome = PhaseOutcome::with_outputs([
            ("image_id", built.image_id.clone()),
            ("tags", tags_json),
            ("cached", built.cached.to_string()),
            ("content_hash", hash),
        ]);
        outcome.artifacts.push(artifact);
        Ok(outcome)
    }
}

impl BuildPhase {
    async fn build(
        &self,
        ctx: &PhaseContext,
        docker: &Docker,
        endpoint: &Endpoint,
        r: &Rendered,
        packed: PackedContext,
        hash: &str,
    ) -> Result<Built, PhaseError> {
        let mut labels = r.labels.clone();
        labels
            .entry(OCI_CREATED.to_owned())
            .or_insert_with(|| orch_core::record::rfc3339(std::time::SystemTime::now()));
        labels.insert(CONTENT_HASH_LABEL.to_owned(), hash.to_owned());
        labels.insert(RUN_LABEL.to_owned(), ctx.run_id().to_string());
        labels.insert(PHASE_LABEL.to_owned(), ctx.phase_id().to_string());
        let dockerfile = packed.dockerfile.clone();
        let finished = packed
            .finish(&labels)
            .map_err(|e| PhaseError::from_error(&e))?;
        let options = BuildImageOptions {
            dockerfile,
            nocache: self.settings.no_cache,
            rm: true,
            forcerm: true,
            buildargs: (!r.build_args.is_empty())
                .then(|| r.build_args.clone().into_iter().collect()),
            labels: (!finished.labels_in_dockerfile)
                .then(|| labels.into_iter().collect::<HashMap<_, _>>()),
            target: r.target.clone().unwrap_or_default(),
            ..BuildImageOptions::default()
        };
        ctx.log(format!(
            "building with the engine at {endpoint} ({} bytes of context)",
            finished.tar.len()
        ));
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_full(finished.tar.into())));

        // The container of the step that is running: removed if this future is dropped
        // (the engine also removes it when the connection closes; this makes it certain).
        let mut step_container: Option<ContainerGuard> = None;
        let mut last_step: Option<String> = None;
        let mut image_id: Option<String> = None;
        let mut short_id: Option<String> = None;
        let fail = |step: &Option<String>, error: String| {
            // "Step 3/4 : RUN exit 3" -> " at step 3/4 (RUN exit 3)"
            let at = step
                .as_deref()
                .map(|s| match s.split_once(" : ") {
                    Some((n, instruction)) => format!(" at step {n} ({})", instruction.trim()),
                    None => format!(" at step {s}"),
                })
                .unwrap_or_default();
            PhaseError::failed(format!("build failed{at}: {error}"))
        };
        loop {
            let item = tokio::select! {
                biased;
                () = ctx.cancelled().cancelled() => {
                    drop(stream);
                    if let Some(mut g) = step_container.take() {
                        // Stop the step's container the gentle way, then remove it.
                        let name = g.name().to_owned();
                        let _ = crate::cleanup::stop_and_remove(docker, &name, ctx.grace()).await;
                        g.disarm();
                    }
                    ctx.log("build cancelled");
                    return Err(PhaseError::Cancelled);
                }
                item = stream.next() => item,
            };
            let Some(item) = item else { break };
            match item {
                Ok(info) => {
                    if let Some(text) = &info.stream {
                        ctx.output(Stream::Stdout, text.as_bytes());
                        for line in text.lines() {
                            let line = line.trim();
                            if line.starts_with("Step ") {
                                last_step =
                                    Some(line.strip_prefix("Step ").unwrap_or(line).to_owned());
                            } else if let Some(id) = line.strip_prefix("---> Running in ") {
                                if let Some(mut old) = step_container.take() {
                                    old.disarm();
                                }
                                step_container =
                                    Some(ContainerGuard::new(endpoint.clone(), id.trim()));
                            } else if line.starts_with("Removing intermediate container ") {
                                if let Some(mut old) = step_container.take() {
                                    old.disarm();
                                }
                            } else if let Some(id) = line.strip_prefix("Successfully built ") {
                                short_id = Some(id.trim().to_owned());
                            }
                        }
                    }
                    if let Some(status) = &info.status {
                        ctx.log(status);
                    }
                    if let Some(id) = info.aux.as_ref().and_then(|a| a.id.clone()) {
                        image_id = Some(id);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(fail(&last_step, error.trim().to_owned()));
                }
                Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) => {
                    return Err(fail(&last_step, server_message(&e)));
                }
                Err(e) => return Err(engine_error(endpoint, "build the image", &e)),
            }
        }
        if let Some(mut g) = step_container.take() {
            g.disarm();
        }
        let id = image_id.or(short_id).ok_or_else(|| {
            fail(
                &last_step,
                "the engine ended the build without an image id".into(),
            )
        })?;
        let inspected = docker
            .inspect_image(&id)
            .await
            .map_err(|e| engine_error(endpoint, &format!("inspect the built image {id}"), &e))?;
        Ok(Built {
            image_id: inspected.id.unwrap_or(id),
            size: inspected.size.and_then(|s| u64::try_from(s).ok()),
            cached: false,
        })
    }
}

/// An image that one of `tags` names and that orch built with content hash `hash`.
///
/// Labels are inherited: an image built `FROM` an orch image carries its content hash
/// too. So the label must also have been set by the image's own last steps: walking its
/// history from the top, the hash appears before any step other than `LABEL`.
async fn find_cached(
    docker: &Docker,
    endpoint: &Endpoint,
    tags: &[ImageRef],
    hash: &str,
) -> Result<Option<String>, PhaseError> {
    for t in tags {
        let name = t.to_string();
        let image = match docker.inspect_image(&name).await {
            Ok(i) => i,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => continue,
            Err(e) => return Err(engine_error(endpoint, &format!("inspect {name}"), &e)),
        };
        let labelled = image
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(CONTENT_HASH_LABEL))
            .is_some_and(|h| h == hash);
        let Some(id) = image.id.filter(|_| labelled) else {
            continue;
        };
        let history = docker
            .image_history(&id)
            .await
            .map_err(|e| engine_error(endpoint, &format!("read the history of {name}"), &e))?;
        for step in history {
            if step.created_by.contains(hash) {
                return Ok(Some(id));
            }
            if !step.created_by.contains("LABEL") {
                break;
            }
        }
    }
    Ok(None)
}

async fn tag(
    docker: &Docker,
    endpoint: &Endpoint,
    image_id: &str,
    target: &ImageRef,
) -> Result<(), PhaseError> {
    let options = TagImageOptionsBuilder::default()
        .repo(&target.repository)
        .tag(target.tag_or_latest())
        .build();
    docker
        .tag_image(image_id, Some(options))
        .await
        .map_err(|e| engine_error(endpoint, &format!("tag {image_id} as {target}"), &e))
}

/// Registers `docker.build`.
pub(crate) fn register(registry: &mut orch_core::Registry) -> Result<(), RegistryError> {
    registry.add_kind(
        Kind::new(
            "docker.build",
            "build an image from a context directory (skipped when up to date)",
        )
        .agent_type("docker"),
        BuildPhase::from_settings,
    )
}
