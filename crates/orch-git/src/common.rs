//! Helpers shared by the kinds: settings, the repository a phase works on, plan text.

use std::path::PathBuf;

use orch_core::{KindError, PhaseContext, PhaseError, PhaseSpec, PlanContext};

use crate::agent::GitAgent;
use crate::errors::GitError;
use crate::exec::phase_error;
use crate::sanitize::{Sanitizer, sanitize_url};

/// A load-time error pointing at the `with` table.
pub(crate) fn with_error(spec: &PhaseSpec, message: impl Into<String>) -> KindError {
    KindError {
        message: message.into(),
        span: spec.with.span(),
    }
}

/// Renders a setting at run time.
pub(crate) fn render(
    ctx: &PhaseContext,
    key: &'static str,
    value: &str,
) -> Result<String, PhaseError> {
    ctx.render(value).map_err(|source| {
        phase_error(
            ctx,
            &Sanitizer::default(),
            &GitError::Render { key, source },
        )
    })
}

/// Renders an optional setting at run time.
pub(crate) fn render_opt(
    ctx: &PhaseContext,
    key: &'static str,
    value: Option<&str>,
) -> Result<Option<String>, PhaseError> {
    value.map(|v| render(ctx, key, v)).transpose()
}

/// The repository a phase works on: its `repo` (relative to the pipeline's directory), else
/// the `repo` of the git agent running it, else the pipeline's directory.
pub(crate) fn repo_path(ctx: &PhaseContext, repo: Option<&str>) -> Result<PathBuf, PhaseError> {
    if let Some(r) = repo {
        return Ok(ctx.base_dir().join(render(ctx, "repo", r)?));
    }
    Ok(match ctx.agent_as::<GitAgent>().and_then(GitAgent::repo) {
        Some(p) => ctx.base_dir().join(p),
        None => ctx.base_dir().to_owned(),
    })
}

/// orch's state directory (`STATE_DIR` of `STATE_DIR/runs/RUN_ID`), else the run directory:
/// what the git kinds leave out of changes, snapshots and rollbacks.
pub(crate) fn state_dir(ctx: &PhaseContext) -> Option<PathBuf> {
    let run_dir = ctx.run_dir();
    let runs = run_dir.parent()?;
    if runs.file_name().is_some_and(|n| n == "runs") {
        runs.parent().map(std::path::Path::to_owned)
    } else {
        Some(run_dir.to_owned())
    }
}

/// The repository a plan names, as text.
pub(crate) fn plan_repo(ctx: &PlanContext<'_>, repo: Option<&str>) -> PathBuf {
    match repo {
        Some(r) => ctx.resolve(r),
        None => ctx.base_dir().to_owned(),
    }
}

/// Opens a repository for a plan, read-only; `None` when it cannot be opened.
pub(crate) fn plan_open(path: &std::path::Path) -> Option<git2::Repository> {
    git2::Repository::discover(path).ok()
}

/// HEAD as plan text: `main at 1a2b3c4`, `detached HEAD at 1a2b3c4`, or `unborn main`.
pub(crate) fn plan_head(repo: &git2::Repository) -> String {
    let head_id = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .map(|c| crate::repo::short(c.id()));
    let branch = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_owned))
        .map(|b| b.trim_start_matches("refs/heads/").to_owned());
    match (branch, head_id) {
        (Some(b), Some(id)) => format!("{b} at {id}"),
        (None, Some(id)) => format!("detached HEAD at {id}"),
        (Some(b), None) => format!("unborn {b}"),
        (None, None) => "unknown HEAD".to_owned(),
    }
}

/// A remote's URL without credentials, for plans.
pub(crate) fn plan_remote_url(repo: &git2::Repository, remote: &str) -> Option<String> {
    let r = repo.find_remote(remote).ok()?;
    let url = r.pushurl().ok().flatten().or_else(|| r.url().ok())?;
    Some(sanitize_url(url))
}

/// `true`/`false` as output text.
pub(crate) fn flag(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

/// Whether a setting is a template (rendered only at run time).
pub(crate) fn is_template(s: &str) -> bool {
    s.contains("${{")
}
