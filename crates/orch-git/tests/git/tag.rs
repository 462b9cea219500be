use crate::support::{Res, Run, TestRepo, git_in, isolate_config, table};

fn released() -> Res<TestRepo> {
    let t = TestRepo::new()?;
    t.write("src.txt", "code\n")?;
    t.commit_all("feat: first", None)?;
    t.write("src.txt", "more code\n")?;
    t.commit_all("fix: second", None)?;
    Ok(t)
}

fn tag_run<'a>(t: &'a TestRepo, with: &str) -> Run<'a> {
    Run::new("git.tag", t.path(), table(with))
        .id("release")
        .var("version", "1.2.0")
}

/// A bare repository on disk, added to `t` as remote `origin`.
fn bare_origin(t: &TestRepo) -> Res<(tempfile::TempDir, git2::Repository)> {
    let dir = tempfile::tempdir()?;
    let bare = git2::Repository::init_bare(dir.path())?;
    t.repo
        .remote("origin", &format!("file://{}", dir.path().display()))?;
    Ok((dir, bare))
}

#[tokio::test]
async fn tag_on_a_clean_tree() -> Res {
    let t = released()?;
    let head = t.head()?;
    let ran = tag_run(
        &t,
        r#"tag = "verified_release_v${{ vars.version }}"
           branch = "verified_release"
           message = "release ${{ vars.version }}""#,
    )
    .go()
    .await?;
    let out = ran.ok();
    assert_eq!(out["tag"], "verified_release_v1.2.0");
    assert_eq!(out["commit"], head.to_string());
    assert_eq!(out["created"], "true");
    // Checked with the git CLI: an annotated tag on HEAD, its message, the branch.
    assert_eq!(
        t.git(&["cat-file", "-t", "verified_release_v1.2.0"])?
            .trim(),
        "tag"
    );
    assert_eq!(
        t.git(&["rev-parse", "verified_release_v1.2.0^{commit}"])?
            .trim(),
        head.to_string()
    );
    assert_eq!(
        t.git(&[
            "tag",
            "-l",
            "--format=%(contents:subject)",
            "verified_release_v1.2.0"
        ])?
        .trim(),
        "release 1.2.0"
    );
    assert_eq!(
        t.git(&["rev-parse", "refs/heads/verified_release"])?.trim(),
        head.to_string()
    );
    assert_eq!(
        t.git(&["symbolic-ref", "HEAD"])?.trim(),
        "refs/heads/main",
        "HEAD stays on main"
    );
    Ok(())
}

