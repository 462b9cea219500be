//! The `ORCH_OUTPUT` file of one attempt: where a process writes `key=value` lines that
//! become the phase's outputs.
//!
//! What a phase writes there may hold secrets, so the file is private to the attempt: its
//! path has a random name in the run's private directory (`RUN_DIR/private/`, mode 0700,
//! made by the first attempt that needs it, so no other user can open, list or replace
//! what is in it whatever the process's umask), it is read once when the attempt ends, and
//! removed whatever the attempt's end (success, failure, timeout, cancellation: the removal
//! runs when the [`OutputFile`] is dropped). Whatever else a phase leaves in the private
//! directory goes with it when the run ends. What is read is redacted before it is parsed,
//! so no form of a secret (not even one line of a multi-line secret) reaches an output or
//! an error message.
//!
//! The file is the process's to create: most phases write no outputs, and for them an
//! attempt costs two system calls that find nothing (the open that reads it, the removal)
//! instead of creating, reading and removing an empty file on disk.

use std::borrow::Cow;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::phase::PhaseError;
use crate::record::Outputs;
use crate::redact::{MASK, Redactor};

/// The most `ORCH_OUTPUT` may hold; a bigger file fails the phase.
pub(crate) const MAX_OUTPUT_FILE: u64 = 16 * 1024 * 1024;

/// The directory under the run directory that holds attempts' private files.
pub(crate) const PRIVATE_DIR: &str = "private";

/// One attempt's `ORCH_OUTPUT` file; removed when dropped.
#[derive(Debug)]
pub(crate) struct OutputFile {
    path: PathBuf,
    /// Seen missing when read: nothing to remove.
    absent: bool,
}

impl OutputFile {
    /// Names `RUN_DIR/private/PHASE.ATTEMPT.RANDOM` for an attempt, and makes the private
    /// directory (mode 0700) when it is missing.
    pub(crate) fn create(run_dir: &Path, phase: &str, attempt: u32) -> Result<Self, PhaseError> {
        let parent = run_dir.join(PRIVATE_DIR);
        let made = std::fs::DirBuilder::new().mode(0o700).create(&parent);
        let made = match made {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent),
            other => other,
        };
        match made {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(PhaseError::failed(format!(
                    "cannot create {}: {e}",
                    parent.display()
                )));
            }
        }
        let path = parent.join(format!("{phase}.{attempt}.{:016x}", fastrand::u64(..)));
        Ok(Self {
            path,
            absent: false,
        })
    }

    /// The file's path (the value of `ORCH_OUTPUT`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file, masks every secret in it, and parses its lines into outputs.
    pub(crate) fn read(&mut self, redactor: &Redactor) -> Result<Outputs, PhaseError> {
        let bytes = match read_limited(&self.path) {
            Ok(b) => b,
            // The phase wrote nothing (or removed it): no outputs.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.absent = true;
                return Ok(Outputs::new());
            }
            Err(e) => {
                return Err(PhaseError::failed(format!("cannot read ORCH_OUTPUT: {e}")));
            }
        };
        if bytes.is_empty() {
            return Ok(Outputs::new());
        }
        // Masked as a whole before it is split into lines: a secret spanning lines is
        // masked whole, and no line of it is ever quoted in an error.
        let masked = redactor.redact_bytes(&bytes);
        let allow_mask = masked != bytes;
        parse_outputs(&String::from_utf8_lossy(&masked), allow_mask)
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if self.absent {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

fn read_limited(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    // Most files are empty: one `read` says so, without asking for the size first.
    let mut first = [0u8; 512];
    let n = loop {
        match file.read(&mut first) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    let mut bytes = first[..n].to_vec();
    if n == 0 {
        return Ok(bytes);
    }
    file.take(MAX_OUTPUT_FILE + 1 - n as u64)
        .read_to_end(&mut bytes)?;
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
        let mut f = OutputFile::create(run.path(), "p", 1).unwrap();
        assert_eq!(mode(f.path().parent().unwrap()), 0o700);
        assert_eq!(mode(&run.path().join(PRIVATE_DIR)), 0o700);
        assert!(
            !f.path().exists(),
            "the process creates it if it has outputs"
        );
        let mut other = OutputFile::create(run.path(), "p", 1).unwrap();
        assert_ne!(f.path(), other.path(), "each attempt gets its own file");
        std::fs::write(f.path(), "k=v\n").unwrap();
        std::fs::write(other.path(), "").unwrap();
        assert_eq!(f.read(&Redactor::default()).unwrap()["k"], "v");
        assert!(other.read(&Redactor::default()).unwrap().is_empty());
        let mut never = OutputFile::create(run.path(), "p", 1).unwrap();
        assert!(never.read(&Redactor::default()).unwrap().is_empty());
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists());
        drop(other);
        drop(never);
        assert_eq!(
            std::fs::read_dir(run.path().join(PRIVATE_DIR))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_file_never_read_is_removed_all_the_same() {
        // Dropped without a read (a failed or cancelled attempt): removed all the same.
        let run = tempfile::tempdir().unwrap();
        let f = OutputFile::create(run.path(), "p", 1).unwrap();
        std::fs::write(f.path(), "k=v\n").unwrap();
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists());
    }

    #[test]
    fn a_file_longer_than_the_first_read_is_read_whole() {
        let run = tempfile::tempdir().unwrap();
        let mut f = OutputFile::create(run.path(), "p", 1).unwrap();
        let long = "x".repeat(5000);
        std::fs::write(f.path(), format!("a=1\nlong={long}\nz=2\n")).unwrap();
        let o = f.read(&Redactor::default()).unwrap();
        assert_eq!(
            (o["a"].as_str(), o["long"].len(), o["z"].as_str()),
            ("1", 5000, "2")
        );
        // Replaced by the phase (a rename onto it): the new file is read, and removed.
        let tmp = run.path().join("tmp");
        std::fs::write(&tmp, "k=new\n").unwrap();
        std::fs::rename(&tmp, f.path()).unwrap();
        assert_eq!(f.read(&Redactor::default()).unwrap()["k"], "new");
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists());
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
                let mut f = OutputFile::create(run.path(), "p", 1).unwrap();
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
        let mut f = OutputFile::create(run.path(), "p", 1).unwrap();
        std::fs::write(f.path(), "v=line-one\nk=line-two\n").unwrap();
        let o = f.read(&Redactor::new(["line-one\nk=line-two"])).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o["v"], "***");
    }
}
