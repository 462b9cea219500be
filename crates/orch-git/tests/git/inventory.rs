use crate::support::{Res, Run, TestRepo, table};

#[tokio::test]
async fn inventory_reports_head_branch_changes_tags_and_remotes() -> Res {
    let t = TestRepo::new()?;

    // Unborn: no head, no tag, the branch HEAD will be born on.
    t.write("a.txt", "a\n")?;
    let ran = Run::new("git.inventory", t.path(), table("")).go().await?;
    let out = ran.ok();
    assert_eq!(out["head"], "");
    assert_eq!(out["branch"], "main");
    assert_eq!(out["dirty"], "true");
    assert_eq!(out["dirty_files"], r#"["a.txt"]"#);
    assert_eq!(out["latest_tag"], "");

    let c1 = t.commit_all("feat: one", None)?;
    t.git(&["tag", "-a", "v1.0.0", "-m", "v1.0.0"])?;
    t.write("a.txt", "a2\n")?;
    let c2 = t.commit_all("fix: two", None)?;
    t.repo
        .remote("origin", "https://ci:hunter2-token@example.com/org/app.git")?;
    t.repo.remote("mirror", "/srv/git/app.git")?;

    let ran = Run::new("git.inventory", t.path(), table(r#"repo = ".""#))
        .go()
        .await?;
    let out = ran.ok();
    assert_eq!(out["head"], c2.to_string());
    assert_eq!(out["branch"], "main");
    assert_eq!(out["detached"], "false");
    assert_eq!(out["dirty"], "false");
    assert_eq!(out["dirty_files"], "[]");
    assert_eq!(
        out["latest_tag"], "v1.0.0",
        "the nearest tag reachable from HEAD"
    );
    let remotes: serde_json::Value = serde_json::from_str(&out["remotes"])?;
    assert_eq!(
        remotes,
        serde_json::json!({
            "mirror": "/srv/git/app.git",
            "origin": "https://example.com/org/app.git",
        })
    );

    // Detached at the tagged commit, with a staged and an untracked change.
    t.git(&["checkout", "-q", "--detach", &c1.to_string()])?;
    t.write("new.txt", "n\n")?;
    t.write("a.txt", "staged\n")?;
    t.git(&["add", "a.txt"])?;
    let ran = Run::new("git.inventory", t.path(), table("")).go().await?;
    let out = ran.ok();
    assert_eq!(out["head"], c1.to_string());
    assert_eq!(
        (out["branch"].as_str(), out["detached"].as_str()),
        ("", "true")
    );
    assert_eq!(out["dirty_files"], r#"["a.txt","new.txt"]"#);
    assert!(
        ran.log().contains("2 changed path(s), latest tag v1.0.0"),
        "{}",
        ran.log()
    );

    let nowhere = tempfile::tempdir()?;
    let ran = Run::new("git.inventory", nowhere.path(), table(""))
        .go()
        .await?;
    assert!(
        ran.err().contains("cannot open git repository"),
        "{}",
        ran.err()
    );
    Ok(())
}

#[tokio::test]
async fn git_agent_defaults_to_capacity_one() -> Res {
    let registry = crate::support::registry();
    let spec = orch_core::AgentSpec {
        name: "repo".into(),
        agent_type: "git".into(),
        capacity: None,
        with: orch_core::WithTable::new(table(r#"repo = "/nonexistent/repo""#)),
        breaker: Default::default(),
        unavailable: Default::default(),
    };
    let agent = registry.build_agent(&spec, 8)?;
    assert_eq!(agent.capacity(), 1);
    assert_eq!(agent.agent_type(), "git");
    assert_eq!(agent.endpoint(), "/nonexistent/repo");
    let health = agent.health().await;
    assert!(
        health
            .as_ref()
            .is_err_and(|e| e.to_string().contains("cannot open the repository")),
        "{health:?}"
    );

    let t = TestRepo::new()?;
    let ok = orch_core::AgentSpec {
        with: orch_core::WithTable::new(table(&format!("repo = \"{}\"", t.path().display()))),
        capacity: Some(2),
        ..spec
    };
    let agent = registry.build_agent(&ok, 8)?;
    assert_eq!(agent.capacity(), 2);
    agent.health().await?;
    for kind in [
        "git.inventory",
        "git.snapshot",
        "git.rollback",
        "git.tag",
        "git.changelog",
    ] {
        assert_eq!(
            registry.kind(kind).map(|k| k.agent_type.as_str()),
            Some("git"),
            "{kind}"
        );
    }
    Ok(())
}
