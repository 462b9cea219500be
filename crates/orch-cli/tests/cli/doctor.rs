//! `orch doctor` on this machine, and with commands missing from `PATH`.

use std::path::Path;

use crate::support::Ws;

const PIPELINE: &str = r#"
[pipeline]
name = "doc"

[policy]
files = ["policy/*.rego"]

[phases.build]
run = "echo built"

[phases.version]
run = ["git", "--version"]
needs = ["build"]
"#;

const POLICY: &str = "package orch\n\ndefault allow := true\n";

fn workspace(pipeline: &str) -> Ws {
    let ws = Ws::new(pipeline);
    std::fs::create_dir_all(ws.path().join("policy")).unwrap();
    std::fs::write(ws.path().join("policy/allow.rego"), POLICY).unwrap();
    ws
}

/// A `bin` directory in `ws` holding only links to these programs: a `PATH` without the rest.
fn path_with_only(ws: &Ws, programs: &[&str]) -> String {
    let bin = ws.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in programs {
        let target = ["/bin", "/usr/bin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(p))
            .find(|c| c.exists())
            .unwrap_or_else(|| panic!("{p} is not installed"));
        std::os::unix::fs::symlink(target, bin.join(p)).unwrap();
    }
    bin.display().to_string()
}

/// Hides what differs between machines: versions, sizes, CPU counts, tool paths, the GPU,
/// and whether memory and disk are plentiful (their lines then read `[machine]`).
fn machine_redactions(ws: &Ws) -> insta::Settings {
    let mut s = crate::support::redactions(ws);
    s.add_filter(
        r"(?m)^(ok|warn) +(memory|disk) .*\n( +to fix: .*\n)?",
        "[machine] $2\n",
    );
    s.add_filter(r"\d+ ok, \d+ warn", "[N] ok, [N] warn");
    s.add_filter(r"(?m)^(ok +orch +).*$", "${1}[VERSION]");
    s.add_filter(r"(?m)^(ok +gpu +).*$", "${1}[GPU]");
    s.add_filter(r"\d+ CPUs?", "[N] CPUs");
    s.add_filter(r"git version [^ ]+", "git version [VERSION]");
    s.add_filter(r"\((/[^)]*)\)", "([PATH])");
    s.add_filter(r"(?m)^(ok +command [^ ]+ +)/\S+", "${1}[PATH]");
    s
}

#[test]
fn doctor_on_this_machine() {
    let ws = workspace(PIPELINE);
    let out = ws.orch(&["doctor"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("0 missing"), "{}", out.stdout);
    machine_redactions(&ws).bind(|| insta::assert_snapshot!("doctor_here", out.stdout));

    let js = ws.orch(&["doctor", "--format", "json"]);
    assert_eq!(js.code, 0, "{}", js.stderr);
    let doc: serde_json::Value = serde_json::from_str(&js.stdout).unwrap();
    let items: Vec<&str> = doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["item"].as_str().unwrap())
        .collect();
    assert_eq!(
        items,
        [
            "orch",
            "pipeline",
            "cpu",
            "memory",
            "state dir",
            "disk",
            "git",
            "command git",
            "command sh",
            "gpu"
        ]
    );
    assert_eq!(doc["lines"][6]["status"], "ok");
}

#[test]
fn doctor_with_git_and_chromium_missing_from_path() {
    let pipeline = format!(
        "{PIPELINE}\n[phases.report]\nkind = \"report\"\nwith = {{ formats = [\"html\", \"pdf\"] }}\n"
    );
    let ws = workspace(&pipeline);
    let path = path_with_only(&ws, &["sh"]);
    let out = ws.orch_env(&["doctor"], &[("PATH", &path)]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    machine_redactions(&ws).bind(|| insta::assert_snapshot!("doctor_missing", out.stdout));
}

#[test]
fn without_a_policy_git_is_only_recommended() {
    let ws = Ws::new("[pipeline]\nname = \"p\"\n\n[phases.a]\nrun = \"true\"\n");
    let path = path_with_only(&ws, &["sh"]);
    let out = ws.orch_env(&["doctor"], &[("PATH", &path)]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("warn") && l.contains("git") && l.contains("not on PATH")),
        "{}",
        out.stdout
    );
}

#[test]
fn engines_swarm_managers_and_haproxy_are_checked_for_what_the_file_declares() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "eng"

[agents.builder]
type = "docker"
with = { host = "unix:///nonexistent/docker.sock" }

[agents.cluster]
type = "swarm"
with = { host = "unix:///nonexistent/swarm.sock" }

[phases.image]
kind = "docker.build"
agent = "builder"
with = { context = ".", tags = ["x:1"] }

[phases.ship]
kind = "deploy"
needs = ["image"]
"#,
    );
    let path = path_with_only(&ws, &["sh", "git"]);
    let out = ws.orch_env(&["doctor"], &[("PATH", &path)]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let line = |item: &str| {
        out.stdout
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .starts_with(item)
            })
            .unwrap_or_else(|| panic!("no {item} line in\n{}", out.stdout))
    };
    assert_eq!(
        line("docker (agent builder)"),
        "missing  docker (agent builder)  no socket at /nonexistent/docker.sock (is the engine \
         running?) [agent builder]"
    );
    assert!(line("swarm (agent cluster)").starts_with("missing"));
    assert!(
        out.stdout
            .contains("then make it a Swarm manager (`docker swarm init`)")
    );
    assert!(line("haproxy").starts_with("missing  haproxy"));
    assert!(out.stdout.contains("apt-get install haproxy"));
    // Only the declared engines: `image` runs on `builder`, not on the default engine.
    assert!(
        !out.stdout
            .lines()
            .any(|l| l.contains(" docker ") && l.contains("phase image"))
    );
}

#[test]
fn doctor_without_a_pipeline_checks_the_machine() {
    let ws = Ws::new("");
    std::fs::remove_file(ws.path().join("orch.toml")).unwrap();
    let out = ws.orch(&["doctor"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("warn     pipeline   no pipeline file: the machine only"),
        "{}",
        out.stdout
    );
    let missing = ws.orch(&["doctor", "nope.toml"]);
    assert_eq!(missing.code, 2, "{}", missing.stdout);
    assert!(
        missing.stderr.starts_with("error: cannot read nope.toml"),
        "{}",
        missing.stderr
    );
}
