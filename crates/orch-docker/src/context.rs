//! Packing a build context: the files of a directory that `.dockerignore` lets through, as
//! a tar, and a content hash of it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dockerignore::DockerIgnore;
use crate::errors::ContextError;

/// Name under which a Dockerfile from outside the context is added to the tar.
pub const OUTSIDE_DOCKERFILE: &str = ".orch.Dockerfile";

/// A packed build context.
#[derive(Debug)]
pub struct PackedContext {
    /// The tar, uncompressed.
    pub tar: Vec<u8>,
    /// The Dockerfile's path inside the tar (the `dockerfile` build parameter).
    pub dockerfile: String,
    /// SHA-256 (hex) over every entry sent: path, type, mode, link target and content, in
    /// order. Modification times and owners are left out, so touching a file or checking
    /// it out again does not change it.
    pub content_sha256: String,
    /// Regular files sent.
    pub files: usize,
    /// Bytes of file content sent.
    pub bytes: u64,
}

/// Finds the Dockerfile: `setting` resolved against the pipeline directory, or, when it is
/// not there, against the context (as `docker compose` reads it). `None` means
/// `CONTEXT/Dockerfile`.
pub fn locate_dockerfile(
    base_dir: &Path,
    context: &Path,
    setting: Option<&str>,
) -> Result<PathBuf, ContextError> {
    match setting {
        None => {
            let p = context.join("Dockerfile");
            if p.is_file() {
                Ok(p)
            } else {
                Err(ContextError::NoDockerfile {
                    path: p,
                    hint: String::new(),
                })
            }
        }
        Some(s) => {
            let first = base_dir.join(s);
            if first.is_file() {
                return Ok(first);
            }
            let second = context.join(s);
            if second.is_file() {
                return Ok(second);
            }
            Err(ContextError::NoDockerfile {
                path: first,
                hint: format!(" (also tried {})", second.display()),
            })
        }
    }
}

