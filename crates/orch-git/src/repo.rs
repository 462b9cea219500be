//! Repository helpers shared by the kinds: opening, status, identity, tags, snapshots and
//! restoring a working tree.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use git2::{
    Commit, Index, IndexEntry, IndexTime, ObjectType, Oid, Repository, Signature, Status,
    StatusOptions, Tree,
};

use crate::errors::{GitError, Libgit2Error};
use crate::exec::Job;

/// Prefix of the refs snapshots are kept under.
pub const SNAPSHOT_REF_PREFIX: &str = "refs/orch/snapshots/";

const MODE_FILE: u32 = 0o100644;
const MODE_EXEC: u32 = 0o100755;
const MODE_LINK: u32 = 0o120000;
const MODE_GITLINK: u32 = 0o160000;
/// `GIT_INDEX_ENTRY_SKIP_WORKTREE` in `flags_extended`.
const SKIP_WORKTREE: u16 = 1 << 14;

/// Opens the repository at or above `path`.
pub(crate) fn open(path: &Path) -> Result<Repository, GitError> {
    Repository::discover(path).map_err(|source| GitError::Open {
        path: path.to_owned(),
        source: source.into(),
    })
}

/// The directory to name a repository by in messages: its working tree, or its git dir.
pub(crate) fn display_path(repo: &Repository) -> PathBuf {
    repo.workdir().unwrap_or_else(|| repo.path()).to_owned()
}

/// The working tree, or an error for bare repositories.
pub(crate) fn workdir(repo: &Repository) -> Result<PathBuf, GitError> {
    repo.workdir()
        .map(Path::to_owned)
        .ok_or_else(|| GitError::Bare {
            repo: repo.path().to_owned(),
        })
}

/// Untracked paths the git kinds do not see: orch's own state directory (runs, logs,
/// journal), when it lies inside the working tree and is not ignored. Counting it as a
/// change would make every run dirty, and a rollback would delete the running run's files.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hidden {
    /// `dir/` relative to the working tree, as git paths are written.
    prefix: Option<Vec<u8>>,
}

impl Hidden {
    /// Hides `state_dir` when it is inside the working tree of `repo`.
    pub(crate) fn new(repo: &Repository, state_dir: Option<&Path>) -> Self {
        let (Some(workdir), Some(state)) = (repo.workdir(), state_dir) else {
            return Self::default();
        };
        let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
        let (workdir, state) = (canon(workdir), canon(state));
        let prefix = state
            .strip_prefix(&workdir)
            .ok()
            .filter(|rel| !rel.as_os_str().is_empty())
            .map(|rel| {
                let mut p = rel.as_os_str().as_bytes().to_vec();
                p.push(b'/');
                p
            });
        Self { prefix }
    }

    /// Whether a path (relative, `/`-separated) is hidden.
    pub(crate) fn hides(&self, path: &[u8]) -> bool {
        self.prefix
            .as_ref()
            .is_some_and(|p| path.starts_with(p) || path == &p[..p.len() - 1])
    }
}

/// Paths with uncommitted changes: staged, unstaged, untracked (ignored files and orch's
/// state directory excluded), sorted.
pub(crate) fn changed_paths(repo: &Repository, hidden: &Hidden) -> Result<Vec<String>, GitError> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .include_unmodified(false);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(GitError::git("read the status", display_path(repo)))?;
    let mut paths: Vec<String> = statuses
        .iter()
        .filter(|s| !s.status().is_empty() && !s.status().contains(Status::IGNORED))
        .filter(|s| !(s.status() == Status::WT_NEW && hidden.hides(s.path_bytes())))
        .map(|s| String::from_utf8_lossy(s.path_bytes()).into_owned())
        .collect();
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// The commit HEAD points at, or `None` when HEAD is unborn.
pub(crate) fn head_commit(repo: &Repository) -> Result<Option<Commit<'_>>, GitError> {
    match repo.head() {
        Ok(head) => head
            .peel_to_commit()
            .map(Some)
            .map_err(GitError::git("read HEAD", display_path(repo))),
        Err(e)
            if matches!(
                e.code(),
                git2::ErrorCode::UnbornBranch | git2::ErrorCode::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(GitError::git("read HEAD", display_path(repo))(e)),
    }
}

