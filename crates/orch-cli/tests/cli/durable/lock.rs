//! One run per workspace: a second run is refused at once (exit 2, naming the holder); a
//! lock left by a killed run is taken over at once and what that run left running is
//! killed.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::support::{Ws, alive, poll, signal};

const PIPELINE: &str = r#"
[pipeline]
name = "locked"
[phases.hold]
run = "echo $$ > hold.pid; while [ ! -e release ]; do sleep 0.02; done"
[phases.quick]
run = "echo quick >> quick.txt"
"#;

#[test]
fn a_second_run_is_refused_while_one_runs() {
    let ws = Ws::new(PIPELINE);
    let mut first = ws.spawn(&["run", "-q"]);
    poll(Duration::from_secs(10), "the first run's phase", || {
        ws.read("hold.pid").trim().parse::<i32>().ok()
    });
    let holder = format!("held by process {}", first.id());
    for k in 0..100 {
        let t0 = Instant::now();
        let r = ws.orch(&["run", "-q", "--only", "quick"]);
        let took = t0.elapsed();
        assert_eq!(r.code, Some(2), "attempt {k}: {}", r.stderr);
        assert!(
            r.stderr.contains("another orch run is using") && r.stderr.contains(&holder),
            "attempt {k}: {}",
            r.stderr
        );
        assert!(took < Duration::from_secs(2), "attempt {k} took {took:?}");
    }
    // `--resume` is refused the same way.
    let r = ws.orch(&["run", "-q", "--resume"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    ws.write("release", "");
    let status = first.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    // Only the first run ran `quick`: nothing of the refused runs ran.
    assert_eq!(ws.read("quick.txt"), "quick\n");
    // Free again: the next run goes.
    let r = ws.orch(&["run", "-q", "--only", "quick"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn a_killed_runs_lock_is_taken_over_and_its_processes_killed() {
    let ws = Ws::new(PIPELINE);
    let mut first = ws.spawn(&["run", "-q"]);
    let orphan: i32 = poll(Duration::from_secs(10), "the first run's phase", || {
        ws.read("hold.pid").trim().parse().ok()
    });
    let dead_run = std::fs::read_link(ws.state().join("runs/latest")).expect("latest");
    signal(first.id(), Signal::SIGKILL);
    first.wait().expect("wait");
    // The killed run's phase is ended by the run's watchdog within milliseconds, or at the
    // latest by the next run, which takes the lock over at once (no waiting for a stale
    // lock to time out: the bound is loose for a loaded machine, not a speed figure).
    let t0 = Instant::now();
    let r = ws.orch(&["run", "-q", "--only", "quick"]);
    let took = t0.elapsed();
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(took < Duration::from_secs(5), "took over in {took:?}");
    assert!(!alive(orphan), "the dead run's phase was killed");
    // History tells the dead run apart.
    let runs = ws.orch(&["runs"]);
    assert_eq!(runs.code, Some(0));
    let line = runs
        .stdout
        .lines()
        .find(|l| l.starts_with(&*dead_run.to_string_lossy()))
        .unwrap_or_else(|| panic!("{}", runs.stdout));
    assert!(line.contains("died"), "{line}");
}
