//! The `package` kind: a deterministic `tar.gz` of files and directories with a
//! `MANIFEST.sha256`.
//!
//! Same input, same bytes: entries are sorted by path (the manifest first), every entry has
//! mtime `SOURCE_DATE_EPOCH` (default 0), uid/gid 0 and empty owner names, modes are
//! `0755` (directories and files with any execute bit) or `0644`, the gzip header has no
//! name and mtime 0, and the compression level is fixed at 9. Symlinks and special files
//! are left out (and logged); `.git` directories and the run's state directory are never
//! packaged.
//!
//! `MANIFEST.sha256` lists every regular file as `HEX  PATH` lines sorted by path, so
//! `sha256sum -c MANIFEST.sha256` works in the extracted tree.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use orch_core::errors::RegistryError;
use orch_core::registry::Kind;
use orch_core::{
    Artifact, Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext,
    Registry,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::errors::PackageError;
use crate::util;

/// The manifest's name at the archive root.
pub const MANIFEST_NAME: &str = "MANIFEST.sha256";

/// The gzip compression level used (fixed, so output is reproducible).
pub const COMPRESSION_LEVEL: u32 = 9;

/// What to package.
#[derive(Clone, Debug)]
pub struct PackageOptions {
    /// The directory entry names are relative to (the pipeline's directory).
    pub base: PathBuf,
    /// Files and directories to include, relative to `base`.
    pub paths: Vec<String>,
    /// The archive to write.
    pub output: PathBuf,
    /// Patterns to leave out, `.gitignore` syntax relative to `base`.
    pub exclude: Vec<String>,
    /// Directories to leave out (the state directory), absolute.
    pub skip: Vec<PathBuf>,
    /// Modification time of every entry, seconds since the epoch.
    pub mtime: u64,
}

/// What `package` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageReport {
    /// The archive.
    pub path: PathBuf,
    /// Hex sha256 of the archive.
    pub sha256: String,
    /// Archive size in bytes.
    pub size: u64,
    /// Regular files in it (path, hex sha256), sorted; the manifest's content.
    pub files: Vec<(String, String)>,
    /// Directories in it.
    pub directories: usize,
    /// What was left out and why (`symlink`, `special file`).
    pub left_out: Vec<(String, &'static str)>,
}

enum Item {
    Dir,
    /// A regular file, with the device and inode the walk saw.
    File {
        abs: PathBuf,
        exec: bool,
        id: (u64, u64),
    },
}

/// Builds the archive. The write is atomic: the output appears complete or not at all.
pub fn create_archive(opts: &PackageOptions) -> Result<PackageReport, PackageError> {
    create_archive_with(opts, &|| false)
}

/// Opens a file to package, refusing anything but the file the walk saw: the last
/// component is not followed (`O_NOFOLLOW`), and the opened file must have the device and
/// inode recorded then, so a file or one of its directories swapped for a symbolic link
/// (to something outside the pipeline directory) or for a FIFO or device since the walk
/// is `Changed`, never read.
fn open_file(abs: &Path, id: (u64, u64)) -> Result<std::fs::File, PackageError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let changed = || PackageError::Changed {
        path: abs.to_owned(),
    };
    let flags =
        nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(abs)
    {
        Ok(f) => f,
        // ELOOP: the last component is now a symbolic link.
        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err(changed());
        }
        Err(e) => return Err(io_err("read", abs)(e)),
    };
    let meta = file.metadata().map_err(io_err("read", abs))?;
    if !meta.file_type().is_file() || (meta.dev(), meta.ino()) != id {
        return Err(changed());
    }
    Ok(file)
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PackageError {
    let path = path.to_owned();
    move |source| PackageError::Io {
        action,
        path,
        source,
    }
}

fn entry_name(rel: &Path, abs: &Path) -> Result<String, PackageError> {
    let unportable = |reason| PackageError::UnportableName {
        path: abs.to_owned(),
        reason,
    };
    let mut parts = Vec::new();
    for c in rel.components() {
        let s = c
            .as_os_str()
            .to_str()
            .ok_or_else(|| unportable("the name is not valid UTF-8"))?;
        if s.contains(['\n', '\r', '\\']) {
            return Err(unportable("the name holds a newline or a backslash"));
        }
        parts.push(s.to_owned());
    }
    Ok(parts.join("/"))
}