/// Where HEAD points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeadRef {
    /// On a branch (`refs/heads/main`), born or not.
    Branch(String),
    /// Detached at a commit.
    Detached,
}

/// Where HEAD points.
pub(crate) fn head_ref(repo: &Repository) -> Result<HeadRef, GitError> {
    let head = repo
        .find_reference("HEAD")
        .map_err(GitError::git("read HEAD", display_path(repo)))?;
    Ok(match head.symbolic_target().ok().flatten() {
        Some(target) => HeadRef::Branch(target.to_owned()),
        None => HeadRef::Detached,
    })
}

/// The identity for commits and tags orch writes: the repository's `user.name` and
/// `user.email`, or `orch <orch@localhost>` when none is configured.
pub(crate) fn signature(repo: &Repository) -> Result<Signature<'static>, GitError> {
    match repo.signature() {
        Ok(sig) => Ok(sig.to_owned()),
        Err(_) => Signature::now("orch", "orch@localhost")
            .map_err(GitError::git("make a signature", display_path(repo))),
    }
}

/// Every tag, by the commit it peels to.
pub(crate) fn tags_by_commit(repo: &Repository) -> Result<HashMap<Oid, Vec<String>>, GitError> {
    let mut map: HashMap<Oid, Vec<String>> = HashMap::new();
    let refs = repo
        .references_glob("refs/tags/*")
        .map_err(GitError::git("list tags", display_path(repo)))?;
    for r in refs.flatten() {
        let Ok(name) = r.shorthand().map(str::to_owned) else {
            continue;
        };
        if let Ok(commit) = r.peel_to_commit() {
            map.entry(commit.id()).or_default().push(name);
        }
    }
    for names in map.values_mut() {
        names.sort();
    }
    Ok(map)
}

/// The nearest tag reachable from `from` (newest first, in topological order), skipping
/// `from` itself when `skip_from` is set. With several tags on one commit, the last by name.
pub(crate) fn nearest_tag(
    repo: &Repository,
    from: Oid,
    skip_from: bool,
) -> Result<Option<(String, Oid)>, GitError> {
    let tags = tags_by_commit(repo)?;
    if tags.is_empty() {
        return Ok(None);
    }
    let mut walk = repo
        .revwalk()
        .map_err(GitError::git("walk the history", display_path(repo)))?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
        .and_then(|()| walk.push(from))
        .map_err(GitError::git("walk the history", display_path(repo)))?;
    for oid in walk {
        let oid = oid.map_err(GitError::git("walk the history", display_path(repo)))?;
        if skip_from && oid == from {
            continue;
        }
        if let Some(name) = tags.get(&oid).and_then(|n| n.last()) {
            return Ok(Some((name.clone(), oid)));
        }
    }
    Ok(None)
}

/// Resolves a commit id, snapshot ref (`refs/orch/snapshots/X` or just `X`), tag or branch.
pub(crate) fn resolve_commit<'r>(repo: &'r Repository, spec: &str) -> Result<Commit<'r>, GitError> {
    let candidates = [
        spec.to_owned(),
        format!("{SNAPSHOT_REF_PREFIX}{spec}"),
        format!("refs/tags/{spec}"),
    ];
    for c in &candidates {
        if let Ok(obj) = repo.revparse_single(c)
            && let Ok(commit) = obj.peel_to_commit()
        {
            return Ok(commit);
        }
    }
    Err(GitError::Unresolved {
        target: spec.to_owned(),
        repo: display_path(repo),
    })
}

/// What a snapshot commit records besides its tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotInfo {
    /// The commit HEAD was on (`None`: unborn).
    pub head: Option<Oid>,
    /// A commit whose tree is the index as it was (`None`: the index had conflicts).
    pub index: Option<Oid>,
}

const TRAILER_SNAPSHOT: &str = "Orch-Snapshot: ";
const TRAILER_HEAD: &str = "Orch-Head: ";
const TRAILER_INDEX: &str = "Orch-Index: ";

