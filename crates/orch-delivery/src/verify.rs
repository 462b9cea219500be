//! The `package.verify` kind and [`verify_archive`]: checks an archive against its
//! `MANIFEST.sha256` by streaming it; nothing is extracted to disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use orch_core::errors::RegistryError;
use orch_core::registry::Kind;
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
/// A PAX header's records as (key, value), or why they do not parse.
type PaxRecords = Result<Vec<(Vec<u8>, Vec<u8>)>, String>;

fn pax_list(exts: tar::PaxExtensions<'_>) -> PaxRecords {
    exts.map(|r| {
        r.map(|r| (r.key_bytes().to_vec(), r.value_bytes().to_vec()))
            .map_err(|e| e.to_string())
    })
    .collect()
}

fn read_err(path: &Path) -> impl Fn(std::io::Error) -> VerifyError + '_ {
    move |source| VerifyError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(source.kind(), util::printable(&source.to_string(), 200)),
    }
}

/// An entry path checked and normalised (`./` and `.` components dropped, no trailing `/`).
fn safe_name(raw: &[u8]) -> Result<String, VerifyProblem> {
    let lossy = util::printable(&String::from_utf8_lossy(raw), 200);
    let text = std::str::from_utf8(raw).map_err(|_| VerifyProblem::BadPath {
        entry: lossy.clone(),
        reason: "not valid UTF-8",
    })?;
    // A NUL ends the name for C extractors and not for this reader; other control
    // characters make listings lie.
    if text.chars().any(char::is_control) {
        return Err(VerifyProblem::BadPath {
            entry: lossy,
            reason: "a control character in the name",
        });
    }
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
    verify_stream(file, path, cancelled)
}

/// [`verify_archive`] on an archive read from `reader`; `path` names it in errors. Nothing
/// is written anywhere.
///
/// ```
/// let err = orch_delivery::verify::verify_reader(&b"not an archive"[..], "x.tar".as_ref());
/// assert!(err.is_err());
/// ```
pub fn verify_reader(reader: impl Read, path: &Path) -> Result<VerifyReport, VerifyError> {
    verify_stream(reader, path, &|| false)
}

/// PAX keys an entry's extended header may hold: names, sizes, times, owners, comments.
/// Anything else (sparse maps, extended attributes, vendor keys) changes what some
/// extractor writes, so a package may not hold it.
const PAX_KEYS: &[&str] = &[
    "path",
    "linkpath",
    "size",
    "mtime",
    "atime",
    "ctime",
    "uid",
    "gid",
    "uname",
    "gname",
    "comment",
    "charset",
    "hdrcharset",
];
/// PAX keys a global header may hold (`git archive` writes a `comment`).
const PAX_GLOBAL_KEYS: &[&str] = &[
    "comment",
    "mtime",
    "atime",
    "ctime",
    "charset",
    "hdrcharset",
];

/// Problems of one PAX header's records: malformed, repeated or unsupported keys.
fn pax_problems(
    records: &PaxRecords,
    entry: &str,
    allowed: &[&str],
    problems: &mut Vec<VerifyProblem>,
) {
    let records = match records {
        Ok(r) => r,
        Err(e) => {
            problems.push(VerifyProblem::BadPax {
                entry: entry.to_owned(),
                reason: util::printable(e, 200),
            });
            return;
        }
    };
    let mut keys = BTreeSet::new();
    for (key, _) in records {
        let key = util::printable(&String::from_utf8_lossy(key), 100);
        if !keys.insert(key.clone()) {
            problems.push(VerifyProblem::BadPax {
                entry: entry.to_owned(),
                reason: format!("the key `{key}` appears twice"),
            });
        } else if !allowed.contains(&key.as_str()) {
            problems.push(VerifyProblem::PaxKey {
                entry: entry.to_owned(),
                key,
            });
        }
    }
}

/// The paths an archive makes, to find one that is both a file and a directory.
#[derive(Default)]
struct Tree {
    /// Entries that are not directories.
    files: BTreeSet<String>,
    /// Directory entries and every parent of an entry.
    dirs: BTreeSet<String>,
}

impl Tree {
    /// Adds an entry; returns the path it makes both a file and a directory, if any.
    fn add(&mut self, name: &str, is_dir: bool) -> Option<String> {
        let parents: Vec<&str> = name.match_indices('/').map(|(i, _)| &name[..i]).collect();
        if let Some(p) = parents.iter().find(|p| self.files.contains(**p)) {
            return Some((*p).to_owned());
        }
        let clash = if is_dir {
            self.files.contains(name)
        } else {
            self.dirs.contains(name)
        };
        if clash {
            return Some(name.to_owned());
        }
        self.dirs.extend(parents.into_iter().map(str::to_owned));
        if is_dir {
            self.dirs.insert(name.to_owned());
        } else {
            self.files.insert(name.to_owned());
        }
        None
    }
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Directory => "directory",
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        tar::EntryType::GNUSparse => "sparse file",
        _ => "entry of an unsupported type",
    }
}