pub(crate) fn create_archive_with(
    opts: &PackageOptions,
    cancelled: &dyn Fn() -> bool,
) -> Result<PackageReport, PackageError> {
    let base = opts
        .base
        .canonicalize()
        .map_err(io_err("read", &opts.base))?;
    let mut ig = ignore::gitignore::GitignoreBuilder::new(&base);
    for pattern in &opts.exclude {
        ig.add_line(None, pattern)
            .map_err(|source| PackageError::Pattern {
                pattern: pattern.clone(),
                source,
            })?;
    }
    let exclude = ig.build().map_err(|source| PackageError::Pattern {
        pattern: opts.exclude.join(", "),
        source,
    })?;
    let skip: Vec<PathBuf> = opts
        .skip
        .iter()
        .filter_map(|p| p.canonicalize().ok())
        .collect();
    let output_abs = match (opts.output.parent(), opts.output.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| opts.output.clone(), |d| d.join(name)),
        _ => opts.output.clone(),
    };

    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let mut left_out = Vec::new();
    for given in &opts.paths {
        let joined = base.join(given);
        if std::fs::symlink_metadata(&joined).is_err() {
            return Err(PackageError::Missing {
                path: given.clone(),
            });
        }
        let abs = joined.canonicalize().map_err(io_err("read", &joined))?;
        if !abs.starts_with(&base) {
            return Err(PackageError::Outside {
                path: given.clone(),
            });
        }
        // Parent directories of the given path.
        let rel = abs.strip_prefix(&base).unwrap_or(&abs).to_owned();
        let mut parent = rel.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            items.insert(entry_name(p, &base.join(p))?, Item::Dir);
            parent = p.parent();
        }
        let mut stack = vec![abs];
        while let Some(path) = stack.pop() {
            if cancelled() {
                return Err(PackageError::Cancelled);
            }
            let rel = path.strip_prefix(&base).unwrap_or(&path).to_owned();
            let meta = std::fs::symlink_metadata(&path).map_err(io_err("read", &path))?;
            let is_dir = meta.is_dir();
            let name = if rel.as_os_str().is_empty() {
                String::new()
            } else {
                entry_name(&rel, &path)?
            };
            if path == output_abs
                || skip.contains(&path)
                || (is_dir && path.file_name().is_some_and(|n| n == ".git"))
                || (!name.is_empty() && exclude.matched(&path, is_dir).is_ignore())
            {
                continue;
            }
            if meta.file_type().is_symlink() {
                left_out.push((name, "symlink"));
            } else if is_dir {
                if !name.is_empty() {
                    items.insert(name, Item::Dir);
                }
                let mut children = Vec::new();
                for child in std::fs::read_dir(&path).map_err(io_err("read", &path))? {
                    children.push(child.map_err(io_err("read", &path))?.path());
                }
                children.sort();
                // Popped in reverse; order does not matter (the map sorts).
                stack.extend(children);
            } else if meta.is_file() {
                if name == MANIFEST_NAME {
                    return Err(PackageError::UnportableName {
                        path,
                        reason: "`MANIFEST.sha256` at the top is reserved for the manifest",
                    });
                }
                #[cfg(unix)]
                let exec = {
                    use std::os::unix::fs::PermissionsExt;
                    meta.permissions().mode() & 0o111 != 0
                };
                #[cfg(not(unix))]
                let exec = false;
                let id = {
                    use std::os::unix::fs::MetadataExt;
                    (meta.dev(), meta.ino())
                };
                items.insert(
                    name,
                    Item::File {
                        abs: path,
                        exec,
                        id,
                    },
                );
            } else {
                left_out.push((name, "special file"));
            }
        }
    }
    if !items.values().any(|i| matches!(i, Item::File { .. })) {
        return Err(PackageError::Empty);
    }

    // Pass 1: digests, for the manifest that leads the archive.
    let mut files = Vec::new();
    for (name, item) in &items {
        if let Item::File { abs, id, .. } = item {
            if cancelled() {
                return Err(PackageError::Cancelled);
            }
            let mut f = open_file(abs, *id)?;
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h).map_err(io_err("read", abs))?;
            files.push((name.clone(), util::hex(&h.finalize())));
        }
    }
    let manifest: String = files
        .iter()
        .map(|(name, hex)| format!("{hex}  {name}\n"))
        .collect();

    // Pass 2: the archive, into a temporary file beside the output.
    let dir = opts.output.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        opts.output
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let result = write_archive(
        &tmp,
        &items,
        &files,
        manifest.as_bytes(),
        opts.mtime,
        cancelled,
    );
    let (sha256, size) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &opts.output).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err("write", &opts.output)(e)
    })?;
    Ok(PackageReport {
        path: opts.output.clone(),
        sha256,
        size,
        directories: items.values().filter(|i| matches!(i, Item::Dir)).count(),
        files,
        left_out,
    })
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what passes through.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h
}

