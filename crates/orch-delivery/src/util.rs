//! Helpers shared by the kinds: blocking work off the async runtime, report files, digests.

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

/// Removes credentials from every URL in `text`: a password (`user:pass@` becomes
/// `user:***@`) and, for `http`/`https` and other non-SSH schemes, a user name alone
/// (`https://TOKEN@host` becomes `https://***@host`: tokens are given that way). SSH user
/// names (`ssh://git@host`) are kept.
pub(crate) fn strip_url_credentials(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let scheme_start = rest[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .map_or(0, |i| i + 1);
        let scheme = rest[scheme_start..sep].to_ascii_lowercase();
        let after = &rest[sep + 3..];
        let authority_len = after
            .find(|c: char| "/?#".contains(c) || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_len];
        out.push_str(&rest[..sep + 3]);
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let ssh = scheme == "ssh" || scheme.starts_with("git+ssh") || scheme == "sftp";
                match userinfo.split_once(':') {
                    Some((user, _)) if ssh || !user.is_empty() => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    Some(_) => out.push_str("***"),
                    None if ssh => out.push_str(userinfo),
                    None => out.push_str("***"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_len..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::strip_url_credentials as strip;

    #[test]
    fn credentials_are_stripped_from_urls() {
        for (text, want) in [
            (
                "https://user:pa55@git.example/app.git#main",
                "https://user:***@git.example/app.git#main",
            ),
            (
                "https://ghp_TOKEN@github.com/o/r.git",
                "https://***@github.com/o/r.git",
            ),
            ("https://:pw@h/x", "https://***@h/x"),
            (
                "ssh://git@github.com/o/r.git",
                "ssh://git@github.com/o/r.git",
            ),
            (
                "ssh://git:pw@github.com/o/r.git",
                "ssh://git:***@github.com/o/r.git",
            ),
            ("git@github.com:o/r.git", "git@github.com:o/r.git"),
            (
                "a https://u:p@h b http://x/y@z",
                "a https://u:***@h b http://x/y@z",
            ),
            ("redis://:p%40ss@cache:6379/0", "redis://***@cache:6379/0"),
            ("registry.example/app:1.0", "registry.example/app:1.0"),
            ("https://u:p@h:p@w@host/", "https://u:***@host/"),
        ] {
            assert_eq!(strip(text), want, "{text}");
        }
    }
}
