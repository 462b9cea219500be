//! A whole pipeline file run by the engine: the kinds load from TOML, run on the implied
//! `git` agent, read each other's outputs, and leave orch's own state directory (inside the
//! working tree) alone.

use std::sync::Arc;

use orch_core::{LoadOptions, PhaseStatus, Pipeline, RunControl, RunOptions, RunStatus, Runner};

use crate::support::{Res, TestRepo, registry};

const PIPELINE: &str = r#"
[pipeline]
name = "release"
jobs = 2

[vars]
version = "1.2.0"

[phases.facts]
kind = "git.inventory"

[phases.before]
kind = "git.snapshot"
needs = ["facts"]

[phases.break]
run = "printf 'broken\n' > src.txt && printf 'junk\n' > junk.txt"
needs = ["before"]

[phases.undo]
kind = "git.rollback"
needs = ["before", "break"]
with = { to = "${{ phases.before.outputs.snapshot }}", force = true }

[phases.release]
kind = "git.tag"
needs = ["undo"]
with = { tag = "v${{ vars.version }}", branch = "verified_release", push = "origin" }

[phases.notes]
kind = "git.changelog"
needs = ["release"]
"#;

#[tokio::test]
async fn a_release_pipeline_runs_through_the_engine() -> Res {
    let t = TestRepo::new()?;
    t.write("src.txt", "good\n")?;
    t.commit_all("feat: good code", None)?;
    let origin = tempfile::tempdir()?;
    let bare = git2::Repository::init_bare(origin.path())?;
    t.repo
        .remote("origin", &origin.path().display().to_string())?;
    let file = t.path().join("orch.toml");
    std::fs::write(&file, PIPELINE)?;
    t.commit_all("chore: add the pipeline", None)?;
    let head = t.head()?;

    let pipeline = Pipeline::load(&file, &registry(), &LoadOptions::default())?;
    let record = Runner::new(Arc::new(pipeline), RunOptions::default())
        .run(RunControl::new())
        .await?;
    let summary: Vec<String> = record
        .phases
        .iter()
        .map(|(id, p)| format!("{id}: {} {:?}", p.status, p.reason))
        .collect();
    assert_eq!(record.status, RunStatus::Succeeded, "{summary:#?}");
    for p in record.phases.values() {
        assert_eq!(p.status, PhaseStatus::Succeeded, "{summary:#?}");
    }

    let facts = &record.phases["facts"].outputs;
    assert_eq!(facts["head"], head.to_string());
    assert_eq!(
        facts["dirty"], "false",
        "orch's state directory is not a change"
    );

    // The rollback undid the `break` phase, and kept the run's own files.
    assert_eq!(std::fs::read_to_string(t.path().join("src.txt"))?, "good\n");
    assert!(!t.path().join("junk.txt").exists());
    let run_dir = t.path().join(".orch/runs").join(record.run_id.as_str());
    assert!(
        run_dir.join("logs").is_dir(),
        "the rollback removed the run's logs"
    );

    let release = &record.phases["release"].outputs;
    assert_eq!(release["tag"], "v1.2.0");
    assert_eq!(
        bare.find_reference("refs/tags/v1.2.0")?
            .peel_to_commit()?
            .id(),
        head
    );
    assert_eq!(bare.refname_to_id("refs/heads/verified_release")?, head);

    let notes = &record.phases["notes"].outputs;
    assert_eq!(
        notes["path"],
        run_dir.join("CHANGELOG.md").display().to_string()
    );
    assert!(
        notes["markdown"].starts_with("## v1.2.0\n\n2 commits.\n"),
        "{}",
        notes["markdown"]
    );
    Ok(())
}
