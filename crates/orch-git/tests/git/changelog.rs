use crate::support::{Res, Run, TestRepo, table};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// Commits a new file on top of `parent` to `refname` without touching the working tree.
fn commit_file(
    t: &TestRepo,
    refname: Option<&str>,
    parents: &[git2::Oid],
    base_tree: git2::Oid,
    file: &str,
    message: &str,
    at: i64,
) -> Res<git2::Oid> {
    let blob = t.repo.blob(format!("{file}\n").as_bytes())?;
    let base = t.repo.find_tree(base_tree)?;
    let mut builder = t.repo.treebuilder(Some(&base))?;
    builder.insert(file, blob, 0o100644)?;
    let tree = t.repo.find_tree(builder.write()?)?;
    let sig = git2::Signature::new("Dev", "dev@example.com", &git2::Time::new(at, 0))?;
    let parents: Vec<git2::Commit<'_>> = parents
        .iter()
        .map(|p| t.repo.find_commit(*p))
        .collect::<Result<_, _>>()?;
    let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
    Ok(t.repo
        .commit(refname, &sig, &sig, message, &tree, &parents)?)
}

/// A scripted history: a tagged import, then feat, fix, docs, breaking (`!` and footer),
/// perf, untyped and unknown-type commits, and a merged topic branch.
fn history() -> Res<TestRepo> {
    let t = TestRepo::new()?;
    t.write("README", "readme\n")?;
    let first = t.commit_all("chore: initial import", Some(T0))?;
    t.repo
        .tag_lightweight("v0.1.0", &t.repo.find_object(first, None)?, false)?;

    let messages = [
        "feat(parser): accept arrays in settings",
        "fix: off-by-one in range checks\n\nCloses #12",
        "docs: explain the config file",
        "feat(api)!: drop the v1 endpoint\n\nThe old endpoint is gone.\n\nBREAKING CHANGE: clients must call /v2;\nthe /v1 routes return 404\nRefs: #40",
        "perf: hash files in parallel",
        "tidy up the readme",
        "chore(deps): bump tokio\n\nBREAKING-CHANGE: needs Rust 1.88",
        "wip: half-done idea",
    ];
    let mut head = first;
    for (i, m) in messages.iter().enumerate() {
        let tree = t.repo.find_commit(head)?.tree_id();
        head = commit_file(
            &t,
            Some("HEAD"),
            &[head],
            tree,
            &format!("f{i}.txt"),
            m,
            T0 + 60 * (i as i64 + 1),
        )?;
    }
    let fork = head;
    let fork_tree = t.repo.find_commit(fork)?.tree_id();
    let topic = commit_file(
        &t,
        Some("refs/heads/topic"),
        &[fork],
        fork_tree,
        "topic.txt",
        "fix(cli): quote paths",
        T0 + 1000,
    )?;
    let main = commit_file(
        &t,
        Some("HEAD"),
        &[fork],
        fork_tree,
        "sched.txt",
        "refactor: split the scheduler",
        T0 + 1100,
    )?;
    let main_tree = t.repo.find_commit(main)?.tree_id();
    commit_file(
        &t,
        Some("HEAD"),
        &[main, topic],
        main_tree,
        "topic.txt",
        "Merge branch 'topic'",
        T0 + 1200,
    )?;
    Ok(t)
}

#[tokio::test]
async fn changelog_groups_conventional_commits() -> Res {
    let t = history()?;
    let ran = Run::new("git.changelog", t.path(), table("")).go().await?;
    let out = ran.ok();
    assert_eq!(out["commits"], "10", "the merge commit is left out");
    assert_eq!(out["since"], "v0.1.0");
    let default_path = t.path().join(".orch/runs/run-1/CHANGELOG.md");
    assert_eq!(out["path"], default_path.display().to_string());
    let md = std::fs::read_to_string(&default_path)?;
    assert_eq!(out["markdown"], md);
    insta::with_settings!({filters => vec![(r"`[0-9a-f]{7}`", "`[id]`")]}, {
        insta::assert_snapshot!("changelog", md);
    });

    // Once HEAD is tagged, the notes take its name and still start at the previous tag.
    let head = t.repo.head()?.peel_to_commit()?;
    t.repo.tag_lightweight("v0.2.0", head.as_object(), false)?;
    let ran = Run::new(
        "git.changelog",
        t.path(),
        table(r#"output = "notes/RELEASE.md""#),
    )
    .go()
    .await?;
    let out = ran.ok();
    assert_eq!(out["since"], "v0.1.0");
    assert_eq!(out["commits"], "10");
    assert!(
        out["markdown"].starts_with("## v0.2.0\n\n10 commits since v0.1.0.\n"),
        "{}",
        out["markdown"]
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("notes/RELEASE.md"))?,
        out["markdown"]
    );

    // An explicit `since` (a commit id or a ref) and a title.
    let with = format!("since = \"{}\"\ntitle = \"Next\"", head.parent_id(0)?);
    let ran = Run::new("git.changelog", t.path(), table(&with))
        .go()
        .await?;
    assert_eq!(ran.ok()["commits"], "1");
    assert!(
        ran.ok()["markdown"].contains("### Bug fixes\n\n- **cli:** quote paths"),
        "{}",
        ran.ok()["markdown"]
    );
    Ok(())
}

#[tokio::test]
async fn changelog_without_tags_starts_at_the_first_commit() -> Res {
    let t = TestRepo::new()?;
    t.write("a", "a\n")?;
    t.commit_all("feat: a", Some(T0))?;
    t.write("b", "b\n")?;
    t.commit_all("b without a type", Some(T0 + 60))?;
    let ran = Run::new("git.changelog", t.path(), table("")).go().await?;
    let out = ran.ok();
    assert_eq!(out["commits"], "2");
    assert_eq!(out["since"], "");
    assert!(
        out["markdown"].starts_with("## Unreleased\n\n2 commits.\n"),
        "{}",
        out["markdown"]
    );
    assert!(out["markdown"].contains("### Features") && out["markdown"].contains("### Other"));
    Ok(())
}