/// The snapshot trailers of a commit, when it is an orch snapshot.
pub(crate) fn snapshot_info(commit: &Commit<'_>) -> Option<SnapshotInfo> {
    let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
    let mut is_snapshot = false;
    let mut head = None;
    let mut index = None;
    for line in message.lines() {
        if line.starts_with(TRAILER_SNAPSHOT) {
            is_snapshot = true;
        } else if let Some(v) = line.strip_prefix(TRAILER_HEAD) {
            head = Oid::from_str(v.trim()).ok();
        } else if let Some(v) = line.strip_prefix(TRAILER_INDEX) {
            index = Oid::from_str(v.trim()).ok();
        }
    }
    is_snapshot.then_some(SnapshotInfo { head, index })
}

/// A snapshot written to the repository.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    /// The snapshot commit.
    pub id: Oid,
    /// The ref that keeps it.
    pub refname: String,
    /// Its tree (the working tree as it was).
    pub tree: Oid,
}

/// Records the working tree (tracked and untracked files, ignored ones excluded) as a commit
/// under `refs/orch/snapshots/RUN_ID` (or `RUN_ID-PHASE_ID`, then `-2`, `-3`... when taken),
/// without touching the working tree, the index, HEAD or any branch.
///
/// The commit's first parent is HEAD (when born); its second parent is a commit of the index
/// as it was, so a rollback can restore what was staged. Trailers (`Orch-Snapshot`,
/// `Orch-Head`, `Orch-Index`) mark it as a snapshot.
pub(crate) fn take_snapshot(
    repo: &Repository,
    job: &Job,
    run_id: &str,
    phase_id: &str,
    purpose: &str,
    hidden: &Hidden,
) -> Result<Snapshot, GitError> {
    let dir = display_path(repo);
    let tree_id = worktree_tree(repo, job, hidden)?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(GitError::git("read the snapshot tree", &dir))?;
    let head = head_commit(repo)?;
    let sig = signature(repo)?;

    // The index as a tree: a commit of it keeps it reachable. An index with conflicts has no
    // tree; the rollback then rebuilds the index from HEAD.
    let mut real_index = repo
        .index()
        .map_err(GitError::git("read the index", &dir))?;
    let index_commit = match real_index.write_tree_to(repo) {
        Ok(index_tree_id) => {
            let index_tree = repo
                .find_tree(index_tree_id)
                .map_err(GitError::git("read the index tree", &dir))?;
            let parents: Vec<&Commit<'_>> = head.iter().collect();
            Some(
                repo.commit(
                    None,
                    &sig,
                    &sig,
                    &format!("orch index of run {run_id}, phase {phase_id}\n"),
                    &index_tree,
                    &parents,
                )
                .map_err(GitError::git("write the index commit", &dir))?,
            )
        }
        Err(_) => {
            job.log("the index has conflicts; the snapshot keeps the working tree only");
            None
        }
    };
    let index_commit = index_commit
        .map(|id| repo.find_commit(id))
        .transpose()
        .map_err(GitError::git("read the index commit", &dir))?;

    let at = match (&head, head_ref(repo)?) {
        (Some(c), HeadRef::Branch(b)) => format!(
            "{} at {}",
            b.trim_start_matches("refs/heads/"),
            short(c.id())
        ),
        (Some(c), HeadRef::Detached) => format!("detached HEAD at {}", short(c.id())),
        (None, _) => "an unborn branch".to_owned(),
    };
    let message = format!(
        "orch {purpose} of {at}\n\n{TRAILER_SNAPSHOT}{run_id}/{phase_id}\n{TRAILER_HEAD}{}\n{TRAILER_INDEX}{}\n",
        head.as_ref()
            .map_or("none".to_owned(), |c| c.id().to_string()),
        index_commit
            .as_ref()
            .map_or("none".to_owned(), |c| c.id().to_string()),
    );
    let mut parents: Vec<&Commit<'_>> = head.iter().collect();
    parents.extend(index_commit.iter());
    let id = repo
        .commit(None, &sig, &sig, &message, &tree, &parents)
        .map_err(GitError::git("write the snapshot commit", &dir))?;

    let refname = claim_snapshot_ref(repo, run_id, phase_id, id, purpose)?;
    Ok(Snapshot {
        id,
        refname,
        tree: tree_id,
    })
}

