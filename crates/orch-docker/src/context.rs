//! Packing a build context: the files of a directory that `.dockerignore` lets through, as
//! a tar, and a content hash of it.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dockerignore::DockerIgnore;
use crate::errors::ContextError;

/// Name of the Dockerfile orch writes into the tar: a Dockerfile from outside the context,
/// or the user's with orch's labels appended as one `LABEL` line. The tar's `.dockerignore`
/// lists it, so the engine drops it from the context once read (as `docker build -f`
/// does with its own name): `COPY . /dst` never copies it.
pub const GENERATED_DOCKERFILE: &str = ".orch.Dockerfile";

/// A packed build context, to be finished with [`PackedContext::finish`].
pub struct PackedContext {
    builder: tar::Builder<Vec<u8>>,
    dockerfile_text: String,
    meta: fs::Metadata,
    generated: bool,
    append_labels: bool,
    added_dockerignore: bool,
    /// The Dockerfile's path inside the tar (the `dockerfile` build parameter).
    pub dockerfile: String,
    /// SHA-256 (hex) over every entry of the context as the user wrote it: path, type,
    /// mode, link target and content, in order (and the Dockerfile, when it is outside
    /// the context). Modification times and owners are left out, so touching a file or
    /// checking it out again does not change it.
    pub content_sha256: String,
    /// Regular files sent.
    pub files: usize,
    /// Bytes of file content sent.
    pub bytes: u64,
}

impl std::fmt::Debug for PackedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedContext")
            .field("dockerfile", &self.dockerfile)
            .field("content_sha256", &self.content_sha256)
            .field("files", &self.files)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// The tar to send.
#[derive(Debug)]
pub struct FinishedContext {
    /// The tar, uncompressed.
    pub tar: Vec<u8>,
    /// Whether the labels went into the Dockerfile as one `LABEL` line; when false, pass
    /// them to the engine as build labels (one build step each with the classic builder).
    pub labels_in_dockerfile: bool,
}

