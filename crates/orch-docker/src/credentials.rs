//! Registry credentials: from the Docker config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`: `auths` entries, `credHelpers`, `credsStore`) or from a secret.
//!
//! Credentials never reach a log, an event, an error or a record: [`RegistryAuth`] prints
//! as `***`, and errors name only the file, the registry and the helper.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;

use crate::errors::CredentialsError;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
    /// An identity token (from a helper that answered with the `<token>` user).
    pub identity_token: Option<String>,
    /// Where they came from, for messages (`/root/.docker/config.json`, `secret REG_PW`).
    pub source: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl RegistryAuth {
    /// The credentials in bollard's form, for `registry`.
    pub fn to_docker(&self, registry: &str) -> DockerCredentials {
        DockerCredentials {
            username: (!self.username.is_empty()).then(|| self.username.clone()),
            password: (!self.password.is_empty()).then(|| self.password.clone()),
            identitytoken: self.identity_token.clone(),
            serveraddress: Some(registry.to_owned()),
            ..DockerCredentials::default()
        }
    }

    /// Texts that must never appear in output: the password, the token and the base64
    /// `auth` form.
    pub fn secrets(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.password.is_empty() {
            v.push(self.password.clone());
            v.push(
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", self.username, self.password)),
            );
        }
        v.extend(self.identity_token.clone());
        v
    }
}

/// Replaces each secret in `text` by `***`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if s.len() >= 3 {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

/// The directory of the Docker client config: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker"))
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

/// `https://index.docker.io/v1/` -> `index.docker.io`; `http://h:5000/v2/` -> `h:5000`.
fn normalize_host(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

/// Looks up credentials for `registry` (a host as in [`crate::reference::ImageRef::registry`])
/// in the Docker config file. `Ok(None)` when the file or an entry is absent.
pub async fn from_docker_config(registry: &str) -> Result<Option<RegistryAuth>, CredentialsError> {
    let Some(dir) = config_dir() else {
        return Ok(None);
    };
    from_config_file(&dir.join("config.json"), registry).await
}

/// Like [`from_docker_config`], for a given file.
pub async fn from_config_file(
    path: &Path,
    registry: &str,
) -> Result<Option<RegistryAuth>, CredentialsError> {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialsError::Config {
                path: path.to_owned(),
                message: e.to_string(),
            });
        }
    };
    // serde_json's messages quote no input text beyond a type name, but be safe: report
    // only the position.
    let config: ConfigFile = serde_json::from_str(&text).map_err(|e| CredentialsError::Config {
        path: path.to_owned(),
        message: format!("invalid JSON at line {} column {}", e.line(), e.column()),
    })?;
    let want = normalize_host(registry);
    let source = path.display().to_string();

    if let Some((_, helper)) = config
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_host(k) == want)
    {
        return helper_get(helper, registry, &source).await;
    }
    if let Some((key, entry)) = config.auths.iter().find(|(k, _)| normalize_host(k) == want) {
        let from_entry = entry_auth(path, key, entry, &source)?;
        if from_entry.is_some() {
            return Ok(from_entry);
        }
    }
    if let Some(store) = &config.creds_store {
        return helper_get(store, registry, &source).await;
    }
    Ok(None)
}

fn entry_auth(
    path: &Path,
    key: &str,
    entry: &AuthEntry,
    source: &str,
) -> Result<Option<RegistryAuth>, CredentialsError> {
    let bad = || CredentialsError::BadAuth {
        path: path.to_owned(),
        registry: key.to_owned(),
    };
    let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(auth), _, _) if !auth.is_empty() => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (u, p) = text.split_once(':').ok_or_else(bad)?;
            (u.to_owned(), p.to_owned())
        }
        (_, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => {
            if let Some(token) = &entry.identity_token {
                return Ok(Some(RegistryAuth {
                    username: String::new(),
                    password: String::new(),
                    identity_token: Some(token.clone()),
                    source: source.to_owned(),
                }));
            }
            return Ok(None);
        }
    };
    Ok(Some(RegistryAuth {
        username,
        password,
        identity_token: entry.identity_token.clone().filter(|t| !t.is_empty()),
        source: source.to_owned(),
    }))
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Asks `docker-credential-HELPER get` about a registry.
async fn helper_get(
    helper: &str,
    registry: &str,
    config_source: &str,
) -> Result<Option<RegistryAuth>, CredentialsError> {
    use tokio::io::AsyncWriteExt;
    let fail = |message: String| CredentialsError::Helper {
        helper: helper.to_owned(),
        registry: registry.to_owned(),
        message,
    };
    let program = format!("docker-credential-{helper}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Docker Hub is stored under its v1 URL.
        let server = if registry == crate::reference::DOCKER_HUB {
            "https://index.docker.io/v1/"
        } else {
            registry
        };
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).to_lowercase();
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("it exited with {}", out.status)));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|_| fail("it did not print {\"Username\", \"Secret\"} JSON".into()))?;
    let source = format!("docker-credential-{helper} (from {config_source})");
    Ok(Some(if answer.username == "<token>" {
        RegistryAuth {
            username: String::new(),
            password: String::new(),
            identity_token: Some(answer.secret),
            source,
        }
    } else {
        RegistryAuth {
            username: answer.username,
            password: answer.secret,
            identity_token: None,
            source,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[tokio::test]
    async fn auths_entries_are_read_and_matched_by_host() {
        let d = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("orch:s3cr3t:with:colons");
        let p = config(
            d.path(),
            &format!(
                r#"{{"auths": {{"http://127.0.0.1:5000/v2/": {{"auth": "{auth}"}},
                    "https://index.docker.io/v1/": {{"username": "hub", "password": "pw"}}}}}}"#
            ),
        );
        let a = from_config_file(&p, "127.0.0.1:5000")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("orch", "s3cr3t:with:colons")
        );
        assert!(!format!("{a:?}").contains("s3cr3t"));
        let hub = from_config_file(&p, "docker.io").await.unwrap().unwrap();
        assert_eq!(hub.username, "hub");
        assert!(from_config_file(&p, "ghcr.io").await.unwrap().is_none());
        assert!(
            from_config_file(&d.path().join("none.json"), "x")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn bad_files_say_where_without_content() {
        let d = tempfile::tempdir().unwrap();
        let p = config(
            d.path(),
            r#"{"auths": {"r:1": {"auth": "%%%not-base64-hunter2"}}}"#,
        );
        let e = from_config_file(&p, "r:1").await.unwrap_err().to_string();
        assert!(e.contains("`r:1`") && !e.contains("hunter2"), "{e}");
        let p = config(d.path(), r#"{"auths": hunter2"#);
        let e = from_config_file(&p, "r:1").await.unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn scrub_masks_every_form() {
        let a = RegistryAuth {
            username: "u".into(),
            password: "pw-123".into(),
            identity_token: None,
            source: "test".into(),
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode("u:pw-123");
        let text = format!("x pw-123 y {b64}");
        assert_eq!(scrub(&text, &a.secrets()), "x *** y ***");
    }
}
