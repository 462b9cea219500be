use crate::snapshot::messy_repo;
use crate::support::{Res, Run, TestRepo, set_exec, table, tree_state};

/// Takes snapshot A of the messy state S1, then turns the repository into S2: a new commit,
/// edits, deletions, a mode change, a symlink replaced by a file, a directory replaced by a
/// file, new untracked files, a changed ignored file, something staged.
async fn diverge() -> Res<(TestRepo, State, State, String)> {
    let t = messy_repo()?;
    let s1 = State::of(&t)?;
    let snap = Run::new("git.snapshot", t.path(), table("")).go().await?;
    let a = snap.ok()["snapshot"].clone();

    t.write("committed_later.txt", "in a new commit\n")?;
    t.commit_all("feat: later", None)?;
    t.write("bin.dat", [9u8; 300])?;
    set_exec(&t.path().join("script.sh"), false)?;
    std::fs::remove_file(t.path().join("link"))?;
    t.write("link", "now a regular file\n")?;
    std::fs::remove_dir_all(t.path().join("dir"))?;
    t.write("dir", "dir is a file now\n")?;
    t.write("new_since.txt", "created after the snapshot\n")?;
    std::fs::remove_file(
        t.path()
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"raw-\xff.bin")),
    )?;
    t.write("newdir/x/y.txt", "deep new file\n")?;
    t.write("debug.log", "ignored log, changed\n")?;
    t.git(&["add", "new_since.txt"])?;
    let s2 = State::of(&t)?;
    Ok((t, s1, s2, a))
}

/// Everything a rollback must restore.
#[derive(Debug, PartialEq)]
struct State {
    files: std::collections::BTreeMap<String, crate::support::Node>,
    status: String,
    head: String,
    head_ref: String,
}

impl State {
    fn of(t: &TestRepo) -> Res<Self> {
        let mut files = tree_state(t.path())?;
        files.retain(|p, _| !p.ends_with(".log") && !p.starts_with("target/"));
        Ok(Self {
            files,
            status: t.status()?,
            head: t.git(&["rev-parse", "HEAD"])?,
            head_ref: t.git(&["symbolic-ref", "HEAD"])?,
        })
    }
}

fn rollback<'a>(t: &'a TestRepo, to: &str, force: bool) -> Run<'a> {
    let mut with = toml::Table::new();
    with.insert("to".into(), to.into());
    with.insert("force".into(), force.into());
    Run::new("git.rollback", t.path(), with).id("undo")
}

#[tokio::test]
async fn rollback_restores_every_byte() -> Res {
    let (t, s1, s2, a) = diverge().await?;
    assert_ne!(s1, s2);

    let ran = rollback(&t, &a, true).run_id("run-2").go().await?;
    let out = ran.ok();
    assert_eq!(State::of(&t)?, s1, "log:\n{}", ran.log());
    assert_eq!(out["head"], s1.head.trim());
    assert_eq!(out["backup_ref"], "refs/orch/snapshots/run-2");
    assert_eq!(
        t.repo
            .refname_to_id("refs/orch/snapshots/run-2")?
            .to_string(),
        out["backup"]
    );
    // Ignored files are left alone.
    assert_eq!(
        std::fs::read_to_string(t.path().join("debug.log"))?,
        "ignored log, changed\n"
    );
    assert_eq!(
        std::fs::read_to_string(t.path().join("target/out.bin"))?,
        "ignored build output"
    );
    assert!(ran.log().contains("backup snapshot"), "{}", ran.log());
    Ok(())
}

#[tokio::test]
async fn rollback_of_a_rollback() -> Res {
    let (t, s1, s2, a) = diverge().await?;
    let first = rollback(&t, &a, true).run_id("run-2").go().await?;
    let backup = first.ok()["backup"].clone();
    assert_eq!(State::of(&t)?, s1);

    // S1 has uncommitted changes, so undoing the rollback needs `force` too.
    let second = rollback(&t, &backup, true).run_id("run-3").go().await?;
    assert_eq!(State::of(&t)?, s2, "log:\n{}", second.log());
    // And the backup of the second rollback brings back S1 again, by ref name this time.
    let third = rollback(&t, "run-3", true).run_id("run-4").go().await?;
    third.ok();
    assert_eq!(State::of(&t)?, s1);
    Ok(())
}

#[tokio::test]
async fn rollback_refuses_uncommitted_changes_without_force() -> Res {
    let t = TestRepo::new()?;
    t.write("f.txt", "v1\n")?;
    let c1 = t.commit_all("feat: v1", None)?;
    t.git(&["tag", "-a", "v1", "-m", "v1"])?;
    t.write("f.txt", "v2\n")?;
    t.commit_all("feat: v2", None)?;

    // An untracked file counts as a change: the rollback would delete it.
    t.write("notes.txt", "mine\n")?;
    let before = (tree_state(t.path())?, t.refs()?, t.index_bytes()?);
    let ran = rollback(&t, "v1", false).go().await?;
    let err = ran.err();
    assert!(err.contains("uncommitted changes"), "{err}");
    assert!(err.contains("notes.txt"), "{err}");
    assert!(err.contains("force = true"), "{err}");
    assert_eq!(
        (tree_state(t.path())?, t.refs()?, t.index_bytes()?),
        before,
        "a refused rollback changed something"
    );

    // On a clean tree a rollback to a tag moves the branch and the files.
    std::fs::remove_file(t.path().join("notes.txt"))?;
    let ran = rollback(&t, "v1", false).go().await?;
    assert_eq!(ran.ok()["head"], c1.to_string());
    assert_eq!(t.git(&["rev-parse", "main"])?.trim(), c1.to_string());
    assert_eq!(std::fs::read_to_string(t.path().join("f.txt"))?, "v1\n");
    assert_eq!(t.status()?, "", "the working tree should be clean");

    // An unknown target is a clear error.
    let ran = rollback(&t, "no-such-thing", true).go().await?;
    assert!(
        ran.err().contains("cannot resolve `no-such-thing`"),
        "{}",
        ran.err()
    );
    Ok(())
}

#[tokio::test]
async fn plan_names_the_refs_and_files_a_rollback_would_change() -> Res {
    let (t, _, _, a) = diverge().await?;
    let refs = t.refs()?;
    let files = tree_state(t.path())?;
    let d = rollback(&t, &a, false).describe()?;
    let changes = d.changes.join("\n");
    assert!(
        changes.contains("create backup ref refs/orch/snapshots/RUN_ID"),
        "{changes}"
    );
    assert!(
        changes.contains(&format!("snapshot {}", &a[..7])),
        "{changes}"
    );
    assert!(
        changes.contains("move branch refs/heads/main (HEAD)"),
        "{changes}"
    );
    assert!(changes.contains("removing untracked files"), "{changes}");
    assert_eq!(
        (t.refs()?, tree_state(t.path())?),
        (refs, files),
        "describe changed something"
    );

    assert!(
        Run::new("git.rollback", t.path(), table(""))
            .build()
            .is_err(),
        "`to` is required"
    );
    Ok(())
}
