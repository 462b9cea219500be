//! The CLI tests' workspace: `orch-test-utils`'s, running this crate's `orch`, with the
//! exit code as a number (-1 when a signal ended the run).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

pub use orch_test_utils::process::assert_no_leftovers;

use orch_test_utils::Workspace;

pub struct Ws(Workspace);

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ws {
    pub fn new(pipeline: &str) -> Self {
        Self(Workspace::new(pipeline).with_binary(env!("CARGO_BIN_EXE_orch")))
    }

    pub fn orch(&self, args: &[&str]) -> Run {
        self.orch_env(args, &[])
    }

    pub fn orch_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let r = self.0.orch_env(args, env);
        Run {
            code: r.code.unwrap_or(-1),
            stdout: r.stdout,
            stderr: r.stderr,
        }
    }
}

impl Ws {
    /// Starts `orch serve` here, as users start it, on an ephemeral loopback port with
    /// `env` added; returns once it printed the address it listens on.
    pub fn serve(&self, env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_orch"))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .current_dir(self.path())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("orch serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let first = lines.next().expect("a line").expect("utf-8");
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first}"))
            .to_owned();
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let stderr = std::thread::spawn(move || {
            std::iter::once(first)
                .chain(lines.map_while(Result::ok))
                .collect()
        });
        Server {
            child: Some(child),
            addr,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }
}

/// An `orch serve` started by [`Ws::serve`]; killed if the test ends without
/// [`Server::stop`].
pub struct Server {
    child: Option<Child>,
    /// `HOST:PORT` it listens on.
    pub addr: String,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<Vec<String>>>,
}

impl Server {
    /// One HTTP/1.1 request to the server; the status and body.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(&self.addr, method, path, body)
    }

    /// Stops the server with SIGTERM, as a service manager does; its exit code and
    /// everything it printed.
    pub fn stop(mut self) -> Run {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = child.wait().expect("wait");
        let stdout = self.stdout.take().map(|t| t.join().expect("stdout"));
        let stderr = self.stderr.take().map(|t| t.join().expect("stderr"));
        Run {
            code: status.code().unwrap_or(-1),
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default().join("\n"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One HTTP/1.1 request; the status and body.
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
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

impl Deref for Ws {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.0
    }
}

/// The status of every phase in a record, as `id=status` in record order.
pub fn statuses(record: &serde_json::Value) -> Vec<String> {
    record["phases"]
        .as_object()
        .expect("phases")
        .iter()
        .map(|(k, v)| format!("{k}={}", v["status"].as_str().unwrap_or("?")))
        .collect()
}

/// insta settings that hide the workspace's paths, run ids and times.
pub fn redactions(ws: &Ws) -> insta::Settings {
    orch_test_utils::redactions(ws.path())
}
