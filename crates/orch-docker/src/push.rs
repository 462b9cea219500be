//! `docker.push`: pushes tags to their registries and records the digests the registries
//! returned.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::PushImageOptionsBuilder;
use futures_util::StreamExt;
use orch_core::errors::RegistryError;
use orch_core::interpolate::Reference;
use orch_core::registry::Kind;
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

    /// Checks a declaration and its parsed `with` settings (no I/O).
    pub fn from_settings(spec: &PhaseSpec, settings: PushSettings) -> Result<Self, KindError> {
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
        Ok(Self::new(settings, spec.needs.to_vec()))
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
            self.default_tags(ctx)?
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

    /// The tags of the build it pushes: those its needs published; when none did (it
    /// needs a test of the image, not the build), those of the build found through its
    /// needs (see [`build_candidates`]).
    fn default_tags(&self, ctx: &PhaseContext) -> Result<Vec<String>, PhaseError> {
        let tags_of = |phase: &str| {
            let r = Reference::Output {
                phase: phase.to_owned(),
                key: "tags".into(),
            };
            ctx.lookup(&r)
                .ok()
                .map(|v| orch_core::list_output::decode(&v))
        };
        let mut all = Vec::new();
        for need in &self.needs {
            all.extend(tags_of(need.as_str()).unwrap_or_default());
        }
        if !all.is_empty() {
            return Ok(all);
        }
        let names = |ids: &[String]| {
            ids.iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let needs: Vec<String> = self.needs.iter().map(ToString::to_string).collect();
        let candidates = build_candidates(
            &needs,
            |id| {
                ctx.declared(id).map(|s| {
                    (
                        s.kind == "docker.build",
                        s.needs.iter().map(ToString::to_string).collect(),
                    )
                })
            },
            |id| tags_of(id).is_some_and(|t| !t.is_empty()),
        );
        match candidates.as_slice() {
            [] => Err(PhaseError::failed(format!(
                "no tags to push: no phase it needs, directly or through others ({}), is a `docker.build` or published `tags`; set `tags`",
                names(&needs)
            ))),
            [build] => match tags_of(build) {
                Some(t) if !t.is_empty() => Ok(t),
                _ => Err(PhaseError::failed(format!(
                    "no tags to push: the build it needs through {}, `{build}`, published no `tags`",
                    names(&needs)
                ))),
            },
            several => Err(PhaseError::failed(format!(
                "no tags to push: its needs ({}) published no `tags`, and several builds come before them: {}; set `tags`, or add the build to push to `needs`",
                names(&needs),
                names(several)
            ))),
        }
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

/// The builds a `docker.push` without `tags` may push, found through `needs`
/// breadth-first (each phase once, in declaration order at each step): on every path the
/// first phase that is a `docker.build` or published `tags`; what such a phase needs is
/// not searched (a build's base image is not what is pushed). `declared(id)` answers
/// whether `id` is a build and what it needs; `published(id)` whether it published tags.
pub(crate) fn build_candidates(
    needs: &[String],
    declared: impl Fn(&str) -> Option<(bool, Vec<String>)>,
    published: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut seen: std::collections::HashSet<String> = needs.iter().cloned().collect();
    let mut queue: std::collections::VecDeque<String> = needs.iter().cloned().collect();
    let mut found = Vec::new();
    while let Some(id) = queue.pop_front() {
        let Some((is_build, next)) = declared(&id) else {
            continue;
        };
        if is_build || published(&id) {
            found.push(id);
            continue;
        }
        for n in next {
            if seen.insert(n.clone()) {
                queue.push_back(n);
            }
        }
    }
    found
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
            ("tags", orch_core::list_output::encode(&tags)),
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
pub(crate) fn register(registry: &mut orch_core::Registry) -> Result<(), RegistryError> {
    registry.add_kind(
        Kind::new(
            "docker.push",
            "push image tags to their registries and record the digests",
        )
        .agent_type("docker"),
        PushPhase::from_settings,
    )
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

    /// `build_candidates` over a graph given as (id, is a build, publishes tags, needs).
    fn candidates(graph: &[(&str, bool, bool, &[&str])], needs: &[&str]) -> Vec<String> {
        let find = |id: &str| graph.iter().find(|(g, ..)| *g == id);
        let needs: Vec<String> = needs.iter().map(|s| (*s).to_owned()).collect();
        build_candidates(
            &needs,
            |id| find(id).map(|(_, b, _, n)| (*b, n.iter().map(|s| (*s).to_owned()).collect())),
            |id| find(id).is_some_and(|(_, _, t, _)| *t),
        )
    }

    #[test]
    fn the_build_is_found_through_the_phases_push_needs() {
        // push -> test -> build -> base: the build, not its base image.
        let g: &[(&str, bool, bool, &[&str])] = &[
            ("base", true, true, &[]),
            ("build", true, true, &["base"]),
            ("test", false, false, &["build"]),
            ("smoke", false, false, &["test"]),
        ];
        assert_eq!(candidates(g, &["test"]), ["build"]);
        assert_eq!(candidates(g, &["smoke"]), ["build"]);
        // A build reached on two paths counts once.
        let g: &[(&str, bool, bool, &[&str])] = &[
            ("build", true, true, &[]),
            ("unit", false, false, &["build"]),
            ("e2e", false, false, &["build"]),
        ];
        assert_eq!(candidates(g, &["unit", "e2e"]), ["build"]);
        // A phase that is not a docker.build but published tags is a build too.
        let g: &[(&str, bool, bool, &[&str])] = &[
            ("buildx", false, true, &[]),
            ("test", false, false, &["buildx"]),
        ];
        assert_eq!(candidates(g, &["test"]), ["buildx"]);
    }

    #[test]
    fn several_or_no_builds_are_reported_as_such() {
        let g: &[(&str, bool, bool, &[&str])] = &[
            ("build-a", true, true, &[]),
            ("build-b", true, true, &[]),
            ("test-a", false, false, &["build-a"]),
            ("test-b", false, false, &["build-b"]),
            ("lint", false, false, &[]),
        ];
        assert_eq!(candidates(g, &["test-a", "test-b"]), ["build-a", "build-b"]);
        assert!(candidates(g, &["lint"]).is_empty());
        // Unknown ids (a context outside a run) find nothing.
        assert!(candidates(&[], &["test"]).is_empty());
    }
}
