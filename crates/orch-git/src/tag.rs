//! `git.tag`: an annotated tag at HEAD, optionally a branch moved to the same commit, and a
//! push of both to a remote.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use git2::{Cred, CredentialType, Direction, Oid, PushOptions, RemoteCallbacks, Repository};
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

use crate::common::{
    flag, is_template, plan_head, plan_open, plan_remote_url, plan_repo, render, render_opt,
    repo_path, state_dir, with_error,
};
use crate::errors::{GitError, Libgit2Error};
use crate::exec::{Job, RepoLock, phase_error, run_blocking};
use crate::repo;
use crate::sanitize::{Sanitizer, sanitize_url};

/// Where and what to push: `push = "origin"` or
/// `push = { remote = "origin", branch = true, tag = true }`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PushSpec {
    /// The remote's name (a template).
    remote: String,
    /// Push the branch (when `branch` is set). Default true.
    branch: bool,
    /// Push the tag. Default true.
    tag: bool,
}

impl<'de> Deserialize<'de> for PushSpec {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PushVisitor;

        fn yes() -> bool {
            true
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            remote: String,
            #[serde(default = "yes")]
            branch: bool,
            #[serde(default = "yes")]
            tag: bool,
        }

        impl<'de> Visitor<'de> for PushVisitor {
            type Value = PushSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a remote name, or a table `{ remote = \"origin\", branch = true, tag = true }`",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PushSpec, E> {
                Ok(PushSpec {
                    remote: v.to_owned(),
                    branch: true,
                    tag: true,
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PushSpec, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(PushSpec {
                    remote: t.remote,
                    branch: t.branch,
                    tag: t.tag,
                })
            }
        }

