//! `[policy]` (Rego) decides which phases start; every run appends to a tamper-evident
//! audit log that `orch audit verify` checks.

use std::path::Path;
use std::process::Command;

use crate::support::{Ws, redactions, statuses};

const PIPELINE: &str = r#"
[pipeline]
name = "gov"

[vars]
skip_tests = ""

[policy]
files = ["policy/*.rego"]

[phases.build]
run = "echo built > built.txt"

[phases.tag]
run = "echo tagged > tagged.txt"
needs = ["build"]
tags = ["release"]

[phases.deploy]
run = "echo deployed > deployed.txt"
needs = ["tag"]
tags = ["release"]
"#;

/// Release phases only from `main` or `release/*`, never with `skip_tests` set.
const POLICY: &str = r#"package orch

default allow := false

release_branch if input.git.branch == "main"
release_branch if startswith(input.git.branch, "release/")

allow if not "release" in input.phase.tags
allow if {
    "release" in input.phase.tags
    release_branch
}

deny contains msg if {
    "release" in input.phase.tags
    input.run.vars.skip_tests != ""
    msg := sprintf("%s: releases never skip tests", [input.phase.id])
}
"#;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

/// A workspace with the pipeline and policy, committed on `branch`.
fn governed(branch: &str, policy: &str) -> Ws {
    let ws = Ws::new(PIPELINE);
    std::fs::create_dir_all(ws.path().join("policy")).unwrap();
    std::fs::write(ws.path().join("policy/release.rego"), policy).unwrap();
    std::fs::write(ws.path().join(".gitignore"), ".orch/\n*.txt\n").unwrap();
    git(ws.path(), &["init", "-q", "-b", branch]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-qm", "init"]);
    ws
}

#[test]
fn allowed_phases_run_on_main() {
    let ws = governed("main", POLICY);
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec = ws.record();
    assert_eq!(
        statuses(&rec),
        ["build=succeeded", "tag=succeeded", "deploy=succeeded"]
    );
    assert_eq!(rec["phases"]["deploy"]["policy"]["allowed"], true);
    assert!(ws.exists("deployed.txt"));
}

#[test]
fn denied_phases_fail_with_the_messages_and_nothing_of_them_runs() {
    let ws = governed("main", POLICY);
    let r = ws.orch(&["run", "--progress", "plain", "--var", "skip_tests=1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rec = ws.record();
    assert_eq!(
        statuses(&rec),
        ["build=succeeded", "tag=failed", "deploy=blocked"]
    );
    let tag = &rec["phases"]["tag"];
    assert_eq!(
        tag["reason"],
        "denied by policy: tag: releases never skip tests"
    );
    assert_eq!(tag["attempts"], 0);
    assert_eq!(tag["policy"]["allowed"], false);
    assert_eq!(tag["policy"]["deny"][0], "tag: releases never skip tests");
    assert!(!ws.exists("tagged.txt"), "a denied phase ran");
    assert!(!ws.exists("deployed.txt"));
    // The terminal and the reports say so.
    assert!(
        r.stderr
            .contains("denied by policy: tag: releases never skip tests"),
        "{}",
        r.stderr
    );
    let md = ws.orch(&["report", "--format", "md"]);
    assert!(md.stdout.contains("denied by policy"), "{}", md.stdout);
}

#[test]
fn an_undefined_allow_denies() {
    // On a feature branch `allow` is undefined for release phases.
    let ws = governed("feature/x", POLICY);
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 1);
    let rec = ws.record();
    assert_eq!(
        statuses(&rec),
        ["build=succeeded", "tag=failed", "deploy=blocked"]
    );
    assert_eq!(
        rec["phases"]["tag"]["reason"],
        "denied by policy: `data.orch.allow` is not true"
    );
    // `release/*` is allowed.
    git(ws.path(), &["checkout", "-q", "-b", "release/1.2"]);
    assert_eq!(ws.orch(&["run", "--progress", "plain"]).code, 0);
}

#[test]
fn a_policy_that_errors_or_loops_fails_the_phase_naming_it() {
    let ws = governed(
        "main",
        "package orch\nallow if input.phase.id != \"tag\"\nallow if {\n  input.phase.id == \"tag\"\n  1 / 0 == 1\n}\n",
    );
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let reason = ws.record()["phases"]["tag"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.starts_with("denied by policy: evaluation for phase `tag` failed"),
        "{reason}"
    );

    let looping = "package orch\nr := numbers.range(1, 5000)\nallow if {\n  some i in r\n  some j in r\n  some k in r\n  i + j + k < 0\n}\n";
    let ws = governed("main", looping);
    let toml = ws.read("orch.toml").replace(
        "files = [\"policy/*.rego\"]",
        "files = [\"policy/*.rego\"]\ntimeout = \"200ms\"",
    );
    std::fs::write(ws.path().join("orch.toml"), toml).unwrap();
    let t0 = std::time::Instant::now();
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(
        ws.record()["phases"]["build"]["reason"],
        "denied by policy: evaluation for phase `build` failed: policy evaluation took longer than 200ms"
    );
}

#[test]
fn a_policy_syntax_error_is_a_load_error_with_its_position() {
    let ws = governed("main", "package orch\n\nallow if {\n  input.x ==\n}\n");
    let r = ws.orch(&["validate"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("policy/release.rego:5:1:"),
        "{}",
        r.stderr
    );
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 2);
    assert!(!ws.exists(".orch/runs"), "something ran");

    // A pattern matching nothing points at itself in the pipeline file.
    let ws = Ws::new(&PIPELINE.replace("policy/*.rego", "nope/*.rego"));
    let r = ws.orch(&["validate"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("`nope/*.rego` matches no file"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("orch.toml:9:"), "{}", r.stderr);
}

#[test]
fn plan_marks_what_the_policy_would_deny() {
    let ws = governed("main", POLICY);
    let r = ws.orch(&["plan", "--var", "skip_tests=yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    redactions(&ws).bind(|| insta::assert_snapshot!("plan_with_policy_denials", r.stdout));
}

#[test]
fn policy_eval_prints_the_input_and_the_decision() {
    let ws = governed("main", POLICY);
    let r = ws.orch(&[
        "policy",
        "eval",
        "--phase",
        "deploy",
        "--var",
        "skip_tests=1",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["input"]["phase"]["id"], "deploy");
    assert_eq!(doc["input"]["phase"]["tags"][0], "release");
    assert_eq!(doc["input"]["phase"]["needs"][0], "tag");
    assert_eq!(doc["input"]["run"]["vars"]["skip_tests"], "1");
    assert_eq!(doc["input"]["git"]["branch"], "main");
    assert_eq!(doc["input"]["git"]["dirty"], false);
    assert_eq!(doc["input"]["git"]["commit"].as_str().unwrap().len(), 40);
    assert_eq!(doc["decision"]["allowed"], false);
    assert_eq!(
        doc["decision"]["deny"][0],
        "deploy: releases never skip tests"
    );
    let r = ws.orch(&["policy", "eval", "--phase", "build"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------
// Audit log

fn audit_lines(ws: &Ws) -> Vec<String> {
    ws.read(".orch/audit.log")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(ws: &Ws, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(ws.path().join(".orch/audit.log"), text).unwrap();
}

/// Two audited runs: one allowed, one denied.
fn audited() -> Ws {
    let ws = governed("main", POLICY);
    assert_eq!(ws.orch(&["run", "-q"]).code, 0);
    assert_eq!(ws.orch(&["run", "-q", "--var", "skip_tests=1"]).code, 1);
    ws
}

#[test]
fn runs_leave_a_chain_that_verifies() {
    let ws = audited();
    let r = ws.orch(&["audit", "verify"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("intact, 19 entries"), "{}", r.stdout);
    assert!(r.stdout.contains("only edits"), "{}", r.stdout);
    let events: Vec<String> = audit_lines(&ws)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let mut e = v["event"].as_str().unwrap().to_owned();
            if let Some(p) = v["phase"].as_str() {
                e = format!("{e} {p}");
            }
            e
        })
        .collect();
    assert_eq!(
        events[..11],
        [
            "run_started",
            "policy build",
            "phase_started build",
            "phase_finished build",
            "policy tag",
            "phase_started tag",
            "phase_finished tag",
            "policy deploy",
            "phase_started deploy",
            "phase_finished deploy",
            "run_finished",
        ]
    );
    let first: serde_json::Value = serde_json::from_str(&audit_lines(&ws)[0]).unwrap();
    assert_eq!(first["prev"], orch_core::audit::GENESIS);
    assert_eq!(first["file"], "orch.toml");
    // The digest of the file as it was read (the pipeline keeps the digest, not the text).
    let text = std::fs::read(ws.path().join("orch.toml")).unwrap();
    assert_eq!(first["file_sha256"], orch_core::audit::sha256_hex(&text));
    assert!(!first["user"].as_str().unwrap().is_empty());
    // The record keeps the head of the chain.
    let rec = ws.record();
    let last: serde_json::Value = serde_json::from_str(audit_lines(&ws).last().unwrap()).unwrap();
    assert_eq!(rec["audit"]["hash"], last["hash"]);
    assert_eq!(rec["audit"]["seq"], 19);
    // `show` filters.
    let run_id = rec["run_id"].as_str().unwrap();
    let r = ws.orch(&["audit", "show", "--run", run_id, "--phase", "tag"]);
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    assert!(r.stdout.contains("allowed=false"), "{}", r.stdout);
    let r = ws.orch(&["audit", "show", "--since", "1h"]);
    assert_eq!(r.stdout.lines().count(), 19);
    let r = ws.orch(&["audit", "show", "--until", "1h"]);
    assert_eq!(r.stdout.lines().count(), 0);
}

#[test]
fn secrets_never_reach_the_audit_log() {
    let ws = Ws::new(
        "[pipeline]\nname = \"s\"\n[vars]\ntoken = \"\"\n[phases.a]\nrun = \"echo out=$TOKEN_X >> $ORCH_OUTPUT\"\nsecrets = [\"TOKEN_X\"]\n",
    );
    let r = ws.orch_env(
        &["run", "-q", "--var", "token=hunter2-secret"],
        &[("TOKEN_X", "hunter2-secret")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = ws.read(".orch/audit.log");
    assert!(!log.contains("hunter2"), "{log}");
    assert!(log.contains("outputs_sha256"), "{log}");
}

fn verify(ws: &Ws, env: &[(&str, &str)]) -> (i32, String) {
    let r = ws.orch_env(&["audit", "verify"], env);
    (r.code, r.stdout + &r.stderr)
}

#[test]
fn every_kind_of_tampering_is_detected_at_the_first_bad_line() {
    let ws = audited();
    let orig = audit_lines(&ws);
    let check = |lines: Vec<String>, want: &str| {
        write_lines(&ws, &lines);
        let (code, out) = verify(&ws, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(want), "want {want:?} in {out}");
    };
    // An edit.
    let mut l = orig.clone();
    l[3] = l[3].replace("\"succeeded\"", "\"failed\"");
    check(l, "line 4: entry 4 was changed");
    // A removed entry.
    let mut l = orig.clone();
    l.remove(2);
    check(l, "line 3: entries 3 to 3 are missing");
    // An inserted entry (a copy of an earlier one).
    let mut l = orig.clone();
    l.insert(5, orig[1].clone());
    check(l, "line 6: entry 2 comes after entry 5");
    // Two entries swapped.
    let mut l = orig.clone();
    l.swap(6, 7);
    check(l, "line 7:");
    // Entries cut out of the middle.
    let mut l = orig.clone();
    l.drain(4..15);
    check(l, "line 5: entries 5 to 15 are missing");
    // A line cut short in the middle of the file.
    let mut l = orig.clone();
    let half = l[8].len() / 2;
    l[8].truncate(half);
    check(l, "line 9: not a JSON entry");
    // The untouched log verifies.
    write_lines(&ws, &orig);
    assert_eq!(verify(&ws, &[]).0, 0);
}

/// Re-chains `lines` with `f` applied to each entry, as someone who can write the file
/// but (without `key`) does not know the key would.
fn rewrite(
    lines: &[String],
    key: Option<&[u8]>,
    f: impl Fn(&mut serde_json::Value),
) -> Vec<String> {
    let mut prev = orch_core::audit::GENESIS.to_owned();
    lines
        .iter()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let m = v.as_object_mut().unwrap();
            m.remove("hash");
            m.remove("hmac");
            m.insert("prev".into(), prev.clone().into());
            f(&mut v);
            let body = serde_json::to_string(&v).unwrap();
            let hash = orch_core::audit::sha256_hex(body.as_bytes());
            let m = v.as_object_mut().unwrap();
            m.insert("hash".into(), hash.clone().into());
            if let Some(key) = key {
                let mac = orch_core::audit::hmac_sha256(key, hash.as_bytes());
                let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
                m.insert("hmac".into(), hex.into());
            }
            prev = hash;
            serde_json::to_string(&v).unwrap()
        })
        .collect()
}

#[test]
fn a_full_rewrite_is_detected_only_with_the_key() {
    let key = "audit-key-0123456789";
    let ws = governed("main", POLICY);
    assert_eq!(
        ws.orch_env(&["run", "-q"], &[("ORCH_AUDIT_KEY", key)]).code,
        0
    );
    assert_eq!(
        ws.orch_env(
            &["run", "-q", "--var", "skip_tests=1"],
            &[("ORCH_AUDIT_KEY", key)]
        )
        .code,
        1
    );
    let orig = audit_lines(&ws);
    assert!(orig.iter().all(|l| l.contains("\"hmac\":")));
    let (code, out) = verify(&ws, &[("ORCH_AUDIT_KEY", key)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("HMACs checked"), "{out}");
    // The key never reaches a phase.
    assert!(!ws.read(".orch/audit.log").contains(key));

    // Hide the denial: rewrite every entry, recomputing the chain.
    let hide = |v: &mut serde_json::Value| {
        if v["allowed"] == false {
            v["allowed"] = true.into();
            v.as_object_mut().unwrap().remove("deny");
        }
    };
    // Without the key, the rewrite drops the HMACs (or cannot make them right).
    write_lines(&ws, &rewrite(&orig, None, hide));
    let (code, out) = verify(&ws, &[]);
    assert_eq!(
        code, 0,
        "without a key a full rewrite cannot be detected: {out}"
    );
    assert!(out.contains("not a rewrite of the whole log"), "{out}");
    let (code, out) = verify(&ws, &[("ORCH_AUDIT_KEY", key)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no entry carries an HMAC"), "{out}");
    write_lines(&ws, &rewrite(&orig, Some(b"a-guessed-key"), hide));
    let (code, out) = verify(&ws, &[("ORCH_AUDIT_KEY", key)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("line 1: entry 1: its HMAC does not match"),
        "{out}"
    );
    // Unreadable: exit 2.
    let r = ws.orch(&["audit", "verify", "no-such.log"]);
    assert_eq!(r.code, 2);
}

#[test]
fn a_crash_mid_run_leaves_a_log_that_verifies_with_a_torn_tail() {
    let ws = Ws::new(
        "[pipeline]\nname = \"crash\"\n[phases.a]\nrun = \"true\"\n[phases.b]\nrun = \"touch started && exec sleep 60\"\nneeds = [\"a\"]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["run", "-q"])
        .current_dir(ws.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Handshake: phase `b` is running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ws.exists("started") {
        assert!(
            std::time::Instant::now() < deadline,
            "phase b never started"
        );
        std::thread::yield_now();
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("runs with no end entry"), "{out}");

    // A crash in the middle of a write leaves part of a line: torn, not tampered.
    let log = ws.path().join(".orch/audit.log");
    let full = std::fs::read(&log).unwrap();
    let partial = br#"{"seq":99,"time":"2026-01-01T00:00:00.000Z","prev":"ab"#;
    let mut torn = full.clone();
    torn.extend_from_slice(partial);
    std::fs::write(&log, &torn).unwrap();
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("torn tail: {} bytes", partial.len())),
        "{out}"
    );
    // The next run cuts the torn bytes off, records it, and the chain goes on.
    std::fs::write(
        ws.path().join("orch.toml"),
        "[pipeline]\nname = \"crash\"\n[phases.a]\nrun = \"true\"\n",
    )
    .unwrap();
    let r = ws.orch(&["run", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (code, out) = verify(&ws, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 torn tail cut off by later runs"), "{out}");
    let text = ws.read(".orch/audit.log");
    assert!(text.starts_with(std::str::from_utf8(&full).unwrap()));
    assert!(text.contains("\"event\":\"torn_tail\""), "{text}");
}