#[tokio::test]
async fn tag_is_refused_on_a_dirty_tree_unless_allowed() -> Res {
    let t = released()?;
    t.write("src.txt", "uncommitted edit\n")?;
    let ran = tag_run(&t, r#"tag = "v1""#).go().await?;
    let err = ran.err();
    assert!(
        err.contains("uncommitted changes") && err.contains("src.txt"),
        "{err}"
    );
    assert!(err.contains("allow_dirty = true"), "{err}");
    assert!(
        t.repo.find_reference("refs/tags/v1").is_err(),
        "no tag may be created"
    );

    let ran = tag_run(&t, "tag = \"v1\"\nallow_dirty = true").go().await?;
    assert_eq!(ran.ok()["created"], "true");
    Ok(())
}

#[tokio::test]
async fn tag_rerun_is_a_no_op() -> Res {
    let t = released()?;
    let with = "tag = \"v1\"\nbranch = \"stable\"";
    tag_run(&t, with).go().await?.ok();
    let tag_object = t.repo.refname_to_id("refs/tags/v1")?;
    let refs = t.refs()?;

    let again = tag_run(&t, with).go().await?;
    assert_eq!(again.ok()["created"], "false");
    assert!(
        again.log().contains("tag v1 already exists on commit"),
        "{}",
        again.log()
    );
    assert!(
        again.log().contains("branch stable is already at commit"),
        "{}",
        again.log()
    );
    assert_eq!(t.repo.refname_to_id("refs/tags/v1")?, tag_object);
    assert_eq!(t.refs()?, refs);
    Ok(())
}

#[tokio::test]
async fn tag_existing_on_another_commit_is_an_error_naming_both() -> Res {
    let t = released()?;
    let old = t.repo.head()?.peel_to_commit()?.parent_id(0)?;
    t.git(&["tag", "v1", &old.to_string()])?;
    let head = t.head()?;
    let ran = tag_run(&t, r#"tag = "v1""#).go().await?;
    let err = ran.err();
    assert!(err.contains("tag `v1` already exists"), "{err}");
    assert!(
        err.contains(&old.to_string()) && err.contains(&head.to_string()),
        "{err}"
    );
    assert_eq!(
        t.repo.refname_to_id("refs/tags/v1")?,
        old,
        "the old tag must stay"
    );
    Ok(())
}

#[tokio::test]
async fn bad_settings_fail_at_load_time() -> Res {
    let t = released()?;
    for (with, expected) in [
        (r#"tag = "bad..name""#, "invalid tag name"),
        ("tag = \"v1\"\nbranch = \"a b\"", "invalid branch name"),
        (
            r#"tag = "v1"
            push = "origin"
            token_secret = "GIT_TOKEN""#,
            "must also be listed in the phase's `secrets`",
        ),
        (
            "tag = \"v1\"\npush = { remote = \"origin\", tag = false }",
            "pushes nothing",
        ),
        (
            "tag = \"v1\"\npush = { remote = \"origin\", bogus = 1 }",
            "unknown field `bogus`",
        ),
        ("tag = \"v1\"\nbogus = 1", "unknown field `bogus`"),
        ("", "missing field `tag`"),
    ] {
        let err = match tag_run(&t, with).build() {
            Ok(_) => panic!("{with} should be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{with}: {err}");
    }
    Ok(())
}

#[tokio::test]
async fn push_tag_and_branch_to_a_bare_remote() -> Res {
    let t = released()?;
    let (_dir, bare) = bare_origin(&t)?;
    let head = t.head()?;
    let with = r#"tag = "v${{ vars.version }}"
                  branch = "verified_release"
                  push = { remote = "origin", branch = true }"#;

    let plan = tag_run(&t, with).describe()?;
    let changes = plan.changes.join("\n");
    assert!(
        changes
            .contains("push refs/tags/v1.2.0 and refs/heads/verified_release to remote `origin`"),
        "{changes}"
    );

    let ran = tag_run(&t, with).go().await?;
    let out = ran.ok();
    assert_eq!(
        out["pushed"],
        "refs/tags/v1.2.0,refs/heads/verified_release"
    );
    // In the remote: the annotated tag object itself, and the branch.
    let remote_tag = bare.find_reference("refs/tags/v1.2.0")?;
    assert_eq!(
        remote_tag.target(),
        Some(t.repo.refname_to_id("refs/tags/v1.2.0")?)
    );
    assert_eq!(remote_tag.peel_to_commit()?.id(), head);
    assert_eq!(bare.refname_to_id("refs/heads/verified_release")?, head);

    // A re-run pushes nothing and succeeds.
    let again = tag_run(&t, with).go().await?;
    assert_eq!(again.ok()["pushed"], "");
    assert!(
        again.log().contains("already up to date on `origin`"),
        "{}",
        again.log()
    );

    // A later release moves the branch forward (fast-forward) and adds a tag; `push` as a
    // plain remote name.
    t.write("src.txt", "release 2\n")?;
    let next = t.commit_all("feat: next", None)?;
    let ran = Run::new(
        "git.tag",
        t.path(),
        table("tag = \"v2\"\nbranch = \"verified_release\"\npush = \"origin\""),
    )
    .go()
    .await?;
    assert_eq!(
        ran.ok()["pushed"],
        "refs/tags/v2,refs/heads/verified_release"
    );
    assert_eq!(bare.refname_to_id("refs/heads/verified_release")?, next);
    Ok(())
}

#[tokio::test]
async fn rejected_non_fast_forward_push_is_a_clear_error() -> Res {
    let t = released()?;
    let (dir, bare) = bare_origin(&t)?;

    // Someone else pushes an unrelated history to `verified_release`.
    let other = tempfile::tempdir()?;
    let url = format!("file://{}", dir.path().display());
    git_in(
        other.path(),
        t.home.path(),
        &["init", "-q", "-b", "main", "."],
    )?;
    let other_repo = git2::Repository::open(other.path())?;
    isolate_config(&other_repo)?;
    std::fs::write(other.path().join("theirs.txt"), "theirs\n")?;
    git_in(other.path(), t.home.path(), &["add", "."])?;
    git_in(
        other.path(),
        t.home.path(),
        &["commit", "-q", "-m", "theirs"],
    )?;
    git_in(
        other.path(),
        t.home.path(),
        &["push", "-q", &url, "HEAD:refs/heads/verified_release"],
    )?;
    let theirs = bare.refname_to_id("refs/heads/verified_release")?;

    let ran = tag_run(
        &t,
        "tag = \"v1\"\nbranch = \"verified_release\"\npush = \"origin\"",
    )
    .go()
    .await?;
    let err = ran.err();
    assert!(err.contains("remote `origin`"), "{err}");
    assert!(err.contains("refs/heads/verified_release"), "{err}");
    assert!(err.contains("non-fast-forward"), "{err}");
    assert!(err.contains(&url), "{err}");
    // Nothing was pushed: the remote branch is theirs and the tag is not there.
    assert_eq!(bare.refname_to_id("refs/heads/verified_release")?, theirs);
    assert!(bare.find_reference("refs/tags/v1").is_err());

    // A missing remote is named, with the remotes there are.
    let ran = tag_run(&t, "tag = \"v1\"\npush = \"upstream\"")
        .go()
        .await?;
    assert!(
        ran.err().contains("remote `upstream` does not exist"),
        "{}",
        ran.err()
    );
    assert!(ran.err().contains("(remotes: origin)"), "{}", ran.err());
    Ok(())
}