fn write_archive(
    tmp: &Path,
    items: &BTreeMap<String, Item>,
    files: &[(String, String)],
    manifest: &[u8],
    mtime: u64,
    cancelled: &dyn Fn() -> bool,
) -> Result<(String, u64), PackageError> {
    let write_err = io_err("write", tmp);
    let file = std::fs::File::create(tmp).map_err(io_err("create", tmp))?;
    let counted = HashingWriter {
        inner: std::io::BufWriter::new(file),
        hash: Sha256::new(),
        size: 0,
    };
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(counted, flate2::Compression::new(COMPRESSION_LEVEL));
    let mut tar = tar::Builder::new(gz);
    let mut h = header(tar::EntryType::Regular, manifest.len() as u64, 0o644, mtime);
    tar.append_data(&mut h, MANIFEST_NAME, manifest)
        .map_err(io_err("write", tmp))?;
    let digests: BTreeMap<&str, &str> = files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_str()))
        .collect();
    for (name, item) in items {
        if cancelled() {
            return Err(PackageError::Cancelled);
        }
        match item {
            Item::Dir => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755, mtime);
                tar.append_data(&mut h, format!("{name}/"), std::io::empty())
                    .map_err(io_err("write", tmp))?;
            }
            Item::File { abs, exec, id } => {
                let f = open_file(abs, *id)?;
                let size = f.metadata().map_err(io_err("read", abs))?.len();
                let mode = if *exec { 0o755 } else { 0o644 };
                let mut h = header(tar::EntryType::Regular, size, mode, mtime);
                let mut reader = HashingReader {
                    inner: f.take(size),
                    hash: Sha256::new(),
                };
                tar.append_data(&mut h, name, &mut reader)
                    .map_err(io_err("write", tmp))?;
                let seen = util::hex(&reader.hash.finalize());
                if digests.get(name.as_str()) != Some(&seen.as_str()) {
                    return Err(PackageError::Changed { path: abs.clone() });
                }
            }
        }
    }
    let gz = tar.into_inner().map_err(io_err("write", tmp))?;
    let mut counted = gz.finish().map_err(io_err("write", tmp))?;
    counted.flush().map_err(write_err)?;
    let sha = util::hex(&counted.hash.finalize_reset());
    let size = counted.size;
    let file = counted
        .inner
        .into_inner()
        .map_err(|e| io_err("write", tmp)(e.into_error()))?;
    file.sync_all().map_err(io_err("write", tmp))?;
    Ok((sha, size))
}

/// The `with` table of `package`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSettings {
    /// Files and directories to include, relative to the pipeline's directory.
    pub paths: Vec<String>,
    /// The archive (default `RUN_DIR/package.tar.gz`).
    #[serde(default)]
    pub output: Option<String>,
    /// Patterns to leave out, `.gitignore` syntax.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// The `package` phase.
#[derive(Clone, Debug)]
pub struct PackagePhase {
    settings: PackageSettings,
}

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new(
            "package",
            "write a deterministic tar.gz with a sha256 manifest",
        ),
        |spec: &PhaseSpec, settings: PackageSettings| {
            if settings.paths.is_empty() {
                return Err(spec
                    .with
                    .error("`paths` is empty: name the files and directories to package"));
            }
            Ok(PackagePhase { settings })
        },
    )
}

fn source_date_epoch(ctx: &PhaseContext) -> Result<u64, PackageError> {
    let value = ctx
        .env_var("SOURCE_DATE_EPOCH")
        .map(str::to_owned)
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok());
    match value {
        None => Ok(0),
        Some(v) if v.trim().is_empty() => Ok(0),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| PackageError::Epoch { value: v }),
    }
}

