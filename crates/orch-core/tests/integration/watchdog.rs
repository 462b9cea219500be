//! The watchdog: whatever a process's runs started dies with the process, however many
//! runs it has, whoever killed its watchdog before, and whatever it forked.
//!
//! The engine of the tests that kill it is this test binary again, run as a process of its
//! own (`ENGINE` set), which says what it started on its standard output and waits for
//! words on its standard input.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orch_core::watchdog::{self, MAX_RUNS, Watchdog};
use orch_core::{PhaseId, PhaseSpec, Pipeline, RunControl, RunOptions, RunSpec, Runner};

/// Set in the engine's process: the test's engine half runs instead of the test.
const ENGINE: &str = "ORCH_TEST_WATCHDOG_ENGINE";

/// A run id no other test (nor another run of this one) uses.
fn run_id(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "wd-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A process that carries the mark of run `id`, as a phase's processes do.
fn marked_sleeper(id: &str) -> Child {
    Command::new("sleep")
        .arg("1000")
        .env("ORCH_RUN_ID", id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether `pid` is gone or a zombie (killed, not yet reaped by its parent).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next());
            matches!(state, Some('Z' | 'X'))
        }
    }
}

/// Whether `pid` is dead within `limit`.
fn dies_within(pid: i32, limit: Duration) -> bool {
    let t0 = Instant::now();
    while !dead(pid) {
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn sigkill(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// The engine half of a test, in a process of its own.
struct Engine {
    child: Child,
    /// The engine's lines, read by a thread of their own.
    lines: mpsc::Receiver<String>,
    stdin: ChildStdin,
}

impl Engine {
    fn spawn(test: &str, env: &[(&str, &Path)]) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            &format!("watchdog::{test}"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENGINE, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Self {
            child,
            lines,
            stdin,
        }
    }

    /// The value the engine says for `key` (`ENGINE key value`, which may follow what the
    /// test harness printed on the same line).
    fn hear(&mut self, key: &str) -> i32 {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("the engine did not say {key}: {e}"));
            let Some((_, said)) = line.split_once("ENGINE ") else {
                continue;
            };
            let mut words = said.split_whitespace();
            if words.next() == Some(key) {
                return words.next().unwrap().parse().unwrap();
            }
        }
    }

    fn say(&mut self, word: &str) {
        writeln!(self.stdin, "{word}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn sigkill(mut self) {
        sigkill(self.child.id() as i32);
        self.child.wait().unwrap();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // A test that failed midway leaves no engine behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In the engine: says `key value` to the test.
fn tell(key: &str, value: i32) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ENGINE {key} {value}").unwrap();
    out.flush().unwrap();
}

/// In the engine: waits for the test's next word; exits when the test is gone.
fn listen() -> String {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 {
        std::process::exit(0);
    }
    line.trim().to_owned()
}

fn in_engine() -> bool {
    std::env::var_os(ENGINE).is_some()
}

#[test]
fn the_runs_of_a_process_share_one_watchdog() {
    let early = watchdog::start_early().unwrap();
    let a = Watchdog::start(&run_id("share"), None).unwrap();
    let b = Watchdog::start(&run_id("share"), None).unwrap();
    assert_eq!((a.pid(), b.pid()), (early, early));
    a.finish();
    b.finish();
    // Finishing runs does not end it: the next run uses it too.
    let c = Watchdog::start(&run_id("share"), None).unwrap();
    assert_eq!(c.pid(), early);
    assert!(!dead(early));
    c.finish();
}

#[test]
fn a_guard_dropped_without_finish_kills_its_run_only() {
    let (a, b) = (run_id("drop"), run_id("keep"));
    let guard_a = Watchdog::start(&a, None).unwrap();
    let guard_b = Watchdog::start(&b, None).unwrap();
    let (mut pa, mut pb) = (marked_sleeper(&a), marked_sleeper(&b));
    drop(guard_a);
    // The drop returns once the run's processes are killed.
    assert!(dies_within(pa.id() as i32, Duration::from_secs(2)));
    pa.wait().unwrap();
    assert!(
        pb.try_wait().unwrap().is_none(),
        "the other run's process died"
    );
    guard_b.finish();
    assert!(
        pb.try_wait().unwrap().is_none(),
        "a finished run's process died"
    );
    pb.kill().unwrap();
    pb.wait().unwrap();
}

#[test]
fn runs_beyond_the_limit_get_a_watchdog_of_their_own() {
    if in_engine() {
        // In a process of its own: the other tests' runs share this one's watchdog.
        let shared = watchdog::start_early().unwrap();
        let ids: Vec<String> = (0..=MAX_RUNS).map(|_| run_id("many")).collect();
        let mut guards: Vec<Watchdog> = ids
            .iter()
            .map(|id| Watchdog::start(id, None).unwrap())
            .collect();
        let on_shared = guards.iter().filter(|g| g.pid() == shared).count();
        assert_eq!(on_shared, MAX_RUNS);
        // The one beyond the limit is watched as well.
        let last = guards.pop().unwrap();
        assert_ne!(last.pid(), shared);
        let mut p = marked_sleeper(ids.last().unwrap());
        drop(last);
        assert!(dies_within(p.id() as i32, Duration::from_secs(2)));
        p.wait().unwrap();
        // A run that ends frees its place.
        guards.pop().unwrap().finish();
        let again = Watchdog::start(&run_id("many"), None).unwrap();
        assert_eq!(again.pid(), shared);
        tell("ok", 1);
        return;
    }
    let mut engine = Engine::spawn("runs_beyond_the_limit_get_a_watchdog_of_their_own", &[]);
    assert_eq!(engine.hear("ok"), 1);
}

#[test]
fn two_runs_of_a_process_die_with_it() {
    if in_engine() {
        let dirs: Vec<std::path::PathBuf> = ["RUN_A", "RUN_B"]
            .iter()
            .map(|k| std::env::var_os(k).unwrap().into())
            .collect();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for dir in dirs {
                let pipeline = Pipeline::builder("watched", &dir)
                    .phase(PhaseSpec::command(
                        PhaseId::new("sleep").unwrap(),
                        RunSpec::Shell(
                            "echo $$ > pid.tmp && mv pid.tmp pid && exec sleep 1000".into(),
                        ),
                    ))
                    .build()
                    .unwrap();
                let runner = Runner::new(Arc::new(pipeline), RunOptions::default());
                tokio::spawn(async move { runner.run(RunControl::new()).await });
            }
            tokio::task::spawn_blocking(listen).await.unwrap();
        });
        return;
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let engine = Engine::spawn(
        "two_runs_of_a_process_die_with_it",
        &[("RUN_A", a.path()), ("RUN_B", b.path())],
    );
    let pid_of = |dir: &Path| {
        let t0 = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(dir.join("pid")) {
                return s.trim().parse::<i32>().unwrap();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the phase did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let pids = [pid_of(a.path()), pid_of(b.path())];
    engine.sigkill();
    for pid in pids {
        let gone = dies_within(pid, Duration::from_secs(5));
        sigkill(pid);
        assert!(gone, "process {pid} outlived its engine");
    }
}

#[test]
fn a_killed_watchdog_is_replaced_by_the_next_run() {
    if in_engine() {
        tell("watchdog", watchdog::start_early().unwrap());
        assert_eq!(listen(), "run");
        let id = run_id("after");
        let guard = Watchdog::start(&id, None).unwrap();
        tell("new-watchdog", guard.pid());
        tell("sleeper", marked_sleeper(&id).id() as i32);
        listen();
        return;
    }
    let mut engine = Engine::spawn("a_killed_watchdog_is_replaced_by_the_next_run", &[]);
    let first = engine.hear("watchdog");
    sigkill(first);
    assert!(dies_within(first, Duration::from_secs(5)));
    engine.say("run");
    let second = engine.hear("new-watchdog");
    let sleeper = engine.hear("sleeper");
    assert_ne!(second, first);
    engine.sigkill();
    let gone = dies_within(sleeper, Duration::from_secs(5));
    sigkill(sleeper);
    assert!(gone, "the run's process outlived its engine");
}

#[test]
fn a_forked_process_neither_blinds_the_watchdog_nor_uses_it() {
    if in_engine() {
        let early = watchdog::start_early().unwrap();
        tell("watchdog", early);
        let id = run_id("parent");
        let _guard = Watchdog::start(&id, None).unwrap();
        tell("sleeper", marked_sleeper(&id).id() as i32);
        // SAFETY: the child only registers a run, says so and waits to be killed.
        #[allow(unsafe_code)]
        match unsafe { nix::libc::fork() } {
            0 => {
                let own = Watchdog::start(&run_id("child"), None).unwrap();
                tell("child-watchdog", own.pid());
                loop {
                    // SAFETY: waits for a signal.
                    #[allow(unsafe_code)]
                    unsafe {
                        nix::libc::pause()
                    };
                }
            }
            pid => tell("child", pid),
        }
        listen();
        return;
    }
    let mut engine = Engine::spawn(
        "a_forked_process_neither_blinds_the_watchdog_nor_uses_it",
        &[],
    );
    let early = engine.hear("watchdog");
    let sleeper = engine.hear("sleeper");
    let child = engine.hear("child");
    let child_watchdog = engine.hear("child-watchdog");
    assert_ne!(
        child_watchdog, early,
        "the forked process uses its parent's watchdog"
    );
    // The engine dies; the process it forked lives on, holding whatever it inherited.
    engine.sigkill();
    let gone = dies_within(sleeper, Duration::from_secs(5));
    sigkill(sleeper);
    assert!(!dead(child));
    sigkill(child);
    assert!(
        gone,
        "the run's process outlived its engine while a forked process lived"
    );
}
