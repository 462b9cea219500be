//! Who may talk to the server: the bearer token (or the cookie the page sets from it),
//! the Host check that keeps DNS rebinding out of a loopback server, and the Origin check
//! that keeps other sites from starting or cancelling runs.

use axum::http::{HeaderMap, Method, header};
use sha2::{Digest, Sha256};

/// Name of the cookie the page sets after a person entered the token.
pub(crate) const COOKIE: &str = "orch_token";

/// The server's token, kept only as digests.
#[derive(Clone)]
pub(crate) struct Token {
    digest: [u8; 32],
    cookie: String,
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two digests in time that does not depend on where they differ.
pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

impl Token {
    pub(crate) fn new(token: &str) -> Self {
        // The cookie holds a digest of the token, never the token itself.
        let cookie = hex(&sha256(&[b"orch-serve-cookie\0", token.as_bytes()]));
        Self {
            digest: sha256(&[token.as_bytes()]),
            cookie,
        }
    }

    /// Whether `given` is the token. Both sides are hashed first, so the comparison takes
    /// the same time whatever the lengths and wherever they differ.
    pub(crate) fn matches(&self, given: &str) -> bool {
        ct_eq(&self.digest, &sha256(&[given.as_bytes()]))
    }

    fn cookie_matches(&self, given: &str) -> bool {
        ct_eq(
            &sha256(&[self.cookie.as_bytes()]),
            &sha256(&[given.as_bytes()]),
        )
    }

    /// The `Set-Cookie` value after a good login.
    pub(crate) fn set_cookie(&self) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie
        )
    }

    /// Whether the request carries the token (bearer header or cookie).
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            && let Some(t) = v.strip_prefix("Bearer ")
        {
            return self.matches(t.trim());
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k == COOKIE && self.cookie_matches(v))
    }
}

/// Whether a Host header names this machine's loopback (`localhost`, `127.x.y.z`,
/// `[::1]`, with or without a port).
pub(crate) fn host_is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why a request that changes state is refused, if it is: it comes from another origin
/// (its `Origin` is not this server's, or the browser says `Sec-Fetch-Site: cross-site`).
/// Requests without those headers (curl, scripts) pass: they are not a browser acting for
/// another site.
pub(crate) fn cross_site(method: &Method, headers: &HeaderMap) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !same {
            return Some(format!(
                "cross-origin request refused: Origin `{origin}` is not this server"
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!(
            "cross-site request refused (Sec-Fetch-Site: {site})"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matches_only_itself() {
        let t = Token::new("s3cret-token");
        assert!(t.matches("s3cret-token"));
        for bad in [
            "",
            "s",
            "s3cret-toke",
            "s3cret-token ",
            "s3cret-tokem",
            "x".repeat(4096).as_str(),
        ] {
            assert!(!t.matches(bad), "{bad}");
        }
    }

    #[test]
    fn digest_comparison_looks_at_every_byte() {
        let a = [7u8; 32];
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 1;
            assert!(!ct_eq(&a, &b), "byte {i}");
        }
        assert!(ct_eq(&a, &a));
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:7700",
            "127.0.0.1:80",
            "127.1.2.3",
            "[::1]:7700",
            "LOCALHOST",
        ] {
            assert!(host_is_loopback(h), "{h}");
        }
        for h in [
            "",
            "example.com",
            "evil.localhost.example:7700",
            "10.0.0.1:7700",
            "[::2]:1",
        ] {
            assert!(!host_is_loopback(h), "{h}");
        }
    }
}
