//! The page in a real headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol: a run started from the page, statuses changing live, the log following, a
//! `<script>` printed by a phase shown as text, cancel.
//!
//! With `ORCH_SCREENSHOTS=DIR`, screenshots of the run page (light and dark) are written
//! there (`docs/serve-*.png` come from this).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with one page attached.
struct Browser {
    child: tokio::process::Child,
    ws: Ws,
    next: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromium (scripts/install/chromium.sh installs it)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(u) = line.strip_prefix("DevTools listening on ") {
                    return u.trim().to_owned();
                }
            }
            panic!("chromium exited without a DevTools address");
        })
        .await
        .expect("chromium started within 60 s");
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect to DevTools");
        let mut b = Self {
            child,
            ws,
            next: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        b.session = attached["sessionId"].as_str().unwrap().to_owned();
        b.call("Page.enable", json!({})).await;
        b
    }

    /// Sends one command (to the page's session once attached) and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(60), self.ws.next())
                .await
                .expect("an answer within 60 s")
                .expect("DevTools connection open")
                .unwrap();
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits (in the page, up to 20 s) until `cond` is truthy; returns its value.
    async fn wait(&mut self, cond: &str) -> Value {
        let src = serde_json::to_string(cond).unwrap();
        self.eval(&format!(
            "new Promise((resolve, reject) => {{ const t0 = performance.now(); const tick = () => {{ \
               let v; try {{ v = ({cond}); }} catch (e) {{ v = undefined; }} \
               if (v) resolve(v); \
               else if (performance.now() - t0 > 20000) reject(new Error('timed out waiting for ' + {src})); \
               else setTimeout(tick, 10); }}; tick(); }})"
        ))
        .await
    }

    async fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
    }

    async fn screenshot(&mut self, name: &str) {
        let Some(dir) = std::env::var_os("ORCH_SCREENSHOTS") else {
            return;
        };
        use base64::Engine as _;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let path = PathBuf::from(dir).join(name);
        std::fs::write(&path, png).unwrap();
    }

    async fn close(mut self) {
        self.session.clear();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.call("Browser.close", json!({})),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Whatever happened, no browser process outlives the test.
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

const PIPELINE: &str = r#"
[pipeline]
name = "browser"
jobs = 2

[phases.hostile]
run = "echo '<script>window.pwned=1</script>'; echo '<img src=x onerror=window.pwned=2>'; echo waiting; read x < gate; echo after the gate; echo 'image=shop:1.0' >> \"$ORCH_OUTPUT\""

[phases.lint]
run = "echo 'lint: 0 findings'"

[phases.unit]
run = "echo '12 tests passed'"
needs = ["lint"]

[phases.ship]
run = "echo shipped"
needs = ["hostile", "unit"]
"#;

fn node(phase: &str) -> String {
    format!("document.querySelector('.node[data-phase=\"{phase}\"]')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_starts_a_run_and_follows_it_live() {
    let _heavy = HEAVY.lock().await;
    let s = TestServer::start(PIPELINE).await;
    let gate = s.dir.path().join("gate");
    fifo(&gate);
    let mut b = Browser::launch().await;
    b.goto(&s.url("/")).await;
    b.wait("document.getElementById('start')").await;
    b.wait("document.getElementById('pipeline-name').textContent === 'browser'")
        .await;

    // Start a run from the page (keyboard: focus the button, press Enter).
    b.eval("document.getElementById('start').focus()").await;
    b.call("Input.dispatchKeyEvent", json!({ "type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r" })).await;
    b.call(
        "Input.dispatchKeyEvent",
        json!({ "type": "keyUp", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13 }),
    )
    .await;
    b.wait("location.hash.startsWith('#/runs/')").await;
    let hostile = node("hostile");
    let ship = node("ship");
    b.wait(&format!(
        "{hostile} && {hostile}.dataset.status === 'running'"
    ))
    .await;
    assert_eq!(b.eval(&format!("{ship}.dataset.status")).await, "pending");
    let running_fill = b
        .eval(&format!(
            "getComputedStyle({hostile}.querySelector('rect')).fill"
        ))
        .await;

    // The log follows, and hostile text stays text.
    b.wait("document.getElementById('log') && document.getElementById('log').textContent.includes('waiting')").await;
    let log = b.eval("document.getElementById('log').textContent").await;
    assert!(
        log.as_str()
            .unwrap()
            .contains("<script>window.pwned=1</script>\n<img src=x onerror=window.pwned=2>\n"),
        "{log}"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('#log script, #log img, script:not([src])').length")
            .await,
        0
    );
    assert_eq!(b.eval("typeof window.pwned").await, "undefined");

    // Mid-run: one phase running, others done or waiting (the README's picture).
    b.wait(&format!(
        "{} && {}.dataset.status === 'succeeded'",
        node("unit"),
        node("unit")
    ))
    .await;
    b.screenshot("serve-run.png").await;

    // A line printed now shows within a second.
    release(&gate).await;
    let printed = Instant::now();
    b.wait("document.getElementById('log').textContent.includes('after the gate')")
        .await;
    let shown = printed.elapsed();
    assert!(
        shown < Duration::from_secs(1),
        "the line took {shown:?} to show"
    );

    // Statuses change on screen as the run goes.
    b.wait(&format!("{ship}.dataset.status === 'succeeded'"))
        .await;
    assert_eq!(
        b.eval(&format!("{hostile}.dataset.status")).await,
        "succeeded"
    );
    let done_fill = b
        .eval(&format!(
            "getComputedStyle({hostile}.querySelector('rect')).fill"
        ))
        .await;
    assert_ne!(running_fill, done_fill, "the node's colour changed");
    b.wait("document.querySelector('#run-status .badge').dataset.status === 'succeeded'")
        .await;
    // Outputs of the selected phase, and the timeline.
    b.wait("document.getElementById('outputs') && document.getElementById('outputs').textContent.includes('shop:1.0')").await;
    assert_eq!(
        b.eval("document.querySelectorAll('#timeline .tl-bar').length")
            .await,
        4
    );
    assert_eq!(
        b.eval("document.getElementById('cancel').disabled").await,
        true
    );
    // Keyboard: Tab reaches a phase, Enter selects it.
    b.eval(&format!("{ship}.focus()")).await;
    b.call(
        "Input.dispatchKeyEvent",
        json!({ "type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13 }),
    )
    .await;
    b.call(
        "Input.dispatchKeyEvent",
        json!({ "type": "keyUp", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13 }),
    )
    .await;
    b.wait("document.getElementById('log').textContent.includes('shipped')")
        .await;
    b.eval(&format!(
        "document.getElementById('log').blur(); {hostile}.dispatchEvent(new MouseEvent('click'))"
    ))
    .await;
    b.wait("document.getElementById('log').textContent.includes('after the gate')")
        .await;
    b.screenshot("serve-run-done.png").await;
    b.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    )
    .await;
    let dark_bg = b
        .eval("getComputedStyle(document.body).backgroundColor")
        .await;
    assert_eq!(dark_bg, "rgb(13, 17, 23)", "dark scheme applies");
    b.screenshot("serve-run-dark.png").await;
    b.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "light" }] }),
    )
    .await;

    // A second run, cancelled from the page while its phase waits.
    b.eval("location.hash = '#/'").await;
    b.wait("document.getElementById('start')").await;
    b.eval("document.getElementById('start').click()").await;
    b.wait(&format!(
        "location.hash.startsWith('#/runs/') && {hostile} && {hostile}.dataset.status === 'running'"
    ))
    .await;
    b.wait("document.getElementById('log') && document.getElementById('log').textContent.includes('waiting')").await;
    b.eval("document.getElementById('cancel').click()").await;
    b.wait("document.querySelector('#run-status .badge').dataset.status === 'cancelled'")
        .await;
    b.wait(&format!("{hostile}.dataset.status === 'cancelled'"))
        .await;
    assert_eq!(
        b.eval("document.getElementById('resume').disabled").await,
        false
    );
    // The runs list shows both, newest first, with their durations.
    b.eval("location.hash = '#/'").await;
    b.wait("document.querySelectorAll('#runs tr').length === 2 && document.querySelector('#runs .badge').dataset.status === 'cancelled'").await;
    b.screenshot("serve-runs.png").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_once_and_keeps_it_out_of_scripts() {
    let _heavy = HEAVY.lock().await;
    let dir = project(PIPELINE);
    let file = dir.path().join("token");
    std::fs::write(&file, TOKEN).unwrap();
    let mut o = options(dir.path());
    o.token_file = Some(file);
    let s = TestServer::with(dir, o).await;
    let mut b = Browser::launch().await;
    b.goto(&s.url("/")).await;
    b.wait("document.getElementById('login-form')").await;
    b.eval("document.getElementById('token').value = 'wrong-token-wrong-token'; document.querySelector('#login-form button').click()").await;
    b.wait("document.getElementById('notice').textContent === 'wrong token'")
        .await;
    b.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; document.querySelector('#login-form button').click()"
    ))
    .await;
    b.wait("document.getElementById('start-form')").await;
    // The cookie is HttpOnly: no script on the page can read it.
    assert_eq!(b.eval("document.cookie").await, "");
    // Reloading keeps the session: the token is asked for once.
    b.goto(&s.url("/")).await;
    b.wait("document.getElementById('start-form') || document.getElementById('login-form')")
        .await;
    assert_eq!(
        b.eval("!!document.getElementById('start-form')").await,
        true
    );
    b.close().await;
}
