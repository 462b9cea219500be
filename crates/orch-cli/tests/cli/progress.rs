//! What `orch run` prints while it works: plain lines (snapshots of success, failure,
//! retries, cancellation, -q and -v), colour, and the live view forced into a pipe.

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Ws, redactions};

/// The real binary in `dir`, with none of the caller's orch settings in its environment.
pub fn orch(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orch"));
    c.args(args).current_dir(dir);
    for var in orch_test_utils::SETTINGS {
        c.env_remove(var);
    }
    c
}

/// An `orch` in the background whose stderr is collected as it comes; killed on drop.
pub struct Background {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orch");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits for the exit (within `within`) and returns the code and all of stderr.
    pub fn finish(mut self, within: Duration) -> (i32, String) {
        let code = poll(within, "orch to exit", || {
            self.child
                .try_wait()
                .unwrap()
                .map(|s| s.code().unwrap_or(-1))
        });
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        (code, self.stderr_now())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `f` until it returns `Some`, up to `within`.
pub fn poll<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `orch` to the end. The journal is off: with it, a phase's `PhaseFinished` event is
/// published once its record is durable while its dependents may already be running, so
/// the order of lines across phases depends on the disk. Without it the order is the
/// scheduling order, and snapshots are stable (`default_journal_prints_the_same_lines`
/// checks that the journal changes only the order).
fn run(ws: &Ws, args: &[&str]) -> (i32, String, String) {
    run_journal(ws, args, "off")
}

fn run_journal(ws: &Ws, args: &[&str], journal: &str) -> (i32, String, String) {
    let mut cmd = orch(ws.path(), args);
    if journal != "default" {
        cmd.env("ORCH_JOURNAL", journal);
    }
    let out = cmd.output().expect("run orch");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plain_success() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "success"
jobs = 1
[phases.fetch]
run = "echo fetched"
[phases.build]
run = "sleep 0.3; echo built"
needs = ["fetch"]
[phases.lint]
run = "echo linted"
needs = ["fetch"]
[phases.gate]
kind = "gate"
needs = ["build", "lint"]
assert = ["1 == 1"]
"#,
    );
    let (code, stdout, stderr) = run(&ws, &["run"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.is_empty(),
        "human output belongs on stderr: {stdout}"
    );
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "control characters in plain output: {stderr:?}"
    );
    redactions(&ws).bind(|| insta::assert_snapshot!(stderr));
}

#[test]
fn plain_failure_names_the_log_of_what_failed() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "failure"
jobs = 1
[phases.setup]
run = "echo ready"
[phases.lint]
run = "echo 'style: 2 problems'; exit 1"
allow_failure = true
[phases.test]
run = "sleep 0.3; echo '3 passed, 1 failed' >&2; exit 4"
needs = ["setup"]
[phases.deploy]
run = "true"
needs = ["test"]
"#,
    );
    let (code, _, stderr) = run(&ws, &["run"]);
    assert_eq!(code, 1, "{stderr}");
    let log = ws.latest_dir().join("logs/test.log");
    assert!(log.is_file(), "the summary names {}", log.display());
    redactions(&ws).bind(|| insta::assert_snapshot!(stderr));
}

#[test]
fn plain_retries() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "retry"
jobs = 1
[phases.flaky]
run = "echo attempt $ORCH_ATTEMPT; [ $ORCH_ATTEMPT -ge 3 ]"
retries = 3
backoff = { initial = "10ms", factor = 1.0, max = "10ms" }
[phases.stubborn]
run = "exit 7"
retries = 1
backoff = { initial = "10ms", factor = 1.0, max = "10ms" }
needs = ["flaky"]
"#,
    );
    let (code, _, stderr) = run(&ws, &["run"]);
    assert_eq!(code, 1, "{stderr}");
    redactions(&ws).bind(|| insta::assert_snapshot!(stderr));
}

