//! `orch stats` over a scripted run history: run records with known times and statuses,
//! rendered as text, JSON and Prometheus text; an empty history; an unreadable record.

use serde_json::{Value, json};

use crate::support::Ws;

const PIPELINE: &str = r#"
[pipeline]
name = "shop"

[phases.build]
run = "true"
"#;

/// A phase record: status, attempts, duration in seconds.
fn phase(kind: &str, status: &str, attempts: u32, secs: Option<u64>) -> Value {
    let mut p = json!({ "status": status, "kind": kind, "attempts": attempts, "outputs": {} });
    if let Some(s) = secs {
        p["duration_ms"] = json!(s * 1000);
    }
    p
}

/// Writes `runs/ID/run.json` under `.orch` of `ws`.
fn write_run(
    ws: &Ws,
    id: &str,
    pipeline: &str,
    status: &str,
    started: &str,
    finished: Option<&str>,
    phases: Value,
) {
    let dir = ws.path().join(".orch/runs").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut r = json!({
        "format_version": 1,
        "run_id": id,
        "pipeline": pipeline,
        "status": status,
        "started_at": started,
        "vars": {},
        "phases": phases,
    });
    if let Some(f) = finished {
        r["finished_at"] = json!(f);
    }
    std::fs::write(
        dir.join("run.json"),
        serde_json::to_string_pretty(&r).unwrap(),
    )
    .unwrap();
}

/// Two days of `shop` (build, test, deploy) and one run of another pipeline:
///
/// 1. 01-05 10:00-10:05 succeeded.
/// 2. 01-05 11:00-11:04 failed: test failed after 3 attempts, deploy blocked.
/// 3. 01-05 12:00-12:06 succeeded; test passed at its 2nd attempt (flaky). Recovery 62m
///    (11:04 to 12:06), lead time 66m (11:00 to 12:06).
/// 4. 01-06 09:00-09:01 cancelled while test ran.
/// 5. 01-06 10:00-10:10 failed: build timed out.
/// 6. 01-06 12:00-12:05 succeeded. Recovery 1h55m (10:10 to 12:05), lead time 3h05m
///    (09:00 to 12:05).
/// 7. 01-07 08:00-08:03 failed: deploy denied by the policy (failing since 08:03).
/// 8. 01-07 09:00: `run.json` is not JSON: skipped with a warning.
fn scripted(ws: &Ws) {
    let p = |b: Value, t: Value, d: Value| json!({ "build": b, "test": t, "deploy": d });
    let cmd = "command";
    write_run(
        ws,
        "20260105T100000Z-0001",
        "shop",
        "succeeded",
        "2026-01-05T10:00:00.000Z",
        Some("2026-01-05T10:05:00.000Z"),
        p(
            phase(cmd, "succeeded", 1, Some(60)),
            phase(cmd, "succeeded", 1, Some(120)),
            phase("deploy", "succeeded", 1, Some(30)),
        ),
    );
    write_run(
        ws,
        "20260105T110000Z-0002",
        "shop",
        "failed",
        "2026-01-05T11:00:00.000Z",
        Some("2026-01-05T11:04:00.000Z"),
        p(
            phase(cmd, "succeeded", 1, Some(50)),
            phase(cmd, "failed", 3, Some(100)),
            phase("deploy", "blocked", 0, None),
        ),
    );
    write_run(
        ws,
        "20260105T120000Z-0003",
        "shop",
        "succeeded",
        "2026-01-05T12:00:00.000Z",
        Some("2026-01-05T12:06:00.000Z"),
        p(
            phase(cmd, "succeeded", 1, Some(70)),
            phase(cmd, "succeeded", 2, Some(150)),
            phase("deploy", "succeeded", 1, Some(40)),
        ),
    );
    write_run(
        ws,
        "20260106T090000Z-0004",
        "shop",
        "cancelled",
        "2026-01-06T09:00:00.000Z",
        Some("2026-01-06T09:01:00.000Z"),
        p(
            phase(cmd, "succeeded", 1, Some(55)),
            phase(cmd, "cancelled", 1, Some(5)),
            phase("deploy", "cancelled", 0, None),
        ),
    );
    write_run(
        ws,
        "20260106T100000Z-0005",
        "shop",
        "failed",
        "2026-01-06T10:00:00.000Z",
        Some("2026-01-06T10:10:00.000Z"),
        p(
            phase(cmd, "timed_out", 1, Some(600)),
            phase(cmd, "blocked", 0, None),
            phase("deploy", "blocked", 0, None),
        ),
    );
    write_run(
        ws,
        "20260106T120000Z-0006",
        "shop",
        "succeeded",
        "2026-01-06T12:00:00.000Z",
        Some("2026-01-06T12:05:00.000Z"),
        p(
            phase(cmd, "succeeded", 1, Some(65)),
            phase(cmd, "succeeded", 1, Some(130)),
            phase("deploy", "succeeded", 1, Some(35)),
        ),
    );
    let mut denied = phase("deploy", "failed", 0, None);
    denied["policy"] = json!({ "allowed": false, "deny": ["deploy: not from main"] });
    write_run(
        ws,
        "20260107T080000Z-0007",
        "shop",
        "failed",
        "2026-01-07T08:00:00.000Z",
        Some("2026-01-07T08:03:00.000Z"),
        p(
            phase(cmd, "succeeded", 1, Some(60)),
            phase(cmd, "succeeded", 1, Some(125)),
            denied,
        ),
    );
    let broken = ws.path().join(".orch/runs/20260107T090000Z-0008");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("run.json"), "{ \"run_id\": ").unwrap();
    // A pipeline whose name needs escaping in Prometheus labels.
    write_run(
        ws,
        "20260106T230000Z-0009",
        "nightly \"eu\\west\"",
        "succeeded",
        "2026-01-06T23:00:00.000Z",
        Some("2026-01-06T23:00:02.500Z"),
        json!({ "smoke": phase(cmd, "succeeded", 1, Some(2)) }),
    );
}