/// The snapshot ref a phase would use (for plans).
pub(crate) fn snapshot_ref_name(run_id: &str) -> String {
    format!("{SNAPSHOT_REF_PREFIX}{run_id}")
}

/// Creates the first free snapshot ref for `id`.
fn claim_snapshot_ref(
    repo: &Repository,
    run_id: &str,
    phase_id: &str,
    id: Oid,
    purpose: &str,
) -> Result<String, GitError> {
    let base = snapshot_ref_name(run_id);
    let with_phase = format!("{base}-{phase_id}");
    let mut candidates = vec![base, with_phase.clone()];
    candidates.extend((2..100).map(|n| format!("{with_phase}-{n}")));
    let log = format!("orch: {purpose}");
    for name in candidates {
        match repo.reference(&name, id, false, &log) {
            Ok(_) => return Ok(name),
            Err(e) if e.code() == git2::ErrorCode::Exists => continue,
            Err(e) => {
                return Err(GitError::git(format!("create {name}"), display_path(repo))(
                    e,
                ));
            }
        }
    }
    Err(GitError::Git {
        action: format!("find a free snapshot ref under {with_phase}"),
        repo: display_path(repo),
        source: Libgit2Error::msg("too many snapshots for this phase in this run"),
    })
}

/// Seven hex digits of a commit id.
pub(crate) fn short(id: Oid) -> String {
    let mut s = id.to_string();
    s.truncate(7);
    s
}

fn bytes_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Builds a tree of the working tree in a separate in-memory index: the entries of the real
/// index (as they are on disk now, deleted ones left out) and untracked files, stored byte
/// for byte (no clean filters).
fn worktree_tree(repo: &Repository, job: &Job, hidden: &Hidden) -> Result<Oid, GitError> {
    let dir = workdir(repo)?;
    let real = repo
        .index()
        .map_err(GitError::git("read the index", &dir))?;
    let filemode = repo
        .config()
        .and_then(|c| c.get_bool("core.filemode"))
        .unwrap_or(true);

    // Path -> the real index entry (stage 0 preferred; for conflicts, "ours").
    let mut paths: BTreeMap<Vec<u8>, Option<IndexEntry>> = BTreeMap::new();
    for entry in real.iter() {
        let stage = (entry.flags >> 12) & 0x3;
        let keep = match paths.get(&entry.path) {
            None => true,
            Some(Some(old)) => {
                let old_stage = (old.flags >> 12) & 0x3;
                stage == 0 || (old_stage != 0 && stage == 2)
            }
            Some(None) => false,
        };
        if keep {
            paths.insert(entry.path.clone(), Some(entry));
        }
    }
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut opts))
        .map_err(GitError::git("read the status", &dir))?;
    for s in statuses.iter() {
        if s.status().contains(Status::WT_NEW) && !hidden.hides(s.path_bytes()) {
            paths.entry(s.path_bytes().to_vec()).or_insert(None);
        }
    }

    let odb = repo
        .odb()
        .map_err(GitError::git("open the object database", &dir))?;
    let mut tree_index = Index::new().map_err(GitError::git("make an in-memory index", &dir))?;
    for (path, entry) in paths {
        job.check()?;
        let rel = bytes_path(&path);
        if let Some(e) = &entry
            && (e.mode == MODE_GITLINK || e.flags_extended & SKIP_WORKTREE != 0)
        {
            // Submodules and sparse entries are kept as the index has them.
            tree_index
                .add(&plain_entry(path.clone(), e.mode, e.id))
                .map_err(GitError::git("build the snapshot tree", &dir))?;
            continue;
        }
        let full = dir.join(rel);
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(GitError::io("inspect", full)(e)),
        };
        let (mode, id) = if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(GitError::io("read the link", &full))?;
            let id = odb
                .write(ObjectType::Blob, target.as_os_str().as_bytes())
                .map_err(GitError::git("store a file", &dir))?;
            (MODE_LINK, id)
        } else if meta.is_file() {
            let exec = if filemode {
                meta.permissions().mode() & 0o111 != 0
            } else {
                entry.as_ref().is_some_and(|e| e.mode == MODE_EXEC)
            };
            let id = store_file(&odb, &full, meta.len()).map_err(|e| match e {
                StoreError::Io(e) => GitError::io("read", &full)(e),
                StoreError::Git(e) => GitError::git("store a file", &dir)(e),
            })?;
            (if exec { MODE_EXEC } else { MODE_FILE }, id)
        } else {
            job.log(format!(
                "left {} out of the snapshot: it is a directory (a nested repository?)",
                rel.display()
            ));
            continue;
        };
        tree_index
            .add(&plain_entry(path, mode, id))
            .map_err(GitError::git("build the snapshot tree", &dir))?;
    }
    tree_index
        .write_tree_to(repo)
        .map_err(GitError::git("write the snapshot tree", &dir))
}

