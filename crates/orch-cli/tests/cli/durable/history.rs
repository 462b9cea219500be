//! `orch runs`, `orch runs show RUN_ID` and `orch logs RUN_ID PHASE`.

use std::time::Duration;

use super::support::{Ws, poll};

const PIPELINE: &str = r#"
[pipeline]
name = "hist"
state_dir = "state"
[vars]
fail = "no"
[phases.build]
run = "echo building; echo v=1 > $ORCH_OUTPUT"
[phases.test]
run = "echo testing; [ ${{ vars.fail }} = no ]"
needs = ["build"]
"#;

fn ids(ws: &Ws) -> Vec<String> {
    let r = ws.orch(&["runs", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|r| r["run_id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn runs_lists_shows_and_prints_logs() {
    let ws = Ws::new(PIPELINE);
    let none = ws.orch(&["runs"]);
    assert_eq!(none.code, Some(0));
    assert!(none.stderr.contains("no runs in"), "{}", none.stderr);

    assert_eq!(ws.orch(&["run", "-q", "--var", "fail=yes"]).code, Some(1));
    let failed = ids(&ws)[0].clone();
    let r = ws.orch(&["run", "-q", "--resume"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let ids = ids(&ws);
    assert_eq!(ids.len(), 2);
    let resumed = ids[0].clone();
    assert_eq!(ids[1], failed, "newest first");

    // The list: id, start, duration, status (with what it resumed), phase counts.
    let list = ws.orch(&["runs"]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert!(
        lines[0].starts_with("RUN") && lines[0].contains("PHASES"),
        "{}",
        list.stdout
    );
    assert!(lines[1].starts_with(&resumed), "{}", list.stdout);
    assert!(
        lines[1].contains(&format!("succeeded (resumed {failed})"))
            && lines[1].contains("1 succeeded, 1 skipped"),
        "{}",
        list.stdout
    );
    assert!(
        lines[2].contains("failed") && lines[2].contains("1 succeeded, 1 failed"),
        "{}",
        list.stdout
    );

    // One run.
    let show = ws.orch(&["runs", "show", &resumed]);
    assert_eq!(show.code, Some(0), "{}", show.stderr);
    assert!(show.stdout.contains("pipeline  hist"), "{}", show.stdout);
    assert!(
        show.stdout.contains(&format!("resumed   {failed}")),
        "{}",
        show.stdout
    );
    let build = show
        .stdout
        .lines()
        .find(|l| l.starts_with("build"))
        .expect("build row");
    assert!(
        build.contains("skipped") && build.contains(&format!("done in run {failed}")),
        "{build}"
    );
    let json = ws.orch(&["runs", "show", "latest", "--json"]);
    let rec: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(rec["run_id"], resumed.as_str());

    // Logs; a phase done in an earlier run has its log there.
    let log = ws.orch(&["logs", &failed, "test"]);
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    assert_eq!(log.stdout, "testing\n");
    let log = ws.orch(&["logs", "latest", "build"]);
    assert_eq!(log.stdout, "building\n", "{}", log.stderr);

    // Unknown runs and phases are errors that say so.
    let r = ws.orch(&["runs", "show", "20000101T000000Z-0000"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("no such run"), "{}", r.stderr);
    let r = ws.orch(&["logs", "latest", "nope"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("has no phase `nope`"), "{}", r.stderr);
    // --state-dir reads a state directory directly.
    let r = ws.orch(&["runs", "--state-dir", "state", "--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn a_live_run_shows_its_running_phase_as_running_with_the_holder() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "live"
[phases.first]
run = "true"
[phases.hold]
run = "echo $$ > hold.pid; while [ ! -e release ]; do sleep 0.02; done"
needs = ["first"]
"#,
    );
    let mut run = ws.spawn(&["run", "-q"]);
    poll(Duration::from_secs(10), "the phase to start", || {
        ws.read("hold.pid").trim().parse::<i32>().ok()
    });
    let pid = run.id();

    let r = ws.orch(&["runs"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains(&format!("running (pid {pid})")) && r.stdout.contains("1 running"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("cancelled"), "{}", r.stdout);

    let r = ws.orch(&["runs", "show", "latest"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains(&format!("status    running (process {pid})")),
        "{}",
        r.stdout
    );
    let hold = r
        .stdout
        .lines()
        .find(|l| l.starts_with("hold "))
        .unwrap_or_else(|| panic!("no row for hold in {}", r.stdout));
    assert!(
        hold.contains("running") && !hold.contains("cancelled") && !hold.contains("interrupted"),
        "{hold}"
    );

    let r = ws.orch(&["runs", "show", "latest", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["status"], "running");
    assert_eq!(v["phases"]["hold"]["status"], "running");
    assert_eq!(v["phases"]["first"]["status"], "succeeded");

    ws.write("release", "");
    assert_eq!(run.wait().expect("wait").code(), Some(0));
    let r = ws.orch(&["runs", "show", "latest", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["phases"]["hold"]["status"], "succeeded");
}
