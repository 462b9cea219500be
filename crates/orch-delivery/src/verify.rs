//! The `package.verify` kind and [`verify_archive`]: checks an archive against its
//! `MANIFEST.sha256` by streaming it; nothing is extracted to disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use orch_core::{
    Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PhaseSpec, PlanContext, Registry,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::errors::{VerifyError, VerifyProblem};
use crate::package::MANIFEST_NAME;
use crate::util;

/// Largest manifest read (bytes).
const MAX_MANIFEST: u64 = 64 << 20;

/// What a verified archive holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Regular files checked against the manifest (the manifest itself not counted).
    pub files: usize,
    /// Directory entries.
    pub directories: usize,
    /// Hex sha256 of the manifest.
    pub manifest_sha256: String,
}

/// Checks an archive (`tar.gz`, or plain `tar`) against its manifest: every listed file is
/// present with the listed sha256, no file is unlisted, and no entry is unsafe (a `..`
/// component, an absolute path, a link that leaves the archive, a device file or FIFO).
/// Every problem found is reported, in archive order, then manifest order.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::write(dir.path().join("a.txt"), "hello\n").unwrap();
/// let archive = dir.path().join("out.tar.gz");
/// orch_delivery::package::create_archive(&orch_delivery::package::PackageOptions {
///     base: dir.path().to_owned(),
///     paths: vec!["a.txt".into()],
///     output: archive.clone(),
///     exclude: vec![],
///     skip: vec![],
///     mtime: 0,
/// })
/// .unwrap();
/// let report = orch_delivery::verify_archive(&archive).unwrap();
/// assert_eq!(report.files, 1);
/// ```
pub fn verify_archive(path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_with(path, &|| false)
}

/// A read error of the archive. What the tar reader says may quote raw header bytes: its
/// message is made printable.
fn read_err(path: &Path) -> impl Fn(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(source.kind(), util::printable(&source.to_string(), 200)),
    }
}

/// An entry path checked and normalised (`./` and `.` components dropped, no trailing `/`).
fn safe_name(raw: &[u8]) -> Result<String, VerifyProblem> {
    let lossy = String::from_utf8_lossy(raw).into_owned();
    let text = std::str::from_utf8(raw).map_err(|_| VerifyProblem::BadPath {
        entry: lossy.clone(),
        reason: "not valid UTF-8",
    })?;
    if text.starts_with('/') || text.starts_with('\\') || text.as_bytes().get(1) == Some(&b':') {
        return Err(VerifyProblem::Absolute { entry: lossy });
    }
    let mut parts = Vec::new();
    for part in text.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(VerifyProblem::ParentDir { entry: lossy }),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(VerifyProblem::BadPath {
            entry: lossy,
            reason: "empty",
        });
    }
    Ok(parts.join("/"))
}