fn plain_entry(path: Vec<u8>, mode: u32, id: Oid) -> IndexEntry {
    IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: 0,
        flags_extended: 0,
        path,
    }
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

enum StoreError {
    Io(io::Error),
    Git(git2::Error),
}

/// Files up to this size are hashed in memory first and written only when the object
/// database does not have them (most files of a snapshot are unchanged); larger ones are
/// streamed.
const HASH_IN_MEMORY: u64 = 16 * 1024 * 1024;

/// Stores a file in the object database as a blob, byte for byte.
fn store_file(odb: &git2::Odb<'_>, path: &Path, len: u64) -> Result<Oid, StoreError> {
    if len <= HASH_IN_MEMORY {
        let bytes = fs::read(path).map_err(StoreError::Io)?;
        let id = Oid::hash_object(ObjectType::Blob, &bytes).map_err(StoreError::Git)?;
        if odb.exists(id) {
            return Ok(id);
        }
        return odb.write(ObjectType::Blob, &bytes).map_err(StoreError::Git);
    }
    let mut file = fs::File::open(path).map_err(StoreError::Io)?;
    let size = usize::try_from(len).map_err(|_| {
        StoreError::Io(io::Error::new(
            io::ErrorKind::FileTooLarge,
            "file too large",
        ))
    })?;
    let mut writer = odb
        .writer(size, ObjectType::Blob)
        .map_err(StoreError::Git)?;
    let copied = io::copy(&mut file, &mut writer).map_err(StoreError::Io)?;
    if copied != len {
        return Err(StoreError::Io(io::Error::other(
            "the file changed size while it was read",
        )));
    }
    writer.finalize().map_err(StoreError::Git)
}

