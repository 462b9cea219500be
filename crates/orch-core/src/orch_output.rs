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
//! attempt costs one look-up that finds nothing (the open that reads it) instead of
//! creating, reading and removing an empty file on disk. The run's private directory is
//! made once and kept open ([`PrivateDir`]), so those look-ups start there,
//! and the name of a file an attempt never created is given to a later attempt once
//! everything the first one started is gone: the kernel then knows the name is missing
//! from its cache instead of searching the directory on disk for a new name each time.

use std::borrow::Cow;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::phase::PhaseError;
use crate::record::Outputs;
use crate::redact::{MASK, Redactor};

/// The most `ORCH_OUTPUT` may hold; a bigger file fails the phase.
pub(crate) const MAX_OUTPUT_FILE: u64 = 16 * 1024 * 1024;

/// The directory under the run directory that holds attempts' private files.
pub(crate) const PRIVATE_DIR: &str = "private";

/// A run's private directory, `RUN_DIR/private` (mode 0700): made and opened when an
/// attempt first needs it, and kept open for the run's other attempts.
#[derive(Debug)]
pub(crate) struct PrivateDir {
    path: PathBuf,
    dir: OnceLock<OwnedFd>,
    /// Names of files attempts never created, once nothing those attempts started is left.
    free: Mutex<Vec<String>>,
}

impl PrivateDir {
    /// The private directory of the run directory `run_dir` (nothing is made yet).
    pub(crate) fn new(run_dir: &Path) -> Self {
        Self {
            path: run_dir.join(PRIVATE_DIR),
            dir: OnceLock::new(),
            free: Mutex::new(Vec::new()),
        }
    }

    /// The open directory, made (mode 0700) when it is missing.
    fn open(&self) -> Result<&OwnedFd, PhaseError> {
        if let Some(fd) = self.dir.get() {
            return Ok(fd);
        }
        let failed = |e: &dyn std::fmt::Display| {
            PhaseError::failed(format!("cannot create {}: {e}", self.path.display()))
        };
        let made = std::fs::DirBuilder::new().mode(0o700).create(&self.path);
        let made = match made {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.path),
            other => other,
        };
        match made {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(&e)),
        }
        let fd = nix::fcntl::open(
            &self.path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed(&e))?;
        Ok(self.dir.get_or_init(|| fd))
    }
}

/// One attempt's `ORCH_OUTPUT` file; removed when dropped.
#[derive(Debug)]
pub(crate) struct OutputFile<'a> {
    dir: &'a PrivateDir,
    /// Its name in `dir`.
    name: String,
    path: PathBuf,
    /// Seen missing when read: nothing to remove.
    absent: bool,
    /// Nothing the attempt started is left: a name never created may be given out again.
    ended: bool,
}