/// Packs `context` for a build with `dockerfile` (an existing file, inside the context or
/// not). `.dockerignore` at the context root is honoured; the Dockerfile and
/// `.dockerignore` are always sent. Blocking: call it from `spawn_blocking`.
pub fn pack(context: &Path, dockerfile: &Path) -> Result<PackedContext, ContextError> {
    if !context.is_dir() {
        return Err(ContextError::NotADirectory {
            path: context.to_owned(),
        });
    }
    let read_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ContextError::Read { path, source }
    };
    let ignore_path = context.join(".dockerignore");
    let mut ignore = match fs::read_to_string(&ignore_path) {
        Ok(text) => DockerIgnore::parse(&text).map_err(|source| ContextError::Pattern {
            path: ignore_path.clone(),
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DockerIgnore::default(),
        Err(e) => return Err(read_err(&ignore_path)(e)),
    };

    let canon_context = fs::canonicalize(context).map_err(read_err(context))?;
    let canon_dockerfile = fs::canonicalize(dockerfile).map_err(read_err(dockerfile))?;
    let inside = canon_dockerfile
        .strip_prefix(&canon_context)
        .ok()
        .and_then(|rel| rel.to_str().map(|s| s.to_owned()));
    if !ignore.is_empty() {
        let mut always = vec![".dockerignore".to_owned()];
        always.extend(inside.clone());
        for rel in always {
            // Escaped, the path is a literal pattern.
            let escaped: String = rel
                .chars()
                .flat_map(|c| {
                    let special = matches!(c, '*' | '?' | '[' | ']' | '\\');
                    special.then_some('\\').into_iter().chain(Some(c))
                })
                .collect();
            ignore
                .push(&format!("!{escaped}"))
                .map_err(|source| ContextError::Pattern {
                    path: ignore_path.clone(),
                    source,
                })?;
        }
    }

    let mut packer = Packer {
        builder: tar::Builder::new(Vec::new()),
        hasher: Sha256::new(),
        files: 0,
        bytes: 0,
    };
    packer.walk(&canon_context, "", &ignore)?;
    let dockerfile_name = match inside {
        Some(rel) => rel,
        None => {
            let mut content = Vec::new();
            fs::File::open(&canon_dockerfile)
                .and_then(|mut f| f.read_to_end(&mut content))
                .map_err(read_err(dockerfile))?;
            let meta = fs::metadata(&canon_dockerfile).map_err(read_err(dockerfile))?;
            packer.file(OUTSIDE_DOCKERFILE, &meta, &content, dockerfile)?;
            OUTSIDE_DOCKERFILE.to_owned()
        }
    };
    let Packer {
        builder,
        hasher,
        files,
        bytes,
    } = packer;
    let tar = builder.into_inner().map_err(read_err(context))?;
    Ok(PackedContext {
        tar,
        dockerfile: dockerfile_name,
        content_sha256: hex(&hasher.finalize()),
        files,
        bytes,
    })
}

struct Packer {
    builder: tar::Builder<Vec<u8>>,
    hasher: Sha256,
    files: usize,
    bytes: u64,
}

impl Packer {
    fn walk(&mut self, dir: &Path, rel: &str, ignore: &DockerIgnore) -> Result<(), ContextError> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
            .map_err(|source| ContextError::Read {
                path: dir.to_owned(),
                source,
            })?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!("skipping non-UTF-8 name in {}", dir.display());
                continue;
            };
            let path = entry.path();
            let rel_path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(&path).map_err(|source| ContextError::Read {
                path: path.clone(),
                source,
            })?;
            let excluded = ignore.is_excluded(&rel_path);
            let ft = meta.file_type();
            if ft.is_dir() {
                if excluded && !ignore.has_exceptions() {
                    continue;
                }
                if !excluded {
                    self.dir(&rel_path, &meta, &path)?;
                }
                self.walk(&path, &rel_path, ignore)?;
            } else if excluded {
                continue;
            } else if ft.is_file() {
                let content = fs::read(&path).map_err(|source| ContextError::Read {
                    path: path.clone(),
                    source,
                })?;
                self.file(&rel_path, &meta, &content, &path)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|source| ContextError::Read {
                    path: path.clone(),
                    source,
                })?;
                self.symlink(&rel_path, &meta, &target, &path)?;
            }
            // Sockets, fifos and devices are not sent (as `docker build` does not).
        }
        Ok(())
    }

    fn header(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.permissions().mode() & 0o7777);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h
    }

    fn hash_entry(&mut self, kind: u8, rel: &str, mode: u32, body: &[u8]) {
        self.hasher.update([kind]);
        self.hasher.update(rel.as_bytes());
        self.hasher.update([0]);
        self.hasher.update(format!("{mode:o}").as_bytes());
        self.hasher.update([0]);
        self.hasher.update((body.len() as u64).to_le_bytes());
        self.hasher.update(body);
    }

    fn dir(&mut self, rel: &str, meta: &fs::Metadata, path: &Path) -> Result<(), ContextError> {
        let mut h = Self::header(meta, tar::EntryType::Directory);
        self.hash_entry(b'd', rel, meta.permissions().mode() & 0o7777, &[]);
        self.builder
            .append_data(&mut h, format!("{rel}/"), std::io::empty())
            .map_err(|source| ContextError::Read {
                path: path.to_owned(),
                source,
            })
    }

    fn file(
        &mut self,
        rel: &str,
        meta: &fs::Metadata,
        content: &[u8],
        path: &Path,
    ) -> Result<(), ContextError> {
        let mut h = Self::header(meta, tar::EntryType::Regular);
        h.set_size(content.len() as u64);
        self.hash_entry(b'f', rel, meta.permissions().mode() & 0o7777, content);
        self.files += 1;
        self.bytes += content.len() as u64;
        self.builder
            .append_data(&mut h, rel, content)
            .map_err(|source| ContextError::Read {
                path: path.to_owned(),
                source,
            })
    }

    fn symlink(
        &mut self,
        rel: &str,
        meta: &fs::Metadata,
        target: &Path,
        path: &Path,
    ) -> Result<(), ContextError> {
        let mut h = Self::header(meta, tar::EntryType::Symlink);
        let target_text = target.to_string_lossy();
        self.hash_entry(b'l', rel, 0o777, target_text.as_bytes());
        self.builder
            .append_link(&mut h, rel, target)
            .map_err(|source| ContextError::Read {
                path: path.to_owned(),
                source,
            })
    }
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn write(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn dockerignore_is_honoured_and_build_files_always_sent() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Dockerfile", "FROM scratch\n");
        write(
            d.path(),
            ".dockerignore",
            "secret.txt\nDockerfile\n.dockerignore\nlogs\n!logs/keep.log\n**/*.tmp\n",
        );
        write(d.path(), "secret.txt", "s");
        write(d.path(), "app/main.txt", "m");
        write(d.path(), "app/x.tmp", "t");
        write(d.path(), "logs/a.log", "a");
        write(d.path(), "logs/keep.log", "k");
        let p = pack(d.path(), &d.path().join("Dockerfile")).unwrap();
        assert_eq!(
            names(&p.tar),
            [
                ".dockerignore",
                "Dockerfile",
                "app/",
                "app/main.txt",
                "logs/keep.log"
            ]
        );
        assert_eq!(p.dockerfile, "Dockerfile");
        assert_eq!(p.files, 4);
    }

    #[test]
    fn hash_follows_content_not_mtime() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Dockerfile", "FROM scratch\n");
        write(d.path(), "a.txt", "one");
        let df = d.path().join("Dockerfile");
        let h1 = pack(d.path(), &df).unwrap().content_sha256;
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("a.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(pack(d.path(), &df).unwrap().content_sha256, h1);
        write(d.path(), "a.txt", "two");
        assert_ne!(pack(d.path(), &df).unwrap().content_sha256, h1);
    }

    #[test]
    fn dockerfile_outside_the_context_is_added() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "ctx/a.txt", "a");
        write(d.path(), "build/app.Dockerfile", "FROM scratch\n");
        let df = locate_dockerfile(
            d.path(),
            &d.path().join("ctx"),
            Some("build/app.Dockerfile"),
        )
        .unwrap();
        let p = pack(&d.path().join("ctx"), &df).unwrap();
        assert_eq!(p.dockerfile, OUTSIDE_DOCKERFILE);
        assert_eq!(names(&p.tar), ["a.txt", OUTSIDE_DOCKERFILE]);
        let err = locate_dockerfile(d.path(), &d.path().join("ctx"), Some("nope")).unwrap_err();
        assert!(err.to_string().contains("also tried"), "{err}");
    }
}