/// Every blob, link and submodule of a tree, by path.
pub(crate) fn flatten(
    repo: &Repository,
    tree: &Tree<'_>,
) -> Result<BTreeMap<Vec<u8>, (u32, Oid)>, GitError> {
    // Walked by hand: names are bytes, and need not be UTF-8.
    fn walk(
        repo: &Repository,
        tree: &Tree<'_>,
        prefix: &[u8],
        out: &mut BTreeMap<Vec<u8>, (u32, Oid)>,
    ) -> Result<(), git2::Error> {
        for entry in tree.iter() {
            let mut path = prefix.to_vec();
            path.extend_from_slice(entry.name_bytes());
            if entry.kind() == Some(ObjectType::Tree) {
                let sub = repo.find_tree(entry.id())?;
                path.push(b'/');
                walk(repo, &sub, &path, out)?;
            } else {
                out.insert(path, (entry.filemode() as u32, entry.id()));
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(repo, tree, b"", &mut out).map_err(GitError::git("read a tree", display_path(repo)))?;
    Ok(out)
}

/// What a restore changed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RestoreStats {
    pub written: usize,
    pub removed: usize,
    pub unchanged: usize,
}

/// Makes the working tree hold exactly `target` (ignored files aside), given that it holds
/// exactly `current` now (a snapshot just taken). Files are written byte for byte as stored.
pub(crate) fn restore_worktree(
    repo: &Repository,
    job: &Job,
    current: &Tree<'_>,
    target: &Tree<'_>,
    hidden: &Hidden,
) -> Result<RestoreStats, GitError> {
    let dir = workdir(repo)?;
    let now = flatten(repo, current)?;
    let want = flatten(repo, target)?;
    let mut stats = RestoreStats::default();

    // 1. Remove what the target does not have, then the directories that became empty.
    let mut emptied = Vec::new();
    for (path, (mode, _)) in &now {
        if want.contains_key(path) || *mode == MODE_GITLINK || hidden.hides(path) {
            continue;
        }
        let full = dir.join(bytes_path(path));
        match fs::remove_file(&full) {
            Ok(()) => stats.removed += 1,
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(GitError::io("remove", full)(e)),
        }
        if let Some(parent) = full.parent() {
            emptied.push(parent.to_owned());
        }
    }
    emptied.sort();
    emptied.dedup();
    for d in emptied.iter().rev() {
        prune_empty_dirs(&dir, d);
    }

    // 2. Write what differs. Cancellation is not checked here: a restore that has begun is
    // finished, since half a working tree is worse than either end.
    for (path, (mode, id)) in &want {
        let rel = bytes_path(path);
        if *mode == MODE_GITLINK {
            job.log(format!("left submodule {} as it is", rel.display()));
            continue;
        }
        if now.get(path) == Some(&(*mode, *id)) {
            stats.unchanged += 1;
            continue;
        }
        let full = dir.join(rel);
        make_parent_dirs(&dir, rel, job)?;
        if let Ok(meta) = fs::symlink_metadata(&full)
            && meta.is_dir()
        {
            job.log(format!(
                "removed directory {} (ignored files only) to write a file there",
                rel.display()
            ));
            fs::remove_dir_all(&full).map_err(GitError::io("remove", &full))?;
        }
        let blob = repo
            .find_blob(*id)
            .map_err(GitError::git(format!("read {}", rel.display()), &dir))?;
        write_entry(&full, *mode, blob.content())?;
        stats.written += 1;
    }
    Ok(stats)
}

/// Creates the parent directories of `rel` under `root`, removing ignored files that stand
/// where a directory must be.
fn make_parent_dirs(root: &Path, rel: &Path, job: &Job) -> Result<(), GitError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut at = root.to_owned();
    for part in parent.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                job.log(format!(
                    "removed {} (ignored) to make room for a directory",
                    at.strip_prefix(root).unwrap_or(&at).display()
                ));
                fs::remove_file(&at).map_err(GitError::io("remove", &at))?;
            }
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(GitError::io("inspect", &at)(e)),
        }
        match fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(GitError::io("create the directory", &at)(e)),
        }
    }
    Ok(())
}

/// Writes one file (atomically, through a temporary file and a rename) or symlink.
fn write_entry(full: &Path, mode: u32, content: &[u8]) -> Result<(), GitError> {
    if mode == MODE_LINK {
        match fs::remove_file(full) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(GitError::io("remove", full)(e)),
        }
        let target = Path::new(OsStr::from_bytes(content));
        return std::os::unix::fs::symlink(target, full)
            .map_err(GitError::io("create the link", full));
    }
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = full.with_file_name(format!(".{name}.orch-{}.tmp", std::process::id()));
    let perm = if mode == MODE_EXEC { 0o777 } else { 0o666 };
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(perm)
            .open(&tmp)?;
        io::Write::write_all(&mut f, content)?;
        f.sync_data()?;
        drop(f);
        fs::rename(&tmp, full)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(GitError::io("write", full)(e));
    }
    Ok(())
}

/// Removes `dir` and its parents up to (not including) `root` while they are empty.
fn prune_empty_dirs(root: &Path, dir: &Path) {
    let mut at = dir.to_owned();
    while at != root && at.starts_with(root) {
        if fs::remove_dir(&at).is_err() {
            break;
        }
        if !at.pop() {
            break;
        }
    }
}

/// Replaces the repository's index with `tree` and refreshes its stat data from the
/// working tree.
pub(crate) fn reset_index(repo: &Repository, tree: Option<&Tree<'_>>) -> Result<(), GitError> {
    let dir = display_path(repo);
    let mut index = repo
        .index()
        .map_err(GitError::git("read the index", &dir))?;
    match tree {
        Some(t) => index.read_tree(t),
        None => index.clear(),
    }
    .map_err(GitError::git("rebuild the index", &dir))?;
    index
        .write()
        .map_err(GitError::git("write the index", &dir))?;
    let mut opts = StatusOptions::new();
    opts.update_index(true).include_untracked(false);
    repo.statuses(Some(&mut opts))
        .map_err(GitError::git("refresh the index", &dir))?;
    Ok(())
}
