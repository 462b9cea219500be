//! `orch serve` as users start it: the real binary, its reports after a run, secrets kept
//! out of everything it serves, the loopback rule, and a clean stop on SIGTERM.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use crate::support::Ws;

/// `orch serve` on an ephemeral port; the address it printed.
fn serve(ws: &Ws, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(ws.path())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orch serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("utf-8");
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// One HTTP/1.1 request; the status and body.
pub(crate) fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serve_runs_with_reports_and_keeps_secrets_out_of_events_and_records() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "served"

[phases.deploy]
run = "echo token is $DEPLOY_TOKEN; echo leaked=$DEPLOY_TOKEN >> \"$ORCH_OUTPUT\""
secrets = ["DEPLOY_TOKEN"]
"#,
    );
    let secret = "hunter2-very-secret-value";
    let (mut child, addr) = serve(&ws, &[("DEPLOY_TOKEN", secret)]);
    let (status, body) = http(&addr, "POST", "/api/runs", Some("{}"));
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["run_id"].as_str().unwrap().to_owned();
    // The event stream of the run, to its end (chunked: the raw text is enough here).
    let (status, events) = http(&addr, "GET", &format!("/api/runs/{id}/events"), None);
    assert_eq!(status, 200);
    assert!(events.contains("event: end"), "{events}");
    assert!(events.contains("token is ***"), "{events}");
    let (_, record) = http(&addr, "GET", &format!("/api/runs/{id}"), None);
    let (_, log) = http(&addr, "GET", &format!("/api/runs/{id}/logs/deploy"), None);
    for text in [&events, &record, &log] {
        assert!(!text.contains(secret), "a secret in clear: {text}");
    }
    // The same reports as `orch run`.
    let run_dir = ws.path().join(".orch/runs").join(&id);
    for f in [
        "run.json",
        "report.md",
        "junit.xml",
        "report.html",
        "events.jsonl",
    ] {
        assert!(run_dir.join(f).exists(), "{f}");
        let text = std::fs::read_to_string(run_dir.join(f)).unwrap();
        assert!(!text.contains(secret), "{f} holds the secret");
    }
    // SIGTERM stops the server cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_refuses_a_non_loopback_address_without_a_token() {
    let ws = Ws::new("[pipeline]\nname = \"x\"\n\n[phases.a]\nrun = \"true\"\n");
    let r = ws.orch(&["serve", "--bind", "0.0.0.0:0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("refusing to bind 0.0.0.0:0"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--token-file"), "{}", r.stderr);
    let r = ws.orch(&["serve", "missing.toml"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}