#[test]
fn plain_cancellation_exits_130() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "cancel"
jobs = 2
[phases.quick]
run = "echo quick"
[phases.long]
needs = ["quick"]
run = "echo started > started.marker; sleep 30"
[phases.after]
needs = ["long"]
run = "true"
"#,
    );
    // The durable journal is on (the default): the line of `quick` may come after `long`
    // has started, so wait for both.
    let bg = Background::spawn(orch(ws.path(), &["run", "--progress", "plain"]));
    poll(Duration::from_secs(30), "the long phase to start", || {
        (ws.exists("started.marker") && bg.stderr_now().contains("  ok      quick (")).then_some(())
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bg.pid()),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, stderr) = bg.finish(Duration::from_secs(30));
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(ws.record()["status"], "cancelled");
    redactions(&ws).bind(|| insta::assert_snapshot!(stderr));
}

#[test]
fn quiet_prints_only_failures_and_the_summary() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "quiet"
jobs = 1
[phases.ok]
run = "echo fine"
[phases.flaky]
run = "[ $ORCH_ATTEMPT -ge 2 ]"
retries = 1
backoff = { initial = "10ms" }
[phases.bad]
run = "sleep 0.3; exit 2"
needs = ["flaky"]
"#,
    );
    // `bad` sleeps so that the chain through it is the critical path however fast `ok` runs.
    let (code, _, stderr) = run(&ws, &["run", "-q"]);
    assert_eq!(code, 1, "{stderr}");
    redactions(&ws).bind(|| insta::assert_snapshot!(stderr));
}

