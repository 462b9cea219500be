//! Rendered output: plans and graphs.

use crate::support::{Ws, redactions};

const PIPELINE: &str = r#"
[pipeline]
name = "render"
jobs = 3

[vars]
version = "1.2.0"

[defaults]
timeout = "10m"

[phases.discover]
run = ["find", ".", "-name", "*.toml"]
description = "look around"

[phases.unit]
run = "cargo test --workspace"
needs = ["discover"]
retries = 2
env = { RUST_LOG = "info" }
cwd = "services/api"
tags = ["test"]
secrets = ["REGISTRY_TOKEN"]

[phases.lint]
run = "cargo clippy"
needs = ["discover"]
allow_failure = true

[phases.gate]
kind = "gate"
assert = ["phases.unit.outputs.failed == 0"]
needs = ["unit", "lint"]

[phases.release]
run = "echo releasing ${{ vars.version }} ${{ phases.unit.outputs.report }}"
needs = ["gate"]
when = "vars.version != ''"
"#;

#[test]
fn plan_shows_waves_and_what_each_phase_would_do() {
    let ws = Ws::new(PIPELINE);
    let r = ws.orch(&["plan"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    redactions(&ws).bind(|| insta::assert_snapshot!(r.stdout));
}

#[test]
fn plan_with_selection_lists_what_is_left_out() {
    let ws = Ws::new(PIPELINE);
    let r = ws.orch(&["plan", "--only", "tag:test", "--var", "version=2.0"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    redactions(&ws).bind(|| insta::assert_snapshot!(r.stdout));
}

#[test]
fn graph_as_dot_and_mermaid() {
    let ws = Ws::new(PIPELINE);
    let dot = ws.orch(&["graph", "--format", "dot"]);
    assert_eq!(dot.code, 0);
    insta::assert_snapshot!("graph_dot", dot.stdout);
    let mermaid = ws.orch(&["graph", "--format", "mermaid"]);
    assert_eq!(mermaid.code, 0);
    insta::assert_snapshot!("graph_mermaid", mermaid.stdout);
}

#[test]
fn run_summary_in_plain_mode() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "summary"
jobs = 1
[phases.ok]
run = "true"
[phases.skipped]
run = "true"
when = "false"
[phases.bad]
run = "exit 4"
needs = ["ok"]
[phases.after]
run = "true"
needs = ["bad"]
"#,
    );
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 1);
    redactions(&ws).bind(|| insta::assert_snapshot!(r.stderr));
}