#[async_trait]
impl Phase for PackagePhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let paths: Vec<String> = self.settings.paths.iter().map(|p| ctx.render(p)).collect();
        let mut d = Description::new(format!("package {}", paths.join(", ")));
        match &self.settings.output {
            Some(o) => {
                let p = ctx.resolve(o);
                d = d
                    .detail("output", p.display().to_string())
                    .change(format!("write {}", p.display()));
            }
            None => d = d.detail("output", "RUN_DIR/package.tar.gz"),
        }
        if !self.settings.exclude.is_empty() {
            d = d.detail("exclude", self.settings.exclude.join(", "));
        }
        d
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let render = |what: &str, s: &str| {
            ctx.render(s)
                .map_err(|e| PhaseError::failed(format!("cannot render `{what}`: {e}")))
        };
        let mut paths = Vec::new();
        for p in &self.settings.paths {
            paths.push(render("paths", p)?);
        }
        let mut exclude = Vec::new();
        for p in &self.settings.exclude {
            exclude.push(render("exclude", p)?);
        }
        let output = match &self.settings.output {
            Some(o) => ctx.base_dir().join(render("output", o)?),
            None => ctx.run_dir().join("package.tar.gz"),
        };
        let opts = PackageOptions {
            base: ctx.base_dir().to_owned(),
            paths,
            output,
            exclude,
            skip: util::state_dirs(ctx),
            mtime: source_date_epoch(ctx).map_err(|e| PhaseError::from_error(&e))?,
        };
        let report = util::blocking(ctx, move |cancel| {
            create_archive_with(&opts, &|| cancel.is_cancelled())
        })
        .await?
        .map_err(|e| match e {
            PackageError::Cancelled => PhaseError::Cancelled,
            e => PhaseError::from_error(&e),
        })?;
        for (name, why) in &report.left_out {
            ctx.log(format!("left out {why} {name}"));
        }
        ctx.log(format!(
            "wrote {} ({} files, {} bytes, sha256 {})",
            report.path.display(),
            report.files.len(),
            report.size,
            report.sha256
        ));
        let path = report.path.display().to_string();
        let mut outcome = PhaseOutcome::with_outputs([
            ("path", path.clone()),
            ("sha256", report.sha256.clone()),
            ("files", report.files.len().to_string()),
        ]);
        let mut details = BTreeMap::new();
        details.insert("files".to_owned(), serde_json::json!(report.files.len()));
        details.insert("manifest".to_owned(), serde_json::json!(MANIFEST_NAME));
        outcome.artifacts.push(Artifact {
            kind: "archive".to_owned(),
            name: report
                .path
                .file_name()
                .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned()),
            path: Some(path),
            digest: Some(format!("sha256:{}", report.sha256)),
            size: Some(report.size),
            details,
        });
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// Packs `a.txt` and `sub/b.txt` of a fresh tree; `swap` runs once, after the walk and
    /// before the first file is opened (the walk asks `cancelled` once per path: the root,
    /// `a.txt`, `sub`, `sub/b.txt`).
    fn pack_with_swap(
        swap: impl Fn(&Path, &Path),
    ) -> (
        Result<PackageReport, PackageError>,
        PathBuf,
        [tempfile::TempDir; 3],
    ) {
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("a.txt"), "a\n").unwrap();
        std::fs::create_dir(base.path().join("sub")).unwrap();
        std::fs::write(base.path().join("sub/b.txt"), "b\n").unwrap();
        std::fs::create_dir(outside.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("secret"), "outside secret\n").unwrap();
        std::fs::write(outside.path().join("sub/b.txt"), "outside secret\n").unwrap();
        let out_dir = tempfile::tempdir().unwrap();
        let output = out_dir.path().join("bundle.tar.gz");
        let opts = PackageOptions {
            base: base.path().to_owned(),
            paths: vec![".".into()],
            output: output.clone(),
            exclude: Vec::new(),
            skip: Vec::new(),
            mtime: 0,
        };
        let calls = Cell::new(0);
        let result = create_archive_with(&opts, &|| {
            calls.set(calls.get() + 1);
            if calls.get() == 5 {
                swap(base.path(), outside.path());
            }
            false
        });
        (result, output, [base, outside, out_dir])
    }

    #[test]
    fn a_file_swapped_for_a_symlink_after_the_walk_is_not_read() {
        let (result, output, _dirs) = pack_with_swap(|base, outside| {
            std::fs::remove_file(base.join("a.txt")).unwrap();
            std::os::unix::fs::symlink(outside.join("secret"), base.join("a.txt")).unwrap();
        });
        assert!(
            matches!(&result, Err(PackageError::Changed { path }) if path.ends_with("a.txt")),
            "{result:?}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_the_walk_is_not_read() {
        let (result, output, _dirs) = pack_with_swap(|base, outside| {
            std::fs::rename(base.join("sub"), base.join("sub.old")).unwrap();
            std::os::unix::fs::symlink(outside.join("sub"), base.join("sub")).unwrap();
        });
        assert!(
            matches!(&result, Err(PackageError::Changed { path }) if path.ends_with("sub/b.txt")),
            "{result:?}"
        );
        assert!(!output.exists());
    }

    #[test]
    fn an_unchanged_tree_is_packed() {
        let (result, output, _dirs) = pack_with_swap(|_, _| {});
        let report = result.expect("packed");
        let names: Vec<&str> = report.files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.txt", "sub/b.txt"]);
        assert!(output.exists());
    }
}
