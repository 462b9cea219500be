//! `docker.push`: pushes tags to their registries and records the digests the registries
//! returned.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::PushImageOptionsBuilder;
use futures_util::StreamExt;
use orch_core::interpolate::Reference;
use orch_core::{
    Artifact, Description, KindError, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome,
    PhaseSpec, PlanContext,
};
use serde::Deserialize;

use crate::agent::Endpoint;
use crate::common::{OneOrMany, engine, engine_error, render, server_message};
use crate::credentials::{self, RegistryAuth, scrub};
use crate::errors::CredentialsError;
use crate::reference::ImageRef;

/// The `with` table of `docker.push`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// References to push (templates). Default: the `tags` outputs of the phases it needs.
    #[serde(default)]
    pub tags: OneOrMany,
    /// Registry user (template); with `password_secret`, replaces the Docker config file.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the secret (an environment variable listed in the phase's `secrets`)
    /// holding the password or token.
    #[serde(default)]
    pub password_secret: Option<String>,
    /// The Docker config directory to read credentials from (template, relative to the
    /// pipeline file); unset or empty: `$DOCKER_CONFIG`, else `~/.docker`.
    #[serde(default)]
    pub docker_config: Option<String>,
}

/// Pushes images; see the crate docs for settings and outputs.
#[derive(Clone, Debug)]
pub struct PushPhase {
    settings: PushSettings,
    needs: Vec<PhaseId>,
}

impl PushPhase {
    /// A phase with these settings that takes default tags from `needs`.
    pub fn new(settings: PushSettings, needs: Vec<PhaseId>) -> Self {
        Self { settings, needs }
    }

