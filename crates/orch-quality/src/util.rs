//! Helpers shared by the kinds: blocking work off the async runtime, report files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use orch_core::{Artifact, PhaseContext, PhaseError};
use sha2::{Digest, Sha256};

/// Runs blocking work on tokio's blocking pool; a cancelled run stops waiting for it.
pub(crate) async fn blocking<T, F>(ctx: &PhaseContext, f: F) -> Result<T, PhaseError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let handle = tokio::task::spawn_blocking(f);
    tokio::select! {
        joined = handle => joined.map_err(|e| PhaseError::failed(format!("worker thread failed: {e}"))),
        () = ctx.cancelled().cancelled() => Err(PhaseError::Cancelled),
    }
}

/// Lowercase hex sha256 of bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(bytes) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An I/O failure on a path.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub(crate) struct WriteError {
    path: std::path::PathBuf,
    #[source]
    source: std::io::Error,
}

/// Writes a value as pretty JSON with a final newline, atomically (a temporary file in the
/// same directory, then a rename); returns its size and `sha256:HEX` digest.
pub(crate) fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
) -> Result<(u64, String), WriteError> {
    let fail = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| fail(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })?;
    Ok((bytes.len() as u64, format!("sha256:{}", sha256_hex(&bytes))))
}

/// A file artifact.
pub(crate) fn artifact(kind: &str, name: &str, path: &Path, size: u64, digest: String) -> Artifact {
    Artifact {
        kind: kind.to_owned(),
        name: name.to_owned(),
        path: Some(path.display().to_string()),
        digest: Some(digest),
        size: Some(size),
        details: BTreeMap::new(),
    }
}
