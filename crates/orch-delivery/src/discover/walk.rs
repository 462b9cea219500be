//! Walking the tree: the roots checked, `.gitignore` and the `ignore` setting applied,
//! vendored, cached and state directories left out (and listed as skipped).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{DiscoverOptions, Problem, Severity, Skipped};
use crate::errors::DiscoverError;

/// A file the walk found.
pub(super) struct FileRec {
    /// Its path relative to the base, `/`-separated.
    pub(super) rel: String,
    pub(super) abs: PathBuf,
    pub(super) name: String,
    pub(super) size: u64,
}

/// What the walk found.
pub(super) struct Tree {
    /// The directory paths are reported relative to.
    pub(super) base: PathBuf,
    /// The directories walked.
    pub(super) roots: Vec<PathBuf>,
    /// Every file, sorted by path, each once (roots may overlap).
    pub(super) files: Vec<FileRec>,
    /// Entries that could not be read.
    pub(super) problems: Vec<Problem>,
    /// Directories left out, and why.
    pub(super) skipped: BTreeSet<Skipped>,
}

/// Walks the roots (`.gitignore` and the `ignore` setting applied, vendored, cached and
/// state directories left out) and lists the files there.
pub(super) fn walk(
    opts: &DiscoverOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<Tree, DiscoverError> {
    let canon = |p: &Path| {
        p.canonicalize()
            .ok()
            .filter(|c| c.is_dir())
            .ok_or_else(|| DiscoverError::NotADirectory { path: p.to_owned() })
    };
    let mut base = canon(&opts.base)?;
    let mut roots = Vec::new();
    for r in &opts.roots {
        roots.push(canon(&opts.base.join(r))?);
    }
    if roots.is_empty() {
        roots.push(base.clone());
    }
    if let Some(outside) = roots.iter().find(|r| !r.starts_with(&base)) {
        if roots.len() == 1 {
            base = outside.clone();
        } else {
            return Err(DiscoverError::RootOutside {
                path: outside.clone(),
            });
        }
    }
    let skip: Vec<PathBuf> = opts
        .skip
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();

    let mut ig = ignore::gitignore::GitignoreBuilder::new(&base);
    for pattern in &opts.ignore {
        ig.add_line(None, pattern)
            .map_err(|source| DiscoverError::Pattern {
                pattern: pattern.clone(),
                source,
            })?;
    }
    let user_ignore = ig.build().map_err(|source| DiscoverError::Pattern {
        pattern: opts.ignore.join(", "),
        source,
    })?;

    let skipped = Arc::new(Mutex::new(BTreeSet::<Skipped>::new()));
    let mut walk = ignore::WalkBuilder::new(&roots[0]);
    for r in &roots[1..] {
        walk.add(r);
    }
    {
        let skipped = Arc::clone(&skipped);
        let base = base.clone();
        walk.hidden(false)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(false)
            .require_git(false)
            .ignore(true)
            .parents(true)
            .follow_links(false)
            .sort_by_file_name(|a, b| a.cmp(b))
            .filter_entry(move |entry| {
                let name = entry.file_name().to_string_lossy();
                let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
                if !is_dir {
                    let backup = name.ends_with(".bak") || name.ends_with('~');
                    return !backup && !user_ignore.matched(entry.path(), false).is_ignore();
                }
                let reason = if skip.iter().any(|s| s == entry.path()) {
                    Some("state-dir")
                } else if user_ignore.matched(entry.path(), true).is_ignore() {
                    Some("ignore-setting")
                } else {
                    skip_reason(&name, entry.path())
                };
                match reason {
                    Some(reason) => {
                        let mut s = skipped.lock().unwrap_or_else(|p| p.into_inner());
                        s.insert(Skipped {
                            path: rel_of(&base, entry.path()),
                            reason: reason.to_owned(),
                        });
                        false
                    }
                    None => true,
                }
            });
    }

    let mut problems: Vec<Problem> = Vec::new();
    let mut files = Vec::new();
    for (i, result) in walk.build().enumerate() {
        if i % 256 == 0 && cancelled() {
            return Err(DiscoverError::Cancelled);
        }
        match result {
            Ok(entry) => {
                if entry.file_type().is_some_and(|t| t.is_file()) {
                    files.push(FileRec {
                        rel: rel_of(&base, entry.path()),
                        abs: entry.path().to_owned(),
                        name: entry.file_name().to_string_lossy().into_owned(),
                        size: entry.metadata().map(|m| m.len()).unwrap_or(0),
                    });
                }
            }
            Err(e) => problems.push(Problem {
                file: error_path(&e).map_or_else(|| ".".to_owned(), |p| rel_of(&base, p)),
                line: None,
                kind: "unreadable".to_owned(),
                severity: Severity::Warning,
                message: e.to_string(),
            }),
        }
    }
    // Several roots may overlap.
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    files.dedup_by(|a, b| a.rel == b.rel);
    let skipped = std::mem::take(&mut *skipped.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Tree {
        base,
        roots,
        files,
        problems,
        skipped,
    })
}

fn skip_reason(name: &str, path: &Path) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    match name {
        ".git" | ".hg" | ".svn" => return Some("vcs"),
        "node_modules" | "bower_components" => return Some("node-modules"),
        "venv" | ".venv" | ".tox" | ".nox" | "__pypackages__" => return Some("virtualenv"),
        "vendor" => return Some("vendor"),
        "target" => return Some("build-output"),
        "__pycache__" | ".pytest_cache" | ".mypy_cache" | ".ruff_cache" => return Some("cache"),
        ".orch" => return Some("state-dir"),
        _ => {}
    }
    if lower.ends_with(".bak") || name.ends_with('~') || lower.starts_with("backup") {
        return Some("backup");
    }
    if path.join("pyvenv.cfg").is_file() {
        return Some("virtualenv");
    }
    None
}

/// `base`-relative path text with `/` separators (`.` for `base`).
pub(super) fn rel_of(base: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(base).unwrap_or(path);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        ".".to_owned()
    } else {
        parts.join("/")
    }
}

fn error_path(e: &ignore::Error) -> Option<&Path> {
    match e {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        _ => None,
    }
}
