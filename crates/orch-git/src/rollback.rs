//! `git.rollback`: restores the working tree and HEAD to a snapshot, a commit or a tag,
//! after taking a backup snapshot of the current state.

use async_trait::async_trait;
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
};
use serde::Deserialize;

use crate::common::{
    flag, plan_head, plan_open, plan_repo, render, repo_path, state_dir, with_error,
};
use crate::errors::{GitError, Libgit2Error};
use crate::exec::{RepoLock, run_blocking};
use crate::repo::{self, HeadRef};
use crate::snapshot::plan_snapshot_ref;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    repo: Option<String>,
    to: String,
    #[serde(default)]
    force: bool,
}

pub(crate) fn factory(spec: &PhaseSpec, s: Settings) -> Result<RollbackPhase, KindError> {
    if s.to.trim().is_empty() {
        return Err(with_error(
            spec,
            "`to` is empty: give a snapshot commit id, a snapshot ref, a tag or a commit",
        ));
    }
    Ok(RollbackPhase {
        repo: s.repo,
        to: s.to,
        force: s.force,
    })
}

/// Rolls a repository back.
#[derive(Debug, Clone)]
pub(crate) struct RollbackPhase {
    repo: Option<String>,
    to: String,
    force: bool,
}

/// What the target of a rollback resolves to.
struct Target {
    /// The commit HEAD moves to (`None`: the branch becomes unborn).
    head: Option<git2::Oid>,
    /// The tree the working tree gets.
    worktree: git2::Oid,
    /// The tree the index gets (`None`: empty).
    index: Option<git2::Oid>,
    /// Whether the target is an orch snapshot.
    snapshot: bool,
}

fn resolve_target(repo: &git2::Repository, to: &str) -> Result<(git2::Oid, Target), GitError> {
    let dir = repo::display_path(repo);
    let commit = repo::resolve_commit(repo, to)?;
    let target = match repo::snapshot_info(&commit) {
        Some(info) => {
            let index = match (info.index, info.head) {
                (Some(i), _) | (None, Some(i)) => Some(
                    repo.find_commit(i)
                        .map_err(GitError::git("read the snapshot's index commit", &dir))?
                        .tree_id(),
                ),
                (None, None) => None,
            };
            Target {
                head: info.head,
                worktree: commit.tree_id(),
                index,
                snapshot: true,
            }
        }
        None => Target {
            head: Some(commit.id()),
            worktree: commit.tree_id(),
            index: Some(commit.tree_id()),
            snapshot: false,
        },
    };
    Ok((commit.id(), target))
}

