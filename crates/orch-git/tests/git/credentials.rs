//! Credentials in remote URLs and secrets never show, anywhere; and the credentials a push
//! uses really reach the server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine;

use crate::support::{Res, Run, TestRepo, table};

const URL_TOKEN: &str = "url-t0ken-5ecret";
const PHASE_TOKEN: &str = "phase-t0ken-5ecret";
const HELPER_PASSWORD: &str = "helper-pa55word";

/// An HTTP server that answers every request with `401 Basic` and records the
/// `Authorization` headers it was sent (decoded).
fn refusing_server() -> Res<(u16, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some(value) = line.trim_end().strip_prefix("Authorization: Basic ")
                    && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value)
                {
                    record
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(String::from_utf8_lossy(&decoded).into_owned());
                }
                line.clear();
            }
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"orch-test\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    Ok((port, seen))
}

#[tokio::test]
async fn remote_credentials_never_show_and_reach_the_server() -> Res {
    let (port, seen) = refusing_server()?;
    let t = TestRepo::new()?;
    t.write("a.txt", "a\n")?;
    t.commit_all("feat: a", None)?;
    let secret_url = format!("http://ci-bot:{URL_TOKEN}@127.0.0.1:{port}/org/app.git");
    let clean_url = format!("http://127.0.0.1:{port}/org/app.git");
    t.repo.remote("origin", &secret_url)?;
    t.repo.remote(
        "mirror",
        &format!("file://ci:{URL_TOKEN}@/nonexistent/app.git"),
    )?;
    // A credential helper configured in the repository answers with its own password.
    t.repo.config()?.set_str(
        "credential.helper",
        &format!("!f() {{ echo username=helper-user; echo password={HELPER_PASSWORD}; }}; f"),
    )?;

    let mut texts: Vec<String> = Vec::new();

    let inventory = Run::new("git.inventory", t.path(), table("")).go().await?;
    let remotes: serde_json::Value = serde_json::from_str(&inventory.ok()["remotes"])?;
    assert_eq!(remotes["origin"], clean_url.as_str());
    assert_eq!(remotes["mirror"], "file:///nonexistent/app.git");
    texts.extend(inventory.ok().values().cloned());
    texts.push(inventory.log());

    // Push over HTTP: libgit2 offers the URL's credentials, then the phase's token secret,
    // then the credential helper's; the server refuses them all.
    let push = Run::new(
        "git.tag",
        t.path(),
        table("tag = \"v1\"\npush = \"origin\"\ntoken_secret = \"GIT_TOKEN\""),
    )
    .secret("GIT_TOKEN", PHASE_TOKEN);
    let plan = push.describe()?;
    texts.push(format!("{plan:?}"));
    assert!(plan.changes.join("\n").contains(&clean_url), "{plan:?}");
    let ran = push.go().await?;
    let err = ran.err();
    assert!(err.contains("push to remote `origin`"), "{err}");
    assert!(err.contains(&format!("({clean_url})")), "{err}");
    assert!(
        err.contains("authentication failed: the remote refused the credentials offered (from: token_secret, credential helper)"),
        "{err}"
    );
    texts.push(err);
    texts.push(ran.log());
    let sent = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(
        sent,
        [
            format!("ci-bot:{URL_TOKEN}"),
            format!("ci-bot:{PHASE_TOKEN}"),
            // The helper is asked for the URL's user name's password.
            format!("ci-bot:{HELPER_PASSWORD}"),
        ],
        "credentials offered, in order"
    );

    // A `file://` URL with credentials in it: libgit2's own message quotes the path.
    let ran = Run::new(
        "git.tag",
        t.path(),
        table("tag = \"v1\"\npush = \"mirror\""),
    )
    .go()
    .await?;
    let err = ran.err();
    assert!(
        err.contains("push to remote `mirror` (file:///nonexistent/app.git)"),
        "{err}"
    );
    texts.push(err);
    texts.push(ran.log());

    for text in &texts {
        for secret in [URL_TOKEN, PHASE_TOKEN, HELPER_PASSWORD] {
            assert!(!text.contains(secret), "`{secret}` leaked in: {text}");
        }
    }
    Ok(())
}
