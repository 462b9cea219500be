//! Credential stripping for remote URLs and for text that may quote them.
//!
//! Remote URLs can carry credentials (`https://user:token@host/repo.git`,
//! `https://TOKEN@host/repo.git`, `?access_token=...`). Every URL this crate shows (logs,
//! outputs, errors, plan descriptions) goes through [`sanitize_url`], and every message built
//! from external text (libgit2 errors) goes through a [`Sanitizer`], which also masks the
//! credential parts of the repository's remote URLs wherever they appear verbatim.

/// What replaces a stripped query string.
const QUERY_MASK: &str = "?***";

/// Strips credentials from one URL: the whole `userinfo@` part of a `scheme://` URL and any
/// query string. Other forms (paths, scp-like `git@host:path`) are returned unchanged, since
/// they cannot carry a password.
///
/// ```
/// use orch_git::sanitize_url;
/// assert_eq!(
///     sanitize_url("https://ci:s3cr3t@example.com/org/repo.git"),
///     "https://example.com/org/repo.git"
/// );
/// assert_eq!(sanitize_url("git@example.com:org/repo.git"), "git@example.com:org/repo.git");
/// ```
pub fn sanitize_url(url: &str) -> String {
    strip_url_credentials(url)
}

/// Strips credentials from every `scheme://` URL inside free text.
pub fn strip_url_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (before, after_scheme) = rest.split_at(pos + 3);
        out.push_str(before);
        // The authority ends at the first `/`, `?`, `#`, or a character that cannot be in a
        // URL written inside a message (whitespace, quotes, brackets).
        let auth_end = after_scheme
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '\'' | '"' | '`' | '<' | '>' | '(' | ')'
                ) || c.is_whitespace()
            })
            .unwrap_or(after_scheme.len());
        let authority = &after_scheme[..auth_end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        let tail = &after_scheme[auth_end..];
        // Path up to the end of the URL; a query string in it is masked.
        let url_end = tail
            .find(|c: char| {
                matches!(c, '\'' | '"' | '`' | '<' | '>' | '(' | ')') || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let path = &tail[..url_end];
        match path.find('?') {
            Some(q) => {
                out.push_str(&path[..q]);
                out.push_str(QUERY_MASK);
                if let Some(hash) = path[q..].find('#') {
                    out.push_str(&path[q + hash..]);
                }
            }
            None => out.push_str(path),
        }
        rest = &tail[url_end..];
    }
    out.push_str(rest);
    out
}

/// Masks credentials of known remote URLs in any text, and strips `userinfo@` from every
/// URL in it.
#[derive(Clone, Debug, Default)]
pub struct Sanitizer {
    // Longest first, so a fragment that contains another is masked whole.
    fragments: Vec<String>,
}

impl Sanitizer {
    /// A sanitizer that knows these remote URLs (their credentials are masked even where
    /// they appear outside a URL, for example in a path quoted by libgit2).
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        let mut fragments = Vec::new();
        for url in urls {
            for fragment in credential_fragments(url) {
                if fragment.len() >= 3 && !fragments.contains(&fragment) {
                    fragments.push(fragment);
                }
            }
        }
        fragments.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Self { fragments }
    }

    /// A sanitizer for the remotes of a repository.
    pub fn for_repo(repo: &git2::Repository) -> Self {
        let mut urls = Vec::new();
        if let Ok(names) = repo.remotes() {
            for name in names.iter().filter_map(|n| n.ok().flatten()) {
                if let Ok(remote) = repo.find_remote(name) {
                    urls.push(String::from_utf8_lossy(remote.url_bytes()).into_owned());
                    urls.extend(
                        remote
                            .pushurl_bytes()
                            .map(|u| String::from_utf8_lossy(u).into_owned()),
                    );
                }
            }
        }
        Self::new(urls.iter().map(String::as_str))
    }

    /// Adds the credentials of one more URL.
    pub fn with_url(mut self, url: &str) -> Self {
        let mut more = Sanitizer::new([url]).fragments;
        more.retain(|f| !self.fragments.contains(f));
        self.fragments.extend(more);
        self.fragments
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self
    }

    /// Strips URL credentials and masks known credential fragments.
    pub fn clean(&self, text: &str) -> String {
        let mut text = strip_url_credentials(text);
        for f in &self.fragments {
            if text.contains(f.as_str()) {
                text = text.replace(f.as_str(), "***");
            }
        }
        text
    }
}

/// The secret-bearing parts of a URL: the userinfo, the password, and a user name that is
/// not an ordinary account name (tokens are often given as the user), raw and
/// percent-decoded, and query values.
fn credential_fragments(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(pos) = url.find("://") else {
        return out;
    };
    let after = &url[pos + 3..];
    let auth_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..auth_end];
    if let Some(at) = authority.rfind('@') {
        let userinfo = &authority[..at];
        match userinfo.split_once(':') {
            Some((user, password)) => {
                out.push(userinfo.to_owned());
                out.push(password.to_owned());
                out.push(percent_decode(password));
                if looks_like_token(user) {
                    out.push(user.to_owned());
                }
            }
            None => {
                // A lone user part is usually a token (`https://TOKEN@host`), unless it is an
                // ordinary account name such as `git`.
                if looks_like_token(userinfo) {
                    out.push(userinfo.to_owned());
                    out.push(percent_decode(userinfo));
                }
            }
        }
    }
    if let Some(q) = after.find('?') {
        let query = after[q + 1..].split('#').next().unwrap_or("");
        for pair in query.split('&') {
            if let Some((_, value)) = pair.split_once('=') {
                out.push(value.to_owned());
                out.push(percent_decode(value));
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Whether a user name looks like a token rather than an account name.
fn looks_like_token(user: &str) -> bool {
    user.len() >= 16
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(strip_url_credentials(input), expected, "input: {input}");
    }

    #[test]
    fn strips_userinfo_and_queries() {
        check(
            "https://user:tok@example.com/a.git",
            "https://example.com/a.git",
        );
        check(
            "https://ghp_abcdefghijklmnop@github.com/o/r",
            "https://github.com/o/r",
        );
        check("http://u:p@127.0.0.1:8080", "http://127.0.0.1:8080");
        check("file:///tmp/x.git", "file:///tmp/x.git");
        check(
            "https://example.com/r.git?access_token=abc#frag",
            "https://example.com/r.git?***#frag",
        );
        check("git@example.com:o/r.git", "git@example.com:o/r.git");
        check(
            "failed to push to 'https://a:b@h/x' and \"ssh://me:pw@h2/y\" now",
            "failed to push to 'https://h/x' and \"ssh://h2/y\" now",
        );
        check("a password p@ss in text", "a password p@ss in text");
        check("no url here://", "no url here://");
    }

    #[test]
    fn masks_known_fragments_anywhere() {
        let s = Sanitizer::new(["file://ci:s3cr%21t-token@/tmp/r.git"]);
        assert_eq!(
            s.clean("cannot open 'ci:s3cr%21t-token@/tmp/r.git'"),
            "cannot open '***@/tmp/r.git'"
        );
        assert_eq!(s.clean("decoded s3cr!t-token here"), "decoded *** here");
        let s = Sanitizer::new(["ssh://git@example.com/r.git"]);
        assert_eq!(s.clean("user git is fine"), "user git is fine");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