#[async_trait]
impl Phase for RollbackPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let path = plan_repo(ctx, self.repo.as_deref());
        let to = ctx.render(&self.to);
        let mut d = Description::new(format!("roll {} back to {to}", path.display()))
            .detail("repo", path.display().to_string())
            .detail("to", to.clone())
            .detail("force", flag(self.force));
        let repo = plan_open(&path);
        let resolved = repo.as_ref().and_then(|r| {
            resolve_target(r, &to)
                .ok()
                .map(|(id, t)| (id, t.head, t.snapshot))
        });
        let head_text = repo.as_ref().map_or_else(|| "HEAD".to_owned(), plan_head);
        let branch = repo
            .as_ref()
            .and_then(|r| repo::head_ref(r).ok())
            .map_or_else(
                || "HEAD".to_owned(),
                |h| match h {
                    HeadRef::Branch(b) => format!("branch {b} (HEAD)"),
                    HeadRef::Detached => "the detached HEAD".to_owned(),
                },
            );
        let target_text = match &resolved {
            Some((id, _, true)) => format!("snapshot {}", repo::short(*id)),
            Some((id, _, false)) => format!("commit {}", repo::short(*id)),
            None => format!("`{to}` (resolved when the phase runs)"),
        };
        let new_head = match &resolved {
            Some((_, Some(h), _)) => repo::short(*h),
            Some((_, None, _)) => "no commit (unborn)".to_owned(),
            None => format!("the commit of `{to}`"),
        };
        if !self.force {
            d = d.detail(
                "refuses",
                "to run over uncommitted or untracked changes (set `force = true`)",
            );
        }
        d.change(format!(
            "create backup ref {} with a commit of the current working tree",
            plan_snapshot_ref(ctx)
        ))
        .change(format!(
            "rewrite the working tree of {} to the content of {target_text}, removing \
             untracked files it does not have (ignored files are kept)",
            path.display()
        ))
        .change(format!("move {branch} from {head_text} to {new_head}"))
        .change("rebuild the index (.git/index) from the target")
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let path = repo_path(ctx, self.repo.as_deref())?;
        let state_dir = state_dir(ctx);
        let to = render(ctx, "to", &self.to)?;
        let force = self.force;
        let run_id = ctx.run_id().to_string();
        let phase_id = ctx.phase_id().to_string();
        let outputs = run_blocking(ctx, move |job| {
            let repo = repo::open(&path)?;
            job.know_repo(&repo);
            let dir = repo::workdir(&repo)?;
            let lock = RepoLock::of(repo.path());
            let _held = lock.lock();

            let (target_id, target) = resolve_target(&repo, &to)?;
            let head_ref = repo::head_ref(&repo)?;
            if target.head.is_none() && head_ref == HeadRef::Detached {
                return Err(GitError::Git {
                    action: format!("roll back to {to}"),
                    repo: dir,
                    source: Libgit2Error::msg(
                        "the snapshot was taken on an unborn branch and HEAD is detached now",
                    ),
                });
            }
            let hidden = repo::Hidden::new(&repo, state_dir.as_deref());
            let changes = repo::changed_paths(&repo, &hidden)?;
            if !changes.is_empty() {
                if !force {
                    return Err(GitError::Dirty {
                        repo: dir,
                        files: changes,
                        hint: "commit or remove them, or set `force = true` to roll back \
                               anyway (they are kept in the backup snapshot)",
                    });
                }
                job.log(format!(
                    "rolling back over {} changed path(s) (force = true); they are kept in \
                     the backup snapshot",
                    changes.len()
                ));
            }
            let old_head = repo::head_commit(&repo)?.map(|c| c.id());

            let backup = repo::take_snapshot(
                &repo,
                job,
                &run_id,
                &phase_id,
                "backup before rollback",
                &hidden,
            )?;
            job.log(format!(
                "backup snapshot {} saved as {}",
                backup.id, backup.refname
            ));
            job.check()?;

            // From here on the repository is changed; a failure leaves the backup to roll
            // back to.
            let in_flight = |e: GitError| GitError::Git {
                action: format!(
                    "finish the rollback (roll back to the backup {} to undo)",
                    backup.id
                ),
                repo: dir.clone(),
                source: Libgit2Error::msg(PhaseError::from_error(&e).to_string()),
            };
            let current = repo
                .find_tree(backup.tree)
                .map_err(GitError::git("read the backup tree", &dir))?;
            let wanted = repo
                .find_tree(target.worktree)
                .map_err(GitError::git("read the target tree", &dir))?;
            let stats = repo::restore_worktree(&repo, job, &current, &wanted, &hidden)
                .map_err(in_flight)?;
            job.log(format!(
                "working tree restored to {} {}: {} file(s) written, {} removed, {} unchanged",
                if target.snapshot {
                    "snapshot"
                } else {
                    "commit"
                },
                target_id,
                stats.written,
                stats.removed,
                stats.unchanged
            ));

            let index_tree = target
                .index
                .map(|t| repo.find_tree(t))
                .transpose()
                .map_err(GitError::git("read the index tree", &dir))?;
            repo::reset_index(&repo, index_tree.as_ref()).map_err(in_flight)?;

            let log_message = format!("orch: rollback to {to}");
            match (&head_ref, target.head) {
                (HeadRef::Branch(branch), Some(id)) => {
                    repo.reference(branch, id, true, &log_message)
                        .map_err(GitError::git(format!("move {branch}"), &dir))
                        .map_err(in_flight)?;
                }
                (HeadRef::Branch(branch), None) => {
                    if let Ok(mut r) = repo.find_reference(branch) {
                        r.delete()
                            .map_err(GitError::git(format!("delete {branch}"), &dir))
                            .map_err(in_flight)?;
                    }
                }
                (HeadRef::Detached, Some(id)) => {
                    repo.set_head_detached(id)
                        .map_err(GitError::git("move HEAD", &dir))
                        .map_err(in_flight)?;
                }
                (HeadRef::Detached, None) => {}
            }
            let new_head = target.head.map(|id| id.to_string()).unwrap_or_default();
            let branch_text = match &head_ref {
                HeadRef::Branch(b) => b.clone(),
                HeadRef::Detached => "detached HEAD".to_owned(),
            };
            job.log(format!(
                "{branch_text} moved from {} to {}",
                old_head.map_or_else(|| "no commit".to_owned(), |id| id.to_string()),
                if new_head.is_empty() {
                    "no commit (unborn)"
                } else {
                    &new_head
                }
            ));
            Ok([
                ("head", new_head),
                ("backup", backup.id.to_string()),
                ("backup_ref", backup.refname),
                ("target", target_id.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect())
        })
        .await?;
        Ok(PhaseOutcome {
            outputs,
            ..PhaseOutcome::default()
        })
    }
}
