//! Helpers shared by the kinds: blocking work off the async runtime, report files, digests.

use std::io::Write;
use std::path::{Path, PathBuf};

use orch_core::{PhaseContext, PhaseError};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Runs blocking work on tokio's blocking pool. The closure gets a token that fires when
/// the run is cancelled or when this future is dropped (the engine's timeout), so long
/// walks stop soon after.
pub(crate) async fn blocking<T, F>(ctx: &PhaseContext, f: F) -> Result<T, PhaseError>
where
    T: Send + 'static,
    F: FnOnce(&CancellationToken) -> T + Send + 'static,
{
    let token = ctx.cancelled().child_token();
    let _stop_on_drop = token.clone().drop_guard();
    let worker_token = token.clone();
    let handle = tokio::task::spawn_blocking(move || f(&worker_token));
    tokio::select! {
        joined = handle => joined.map_err(|e| PhaseError::failed(format!("worker thread failed: {e}"))),
        () = ctx.cancelled().cancelled() => Err(PhaseError::Cancelled),
    }
}

/// The state directory of the run, derived from `RUN_DIR = STATE_DIR/runs/RUN_ID`, so walks
/// and packages leave it out.
pub(crate) fn state_dirs(ctx: &PhaseContext) -> Vec<PathBuf> {
    let run_dir = ctx.run_dir();
    match run_dir.parent() {
        Some(runs) if runs.file_name().is_some_and(|n| n == "runs") => {
            runs.parent().map(Path::to_owned).into_iter().collect()
        }
        _ => vec![run_dir.to_owned()],
    }
}

/// Hex sha256 of bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `text` safe to print on a terminal, at most `max` characters: control characters,
/// replacement characters (from bytes that were not UTF-8) and other invisible ones are
/// escaped (`\x1b`, `\u{fffd}`), and a longer text is cut with `...`.
pub(crate) fn printable(text: &str, max: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push_str("...");
            break;
        }
        if c.is_control()
            || c == '\u{fffd}'
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            if (c as u32) < 0x80 {
                let _ = write!(out, "\\x{:02x}", c as u32);
            } else {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An I/O failure on a path.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub(crate) struct WriteError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Writes bytes atomically (a temporary file in the same directory, then a rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let fail = |source| WriteError {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(fail)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// Writes a value as pretty JSON with a final newline; returns its size and
/// `sha256:HEX` digest.
pub(crate) fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
) -> Result<(u64, String), WriteError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| WriteError {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)?;
    Ok((bytes.len() as u64, format!("sha256:{}", sha256_hex(&bytes))))
}

/// A list output: JSON array text.
pub(crate) fn json_list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_owned())
}