impl PackedContext {
    /// Adds the generated Dockerfile (with `labels` appended when they can be written
    /// safely) and ends the tar.
    pub fn finish(
        mut self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<FinishedContext, ContextError> {
        let io = |source| ContextError::Read {
            path: PathBuf::from(GENERATED_DOCKERFILE),
            source,
        };
        let mut labels_in_dockerfile = false;
        if self.generated {
            let mut text = self.dockerfile_text.clone();
            if let Some(line) = self
                .append_labels
                .then(|| label_instruction(&self.dockerfile_text, labels))
                .flatten()
            {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&line);
                text.push('\n');
                labels_in_dockerfile = true;
            }
            if self.added_dockerignore {
                let body = format!("{GENERATED_DOCKERFILE}\n.dockerignore\n");
                let mut h = Packer::header(&self.meta, tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(body.len() as u64);
                self.builder
                    .append_data(&mut h, ".dockerignore", body.as_bytes())
                    .map_err(io)?;
            }
            let mut h = Packer::header(&self.meta, tar::EntryType::Regular);
            h.set_size(text.len() as u64);
            self.builder
                .append_data(&mut h, GENERATED_DOCKERFILE, text.as_bytes())
                .map_err(io)?;
        }
        let tar = self.builder.into_inner().map_err(io)?;
        Ok(FinishedContext {
            tar,
            labels_in_dockerfile,
        })
    }
}

/// `LABEL "k"="v" ...` for the end of a Dockerfile, or `None` when a key or value holds a
/// character the Dockerfile parser would interpret (quotes, escapes, `$`, newlines) or the
/// Dockerfile ends in a line continuation.
pub fn label_instruction(
    dockerfile: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let mut escape = '\\';
    for line in dockerfile.lines() {
        let Some(comment) = line.trim_start().strip_prefix('#') else {
            break;
        };
        if let Some((k, v)) = comment.split_once('=')
            && k.trim().eq_ignore_ascii_case("escape")
            && let Some(c) = v.trim().chars().next()
        {
            escape = c;
        }
    }
    let last = dockerfile
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))?;
    if last.ends_with(escape) {
        return None;
    }
    let safe = |s: &str| {
        s.chars()
            .all(|c| !c.is_control() && !matches!(c, '"' | '\\' | '`' | '$') && c != escape)
    };
    let mut line = String::from("LABEL");
    for (k, v) in labels {
        if k.is_empty() || !safe(k) || !safe(v) {
            return None;
        }
        line.push_str(&format!(" \"{k}\"=\"{v}\""));
    }
    Some(line)
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
/// `.dockerignore` are always sent. With `labels_in_dockerfile`, the Dockerfile is sent as
/// [`GENERATED_DOCKERFILE`] so [`PackedContext::finish`] can append one `LABEL` line.
/// Blocking: call it from `spawn_blocking`.
pub fn pack(
    context: &Path,
    dockerfile: &Path,
    labels_in_dockerfile: bool,
) -> Result<PackedContext, ContextError> {
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
    let ignore_text = match fs::read_to_string(&ignore_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_err(&ignore_path)(e)),
    };
    let mut ignore =
        DockerIgnore::parse(ignore_text.as_deref().unwrap_or_default()).map_err(|source| {
            ContextError::Pattern {
                path: ignore_path.clone(),
                source,
            }
        })?;

    let canon_context = fs::canonicalize(context).map_err(read_err(context))?;
    let canon_dockerfile = fs::canonicalize(dockerfile).map_err(read_err(dockerfile))?;
    let dockerfile_text = fs::read_to_string(&canon_dockerfile).map_err(read_err(dockerfile))?;
    let meta = fs::metadata(&canon_dockerfile).map_err(read_err(dockerfile))?;
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
    let generated = inside.is_none() || labels_in_dockerfile;

    let mut packer = Packer {
        builder: tar::Builder::new(Vec::new()),
        hasher: Sha256::new(),
        files: 0,
        bytes: 0,
        extend_dockerignore: generated,
    };
    packer.walk(&canon_context, "", &ignore)?;
    if inside.is_none() {
        // The Dockerfile is part of what the image is made of.
        let mode = meta.permissions().mode() & 0o7777;
        packer.hash_entry(b'o', GENERATED_DOCKERFILE, mode, dockerfile_text.as_bytes());
    }
    let dockerfile_name = match (&inside, generated) {
        (Some(rel), false) => rel.clone(),
        _ => GENERATED_DOCKERFILE.to_owned(),
    };
    let Packer {
        builder,
        hasher,
        files,
        bytes,
        ..
    } = packer;
    Ok(PackedContext {
        builder,
        dockerfile_text,
        meta,
        generated,
        append_labels: labels_in_dockerfile,
        added_dockerignore: generated && ignore_text.is_none(),
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
    /// Add the generated Dockerfile's name to the root `.dockerignore` as it is sent.
    extend_dockerignore: bool,
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
            if self.extend_dockerignore && rel_path == GENERATED_DOCKERFILE {
                tracing::warn!("{} is replaced by the generated Dockerfile", path.display());
                continue;
            }
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
                if self.extend_dockerignore && rel_path == ".dockerignore" {
                    // Hashed as written; sent with the generated Dockerfile's name added.
                    self.hash_entry(
                        b'f',
                        &rel_path,
                        meta.permissions().mode() & 0o7777,
                        &content,
                    );
                    let mut sent = content;
                    sent.extend_from_slice(format!("\n{GENERATED_DOCKERFILE}\n").as_bytes());
                    let mut h = Self::header(&meta, tar::EntryType::Regular);
                    h.set_size(sent.len() as u64);
                    self.files += 1;
                    self.bytes += sent.len() as u64;
                    self.builder
                        .append_data(&mut h, &rel_path, sent.as_slice())
                        .map_err(|source| ContextError::Read {
                            path: path.clone(),
                            source,
                        })?;
                } else {
                    self.file(&rel_path, &meta, &content, &path)?;
                }
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
    use std::collections::BTreeMap;

    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mut body = String::new();
                std::io::Read::read_to_string(&mut e, &mut body).unwrap();
                (name, body)
            })
            .collect()
    }

    fn names(tar_bytes: &[u8]) -> Vec<String> {
        entries(tar_bytes).into_iter().map(|(n, _)| n).collect()
    }

    fn write(dir: &Path, rel: &str, content: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
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
        let p = pack(d.path(), &d.path().join("Dockerfile"), false).unwrap();
        assert_eq!(p.dockerfile, "Dockerfile");
        assert_eq!(p.files, 4);
        let f = p.finish(&BTreeMap::new()).unwrap();
        assert!(!f.labels_in_dockerfile);
        assert_eq!(
            names(&f.tar),
            [
                ".dockerignore",
                "Dockerfile",
                "app/",
                "app/main.txt",
                "logs/keep.log"
            ]
        );
    }

    #[test]
    fn hash_follows_content_not_mtime_nor_labels() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Dockerfile", "FROM scratch\n");
        write(d.path(), "a.txt", "one");
        let df = d.path().join("Dockerfile");
        let h1 = pack(d.path(), &df, false).unwrap().content_sha256;
        assert_eq!(pack(d.path(), &df, true).unwrap().content_sha256, h1);
        let f = fs::File::options()
            .write(true)
            .open(d.path().join("a.txt"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(pack(d.path(), &df, false).unwrap().content_sha256, h1);
        write(d.path(), "a.txt", "two");
        assert_ne!(pack(d.path(), &df, false).unwrap().content_sha256, h1);
    }

    #[test]
    fn labels_go_into_a_generated_dockerfile_that_the_engine_drops() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "Dockerfile", "FROM scratch\nCOPY a.txt /\n");
        write(d.path(), ".dockerignore", "*.log");
        write(d.path(), "a.txt", "a");
        let p = pack(d.path(), &d.path().join("Dockerfile"), true).unwrap();
        assert_eq!(p.dockerfile, GENERATED_DOCKERFILE);
        let f = p
            .finish(&labels(&[("b", "2"), ("a.x", "one two")]))
            .unwrap();
        assert!(f.labels_in_dockerfile);
        assert_eq!(
            entries(&f.tar),
            [
                (".dockerignore".into(), "*.log\n.orch.Dockerfile\n".into()),
                ("Dockerfile".into(), "FROM scratch\nCOPY a.txt /\n".into()),
                ("a.txt".into(), "a".into()),
                (
                    GENERATED_DOCKERFILE.into(),
                    "FROM scratch\nCOPY a.txt /\nLABEL \"a.x\"=\"one two\" \"b\"=\"2\"\n".into()
                ),
            ]
        );
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
        let p = pack(&d.path().join("ctx"), &df, false).unwrap();
        assert_eq!(p.dockerfile, GENERATED_DOCKERFILE);
        // Labels were not asked to go into the Dockerfile (a build with a `target`).
        let f = p.finish(&labels(&[("a", "1")])).unwrap();
        assert!(!f.labels_in_dockerfile);
        assert_eq!(
            entries(&f.tar),
            [
                ("a.txt".into(), "a".into()),
                (
                    ".dockerignore".into(),
                    ".orch.Dockerfile\n.dockerignore\n".into()
                ),
                (GENERATED_DOCKERFILE.into(), "FROM scratch\n".into()),
            ]
        );
        let err = locate_dockerfile(d.path(), &d.path().join("ctx"), Some("nope")).unwrap_err();
        assert!(err.to_string().contains("also tried"), "{err}");
    }

    #[test]
    fn labels_that_the_parser_would_interpret_stay_out_of_the_dockerfile() {
        let ok = labels(&[("k", "v 1.0/x:y")]);
        assert_eq!(
            label_instruction("FROM x\n", &ok).as_deref(),
            Some("LABEL \"k\"=\"v 1.0/x:y\"")
        );
        for bad in ["a\"b", "a\\b", "$HOME", "a\nb", "a`b"] {
            assert_eq!(
                label_instruction("FROM x\n", &labels(&[("k", bad)])),
                None,
                "{bad}"
            );
        }
        assert_eq!(label_instruction("FROM x\nRUN a \\\n", &ok), None);
        assert_eq!(
            label_instruction("# escape=`\nFROM x\nRUN a `\n", &ok),
            None
        );
        assert!(label_instruction("# escape=`\nFROM x\nRUN a \\\n# c\n", &ok).is_some());
        assert_eq!(label_instruction("FROM x\n", &BTreeMap::new()), None);
    }
}
