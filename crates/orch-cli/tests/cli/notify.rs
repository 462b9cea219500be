//! `[notify]`: the run's events posted to a local HTTP receiver started by each test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::Ws;

/// What the receiver does with each request, in order (the last one repeats).
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    /// Reads the request and never answers.
    Hang,
}

#[derive(Debug)]
struct Request {
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("body is JSON")
    }
}

struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(answers: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let Some(req) = read_request(&stream) else {
                    continue;
                };
                seen.lock().unwrap().push(req);
                let answer = answers.get(n).or(answers.last()).copied();
                match answer {
                    Some(Answer::Status(code)) => {
                        let mut s = stream;
                        let _ = write!(
                            s,
                            "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                    }
                    _ => held.push(stream),
                }
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, Vec<Request>> {
        self.requests.lock().unwrap()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn records(ws: &Ws) -> Vec<serde_json::Value> {
    ws.read(".orch/runs/latest/notify.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const SECRET: &str = "s3cr3t-value-for-notify";

#[test]
fn slack_body_on_a_failed_phase_and_at_run_end_without_the_secret() {
    let rx = Receiver::start(vec![Answer::Status(200)]);
    let ws = Ws::new(&format!(
        r#"[pipeline]
name = "ship"

[notify.chat]
url = "{}"
format = "slack"
on = ["phase.failed", "run.finished"]

[phases.build]
run = "echo building"

[phases.deploy]
needs = ["build"]
secrets = ["DEPLOY_TOKEN"]
run = "echo token=$DEPLOY_TOKEN; echo $DEPLOY_TOKEN >&2; exit 3"
"#,
        rx.url
    ));
    let r = ws.orch_env(&["run"], &[("DEPLOY_TOKEN", SECRET)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    let run_id = ws.record()["run_id"].as_str().unwrap().to_owned();
    let texts: Vec<String> = reqs
        .iter()
        .map(|q| q.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        texts[0].starts_with(&format!(
            "orch: phase deploy of ship (run {run_id}) failed after"
        )),
        "{texts:?}"
    );
    assert!(
        texts[1].starts_with(&format!("orch: run {run_id} of ship failed in ")),
        "{texts:?}"
    );
    assert!(texts[1].ends_with("\nfailed phases: deploy"), "{texts:?}");
    for q in reqs.iter() {
        assert!(!q.body.contains(SECRET), "secret in a body: {}", q.body);
        assert_eq!(q.header("x-orch-signature"), None);
    }
    let recs = records(&ws);
    assert!(
        recs.iter()
            .all(|r| r["outcome"] == "delivered" && r["status"] == 200),
        "{recs:?}"
    );
}

#[test]
fn json_body_is_signed_with_hmac_over_timestamp_and_body() {
    let rx = Receiver::start(vec![Answer::Status(204)]);
    let key = "hmac-key-0123456789";
    let ws = Ws::new(&format!(
        r#"[pipeline]
name = "sign"

[notify.hook]
url = "{}"
secret = "HOOK_KEY"

[phases.a]
run = "echo key is $HOOK_KEY"
"#,
        rx.url
    ));
    let r = ws.orch_env(&["run"], &[("HOOK_KEY", key)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let q = &reqs[0];
    let ts = q.header("x-orch-timestamp").unwrap();
    let expected =
        orch_notify::hmac_sha256_hex(key.as_bytes(), format!("{ts}.{}", q.body).as_bytes());
    assert_eq!(
        q.header("x-orch-signature"),
        Some(format!("sha256={expected}").as_str())
    );
    assert_eq!(q.header("x-orch-event"), Some("run.finished"));
    let body = q.json();
    assert_eq!(body["event"], "run.finished");
    assert_eq!(body["pipeline"], "sign");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["run_id"], ws.record()["run_id"]);
    assert_eq!(body["failed_phases"], serde_json::json!([]));
    assert!(!q.body.contains(key));
}

#[test]
fn a_server_error_is_retried_and_recorded() {
    let rx = Receiver::start(vec![Answer::Status(500), Answer::Status(200)]);
    let ws = Ws::new(&format!(
        "[pipeline]\nname = \"r\"\n[notify.hook]\nurl = \"{}\"\non = [\"phase.finished\"]\n[phases.a]\nrun = \"true\"\n",
        rx.url
    ));
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(rx.requests().len(), 2);
    assert_eq!(rx.requests()[1].json()["phase"], "a");
    let recs = records(&ws);
    let outcomes: Vec<_> = recs
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["status"].as_u64(),
                r["attempt"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("retrying", Some(500), Some(1)),
            ("delivered", Some(200), Some(2))
        ]
    );
}

#[test]
fn a_receiver_that_never_answers_holds_the_run_at_most_its_timeout() {
    let rx = Receiver::start(vec![Answer::Hang]);
    let ws = Ws::new(&format!(
        "[pipeline]\nname = \"h\"\n[notify.hook]\nurl = \"{}\"\ntimeout = \"1s\"\nretries = 5\n[phases.a]\nrun = \"exit 4\"\n",
        rx.url
    ));
    let t0 = Instant::now();
    let r = ws.orch(&["run"]);
    let took = t0.elapsed();
    // Same exit code as without notifications: the failed phase, not the notification.
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(took < Duration::from_secs(4), "the run took {took:?}");
    assert!(
        r.stderr
            .contains("orch: notification `hook` (run.finished)"),
        "{}",
        r.stderr
    );
    assert!(!rx.requests().is_empty());
    let recs = records(&ws);
    let last = recs.last().unwrap();
    assert_eq!(last["event"], "run.finished", "{recs:?}");
    assert!(
        last["outcome"] == "failed" || last["outcome"] == "abandoned",
        "{recs:?}"
    );
    assert!(!ws.read(".orch/runs/latest/notify.jsonl").contains(&rx.url));
}

#[test]
fn bad_notify_tables_are_located_errors() {
    let ws = Ws::new(
        r#"[pipeline]
name = "n"

[notify.chat]
url = "ftp://example.invalid/x"
format = "slak"
on = ["run.finish"]
timeout = "soon"
retries = 99

[notify.signed]
url = "http://127.0.0.1:9/x"
format = "slack"
secret = "not a name"

[notify.nourl]
on = ["phase.failed"]
verbose = true

[phases.a]
run = "true"
"#,
    );
    let r = ws.orch(&["validate"]);
    assert_eq!(r.code, 2);
    insta::assert_snapshot!(r.stderr);
}

/// An HTTPS receiver (Python's `http.server` behind TLS, with a certificate for 127.0.0.1
/// from a CA made by `openssl`) that appends each request body to a file. Killed on
/// drop.
struct TlsReceiver {
    url: String,
    /// The CA that signed the receiver's certificate.
    ca: std::path::PathBuf,
    bodies: std::path::PathBuf,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl TlsReceiver {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        // A CA, and a certificate for 127.0.0.1 that it signed (a self-signed CA
        // certificate cannot serve as the server's own).
        std::fs::write(dir.path().join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=orch test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]);
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let bodies = dir.path().join("bodies");
        let server = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(sys.argv[3], "ab") as f:
            f.write(body + b"\n")
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(server)
            .arg(&cert)
            .arg(&key)
            .arg(&bodies)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        Self {
            url: format!("https://127.0.0.1:{}/hook", port.trim()),
            ca: dir.path().join("ca.pem"),
            bodies,
            child,
            _dir: dir,
        }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.bodies)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_https_receiver_is_reached_and_an_untrusted_certificate_is_refused() {
    let rx = TlsReceiver::start();
    let ws = Ws::new(&format!(
        "[pipeline]\nname = \"tls\"\n[notify.hook]\nurl = \"{}\"\nretries = 0\n[phases.a]\nrun = \"true\"\n",
        rx.url
    ));

    // The system's roots do not include the receiver's certificate: refused, and said so.
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(rx.bodies().is_empty());
    let recs = records(&ws);
    assert_eq!(recs.last().unwrap()["outcome"], "failed", "{recs:?}");
    let error = recs.last().unwrap()["error"].to_string();
    assert!(error.contains("certificate"), "{recs:?}");

    // Trusted through SSL_CERT_FILE, as OpenSSL-based tools do: delivered over TLS.
    let r = ws.orch_env(&["run"], &[("SSL_CERT_FILE", rx.ca.to_str().unwrap())]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bodies = rx.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?} {:?}", records(&ws));
    assert_eq!(bodies[0]["event"], "run.finished");
    assert_eq!(bodies[0]["status"], "succeeded");
    assert_eq!(records(&ws).last().unwrap()["outcome"], "delivered");
}
