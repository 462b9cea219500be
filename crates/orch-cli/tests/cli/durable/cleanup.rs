//! No process of a run survives it: on a timeout, on Ctrl-C (SIGINT), on SIGTERM, and on a
//! second Ctrl-C that skips the grace period, for children that fork, ignore SIGTERM, or
//! leave the process group with `setsid`.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use orch_core::RunStatus;
use orch_core::test_support::journal::{self, Entry};

use super::support::{Ws, assert_all_gone, poll, signal};

/// A phase that leaves three kinds of descendants and records their pids.
const TREE: &str = r#"
sh -c 'echo $$ > pids/fork; exec sleep 300' &
sh -c 'trap "" TERM; echo $$ > pids/ignore; while :; do sleep 1; done' &
setsid sh -c 'echo $$ > pids/setsid; exec sleep 300' &
echo $$ > pids/main
wait
"#;

fn workspace(timeout: Option<&str>) -> Ws {
    let mut p = String::from("[pipeline]\nname = \"tree\"\n\n[phases.tree]\n");
    p.push_str(&format!("run = {TREE:?}\n"));
    if let Some(t) = timeout {
        p.push_str(&format!("timeout = {t:?}\n"));
    }
    p.push_str("\n[phases.after]\nrun = \"true\"\nneeds = [\"tree\"]\n");
    let ws = Ws::new(&p);
    std::fs::create_dir_all(ws.path().join("pids")).expect("pids");
    ws
}

fn pids(ws: &Ws) -> Vec<i32> {
    ["main", "fork", "ignore", "setsid"]
        .iter()
        .filter_map(|n| ws.read(&format!("pids/{n}")).trim().parse().ok())
        .collect()
}

/// Waits until all four processes wrote their pids.
fn tree_started(ws: &Ws) -> Vec<i32> {
    poll(Duration::from_secs(10), "the process tree", || {
        let p = pids(ws);
        (p.len() == 4).then_some(p)
    })
}

fn latest_id(ws: &Ws) -> String {
    std::fs::read_link(ws.state().join("runs/latest"))
        .expect("latest")
        .to_string_lossy()
        .into_owned()
}

/// The journal of the latest run ends with the run's end, with this status.
fn journal_ends(ws: &Ws, status: RunStatus) {
    let j = journal::read(&ws.state().join("runs/latest/journal")).expect("journal loads");
    assert_eq!(j.torn, 0);
    match j.entries.last() {
        Some(Entry::RunFinished { status: s, .. }) => assert_eq!(*s, status),
        other => panic!("journal ends with {other:?}"),
    }
}

#[test]
fn a_timeout_leaves_no_process() {
    let ws = workspace(Some("1s"));
    let r = ws.orch(&["run", "-q"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let pids = pids(&ws);
    assert_eq!(pids.len(), 4, "the tree started");
    assert_all_gone(&pids, &latest_id(&ws));
    let rec = ws.record("latest");
    assert_eq!(rec["phases"]["tree"]["status"], "timed_out");
    journal_ends(&ws, RunStatus::Failed);
}

fn interrupted(sig: Signal, twice: bool) {
    let ws = workspace(None);
    let grace = if twice { "60s" } else { "300ms" };
    let mut child = ws.spawn(&["run", "-q", "--grace", grace]);
    let pids = tree_started(&ws);
    let t0 = Instant::now();
    signal(child.id(), sig);
    if twice {
        // The first signal has landed once the graceful SIGTERM killed the forked child
        // (the one that ignores SIGTERM lives on); the second must skip the 60s grace.
        poll(Duration::from_secs(5), "the graceful SIGTERM", || {
            (!super::support::alive(pids[1])).then_some(())
        });
        assert!(
            super::support::alive(pids[2]),
            "the TERM-ignoring child waits for SIGKILL"
        );
        signal(child.id(), sig);
    }
    let status = child.wait().expect("wait");
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(130), "exit 130 when interrupted");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    assert_all_gone(&pids, &latest_id(&ws));
    let rec = ws.record("latest");
    assert_eq!(rec["status"], "cancelled");
    assert_eq!(rec["phases"]["tree"]["status"], "cancelled");
    assert_eq!(rec["phases"]["after"]["status"], "cancelled");
    journal_ends(&ws, RunStatus::Cancelled);
    // The lock is released cleanly: nothing stale for the next run.
    assert_eq!(ws.read(".orch/lock"), "");
}

#[test]
fn ctrl_c_stops_the_run_and_leaves_no_process() {
    interrupted(Signal::SIGINT, false);
}

#[test]
fn sigterm_stops_the_run_and_leaves_no_process() {
    interrupted(Signal::SIGTERM, false);
}

#[test]
fn a_second_ctrl_c_skips_the_grace_period() {
    interrupted(Signal::SIGINT, true);
}

#[test]
fn an_interrupted_run_resumes_where_it_stopped() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "resume"
[phases.first]
run = "echo first >> order.txt"
[phases.slow]
run = "echo slow >> order.txt; echo $$ > slow.pid; exec sleep 300"
needs = ["first"]
"#,
    );
    let mut child = ws.spawn(&["run", "-q", "--grace", "200ms"]);
    let pid: i32 = poll(Duration::from_secs(10), "the slow phase", || {
        ws.read("slow.pid").trim().parse().ok()
    });
    signal(child.id(), Signal::SIGINT);
    assert_eq!(child.wait().expect("wait").code(), Some(130));
    assert_all_gone(&[pid], &latest_id(&ws));
    let first_run = latest_id(&ws);
    // Make `slow` quick and resume: `first` is done, `slow` runs again.
    let toml = ws.read("orch.toml").replace("exec sleep 300", "true");
    ws.write("orch.toml", &toml);
    let r = ws.orch(&["run", "-q", "--resume"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(ws.read("order.txt"), "first\nslow\nslow\n");
    let rec = ws.record("latest");
    assert_eq!(rec["resumed_from"], first_run.as_str());
    assert_eq!(rec["phases"]["first"]["status"], "skipped");
    assert_eq!(
        rec["phases"]["first"]["reason"],
        format!("done in run {first_run}").as_str()
    );
    assert_eq!(rec["phases"]["slow"]["status"], "succeeded");
    assert_eq!(rec["phases"]["slow"]["attempts"], 2);
}
