//! Reading files named by the user (a pipeline file, a parity spec, an archive) safely: only
//! regular files, never more than a limit.
//!
//! A path given on the command line or in a pipeline may name a FIFO (opening it for
//! reading blocks until a writer comes), a character device (`/dev/zero` never ends) or a
//! file far larger than any real input. [`open_regular`] opens with `O_NONBLOCK` so that
//! opening a FIFO cannot block, then checks what was opened (the descriptor's metadata,
//! not the path's, so a swap between check and use does not matter) and refuses anything
//! but a regular file. [`read_regular`] also bounds what it reads, even for a file that
//! grows while it is read.
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("orch.toml");
//! std::fs::write(&path, "[pipeline]\nname = \"demo\"\n")?;
//! let bytes = orch_core::input::read_regular(&path, 1 << 20)?;
//! assert!(bytes.starts_with(b"[pipeline]"));
//! let err = orch_core::input::read_regular(std::path::Path::new("/dev/null"), 1 << 20);
//! assert_eq!(err.unwrap_err().to_string(), "it is a character device, not a regular file");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest pipeline file read (bytes): a pipeline of 10,000 phases is about 1 MiB.
pub const MAX_PIPELINE_FILE: u64 = 16 << 20;

/// A file named by the user that cannot be read as input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// It could not be opened or read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// It is not a regular file.
    #[error("it is a {kind}, not a regular file")]
    NotRegular {
        /// What it is: `directory`, `fifo`, `character device`, ...
        kind: &'static str,
    },
    /// It is larger than the limit for its kind of input.
    #[error("it is larger than the limit of {limit} bytes ({size} bytes or more)")]
    TooLarge {
        /// Its size, or how much was read before the limit stopped the read.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// It should be text but is not valid UTF-8.
    #[error("it is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
}

/// What a file type is, in words.
fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else if t.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

/// Opens `path` for reading when it is a regular file (symbolic links are followed) and
/// returns it with its size. Opening never blocks, whatever the path names.
pub fn open_regular(path: &Path) -> Result<(File, u64), InputError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(InputError::NotRegular {
            kind: kind_of(meta.file_type()),
        });
    }
    Ok((file, meta.len()))
}

/// Reads a regular file of at most `limit` bytes.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let (file, size) = open_regular(path)?;
    if size > limit {
        return Err(InputError::TooLarge { size, limit });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // One byte past the limit tells a file that grew after the check.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a regular file of at most `limit` bytes that must be UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64) -> Result<String, InputError> {
    String::from_utf8(read_regular(path, limit)?).map_err(|e| InputError::NotUtf8 {
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let check = |p: &Path, want: &str| {
            let e = read_regular(p, 100).unwrap_err();
            assert_eq!(e.to_string(), want, "{}", p.display());
        };
        check(&fifo, "it is a fifo, not a regular file");
        check(
            Path::new("/dev/zero"),
            "it is a character device, not a regular file",
        );
        check(dir.path(), "it is a directory, not a regular file");
    }

    #[test]
    fn bounds_what_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(read_regular(&p, 10).unwrap(), b"0123456789");
        assert!(matches!(
            read_regular(&p, 9),
            Err(InputError::TooLarge { size: 10, limit: 9 })
        ));
        std::fs::write(&p, b"ok\xff").unwrap();
        assert_eq!(
            read_regular_text(&p, 10).unwrap_err().to_string(),
            "it is not UTF-8 text (invalid byte at offset 2)"
        );
    }
}
