use std::collections::BTreeMap;

use crate::support::{Node, Res, Run, TestRepo, set_exec, table, tree_state};

/// A repository with committed files, then staged, unstaged, untracked and ignored changes.
pub fn messy_repo() -> Res<TestRepo> {
    let t = TestRepo::new()?;
    t.write(".gitignore", "*.log\ntarget/\n")?;
    t.write("a.txt", "alpha\n")?;
    t.write("b.txt", "windows\r\nline endings\r\n")?;
    t.write("bin.dat", (0u8..=255).collect::<Vec<_>>())?;
    t.write("script.sh", "#!/bin/sh\necho hi\n")?;
    set_exec(&t.path().join("script.sh"), true)?;
    t.write("dir/nested.txt", "nested\n")?;
    t.write("empty.txt", "")?;
    t.write("noeol.txt", "no newline at end")?;
    std::os::unix::fs::symlink("a.txt", t.path().join("link"))?;
    t.commit_all("feat: first", None)?;

    // Staged: a modification and a new file.
    t.write("a.txt", "alpha, staged\n")?;
    t.write("staged_new.txt", "new and staged\n")?;
    t.git(&["add", "a.txt", "staged_new.txt"])?;
    // Unstaged: a modification on top of the staged one, another one, a deletion.
    t.write("a.txt", "alpha, staged, then edited again\n")?;
    t.write("b.txt", "windows\r\nline endings\r\nchanged\r\n")?;
    std::fs::remove_file(t.path().join("noeol.txt"))?;
    // Untracked, in a new directory too.
    t.write("untracked.txt", "untracked\n")?;
    t.write("udir/deep/file.bin", [0u8, 1, 2, 0xff, b'\n', 0])?;
    // A file name that is not UTF-8.
    std::fs::write(
        t.path()
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"raw-\xff.bin")),
        "latin-1 name\n",
    )?;
    // Ignored.
    t.write("debug.log", "ignored log\n")?;
    t.write("target/out.bin", "ignored build output")?;
    Ok(t)
}

/// The files of a commit's tree, as they would be on disk.
pub fn commit_files(t: &TestRepo, commit: git2::Oid) -> Res<BTreeMap<String, Node>> {
    let tree = t.repo.find_commit(commit)?.tree()?;
    let mut out = BTreeMap::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |root, e| {
        if e.kind() == Some(git2::ObjectType::Blob) {
            let blob = t.repo.find_blob(e.id()).expect("blob of the tree");
            let path = format!("{root}{}", String::from_utf8_lossy(e.name_bytes()));
            let node = if e.filemode() == 0o120000 {
                Node::Link(String::from_utf8_lossy(blob.content()).into_owned().into())
            } else {
                Node::File {
                    exec: e.filemode() == 0o100755,
                    bytes: blob.content().to_vec(),
                }
            };
            out.insert(path, node);
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(out)
}

fn without_ignored(mut state: BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    state.retain(|p, _| !p.ends_with(".log") && !p.starts_with("target/"));
    state
}

#[tokio::test]
async fn snapshot_records_everything_and_touches_nothing() -> Res {
    let t = messy_repo()?;
    let head = t.head()?;
    let index_before = t.index_bytes()?;
    let status_before = t.status()?;
    let files_before = tree_state(t.path())?;
    let refs_before = t.refs()?;
    assert!(status_before.contains("MM a.txt"), "{status_before}");

    let ran = Run::new("git.snapshot", t.path(), table("")).go().await?;
    let out = ran.ok();
    assert_eq!(out["ref"], "refs/orch/snapshots/run-1");
    let snap = git2::Oid::from_str(&out["snapshot"])?;
    assert_eq!(t.repo.refname_to_id("refs/orch/snapshots/run-1")?, snap);

    // Nothing else moved: working tree, index (byte for byte), HEAD, branches, status.
    assert_eq!(t.index_bytes()?, index_before, "the index was rewritten");
    assert_eq!(t.status()?, status_before);
    assert_eq!(tree_state(t.path())?, files_before);
    assert_eq!(t.head()?, head);
    assert_eq!(t.git(&["symbolic-ref", "HEAD"])?.trim(), "refs/heads/main");
    let refs_after = t.refs()?;
    let new_refs: Vec<&str> = refs_after
        .lines()
        .filter(|l| !refs_before.contains(*l))
        .collect();
    assert_eq!(new_refs, [format!("refs/orch/snapshots/run-1 {snap}")]);

    // The snapshot holds the working tree: staged, unstaged and untracked, not ignored;
    // deleted files are gone; modes and symlinks kept.
    let commit = t.repo.find_commit(snap)?;
    assert_eq!(commit.parent_id(0)?, head, "first parent is HEAD");
    assert_eq!(commit_files(&t, snap)?, without_ignored(files_before));

    // A second snapshot in the same run gets the phase id appended.
    let again = Run::new("git.snapshot", t.path(), table(""))
        .id("snap2")
        .go()
        .await?;
    assert_eq!(again.ok()["ref"], "refs/orch/snapshots/run-1-snap2");
    Ok(())
}

#[tokio::test]
async fn snapshot_of_an_unborn_branch_and_of_a_bare_repo() -> Res {
    let t = TestRepo::new()?;
    t.write("only.txt", "first file, never committed\n")?;
    let ran = Run::new("git.snapshot", t.path(), table("")).go().await?;
    let snap = git2::Oid::from_str(&ran.ok()["snapshot"])?;
    let commit = t.repo.find_commit(snap)?;
    assert!(commit.message().unwrap_or("").contains("Orch-Head: none"));
    assert_eq!(commit_files(&t, snap)?.len(), 1);
    assert!(t.repo.head().is_err(), "HEAD must stay unborn");

    let bare = tempfile::tempdir()?;
    git2::Repository::init_bare(bare.path())?;
    let ran = Run::new("git.snapshot", bare.path(), table(""))
        .go()
        .await?;
    assert!(ran.err().contains("no working tree"), "{}", ran.err());
    Ok(())
}

#[tokio::test]
async fn plan_says_what_a_snapshot_would_create() -> Res {
    let t = messy_repo()?;
    let refs = t.refs()?;
    let d = Run::new("git.snapshot", t.path(), table("")).describe()?;
    let changes = d.changes.join("\n");
    assert!(
        changes
            .contains("create ref refs/orch/snapshots/RUN_ID (or refs/orch/snapshots/RUN_ID-phase"),
        "{changes}"
    );
    assert!(changes.contains("not touched"), "{changes}");
    assert_eq!(t.refs()?, refs, "describe changed refs");
    Ok(())
}

#[tokio::test]
async fn a_cancelled_run_changes_nothing() -> Res {
    let t = messy_repo()?;
    let refs = t.refs()?;
    let ran = Run::new("git.snapshot", t.path(), table(""))
        .cancelled()
        .go()
        .await?;
    assert_eq!(ran.result, Err(orch_core::PhaseError::Cancelled));
    assert_eq!(t.refs()?, refs);
    Ok(())
}
