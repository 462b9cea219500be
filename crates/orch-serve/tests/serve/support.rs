//! A server on an ephemeral port over a pipeline in a temporary directory, an SSE client,
//! and a raw HTTP client (for paths a URL library would normalize).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;
use orch_serve::{ServeOptions, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A running server and its pipeline directory.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), orch_serve::ServeError>>>,
}

/// Held by the tests that load the machine (many events, a browser), so that they do not
/// run at once and skew each other's timings.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub const TOKEN: &str = "a-test-token-of-some-length";

/// `pipeline` (TOML) written as `orch.toml` in a fresh directory.
pub fn project(pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("orch.toml"), pipeline).expect("write orch.toml");
    dir
}

pub fn options(dir: &Path) -> ServeOptions {
    let mut o = ServeOptions::new(dir.join("orch.toml"), orch_core::Registry::with_builtins());
    o.bind = "127.0.0.1:0".into();
    o.grace = Duration::from_secs(2);
    o
}

impl TestServer {
    pub async fn start(pipeline: &str) -> Self {
        let dir = project(pipeline);
        let o = options(dir.path());
        Self::with(dir, o).await
    }

    pub async fn with(dir: tempfile::TempDir, options: ServeOptions) -> Self {
        let server = Server::bind(options).await.expect("bind");
        let addr = server.local_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Self {
            dir,
            addr,
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".orch")
    }

    /// Stops the server (the running run is stopped) and gives the directory back.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server result");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST /api/runs` with `body`; the new run's id.
    pub async fn start_run(&self, body: Value) -> String {
        let r = self
            .http
            .post(self.url("/api/runs"))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status().as_u16(), 202, "start refused");
        let v: Value = r.json().await.expect("json");
        v["run_id"].as_str().expect("run_id").to_owned()
    }

    /// Every event of `run` from the start to the end of the run.
    pub async fn events(&self, run: &str) -> Vec<Event> {
        let mut c = Sse::connect(
            &self.http,
            &self.url(&format!("/api/runs/{run}/events")),
            None,
        )
        .await;
        c.until_end().await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// One SSE frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// A minimal SSE client over reqwest.
pub struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub status: u16,
}

impl Sse {
    pub async fn connect(http: &reqwest::Client, url: &str, last_id: Option<u64>) -> Self {
        let mut req = http.get(url);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let r = req.send().await.expect("GET events");
        let status = r.status().as_u16();
        Self {
            body: Box::pin(r.bytes_stream()),
            buf: String::new(),
            status,
        }
    }

    /// The next frame (comments and `retry:` skipped); `None` at the end of the body.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf[..end].to_owned();
                self.buf.drain(..end + 2);
                let mut id = None;
                let mut event = "message".to_owned();
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("data is JSON"));
                    }
                }
                if let Some(data) = data {
                    return Some(Event { id, event, data });
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.body.next())
                .await
                .expect("an event within 60 s")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk.expect("body")).expect("utf-8"));
        }
    }

    /// Frames up to (not including) `event: end`.
    pub async fn until_end(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await {
            if e.event == "end" {
                return out;
            }
            out.push(e);
        }
        panic!(
            "the stream ended without `event: end` after {} events",
            out.len()
        );
    }
}

/// A request sent byte for byte (no URL normalization); the status and body.
pub async fn raw(addr: SocketAddr, request_line_path: &str, extra_headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET {request_line_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra_headers}\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Creates a FIFO at `path` (a phase blocks reading it until the test writes a line).
pub fn fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

/// Writes a line into the FIFO (blocks until the phase opened it).
pub async fn release(path: &Path) {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || std::fs::write(p, "go\n"))
        .await
        .expect("join")
        .expect("write fifo");
}

/// Reads events until one matches.
pub async fn wait_for(c: &mut Sse, seen: &mut Vec<Event>, f: impl Fn(&Event) -> bool) {
    while let Some(e) = c.next().await {
        let hit = f(&e);
        seen.push(e);
        if hit {
            return;
        }
    }
    panic!("the stream ended before the awaited event; saw {seen:#?}");
}

/// Asserts ids are 1, 2, 3, ... without gaps.
pub fn assert_consecutive(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.id, Some(i as u64 + 1), "event {i}: {e:?}");
    }
}

/// The whole event stream of `url` as raw frames (`id: N\ndata: ...`), without the
/// `retry:` hint and the `end` frame; read in one piece when the stream ends.
pub async fn frames(http: &reqwest::Client, url: &str) -> Vec<String> {
    let text = http
        .get(url)
        .send()
        .await
        .expect("GET events")
        .text()
        .await
        .expect("body");
    text.split("\n\n")
        .filter(|f| f.starts_with("id: "))
        .map(str::to_owned)
        .collect()
}
