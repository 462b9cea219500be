//! `git.inventory`: reads the state of a repository; changes nothing.

use std::collections::BTreeMap;

use async_trait::async_trait;
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
};
use serde::Deserialize;

use crate::common::{flag, plan_repo, repo_path, state_dir};
use crate::exec::{RepoLock, run_blocking};
use crate::repo::{self, HeadRef};
use crate::sanitize::sanitize_url;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    repo: Option<String>,
}

pub(crate) fn factory(_: &PhaseSpec, s: Settings) -> Result<InventoryPhase, KindError> {
    Ok(InventoryPhase { repo: s.repo })
}

/// Reads HEAD, the branch, the dirty state, the latest tag and the remotes.
#[derive(Debug, Clone)]
pub(crate) struct InventoryPhase {
    repo: Option<String>,
}

#[async_trait]
impl Phase for InventoryPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let path = plan_repo(ctx, self.repo.as_deref());
        Description::new(format!(
            "read HEAD, branch, changes, latest tag and remotes of {}",
            path.display()
        ))
        .detail("repo", path.display().to_string())
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let path = repo_path(ctx, self.repo.as_deref())?;
        let state_dir = state_dir(ctx);
        let outputs = run_blocking(ctx, move |job| {
            let repo = repo::open(&path)?;
            job.know_repo(&repo);
            let lock = RepoLock::of(repo.path());
            let _held = lock.lock();

            let head = repo::head_commit(&repo)?;
            let head_id = head.as_ref().map(|c| c.id());
            let (branch, detached) = match repo::head_ref(&repo)? {
                HeadRef::Branch(b) => (b.trim_start_matches("refs/heads/").to_owned(), false),
                HeadRef::Detached => (String::new(), true),
            };
            let dirty_files = if repo.is_bare() {
                Vec::new()
            } else {
                repo::changed_paths(&repo, &repo::Hidden::new(&repo, state_dir.as_deref()))?
            };
            let latest_tag = match head_id {
                Some(id) => repo::nearest_tag(&repo, id, false)?.map(|(name, _)| name),
                None => None,
            }
            .unwrap_or_default();
            let mut remotes = BTreeMap::new();
            let names = repo.remotes().map_err(crate::errors::GitError::git(
                "list remotes",
                repo::display_path(&repo),
            ))?;
            for name in names.iter().filter_map(|n| n.ok().flatten()) {
                if let Ok(r) = repo.find_remote(name) {
                    remotes.insert(name.to_owned(), sanitize_url(r.url().unwrap_or("")));
                }
            }

            let head_text = head_id.map(|id| id.to_string()).unwrap_or_default();
            job.log(format!(
                "HEAD {} on {}, {} changed path(s), latest tag {}, {} remote(s)",
                if head_text.is_empty() {
                    "unborn"
                } else {
                    &head_text
                },
                if detached { "a detached HEAD" } else { &branch },
                dirty_files.len(),
                if latest_tag.is_empty() {
                    "none"
                } else {
                    &latest_tag
                },
                remotes.len()
            ));
            let outputs: BTreeMap<String, String> = [
                ("head", head_text),
                ("branch", branch),
                ("detached", flag(detached)),
                ("dirty", flag(!dirty_files.is_empty())),
                ("dirty_files", orch_core::list_output::encode(&dirty_files)),
                ("latest_tag", latest_tag),
                (
                    "remotes",
                    serde_json::to_string(&remotes).unwrap_or_else(|_| "{}".into()),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            Ok(outputs)
        })
        .await?;
        Ok(PhaseOutcome {
            outputs,
            ..PhaseOutcome::default()
        })
    }
}
