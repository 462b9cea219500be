//! `git.snapshot`: records the working tree as a commit under `refs/orch/snapshots/`,
//! touching nothing else.

use async_trait::async_trait;
use orch_core::{
    Description, KindError, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
};
use serde::Deserialize;

use crate::common::{plan_head, plan_open, plan_repo, repo_path, state_dir};
use crate::exec::{RepoLock, run_blocking};
use crate::repo;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    repo: Option<String>,
}

pub(crate) fn factory(_: &PhaseSpec, s: Settings) -> Result<SnapshotPhase, KindError> {
    Ok(SnapshotPhase { repo: s.repo })
}

/// Takes a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotPhase {
    repo: Option<String>,
}

/// The plan text of the ref a snapshot of this run would create.
pub(crate) fn plan_snapshot_ref(ctx: &PlanContext<'_>) -> String {
    let run = ctx.render("${{ run.id }}");
    let run = if run.contains("${{") {
        "RUN_ID".to_owned()
    } else {
        run
    };
    format!(
        "{} (or {}-{} if that exists)",
        repo::snapshot_ref_name(&run),
        repo::snapshot_ref_name(&run),
        ctx.phase_id()
    )
}

#[async_trait]
impl Phase for SnapshotPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let path = plan_repo(ctx, self.repo.as_deref());
        let head = plan_open(&path).map_or_else(|| "HEAD".to_owned(), |r| plan_head(&r));
        Description::new(format!(
            "snapshot the working tree of {} (untracked files included, ignored ones not)",
            path.display()
        ))
        .detail("repo", path.display().to_string())
        .detail("parent", head)
        .change(format!(
            "create ref {} with a commit of the working tree; the working tree, index, HEAD \
             and branches are not touched",
            plan_snapshot_ref(ctx)
        ))
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let path = repo_path(ctx, self.repo.as_deref())?;
        let state_dir = state_dir(ctx);
        let run_id = ctx.run_id().to_string();
        let phase_id = ctx.phase_id().to_string();
        let snap = run_blocking(ctx, move |job| {
            let repo = repo::open(&path)?;
            job.know_repo(&repo);
            let lock = RepoLock::of(repo.path());
            let _held = lock.lock();
            let hidden = repo::Hidden::new(&repo, state_dir.as_deref());
            let snap = repo::take_snapshot(&repo, job, &run_id, &phase_id, "snapshot", &hidden)?;
            job.log(format!(
                "snapshot {} of {} saved as {}",
                snap.id,
                repo::display_path(&repo).display(),
                snap.refname
            ));
            Ok(snap)
        })
        .await?;
        Ok(PhaseOutcome::with_outputs([
            ("snapshot", snap.id.to_string()),
            ("ref", snap.refname),
        ]))
    }
}
