//! Validation: every problem at once, each with its line and a caret.

use crate::support::Ws;

fn validate(pipeline: &str, args: &[&str]) -> (i32, String) {
    let ws = Ws::new(pipeline);
    let mut full = vec!["validate"];
    full.extend_from_slice(args);
    let r = ws.orch(&full);
    (r.code, r.stderr)
}

#[test]
fn every_mistake_is_reported_with_its_line() {
    let (code, out) = validate(
        r#"[pipeline]
name = "bad"

[vars]
version = "1"

[phases.build]
run = "make"
timeout = "10 minutes please"

[phases.test]
run = "make test"
neds = ["build"]

[phases.lint]
run = "lint ${{ vars.verison }}"
needs = ["biuld"]

[phases.a]
run = "true"
needs = ["b"]

[phases.b]
run = "true"
needs = ["c"]

[phases.c]
run = "true"
needs = ["a"]

[phases.pkg]
kind = "pakage"

[phases.deploy]
run = "true"
agent = "buidler"

["bad id"]
x = 1
"#,
        &[],
    );
    assert_eq!(code, 2);
    insta::assert_snapshot!(out);
}

#[test]
fn deploy_kinds_settings_mistakes_are_located() {
    // Each deployment kind parses its own `with` table: unknown keys and wrong types point
    // at the key, checks past parsing at the table, and the phase is named once.
    let (code, out) = validate(
        r#"[pipeline]
name = "deploys"

[phases.steps]
kind = "deploy"
with = { service = "web", image = "web:1", strategy = "canary", listen = "127.0.0.1:8080", port = 8080, steps = [50, 20, 100] }

[phases.port]
kind = "deploy"
with = { service = "web", image = "web:1", strategy = "blue-green", listen = "127.0.0.1:8080", port = "8080" }

[phases.health]
kind = "deploy"
[phases.health.with]
service = "web"
image = "web:1"
strategy = "blue-green"
listen = "127.0.0.1:8080"
port = 8080
health = { path = "/health", intervall = "1s" }

[phases.back]
kind = "deploy.rollback"
with = { service = "web", fail_on_drift = true }

[phases.audit]
kind = "deploy.audit"
with = { service = "Web" }

[phases.smoke]
kind = "http.check"
with = { urls = "http://127.0.0.1:8080/", retries = "3" }
"#,
        &[],
    );
    assert_eq!(code, 2);
    insta::assert_snapshot!(out);
}

#[test]
fn unknown_vars_on_the_command_line_are_errors() {
    let (code, out) = validate(
        "[pipeline]\nname = \"v\"\n[vars]\nversion = \"1\"\n[phases.a]\nrun = \"true\"\n",
        &["--var", "verison=2"],
    );
    assert_eq!(code, 2);
    insta::assert_snapshot!(out);
}

#[test]
fn structural_errors() {
    let cases: &[(&str, &str)] = &[
        ("no pipeline table", "[phases.a]\nrun = \"true\"\n"),
        (
            "no name",
            "[pipeline]\njobs = 2\n[phases.a]\nrun = \"true\"\n",
        ),
        (
            "jobs zero",
            "[pipeline]\nname = \"x\"\njobs = 0\n[phases.a]\nrun = \"true\"\n",
        ),
        ("bad toml", "[pipeline]\nname = \"x\n"),
        (
            "neither kind nor run",
            "[pipeline]\nname = \"x\"\n[phases.a]\nneeds = []\n",
        ),
        (
            "run is a number",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = 3\n",
        ),
        (
            "bad phase id",
            "[pipeline]\nname = \"x\"\n[phases.\"a b\"]\nrun = \"true\"\n",
        ),
        (
            "self need",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"true\"\nneeds = [\"a\"]\n",
        ),
        (
            "output of a phase not needed",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"true\"\n[phases.b]\nrun = \"echo ${{ phases.a.outputs.k }}\"\n",
        ),
        (
            "malformed template",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"echo ${{ vars.x\"\n",
        ),
        (
            "bad backoff",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"true\"\nbackoff = { initial = \"1s\", factor = 0.5, maxx = \"2s\" }\n",
        ),
        (
            "bad when",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"true\"\nwhen = \"vars.x ==\"\n",
        ),
        (
            "gate without assert",
            "[pipeline]\nname = \"x\"\n[phases.g]\nkind = \"gate\"\n",
        ),
        (
            "with on a command",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"true\"\nwith = { x = 1 }\n",
        ),
        (
            "unknown agent type",
            "[pipeline]\nname = \"x\"\n[agents.b]\ntype = \"dokcer\"\n[phases.a]\nrun = \"true\"\n",
        ),
        (
            "bad secret name",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"true\"\nsecrets = [\"NOT-A-NAME\"]\n",
        ),
    ];
    let mut all = String::new();
    for (name, text) in cases {
        let (code, out) = validate(text, &[]);
        assert_eq!(code, 2, "{name}: {out}");
        all.push_str(&format!("=== {name}\n{out}\n"));
    }
    insta::assert_snapshot!(all);
}

#[test]
fn validate_json_gives_positions() {
    let ws = Ws::new("[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"true\"\nneeds = [\"nope\"]\n");
    let r = ws.orch(&["validate", "--format", "json"]);
    assert_eq!(r.code, 2);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 5);
    assert_eq!(v["errors"][0]["column"], 10);
    assert_eq!(
        v["errors"][0]["message"],
        "phase `a` needs `nope`, which is not a phase"
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let ws = Ws::new("");
    let r = ws.orch(&["validate", "nowhere.toml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("cannot read pipeline file nowhere.toml"),
        "{}",
        r.stderr
    );
}

/// `env` keys must be names a shell can export, and `ORCH_*` is orch's own: a phase that
/// could set `ORCH_RUN_ID` would escape the run's process sweeps.
#[test]
fn env_keys_orch_owns_or_that_are_not_names_are_refused() {
    let (code, out) = validate(
        r#"[pipeline]
name = "env"

[defaults]
env = { ORCH_PHASE_ID = "x", GOOD = "1" }

[phases.a]
run = "true"
env = { ORCH_RUN_ID = "other", "A=B" = "1", "1X" = "2", "" = "3", "a-b" = "4", _ok = "5", Ok9 = "6" }
"#,
        &[],
    );
    assert_eq!(code, 2, "{out}");
    insta::assert_snapshot!(out);
}
