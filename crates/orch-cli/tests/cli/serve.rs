//! `orch serve` as users start it: the real binary, its reports after a run, secrets kept
//! out of everything it serves, the loopback rule, and a clean stop on SIGTERM.

use crate::support::Ws;

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
    let server = ws.serve(&[("DEPLOY_TOKEN", secret)]);
    let (status, body) = server.http("POST", "/api/runs", Some("{}"));
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["run_id"].as_str().unwrap().to_owned();
    // The event stream of the run, to its end (chunked: the raw text is enough here).
    let (status, events) = server.http("GET", &format!("/api/runs/{id}/events"), None);
    assert_eq!(status, 200);
    assert!(events.contains("event: end"), "{events}");
    assert!(events.contains("token is ***"), "{events}");
    let (_, record) = server.http("GET", &format!("/api/runs/{id}"), None);
    let (_, log) = server.http("GET", &format!("/api/runs/{id}/logs/deploy"), None);
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
    let stopped = server.stop();
    assert_eq!(stopped.code, 0, "{}", stopped.stderr);
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