fn verify_stream(
    reader: impl Read,
    path: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<VerifyReport, VerifyError> {
    let mut buffered = BufReader::new(reader);
    let gzip = buffered
        .fill_buf()
        .map_err(read_err(path))?
        .starts_with(&[0x1f, 0x8b]);
    // Every member of a multi-member gzip file, as `gzip -d` (and so `tar -xzf`) reads it.
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(reader);
    let mut problems = Vec::new();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut tree = Tree::default();
    let mut directories = 0;
    let mut manifest: Option<Vec<u8>> = None;
    let mut count = 0usize;

    let entries = archive.entries().map_err(read_err(path))?;
    for entry in entries {
        if cancelled() {
            return Err(read_err(path)(std::io::Error::other("cancelled")));
        }
        count += 1;
        let mut entry = match entry {
            Ok(e) => e,
            // Random bytes fail at the first header: say what the file is not.
            Err(e) if count == 1 => {
                return Err(read_err(path)(std::io::Error::new(
                    e.kind(),
                    format!("not a tar or tar.gz archive ({e})"),
                )));
            }
            Err(e) => return Err(read_err(path)(e)),
        };
        let raw = entry.path_bytes().into_owned();
        let shown = util::printable(&String::from_utf8_lossy(&raw), 200);
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            let mut records = Vec::new();
            (&mut entry)
                .take(MAX_MANIFEST)
                .read_to_end(&mut records)
                .map_err(read_err(path))?;
            let list = pax_list(tar::PaxExtensions::new(&records));
            pax_problems(&list, "(global header)", PAX_GLOBAL_KEYS, &mut problems);
            continue;
        }
        // The entry's own PAX header: allowed keys only, and names that every extractor
        // reads the same way (a GNU long name beside a pax `path` is two names).
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        if let Some(list) = entry
            .pax_extensions()
            .map_err(read_err(path))?
            .map(pax_list)
        {
            pax_problems(&list, &shown, PAX_KEYS, &mut problems);
            for (key, actual) in [("path", Some(&raw)), ("linkpath", link.as_ref())] {
                let value = list
                    .iter()
                    .flatten()
                    .find(|(k, _)| k == key.as_bytes())
                    .map(|(_, v)| v);
                if let Some(v) = value
                    && Some(v) != actual
                {
                    problems.push(VerifyProblem::BadPax {
                        entry: shown.clone(),
                        reason: format!("its `{key}` disagrees with the entry's GNU long name"),
                    });
                }
            }
        }
        let name = match safe_name(&raw) {
            Ok(n) => n,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let is_dir = kind.is_dir();
        if !is_dir && raw.ends_with(b"/") {
            problems.push(VerifyProblem::BadPath {
                entry: shown,
                reason: "a name ending in `/` on an entry that is not a directory",
            });
            continue;
        }
        let is_file = matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous);
        if !is_file && entry.size() > 0 {
            problems.push(VerifyProblem::DataInNonFile {
                entry: name,
                kind: kind_name(kind),
                size: entry.size(),
            });
            continue;
        }
        if !is_dir && tree.files.contains(&name) {
            problems.push(VerifyProblem::Duplicate { entry: name });
            continue;
        }
        if let Some(both) = tree.add(&name, is_dir) {
            problems.push(VerifyProblem::FileAndDirectory {
                entry: name,
                path: both,
            });
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
                let target = link.unwrap_or_default();
                let symlink = kind == tar::EntryType::Symlink;
                let shown = util::printable(&String::from_utf8_lossy(&target), 200);
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
                kind: kind_name(other),
            }),
        }
    }
    // After the end-of-archive block only zeros may follow: `tar -i` reads entries hidden
    // past it, which nothing above checked.
    let mut rest = archive.into_inner();
    let mut buf = [0u8; 8192];
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if buf[..n].iter().all(|b| *b == 0) => {}
            Ok(_) | Err(_) => {
                problems.push(VerifyProblem::TrailingData);
                break;
            }
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

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new(
            "package.verify",
            "check an archive against its sha256 manifest without extracting it",
        ),
        |_: &PhaseSpec, settings: VerifySettings| Ok(VerifyPhase { settings }),
    )
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