#[test]
fn quiet_prints_one_line_when_the_run_succeeds() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "quiet-ok"
[phases.a]
run = "echo fine"
[phases.b]
run = "true"
needs = ["a"]
"#,
    );
    let (code, _, stderr) = run(&ws, &["run", "-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    redactions(&ws).bind(|| insta::assert_snapshot!(stderr));
}

#[test]
fn a_long_critical_path_is_shortened_to_its_ends() {
    // A chain of 30 phases: the summary names the first and last steps and a count.
    let mut file = String::from("[pipeline]\nname = \"chain\"\n[phases.s0]\nrun = \"true\"\n");
    for i in 1..30 {
        file.push_str(&format!(
            "[phases.s{i}]\nrun = \"true\"\nneeds = [\"s{}\"]\n",
            i - 1
        ));
    }
    let ws = Ws::new(&file);
    let (code, _, stderr) = run(&ws, &["run"]);
    assert_eq!(code, 0, "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("critical path: "))
        .unwrap_or_else(|| panic!("no critical path in {stderr}"));
    assert!(
        line.starts_with("critical path: s0 (")
            && line.contains(" -> s2 (")
            && line.contains(" -> ... 24 more ... -> s27 (")
            && line.contains(" -> s29 ("),
        "{line}"
    );
    assert!(!line.contains("s3 (") && !line.contains("s26 ("), "{line}");
}

#[test]
fn verbose_streams_every_line_prefixed_by_its_phase() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "verbose"
jobs = 1
[phases.one]
run = '''echo 'line 1'; printf '\033[31mred\033[0m\tcell\n'; echo line 3'''
[phases.two]
run = ["sh", "-c", "echo 'two says hi on stderr' >&2"]
needs = ["one"]
"#,
    );
    let (code, _, stderr) = run(&ws, &["run", "-v"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    redactions(&ws).bind(|| insta::assert_snapshot!(stderr));
}

#[test]
fn colour_paints_status_words_only_and_follows_flags_and_no_color() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "colour"
jobs = 1
[phases.good]
run = "echo fine"
[phases.bad]
run = "exit 1"
needs = ["good"]
"#,
    );
    let paint = |args: &[&str], env: &[(&str, &str)]| {
        let out = orch(ws.path(), args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let always = paint(&["run", "--color", "always"], &[]);
    assert!(
        always.contains("  \x1b[32mok\x1b[0m      good ("),
        "{always:?}"
    );
    assert!(always.contains("\x1b[1;31mFAIL\x1b[0m"), "{always:?}");
    // Only status words: the phase names and the run line stay plain.
    assert!(always.contains("orch: running `colour`"), "{always:?}");
    let by_env = paint(&["run"], &[("ORCH_COLOR", "always")]);
    assert!(by_env.contains("\x1b[32mok\x1b[0m"), "{by_env:?}");
    // A flag wins over the variable; auto never colours a pipe, NO_COLOR or not.
    for (args, env) in [
        (
            &["run", "--color", "never"][..],
            &[("ORCH_COLOR", "always")][..],
        ),
        (&["run"][..], &[][..]),
        (&["run", "--color", "auto"][..], &[("NO_COLOR", "1")][..]),
    ] {
        let text = paint(args, env);
        assert!(!text.contains('\x1b'), "{args:?} {env:?}: {text:?}");
    }
    let bad = orch(ws.path(), &["run", "--color", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_live_view_can_be_forced_into_a_pipe() {
    // The phase waits until the test has seen its spinner line, so the view must draw.
    let ws = Ws::new(
        r#"
[pipeline]
name = "forced"
[phases.waiting]
run = "echo 'waiting for the test'; i=0; while [ ! -f release ] && [ $i -lt 1500 ]; do i=$((i+1)); sleep 0.02; done; echo released"
[phases.next]
needs = ["waiting"]
run = "true"
"#,
    );
    let mut cmd = orch(ws.path(), &["run"]);
    cmd.env("ORCH_PROGRESS", "live");
    let bg = Background::spawn(cmd);
    // The phase line and the overall bar are drawn by separate ticks: wait for both.
    let seen = poll(
        Duration::from_secs(30),
        "the spinner line and the bar",
        || {
            let text = bg.stderr_now();
            (text
                .lines()
                .any(|l| l.contains("waiting") && l.contains("waiting for the test"))
                && text.contains(" 0/2 "))
            .then_some(text)
        },
    );
    assert!(
        seen.contains("\x1b["),
        "the live view moves the cursor: {seen:?}"
    );
    assert!(
        seen.contains(" 0/2 "),
        "the overall bar counts phases: {seen:?}"
    );
    std::fs::write(ws.path().join("release"), "").unwrap();
    let (code, stderr) = bg.finish(Duration::from_secs(30));
    assert_eq!(code, 0, "{stderr}");
    // Finished phases scroll above as one-line results; the summary follows the view.
    assert!(stderr.contains("  ok      waiting ("), "{stderr:?}");
    let summary = stderr.rsplit("\nphase ").next().unwrap();
    assert!(
        !summary.contains('\x1b'),
        "the view is gone before the summary: {summary:?}"
    );
    assert!(summary.contains("run ") && summary.contains(" succeeded in "));
}

/// A line with times, run ids and column padding taken out.
fn normalise(line: &str) -> String {
    line.split_whitespace()
        .map(|word| {
            let core = word.trim_matches(|c| "(),:".contains(c));
            let time = |t: &str| {
                let num = t.trim_end_matches("ms").trim_end_matches('s');
                (t.ends_with('s')
                    && !num.is_empty()
                    && num
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.' || c == 'm'))
                .then_some(())
            };
            let run_id =
                core.len() == 21 && core.as_bytes()[8] == b'T' && core.as_bytes()[16] == b'-';
            if time(core).is_some() {
                word.replace(core, "[T]")
            } else if run_id {
                word.replace(core, "[RUN_ID]")
            } else if let Some((head, id)) = core.split_once("/runs/") {
                let rest = id.split_once('/').map_or("", |(_, r)| r);
                word.replace(core, &format!("{head}/runs/[RUN_ID]/{rest}"))
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn default_journal_prints_the_same_lines() {
    let pipeline = r#"
[pipeline]
name = "journal"
jobs = 2
[phases.flaky]
run = "echo attempt $ORCH_ATTEMPT; [ $ORCH_ATTEMPT -ge 2 ]"
retries = 1
backoff = { initial = "10ms" }
[phases.next]
run = "echo next"
needs = ["flaky"]
[phases.side]
run = "exit 1"
allow_failure = true
"#;
    let lines = |journal: &str| {
        let ws = Ws::new(pipeline);
        let (code, _, stderr) = run_journal(&ws, &["run", "-v"], journal);
        assert_eq!(code, 0, "{stderr}");
        let mut lines: Vec<String> = stderr.lines().map(normalise).collect();
        lines.sort();
        lines
    };
    let off = lines("off");
    assert!(
        off.iter().any(|l| l == "ok flaky ([T]) after 2 attempts"),
        "{off:#?}"
    );
    assert_eq!(lines("default"), off);
}