impl<'a> OutputFile<'a> {
    /// Names a file in the run's private directory for an attempt (16 random hex digits, or
    /// the name of a file an attempt that ended never created), and makes the directory
    /// when it is missing.
    pub(crate) fn create(dir: &'a PrivateDir) -> Result<Self, PhaseError> {
        dir.open()?;
        let reused = dir.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let name = reused.unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)));
        // One allocation (`join` makes two).
        let mut path = PathBuf::with_capacity(dir.path.as_os_str().len() + 1 + name.len());
        path.push(&dir.path);
        path.push(&name);
        Ok(Self {
            path,
            dir,
            name,
            absent: false,
            ended: false,
        })
    }

    /// The file's path (the value of `ORCH_OUTPUT`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Says that nothing the attempt started is left (so nothing can create the file any
    /// more): a name the attempt never created may then be given to a later attempt.
    pub(crate) fn processes_gone(&mut self) {
        self.ended = true;
    }

    /// Reads the file, masks every secret in it, and parses its lines into outputs.
    pub(crate) fn read(&mut self, redactor: &Redactor) -> Result<Outputs, PhaseError> {
        let bytes = match self.open().and_then(read_limited) {
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

    fn open(&self) -> std::io::Result<std::fs::File> {
        let Some(dir) = self.dir.dir.get() else {
            return Err(std::io::ErrorKind::NotFound.into());
        };
        let fd = nix::fcntl::openat(
            dir,
            self.name.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }
}

impl Drop for OutputFile<'_> {
    fn drop(&mut self) {
        if self.absent {
            if self.ended {
                let name = std::mem::take(&mut self.name);
                self.dir
                    .free
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(name);
            }
            return;
        }
        let Some(dir) = self.dir.dir.get() else {
            return;
        };
        if let Err(e) = nix::unistd::unlinkat(
            dir,
            self.name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) && e != nix::errno::Errno::ENOENT
        {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

fn read_limited(mut file: std::fs::File) -> std::io::Result<Vec<u8>> {
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
        let dir = PrivateDir::new(run.path());
        let mut f = OutputFile::create(&dir).unwrap();
        assert_eq!(mode(f.path().parent().unwrap()), 0o700);
        assert_eq!(mode(&run.path().join(PRIVATE_DIR)), 0o700);
        assert!(
            !f.path().exists(),
            "the process creates it if it has outputs"
        );
        let mut other = OutputFile::create(&dir).unwrap();
        assert_ne!(f.path(), other.path(), "each attempt gets its own file");
        std::fs::write(f.path(), "k=v\n").unwrap();
        std::fs::write(other.path(), "").unwrap();
        assert_eq!(f.read(&Redactor::default()).unwrap()["k"], "v");
        assert!(other.read(&Redactor::default()).unwrap().is_empty());
        let mut never = OutputFile::create(&dir).unwrap();
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
    fn only_a_name_never_created_by_an_attempt_that_ended_is_given_out_again() {
        let run = tempfile::tempdir().unwrap();
        let dir = PrivateDir::new(run.path());
        let name_of = |f: &OutputFile<'_>| f.path().to_owned();
        // Written: removed, and never given out again.
        let mut wrote = OutputFile::create(&dir).unwrap();
        std::fs::write(wrote.path(), "k=v\n").unwrap();
        wrote.read(&Redactor::default()).unwrap();
        wrote.processes_gone();
        let written = name_of(&wrote);
        drop(wrote);
        // Not written, but what the attempt started may still be running: not given out.
        let mut running = OutputFile::create(&dir).unwrap();
        running.read(&Redactor::default()).unwrap();
        let still_running = name_of(&running);
        drop(running);
        // Not written, and the attempt's processes are gone: the next attempt gets it.
        let mut ended = OutputFile::create(&dir).unwrap();
        ended.read(&Redactor::default()).unwrap();
        ended.processes_gone();
        let free = name_of(&ended);
        drop(ended);
        let next = OutputFile::create(&dir).unwrap();
        assert_eq!(next.path(), free);
        let after = OutputFile::create(&dir).unwrap();
        assert!(![&written, &still_running, &free].contains(&&after.path().to_owned()));
        assert!(!written.exists());
    }

    #[test]
    fn a_file_never_read_is_removed_all_the_same() {
        // Dropped without a read (a failed or cancelled attempt): removed all the same.
        let run = tempfile::tempdir().unwrap();
        let dir = PrivateDir::new(run.path());
        let f = OutputFile::create(&dir).unwrap();
        std::fs::write(f.path(), "k=v\n").unwrap();
        let path = f.path().to_owned();
        drop(f);
        assert!(!path.exists());
    }

    #[test]
    fn a_file_longer_than_the_first_read_is_read_whole() {
        let run = tempfile::tempdir().unwrap();
        let dir = PrivateDir::new(run.path());
        let mut f = OutputFile::create(&dir).unwrap();
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
        let dir = PrivateDir::new(run.path());
        for secret in [
            "sec\"ret-1",
            "sec\\ret-2",
            "sec\tret\u{1}-3",
            "first-line\nsecond",
        ] {
            let r = Redactor::new([secret]);
            for text in [format!("{secret}\n"), format!("bad key {secret}=1\n")] {
                let mut f = OutputFile::create(&dir).unwrap();
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
        let dir = PrivateDir::new(run.path());
        let mut f = OutputFile::create(&dir).unwrap();
        std::fs::write(f.path(), "v=line-one\nk=line-two\n").unwrap();
        let o = f.read(&Redactor::new(["line-one\nk=line-two"])).unwrap();
        assert_eq!(o.len(), 1);
        assert_eq!(o["v"], "***");
    }
}
