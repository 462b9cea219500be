//! Image references: `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`.

/// The registry of references without one.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The repository as written, registry included (`127.0.0.1:5000/app`, `app`).
    pub repository: String,
    /// The tag, if written.
    pub tag: Option<String>,
    /// The digest, if written (`sha256:...`).
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses a reference; errors say what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty image reference".into());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("image reference `{text}` contains whitespace"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) if d.contains(':') => (r, Some(d.to_owned())),
            Some(_) => return Err(format!("image reference `{text}` has a malformed digest")),
            None => (text, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_owned()))
            }
            None => (rest, None),
        };
        if repository.is_empty() || repository.ends_with('/') || repository.starts_with('/') {
            return Err(format!("image reference `{text}` has no repository name"));
        }
        if tag.as_deref() == Some("") {
            return Err(format!("image reference `{text}` has an empty tag"));
        }
        if repository
            .split('/')
            .skip(usize::from(Self::host_of(repository).is_some()))
            .any(|c| c.chars().any(|ch| ch.is_ascii_uppercase()))
        {
            return Err(format!(
                "image reference `{text}`: repository names must be lowercase"
            ));
        }
        Ok(Self {
            repository: repository.to_owned(),
            tag,
            digest,
        })
    }

    fn host_of(repository: &str) -> Option<&str> {
        let (first, _) = repository.split_once('/')?;
        (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
    }

    /// The registry host (`127.0.0.1:5000`, `ghcr.io`), `docker.io` when none is written.
    pub fn registry(&self) -> &str {
        Self::host_of(&self.repository).unwrap_or(DOCKER_HUB)
    }

    /// The repository path inside its registry (`team/app`; `library/app` on Docker Hub).
    pub fn path(&self) -> String {
        match Self::host_of(&self.repository) {
            Some(host) => self.repository[host.len() + 1..].to_owned(),
            None if !self.repository.contains('/') => format!("library/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// The tag, `latest` when none is written.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_parts() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(r.repository, "127.0.0.1:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.path(), "team/app");

        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(r.tag_or_latest(), "latest");

        let r = ImageRef::parse("localhost/app@sha256:abc").unwrap();
        assert_eq!(r.registry(), "localhost");
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(r.to_string(), "localhost/app@sha256:abc");

        for bad in ["", "a b", "App:1", "app:", "/app", "app@nodigest"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