/// Whether a link target stays inside the archive. Symlink targets resolve from the link's
/// directory, hard link targets from the root.
fn link_stays_inside(entry: &str, target: &[u8], symlink: bool) -> bool {
    let Ok(target) = std::str::from_utf8(target) else {
        return false;
    };
    if target.is_empty() || target.starts_with('/') || target.starts_with('\\') {
        return false;
    }
    if target.as_bytes().get(1) == Some(&b':') {
        return false;
    }
    let mut depth: i64 = if symlink {
        entry.split('/').count() as i64 - 1
    } else {
        0
    };
    for part in target.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

pub(crate) fn verify_with(
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<VerifyReport, VerifyError> {
    let (file, _) = orch_core::input::open_regular(path).map_err(|e| match e {
        orch_core::input::InputError::Io(source) => VerifyError::Read {
            path: path.to_owned(),
            source,
        },
        other => VerifyError::Read {
            path: path.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    let mut buffered = BufReader::new(file);
    let gzip = buffered
        .fill_buf()
        .map_err(read_err(path))?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(reader);
    let mut problems = Vec::new();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut directories = 0;
    let mut manifest: Option<Vec<u8>> = None;

    for entry in archive.entries().map_err(read_err(path))? {
        if cancelled() {
            return Err(read_err(path)(std::io::Error::other("cancelled")));
        }
        let mut entry = entry.map_err(read_err(path))?;
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let name = match safe_name(&raw) {
            Ok(n) => n,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let is_dir = kind.is_dir();
        if !is_dir && !seen.insert(name.clone()) {
            problems.push(VerifyProblem::Duplicate { entry: name });
            continue;
        }
        match kind {
            tar::EntryType::Directory => directories += 1,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if name == MANIFEST_NAME {
                    let mut buf = Vec::new();
                    (&mut entry)
                        .take(MAX_MANIFEST)
                        .read_to_end(&mut buf)
                        .map_err(read_err(path))?;
                    manifest = Some(buf);
                } else {
                    let mut h = Sha256::new();
                    std::io::copy(&mut entry, &mut h).map_err(read_err(path))?;
                    files.insert(name, util::hex(&h.finalize()));
                }
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let symlink = kind == tar::EntryType::Symlink;
                let shown = String::from_utf8_lossy(&target).into_owned();
                if link_stays_inside(&name, &target, symlink) {
                    problems.push(VerifyProblem::UnlistedLink {
                        entry: name,
                        target: shown,
                    });
                } else {
                    problems.push(VerifyProblem::EscapingLink {
                        entry: name,
                        target: shown,
                    });
                }
            }
            other => problems.push(VerifyProblem::Special {
                entry: name,
                kind: match other {
                    tar::EntryType::Char => "character device",
                    tar::EntryType::Block => "block device",
                    tar::EntryType::Fifo => "fifo",
                    tar::EntryType::GNUSparse => "sparse file",
                    _ => "entry of an unsupported type",
                },
            }),
        }
    }

    let Some(manifest) = manifest else {
        problems.push(VerifyProblem::NoManifest);
        return Err(VerifyError::Rejected {
            path: path.to_owned(),
            problems,
        });
    };
    let manifest_sha256 = util::sha256_hex(&manifest);
    let mut listed: BTreeMap<String, String> = BTreeMap::new();
    match std::str::from_utf8(&manifest) {
        Err(_) => problems.push(VerifyProblem::BadManifest {
            line: 0,
            reason: "not valid UTF-8".to_owned(),
        }),
        Ok(text) => {
            for (i, line) in text.lines().enumerate() {
                let n = i + 1;
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let bad = |reason: String| VerifyProblem::BadManifest { line: n, reason };
                let Some((hex, rest)) = line.split_once(' ') else {
                    problems.push(bad("expected `SHA256  PATH`".to_owned()));
                    continue;
                };
                let file = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*'));
                let Some(file) = file else {
                    problems.push(bad("expected two spaces between digest and path".to_owned()));
                    continue;
                };
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    problems.push(bad(format!("`{hex}` is not a sha256 digest")));
                    continue;
                }
                match safe_name(file.as_bytes()) {
                    Ok(name) => {
                        if listed
                            .insert(name.clone(), hex.to_ascii_lowercase())
                            .is_some()
                        {
                            problems.push(bad(format!("`{name}` is listed twice")));
                        }
                    }
                    Err(p) => problems.push(bad(p.to_string())),
                }
            }
        }
    }
    for (name, expected) in &listed {
        match files.get(name) {
            None => problems.push(VerifyProblem::MissingFile { path: name.clone() }),
            Some(actual) if actual != expected => problems.push(VerifyProblem::Mismatch {
                path: name.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
            }),
            Some(_) => {}
        }
    }
    for name in files.keys() {
        if !listed.contains_key(name) {
            problems.push(VerifyProblem::ExtraFile { path: name.clone() });
        }
    }
    if problems.is_empty() {
        Ok(VerifyReport {
            files: files.len(),
            directories,
            manifest_sha256,
        })
    } else {
        Err(VerifyError::Rejected {
            path: path.to_owned(),
            problems,
        })
    }
}

/// The `with` table of `package.verify`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifySettings {
    /// The archive, relative to the pipeline's directory.
    pub archive: String,
}

/// The `package.verify` phase.
#[derive(Clone, Debug)]
pub struct VerifyPhase {
    settings: VerifySettings,
}

pub(crate) fn register(r: &mut Registry) {
    r.register_kind(
        "package.verify",
        "local",
        "check an archive against its sha256 manifest without extracting it",
        Arc::new(|spec: &PhaseSpec| {
            let settings: VerifySettings = spec.with.parse()?;
            Ok(Arc::new(VerifyPhase { settings }) as Arc<dyn Phase>)
        }),
    );
}

#[async_trait]
impl Phase for VerifyPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        Description::new(format!(
            "verify {} against its manifest",
            ctx.resolve(&self.settings.archive).display()
        ))
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let archive: PathBuf = ctx
            .resolve(&self.settings.archive)
            .map_err(|e| PhaseError::failed(format!("cannot render `archive`: {e}")))?;
        let shown = archive.clone();
        let report = util::blocking(ctx, move |cancel| {
            verify_with(&archive, &|| cancel.is_cancelled())
        })
        .await?;
        let report = match report {
            Ok(r) => r,
            Err(VerifyError::Rejected { path, problems }) => {
                for p in &problems {
                    ctx.log(format!("rejected: {p}"));
                }
                return Err(PhaseError::from_error(&VerifyError::Rejected {
                    path,
                    problems,
                }));
            }
            Err(e) => return Err(PhaseError::from_error(&e)),
        };
        ctx.log(format!(
            "{}: {} files match the manifest (sha256 {})",
            shown.display(),
            report.files,
            report.manifest_sha256
        ));
        Ok(PhaseOutcome::with_outputs([
            ("files", report.files.to_string()),
            ("manifest_sha256", report.manifest_sha256),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_links() {
        assert_eq!(safe_name(b"./a//b/").unwrap(), "a/b");
        assert!(matches!(
            safe_name(b"a/../b"),
            Err(VerifyProblem::ParentDir { .. })
        ));
        assert!(matches!(
            safe_name(b"/etc/x"),
            Err(VerifyProblem::Absolute { .. })
        ));
        assert!(matches!(
            safe_name(b"C:\\x"),
            Err(VerifyProblem::Absolute { .. })
        ));
        assert!(link_stays_inside("a/b/link", b"../c", true));
        assert!(!link_stays_inside("a/link", b"../../c", true));
        assert!(!link_stays_inside("link", b"/etc/passwd", true));
        assert!(link_stays_inside("hard", b"a/b", false));
        assert!(!link_stays_inside("a/hard", b"../x", false));
    }
}