    /// Checks a declaration (no I/O).
    pub fn from_spec(spec: &PhaseSpec) -> Result<Self, KindError> {
        let settings: PushSettings = spec.with.parse()?;
        let bad = |message: String| KindError {
            message: format!("phase `{}`: {message}", spec.id),
            span: spec.with.span(),
        };
        for tag in settings.tags.to_vec() {
            if !tag.contains("${{") {
                ImageRef::parse(&tag).map_err(|e| bad(format!("`tags`: {e}")))?;
            }
        }
        match (&settings.username, &settings.password_secret) {
            (Some(_), None) => {
                return Err(bad(
                    "`username` needs `password_secret` (the secret holding the password)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(bad("`password_secret` needs `username`".into()));
            }
            (Some(_), Some(name)) if !spec.secrets.iter().any(|s| s == name) => {
                return Err(bad(format!(
                    "`password_secret = \"{name}\"`: add \"{name}\" to the phase's `secrets` so its value is passed and redacted"
                )));
            }
            _ => {}
        }
        if !settings.tags.is_set() && spec.needs.is_empty() {
            return Err(bad(
                "no `tags`, and no needed phase to take them from (need the docker.build phase)"
                    .into(),
            ));
        }
        Ok(Self::new(settings, spec.needs.clone()))
    }

    fn tags(&self, ctx: &PhaseContext) -> Result<Vec<ImageRef>, PhaseError> {
        let texts = if self.settings.tags.is_set() {
            self.settings
                .tags
                .to_vec()
                .iter()
                .map(|t| render(ctx, "tags", t))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let mut all = Vec::new();
            for need in &self.needs {
                let r = Reference::Output {
                    phase: need.to_string(),
                    key: "tags".into(),
                };
                if let Ok(v) = ctx.lookup(&r) {
                    all.extend(parse_list(&v));
                }
            }
            if all.is_empty() {
                return Err(PhaseError::failed(format!(
                    "no tags to push: none of the needed phases ({}) published `tags`; set `tags`",
                    self.needs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            all
        };
        let mut refs = Vec::new();
        for t in texts {
            let r = ImageRef::parse(&t).map_err(|e| PhaseError::failed(format!("`tags`: {e}")))?;
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
        Ok(refs)
    }

    async fn auth(
        &self,
        ctx: &PhaseContext,
        registry: &str,
    ) -> Result<Option<RegistryAuth>, PhaseError> {
        if let (Some(user), Some(secret)) =
            (&self.settings.username, &self.settings.password_secret)
        {
            let password = ctx
                .env_var(secret)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    PhaseError::from_error(&CredentialsError::MissingSecret {
                        name: secret.clone(),
                    })
                })?;
            return Ok(Some(RegistryAuth {
                username: render(ctx, "username", user)?,
                password: password.to_owned(),
                identity_token: None,
                source: format!("secret {secret}"),
            }));
        }
        let dir = match &self.settings.docker_config {
            Some(d) => Some(render(ctx, "docker_config", d)?).filter(|d| !d.trim().is_empty()),
            None => None,
        };
        let file = match dir {
            Some(d) => Some(ctx.base_dir().join(d).join("config.json")),
            None => credentials::config_dir().map(|d| d.join("config.json")),
        };
        match file {
            Some(f) => credentials::from_config_file(&f, registry)
                .await
                .map_err(|e| PhaseError::from_error(&e)),
            None => Ok(None),
        }
    }
}

/// A list output: a JSON array of strings, or comma-separated text.
pub(crate) fn parse_list(text: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(text) {
        Ok(v) => v,
        Err(_) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// The digest in a push status line: `1.0: digest: sha256:... size: 528`.
pub(crate) fn digest_in(status: &str) -> Option<String> {
    let rest = &status[status.find("digest: ")? + "digest: ".len()..];
    let digest = rest.split_whitespace().next()?;
    (digest.starts_with("sha256:") && digest.len() > 7).then(|| digest.to_owned())
}

#[async_trait]
impl Phase for PushPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let tags: Vec<String> = if self.settings.tags.is_set() {
            self.settings
                .tags
                .to_vec()
                .iter()
                .map(|t| ctx.render(t))
                .collect()
        } else {
            self.needs
                .iter()
                .map(|n| format!("<tags of {n}>"))
                .collect()
        };
        let mut d = Description::new(format!("push {}", tags.join(", ")));
        d = d.detail(
            "credentials",
            match (&self.settings.password_secret, &self.settings.docker_config) {
                (Some(s), _) => format!("secret {s}"),
                (None, Some(dir)) => format!("{}/config.json", ctx.resolve(dir).display()),
                (None, None) => "docker config file (auths, credHelpers, credsStore)".into(),
            },
        );
        for t in tags {
            d = d.change(format!("{t} in its registry"));
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let refs = self.tags(ctx)?;
        let (docker, endpoint) = engine(ctx).await?;
        let mut digests = BTreeMap::new();
        let mut artifacts = Vec::new();
        let mut first_digest = None;
        for r in &refs {
            let auth = self.auth(ctx, r.registry()).await?;
            let pushed = push_one(ctx, &docker, &endpoint, r, auth.as_ref()).await?;
            first_digest.get_or_insert_with(|| pushed.reference.clone());
            digests.insert(r.to_string(), pushed.reference.clone());
            let mut a = Artifact::new("image", r.to_string());
            a.digest = Some(pushed.digest.clone());
            a.size = pushed.size;
            a.details = BTreeMap::from([
                ("tags".to_owned(), serde_json::json!([r.to_string()])),
                ("image_id".to_owned(), serde_json::json!(pushed.image_id)),
                (
                    "registry_digest".to_owned(),
                    serde_json::json!(pushed.reference),
                ),
                ("registry".to_owned(), serde_json::json!(r.registry())),
                ("pushed".to_owned(), serde_json::json!(true)),
            ]);
            artifacts.push(a);
        }
        let tags: Vec<String> = refs.iter().map(ToString::to_string).collect();
        let mut outcome = PhaseOutcome::with_outputs([
            ("digest", first_digest.unwrap_or_default()),
            (
                "digests",
                serde_json::to_string(&digests).unwrap_or_else(|_| "{}".into()),
            ),
            (
                "tags",
                serde_json::to_string(&tags).unwrap_or_else(|_| "[]".into()),
            ),
        ]);
        outcome.artifacts = artifacts;
        Ok(outcome)
    }
}

struct Pushed {
    /// `sha256:...`
    digest: String,
    /// `repo@sha256:...`
    reference: String,
    image_id: Option<String>,
    size: Option<u64>,
}

async fn push_one(
    ctx: &PhaseContext,
    docker: &Docker,
    endpoint: &Endpoint,
    r: &ImageRef,
    auth: Option<&RegistryAuth>,
) -> Result<Pushed, PhaseError> {
    let secrets = auth.map(RegistryAuth::secrets).unwrap_or_default();
    let clean = |text: &str| scrub(&ctx.redact(text), &secrets);
    let name = r.to_string();
    let image = match docker.inspect_image(&name).await {
        Ok(i) => i,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            return Err(PhaseError::failed(format!(
                "cannot push {name}: no such image in the engine at {endpoint} (build or tag it first)"
            )));
        }
        Err(e) => return Err(engine_error(endpoint, &format!("inspect {name}"), &e)),
    };
    let from = match auth {
        Some(a) => format!("credentials from {}", a.source),
        None => format!("no credentials found for {}", r.registry()),
    };
    ctx.log(format!("pushing {name} to {} ({from})", r.registry()));
    let options = PushImageOptionsBuilder::default()
        .tag(r.tag_or_latest())
        .build();
    let creds = auth.map(|a| a.to_docker(r.registry()));
    let mut stream = docker.push_image(&r.repository, Some(options), creds);
    let mut digest = None;
    loop {
        let item = tokio::select! {
            biased;
            () = ctx.cancelled().cancelled() => {
                ctx.log(format!("push of {name} cancelled"));
                return Err(PhaseError::Cancelled);
            }
            item = stream.next() => item,
        };
        let Some(item) = item else { break };
        match item {
            Ok(info) => {
                if let Some(status) = &info.status {
                    if let Some(d) = digest_in(status) {
                        digest = Some(d);
                    }
                    // Progress lines ("Pushing" with a byte count) are noise in a log.
                    if info
                        .progress_detail
                        .as_ref()
                        .is_none_or(|p| p.total.is_none())
                    {
                        ctx.log(clean(status));
                    }
                }
            }
            Err(e) => {
                let why = clean(&server_message(&e));
                return Err(PhaseError::failed(format!(
                    "push of {name} failed: {why} ({from}; engine at {endpoint})"
                )));
            }
        }
    }
    let digest = match digest {
        Some(d) => d,
        None => {
            // Older engines word the status differently: the pushed digest is also among
            // the image's repo digests.
            let again = docker
                .inspect_image(&name)
                .await
                .map_err(|e| engine_error(endpoint, &format!("inspect {name}"), &e))?;
            again
                .repo_digests
                .unwrap_or_default()
                .into_iter()
                .find_map(|d| {
                    d.strip_prefix(&format!("{}@", r.repository))
                        .map(str::to_owned)
                })
                .ok_or_else(|| {
                    PhaseError::failed(format!(
                        "push of {name} ended without a digest from the registry"
                    ))
                })?
        }
    };
    let reference = format!("{}@{digest}", r.repository);
    ctx.log(format!("pushed {name}: {reference}"));
    Ok(Pushed {
        digest,
        reference,
        image_id: image.id,
        size: image.size.and_then(|s| u64::try_from(s).ok()),
    })
}

/// Registers `docker.push`.
pub(crate) fn register(registry: &mut orch_core::Registry) {
    registry.register_kind(
        "docker.push",
        "docker",
        "push image tags to their registries and record the digests",
        Arc::new(|spec: &PhaseSpec| Ok(Arc::new(PushPhase::from_spec(spec)?) as Arc<dyn Phase>)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_found_in_status_lines() {
        assert_eq!(
            digest_in("1.0: digest: sha256:abc123 size: 528").as_deref(),
            Some("sha256:abc123")
        );
        assert_eq!(digest_in("Pushed"), None);
        assert_eq!(digest_in("digest: md5:x"), None);
    }

    #[test]
    fn lists_are_json_or_commas() {
        assert_eq!(parse_list(r#"["a:1","b:2"]"#), ["a:1", "b:2"]);
        assert_eq!(parse_list("a:1, b:2,"), ["a:1", "b:2"]);
    }
}