#[test]
fn stats_of_a_scripted_history() {
    let ws = Ws::new(PIPELINE);
    scripted(&ws);

    let text = ws.orch(&["stats"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert_eq!(
        text.stderr,
        "warning: skipped run 20260107T090000Z-0008: runs/20260107T090000Z-0008/run.json: \
         EOF while parsing a value at line 1 column 12\n"
    );
    insta::assert_snapshot!("stats_text", text.stdout);

    let js = ws.orch(&["stats", "--format", "json"]);
    assert_eq!(js.code, 0, "{}", js.stderr);
    let doc: Value = serde_json::from_str(&js.stdout).unwrap();
    let shop = &doc["pipelines"][1];
    assert_eq!(shop["pipeline"], "shop");
    // 62m and 1h55m.
    assert_eq!(shop["time_to_recovery"]["count"], 2);
    assert_eq!(shop["time_to_recovery"]["mean_ms"], (62 + 115) * 60_000 / 2);
    // 5m, 66m, 3h05m.
    assert_eq!(shop["lead_time"]["count"], 3);
    assert_eq!(shop["lead_time"]["p50_ms"], 66 * 60_000);
    assert_eq!(shop["failing_since"], "2026-01-07T08:03:00.000Z");
    insta::assert_snapshot!("stats_json", js.stdout);

    let prom = ws.orch(&["stats", "--format", "prometheus"]);
    assert_eq!(prom.code, 0, "{}", prom.stderr);
    insta::assert_snapshot!("stats_prometheus", prom.stdout);
    promtool_accepts(&prom.stdout);
}

#[test]
fn stats_since_keeps_later_runs() {
    let ws = Ws::new(PIPELINE);
    scripted(&ws);
    let out = ws.orch(&[
        "stats",
        "--since",
        "2026-01-06T00:00:00Z",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["since"], "2026-01-06T00:00:00.000Z");
    let shop = &doc["pipelines"][1];
    assert_eq!(shop["runs"], 4);
    assert_eq!(shop["cancelled"], 1);
    assert_eq!(shop["succeeded"], 1);
    // Only the recovery of 01-06 is in the window.
    assert_eq!(shop["time_to_recovery"]["count"], 1);
    assert_eq!(shop["time_to_recovery"]["mean_ms"], 115 * 60_000);
}

#[test]
fn stats_of_no_history() {
    let ws = Ws::new(PIPELINE);
    let text = ws.orch(&["stats"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert_eq!(text.stdout, "all runs: 0 read\nno runs to measure\n");
    assert_eq!(text.stderr, "");
    let js = ws.orch(&["stats", "--format", "json"]);
    let doc: Value = serde_json::from_str(&js.stdout).unwrap();
    assert_eq!(doc["pipelines"], json!([]));
    assert_eq!(doc["runs_read"], 0);
    let prom = ws.orch(&["stats", "--format", "prometheus"]);
    assert_eq!(prom.code, 0, "{}", prom.stderr);
    assert!(prom.stdout.contains("orch_stats_skipped_runs 0\n"));
    promtool_accepts(&prom.stdout);
}

#[test]
fn bad_since_values_are_errors() {
    let ws = Ws::new(PIPELINE);
    for bad in ["lots", "30", "yesterday", ""] {
        let out = ws.orch(&["stats", "--since", bad]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert_eq!(
            out.stderr,
            format!(
                "error: --since: `{bad}` is neither a duration ago (`30d`, `12h`, `90m`) nor an \
                 RFC 3339 time (`2026-01-02T03:04:05Z`)\n"
            ),
        );
        assert_eq!(out.stdout, "");
    }
}

/// `promtool check metrics` (Prometheus's own linter) finds nothing to say. The tool comes
/// from `scripts/install/promtool.sh`; without it the check is skipped unless
/// `ORCH_REQUIRE_SERVICES=1`.
fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("ORCH_REQUIRE_SERVICES").is_ok_and(|v| v == "1") => {
            panic!(
                "promtool is required (ORCH_REQUIRE_SERVICES=1): {e}; run scripts/install/promtool.sh"
            )
        }
        Err(e) => {
            eprintln!("promtool not found ({e}): the exposition was not linted");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