        d.deserialize_any(PushVisitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    repo: Option<String>,
    tag: String,
    branch: Option<String>,
    message: Option<String>,
    #[serde(default)]
    allow_dirty: bool,
    push: Option<PushSpec>,
    token_secret: Option<String>,
    username: Option<String>,
}

pub(crate) fn factory(spec: &PhaseSpec, s: Settings) -> Result<TagPhase, KindError> {
    if s.tag.trim().is_empty() {
        return Err(with_error(spec, "`tag` is empty"));
    }
    if !is_template(&s.tag) {
        check_name("tag", &s.tag).map_err(|e| with_error(spec, e.to_string()))?;
    }
    if let Some(b) = &s.branch
        && !is_template(b)
    {
        check_name("branch", b).map_err(|e| with_error(spec, e.to_string()))?;
    }
    if let Some(p) = &s.push {
        if p.remote.trim().is_empty() {
            return Err(with_error(spec, "`push` names no remote"));
        }
        if !(p.tag || p.branch && s.branch.is_some()) {
            return Err(with_error(
                spec,
                "`push` pushes nothing: it has `tag = false` and no branch to push",
            ));
        }
    }
    if let Some(name) = &s.token_secret {
        if !spec.secrets.iter().any(|x| x == name) {
            return Err(with_error(
                spec,
                format!(
                    "`token_secret = \"{name}\"` must also be listed in the phase's `secrets`, \
                     so that its value is given to the phase and redacted"
                ),
            ));
        }
        if s.push.is_none() {
            return Err(with_error(spec, "`token_secret` is set but `push` is not"));
        }
    }
    Ok(TagPhase {
        repo: s.repo,
        tag: s.tag,
        branch: s.branch,
        message: s.message,
        allow_dirty: s.allow_dirty,
        push: s.push,
        token_secret: s.token_secret,
        username: s.username,
    })
}

fn check_name(what: &'static str, name: &str) -> Result<(), GitError> {
    let full = match what {
        "tag" => format!("refs/tags/{name}"),
        _ => format!("refs/heads/{name}"),
    };
    if git2::Reference::is_valid_name(&full) && !name.starts_with('-') {
        Ok(())
    } else {
        Err(GitError::InvalidName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Tags HEAD.
#[derive(Debug, Clone)]
pub(crate) struct TagPhase {
    repo: Option<String>,
    tag: String,
    branch: Option<String>,
    message: Option<String>,
    allow_dirty: bool,
    push: Option<PushSpec>,
    token_secret: Option<String>,
    username: Option<String>,
}

/// Settings rendered at run time.
struct Rendered {
    state_dir: Option<std::path::PathBuf>,
    tag: String,
    branch: Option<String>,
    message: String,
    allow_dirty: bool,
    push: Option<PushSpec>,
    creds: Credentials,
}

/// What the credential callback may use.
#[derive(Clone, Default)]
struct Credentials {
    token: Option<String>,
    username: Option<String>,
}

#[async_trait]
impl Phase for TagPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let path = plan_repo(ctx, self.repo.as_deref());
        let tag = ctx.render(&self.tag);
        let repo = plan_open(&path);
        let head = repo.as_ref().map_or_else(|| "HEAD".to_owned(), plan_head);
        let mut d = Description::new(format!("tag HEAD of {} as {tag}", path.display()))
            .detail("repo", path.display().to_string())
            .detail("tag", tag.clone())
            .detail("allow_dirty", flag(self.allow_dirty))
            .change(format!(
                "create annotated tag refs/tags/{tag} at HEAD ({head}), unless it is already \
                 there"
            ));
        let branch = self.branch.as_deref().map(|b| ctx.render(b));
        if let Some(b) = &branch {
            d = d.detail("branch", b.clone()).change(format!(
                "create or move branch refs/heads/{b} to HEAD ({head})"
            ));
        }
        if let Some(p) = &self.push {
            let remote = ctx.render(&p.remote);
            let url = repo
                .as_ref()
                .and_then(|r| plan_remote_url(r, &remote))
                .unwrap_or_else(|| "URL unknown until run time".to_owned());
            let mut refs = Vec::new();
            if p.tag {
                refs.push(format!("refs/tags/{tag}"));
            }
            if let (true, Some(b)) = (p.branch, &branch) {
                refs.push(format!("refs/heads/{b}"));
            }
            d = d.detail("push", remote.clone()).change(format!(
                "push {} to remote `{remote}` ({url}), never forced",
                refs.join(" and ")
            ));
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let path = repo_path(ctx, self.repo.as_deref())?;
        let tag = render(ctx, "tag", &self.tag)?;
        let message =
            render_opt(ctx, "message", self.message.as_deref())?.unwrap_or_else(|| tag.clone());
        let token = match &self.token_secret {
            Some(name) => Some(ctx.env_var(name).map(str::to_owned).ok_or_else(|| {
                phase_error(
                    ctx,
                    &Sanitizer::default(),
                    &GitError::MissingSecret { name: name.clone() },
                )
            })?),
            None => None,
        };
        let push = match &self.push {
            Some(p) => Some(PushSpec {
                remote: render(ctx, "push", &p.remote)?,
                ..p.clone()
            }),
            None => None,
        };
        let settings = Rendered {
            state_dir: state_dir(ctx),
            branch: render_opt(ctx, "branch", self.branch.as_deref())?,
            tag,
            message,
            allow_dirty: self.allow_dirty,
            push,
            creds: Credentials {
                token,
                username: render_opt(ctx, "username", self.username.as_deref())?,
            },
        };
        let outputs = run_blocking(ctx, move |job| tag_and_push(&path, job, &settings)).await?;
        Ok(PhaseOutcome {
            outputs,
            ..PhaseOutcome::default()
        })
    }
}

fn tag_and_push(
    path: &std::path::Path,
    job: &Job,
    s: &Rendered,
) -> Result<orch_core::Outputs, GitError> {
    check_name("tag", &s.tag)?;
    if let Some(b) = &s.branch {
        check_name("branch", b)?;
    }
    let repo = repo::open(path)?;
    job.know_repo(&repo);
    let dir = repo::display_path(&repo);
    let lock = RepoLock::of(repo.path());
    let _held = lock.lock();

    let head = repo::head_commit(&repo)?.ok_or_else(|| GitError::Unborn { repo: dir.clone() })?;
    if !s.allow_dirty && !repo.is_bare() {
        let changes =
            repo::changed_paths(&repo, &repo::Hidden::new(&repo, s.state_dir.as_deref()))?;
        if !changes.is_empty() {
            return Err(GitError::Dirty {
                repo: dir,
                files: changes,
                hint: "commit or remove them before tagging, or set `allow_dirty = true`",
            });
        }
    }

    let tag_ref = format!("refs/tags/{}", s.tag);
    let created = match repo.find_reference(&tag_ref) {
        Ok(existing) => {
            let on = existing
                .peel_to_commit()
                .map_err(GitError::git(format!("read tag {}", s.tag), &dir))?;
            if on.id() != head.id() {
                return Err(GitError::TagConflict {
                    tag: s.tag.clone(),
                    existing: on.id().to_string(),
                    head: head.id().to_string(),
                    repo: dir,
                });
            }
            job.log(format!(
                "tag {} already exists on commit {}: nothing to create",
                s.tag,
                head.id()
            ));
            false
        }
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            let sig = repo::signature(&repo)?;
            repo.tag(&s.tag, head.as_object(), &sig, &s.message, false)
                .map_err(GitError::git(format!("create tag {}", s.tag), &dir))?;
            job.log(format!(
                "created annotated tag {} at commit {}",
                s.tag,
                head.id()
            ));
            true
        }
        Err(e) => return Err(GitError::git(format!("read tag {}", s.tag), &dir)(e)),
    };

    if let Some(b) = &s.branch {
        let branch_ref = format!("refs/heads/{b}");
        let before = repo
            .find_reference(&branch_ref)
            .ok()
            .and_then(|r| r.target());
        if before == Some(head.id()) {
            job.log(format!("branch {b} is already at commit {}", head.id()));
        } else {
            repo.reference(
                &branch_ref,
                head.id(),
                true,
                &format!("orch: tag {}", s.tag),
            )
            .map_err(GitError::git(format!("move branch {b}"), &dir))?;
            match before {
                Some(old) => job.log(format!(
                    "moved branch {b} from commit {old} to commit {}",
                    head.id()
                )),
                None => job.log(format!("created branch {b} at commit {}", head.id())),
            }
        }
    }

    let mut pushed = Vec::new();
    if let Some(p) = &s.push {
        let tag_oid = repo
            .refname_to_id(&tag_ref)
            .map_err(GitError::git(format!("read tag {}", s.tag), &dir))?;
        let mut refs = Vec::new();
        if p.tag {
            refs.push(PushRef {
                name: tag_ref.clone(),
                local: tag_oid,
                commit: head.id(),
                is_tag: true,
            });
        }
        if let (true, Some(b)) = (p.branch, &s.branch) {
            refs.push(PushRef {
                name: format!("refs/heads/{b}"),
                local: head.id(),
                commit: head.id(),
                is_tag: false,
            });
        }
        pushed = push(&repo, job, &p.remote, &refs, &s.creds)?;
    }

    Ok([
        ("tag", s.tag.clone()),
        ("commit", head.id().to_string()),
        ("created", flag(created)),
        ("branch", s.branch.clone().unwrap_or_default()),
        ("pushed", pushed.join(",")),
        (
            "remote",
            s.push
                .as_ref()
                .map(|p| p.remote.clone())
                .unwrap_or_default(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

/// One ref to push.
struct PushRef {
    name: String,
    /// The object the local ref points at (a tag object for annotated tags).
    local: Oid,
    /// The commit it peels to.
    commit: Oid,
    is_tag: bool,
}

/// Credentials for a remote, tried in order: the phase's token secret, the SSH agent, git's
/// credential helpers, libgit2's default (Negotiate/NTLM). Each is tried once.
fn callbacks<'a>(
    creds: &'a Credentials,
    config: &'a git2::Config,
    job: &'a Job,
    sanitizer: &'a Sanitizer,
) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let mut tried: Vec<&'static str> = Vec::new();
    cb.credentials(move |url, user_from_url, allowed| {
        if job.is_cancelled() {
            return Err(git2::Error::from_str("cancelled"));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(token) = &creds.token
                && !tried.contains(&"token_secret")
            {
                tried.push("token_secret");
                let user = creds
                    .username
                    .as_deref()
                    .or(user_from_url)
                    .unwrap_or("x-access-token");
                return Cred::userpass_plaintext(user, token);
            }
            if !tried.contains(&"credential helper") {
                tried.push("credential helper");
                if let Ok(c) = Cred::credential_helper(config, url, user_from_url) {
                    return Ok(c);
                }
            }
        }
        if allowed.contains(CredentialType::SSH_KEY) && !tried.contains(&"SSH agent") {
            tried.push("SSH agent");
            return Cred::ssh_key_from_agent(user_from_url.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user_from_url.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::DEFAULT) && !tried.contains(&"default") {
            tried.push("default");
            return Cred::default();
        }
        let message = if tried.is_empty() {
            "the remote asks for credentials and none are available: set `token_secret` to a \
             secret of the phase, or configure a git credential helper or an SSH agent"
                .to_owned()
        } else {
            format!(
                "authentication failed: the remote refused the credentials offered (from: {})",
                tried.join(", ")
            )
        };
        Err(git2::Error::from_str(&message))
    });
    cb.sideband_progress(move |data| {
        let text = String::from_utf8_lossy(data);
        for line in text.split(['\n', '\r']).filter(|l| !l.trim().is_empty()) {
            job.log(format!("remote: {}", sanitizer.clean(line.trim_end())));
        }
        !job.is_cancelled()
    });
    cb
}

/// Pushes `refs` to `remote`, never forced. Refs already up to date are left out; a ref
/// the remote has at a commit that is not an ancestor of ours is refused before anything
/// is sent. Returns the refs pushed.
fn push(
    repo: &Repository,
    job: &Job,
    remote_name: &str,
    refs: &[PushRef],
    creds: &Credentials,
) -> Result<Vec<String>, GitError> {
    let dir = repo::display_path(repo);
    let mut remote = repo
        .find_remote(remote_name)
        .map_err(|_| GitError::NoRemote {
            remote: remote_name.to_owned(),
            repo: dir.clone(),
            known: repo
                .remotes()
                .map(|r| {
                    r.iter()
                        .filter_map(|n| n.ok().flatten())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default(),
        })?;
    let raw_url = remote.pushurl_bytes().unwrap_or(remote.url_bytes());
    let raw_url = String::from_utf8_lossy(raw_url).into_owned();
    let url = sanitize_url(&raw_url);
    let sanitizer = job.sanitizer().with_url(&raw_url);
    let config = repo
        .config()
        .map_err(GitError::git("read the configuration", &dir))?;
    let push_error = |source: git2::Error| GitError::Push {
        remote: remote_name.to_owned(),
        url: url.clone(),
        source: Libgit2Error {
            message: sanitizer.clean(source.message()),
            code: source.code(),
        },
    };
    let rejected = |refname: &str, reason: String| GitError::Rejected {
        remote: remote_name.to_owned(),
        url: url.clone(),
        refname: refname.to_owned(),
        reason,
    };

    // What the remote has.
    let remote_refs: HashMap<String, Oid> = {
        let conn = remote
            .connect_auth(
                Direction::Push,
                Some(callbacks(creds, &config, job, &sanitizer)),
                None,
            )
            .map_err(push_error)?;
        conn.list()
            .map_err(push_error)?
            .iter()
            .map(|h| (h.name().to_owned(), h.oid()))
            .collect()
    };
    job.check()?;

    let mut specs = Vec::new();
    for r in refs {
        match remote_refs.get(&r.name) {
            None => specs.push(r.name.clone()),
            Some(theirs) if *theirs == r.local => {
                job.log(format!(
                    "{} is already up to date on `{remote_name}`",
                    r.name
                ));
            }
            Some(theirs) if r.is_tag => {
                let peeled = remote_refs
                    .get(&format!("{}^{{}}", r.name))
                    .copied()
                    .unwrap_or(*theirs);
                if peeled == r.commit {
                    job.log(format!(
                        "{} already exists on `{remote_name}` on the same commit {}",
                        r.name, r.commit
                    ));
                } else {
                    return Err(rejected(
                        &r.name,
                        format!(
                            "the remote already has this tag on commit {peeled}, ours is on \
                             commit {}",
                            r.commit
                        ),
                    ));
                }
            }
            Some(theirs) => {
                if repo.graph_descendant_of(r.local, *theirs).unwrap_or(false) {
                    specs.push(r.name.clone());
                } else {
                    return Err(rejected(
                        &r.name,
                        format!(
                            "non-fast-forward: the remote has it at commit {theirs}, which is \
                             not an ancestor of commit {}; fetch and integrate the remote's \
                             commits, or move the remote ref yourself",
                            r.local
                        ),
                    ));
                }
            }
        }
    }
    if specs.is_empty() {
        job.log(format!("nothing to push to `{remote_name}` ({url})"));
        return Ok(Vec::new());
    }

    job.log(format!(
        "pushing {} to `{remote_name}` ({url})",
        specs.join(" and ")
    ));
    let refused: RefCell<Vec<(String, String)>> = RefCell::new(Vec::new());
    {
        let mut cb = callbacks(creds, &config, job, &sanitizer);
        cb.push_update_reference(|refname, status| {
            if let Some(status) = status {
                refused
                    .borrow_mut()
                    .push((refname.to_owned(), status.to_owned()));
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb);
        let refspecs: Vec<String> = specs.iter().map(|r| format!("{r}:{r}")).collect();
        remote
            .push(&refspecs, Some(&mut opts))
            .map_err(|e| match e.code() {
                git2::ErrorCode::NotFastForward => rejected(
                    &specs.join(", "),
                    format!("non-fast-forward ({})", sanitizer.clean(e.message())),
                ),
                _ => push_error(e),
            })?;
    }
    if let Some((refname, status)) = refused.into_inner().into_iter().next() {
        return Err(rejected(&refname, sanitizer.clean(&status)));
    }
    job.log(format!("pushed {} to `{remote_name}`", specs.join(" and ")));
    Ok(specs)
}
