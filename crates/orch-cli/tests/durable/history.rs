//! `orch runs`, `orch runs show RUN_ID` and `orch logs RUN_ID PHASE`.

use crate::support::Ws;

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
