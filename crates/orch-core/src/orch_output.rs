//! The `ORCH_OUTPUT` file of one attempt: where a process writes `key=value` lines that
//! become the phase's outputs.
//!
//! What a phase writes there may hold secrets, so the file is private to the attempt: it
//! is created empty with mode 0600 in a directory of its own (mode 0700, a random name
//! under `RUN_DIR/private/`), read once when the attempt ends, and removed with its
//! directory whatever the attempt's end (success, failure, timeout, cancellation: the
//! removal runs when the [`OutputFile`] is dropped). What is read is redacted before it is
//! parsed, so no form of a secret (not even one line of a multi-line secret) reaches an
//! output or an error message.

use std::borrow::Cow;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::phase::PhaseError;
use crate::record::Outputs;
use crate::redact::{MASK, Redactor};

/// The most `ORCH_OUTPUT` may hold; a bigger file fails the phase.
pub(crate) const MAX_OUTPUT_FILE: u64 = 16 * 1024 * 1024;

/// The directory under the run directory that holds attempts' private files.
pub(crate) const PRIVATE_DIR: &str = "private";

/// One attempt's `ORCH_OUTPUT` file; removed (with its directory) when dropped.
#[derive(Debug)]
pub(crate) struct OutputFile {
    dir: PathBuf,
    path: PathBuf,
}

impl OutputFile {
    /// Creates `RUN_DIR/private/PHASE.ATTEMPT.RANDOM/output`, the directories 0700 and the
    /// file 0600 and empty.
    pub(crate) fn create(run_dir: &Path, phase: &str, attempt: u32) -> Result<Self, PhaseError> {
        let parent = run_dir.join(PRIVATE_DIR);
        let fail = |what: &Path, e: std::io::Error| {
            PhaseError::failed(format!("cannot create {}: {e}", what.display()))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|e| fail(&parent, e))?;
        let mut tries = 0;
        let dir = loop {
            let dir = parent.join(format!("{phase}.{attempt}.{:016x}", fastrand::u64(..)));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => {
                    tries += 1;
                }
                Err(e) => return Err(fail(&dir, e)),
            }
        };
        let this = Self {
            path: dir.join("output"),
            dir,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&this.path)
            .map_err(|e| fail(&this.path, e))?;
        Ok(this)
    }

    /// The file's path (the value of `ORCH_OUTPUT`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file, masks every secret in it, and parses its lines into outputs.
    pub(crate) fn read(&self, redactor: &Redactor) -> Result<Outputs, PhaseError> {
        let bytes = match read_limited(&self.path) {
            Ok(b) => b,
            // The phase may have removed it: no outputs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outputs::new()),
            Err(e) => {
                return Err(PhaseError::failed(format!("cannot read ORCH_OUTPUT: {e}")));
            }
        };
        // Masked as a whole before it is split into lines: a secret spanning lines is
        // masked whole, and no line of it is ever quoted in an error.
        let masked = redactor.redact_bytes(&bytes);
        let allow_mask = masked != bytes;
        parse_outputs(&String::from_utf8_lossy(&masked), allow_mask)
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_OUTPUT_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_OUTPUT_FILE {
        return Err(std::io::Error::other(format!(
            "it holds more than {} MiB",
            MAX_OUTPUT_FILE / (1024 * 1024)
        )));
    }
    Ok(bytes)
}

/// Removes what attempts of a run left in `RUN_DIR/private` (after a crash).
pub(crate) fn remove_private_dir(run_dir: &Path) {
    let dir = run_dir.join(PRIVATE_DIR);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", dir.display());
    }
}

/// Parses `key=value` lines. Blank lines and `#` comments are ignored; any other line
/// without `=`, or with a key that is not letters, digits, `_` and `-`, is an error that
/// quotes it (the text given here must already be redacted). With `allow_mask`, a key may
/// also hold the mask of a secret that was in it (`key_***`).
pub(crate) fn parse_outputs(text: &str, allow_mask: bool) -> Result<Outputs, PhaseError> {
    let mut outputs = Outputs::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(PhaseError::failed(format!(
                "ORCH_OUTPUT line {} is not `key=value`: {line:?}",
                n + 1
            )));
        };
        let k = k.trim();
        let unmasked = if allow_mask {
            Cow::Owned(k.replace(MASK, ""))
        } else {
            Cow::Borrowed(k)
        };
        if k.is_empty()
            || !unmasked
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(PhaseError::failed(format!(
                "ORCH_OUTPUT line {} has an invalid key {k:?} (use letters, digits, `_`, `-`)",
                n + 1
            )));
        }
        outputs.insert(k.to_owned(), v.to_owned());
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn outputs_parse_key_value_lines() {
        let o = parse_outputs("a=1\n# c\n\nb = x=y\r\n", false).unwrap();
        assert_eq!(o.get("a").map(String::as_str), Some("1"));
        assert_eq!(o.get("b").map(String::as_str), Some(" x=y"));
        assert!(parse_outputs("novalue\n", false).is_err());
        assert!(parse_outputs("bad key=1\n", false).is_err());
        assert!(parse_outputs("k***=1\n", false).is_err());
        assert_eq!(parse_outputs("k***=1\n", true).unwrap()["k***"], "1");
        assert!(parse_outputs("bad k***=1\n", true).is_err());
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_file_is_private_and_removed_when_dropped() {
        let run = tempfile::tempdir().unwrap();
        let f = OutputFile::create(run.path(), "p", 1).unwrap();
        assert_eq!(mode(f.path()), 0o600);
        assert_eq!(mode(f.path().parent().unwrap()), 0o700);
        assert_eq!(mode(&run.path().join(PRIVATE_DIR)), 0o700);
        let other = OutputFile::create(run.path(), "p", 1).unwrap();
        assert_ne!(
            f.path(),
            other.path(),
            "each attempt gets its own directory"
        );
        std::fs::write(f.path(), "k=v\n").unwrap();
        assert_eq!(f.read(&Redactor::default()).unwrap()["k"], "v");
        let dir = f.path().parent().unwrap().to_owned();
        drop(f);
        assert!(!dir.exists());
        drop(other);
        assert_eq!(
            std::fs::read_dir(run.path().join(PRIVATE_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn errors_quote_lines_only_after_redaction() {
        let run = tempfile::tempdir().unwrap();
        for secret in [
            "sec\"ret-1",
            "sec\\ret-2",
            "sec\tret\u{1}-3",
            "first-line\nsecond",
        ] {
            let r = Redactor::new([secret]);
            for text in [format!("{secret}\n"), format!("bad key {secret}=1\n")] {
                let f = OutputFile::create(run.path(), "p", 1).unwrap();
                std::fs::write(f.path(), &text).unwrap();
                let message = f.read(&r).unwrap_err().to_string();
                assert!(message.contains("***"), "{message}");
                for part in secret.lines() {
                    assert!(!message.contains(part), "{secret:?} in {message}");
                    assert!(!message.contains(&format!("{part:?}")[1..]), "{message}");
                }
            }
        }
    }

    #[test]
    fn a_secret_spanning_lines_is_masked_whole_in_values() {
        let run = tempfile::tempdir().unwrap();
        let f = OutputFile::create(run.path(), "p", 1).unwrap();
        std::fs::write(f.path(), "v=line-one\nk=line-two\n").unwrap();
        let o = f.read(&Redactor::new(["line-one\nk=line-two"])).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o["v"], "***");
    }
}
