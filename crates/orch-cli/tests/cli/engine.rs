//! Running pipelines: statuses, ordering, policies, selection, interpolation, secrets.

use crate::support::{Ws, assert_no_leftovers, statuses};

#[test]
fn a_successful_run_records_outputs_and_latest() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "ok"
[vars]
version = "1.2.0"
[phases.build]
run = "echo building; echo artifact=app-${{ vars.version }}.tar >> \"$ORCH_OUTPUT\""
[phases.deploy]
run = ["sh", "-c", "echo \"$1\" > deployed.txt", "sh", "${{ phases.build.outputs.artifact }}"]
needs = ["build"]
"#,
    );
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec = ws.record();
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(rec["format_version"], 2);
    assert_eq!(statuses(&rec), ["build=succeeded", "deploy=succeeded"]);
    assert_eq!(
        rec["phases"]["build"]["outputs"]["artifact"],
        "app-1.2.0.tar"
    );
    assert_eq!(rec["phases"]["build"]["exit_code"], 0);
    assert_eq!(rec["phases"]["build"]["attempts"], 1);
    assert_eq!(ws.read("deployed.txt"), "app-1.2.0.tar\n");
    let run_dir = ws.latest_dir();
    assert_eq!(
        std::fs::read_to_string(run_dir.join("logs/build.log")).unwrap(),
        "building\n"
    );
    assert!(r.stderr.contains("succeeded"), "{}", r.stderr);
}

#[test]
fn a_failure_blocks_dependents_and_stops_new_phases() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "fail"
jobs = 1
[phases.bad]
run = "echo about to fail; exit 3"
[phases.child]
run = "true"
needs = ["bad"]
[phases.grandchild]
run = "true"
needs = ["child"]
[phases.independent]
run = "touch independent-ran"
"#,
    );
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rec = ws.record();
    assert_eq!(rec["status"], "failed");
    assert_eq!(
        statuses(&rec),
        [
            "bad=failed",
            "child=blocked",
            "grandchild=blocked",
            "independent=cancelled"
        ]
    );
    assert_eq!(rec["phases"]["bad"]["exit_code"], 3);
    assert_eq!(rec["phases"]["bad"]["reason"], "exited with code 3");
    assert!(
        rec["phases"]["child"]["reason"]
            .as_str()
            .unwrap()
            .contains("`bad`")
    );
    assert!(!ws.exists("independent-ran"));
}

#[test]
fn keep_going_runs_what_does_not_depend_on_the_failure() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "kg"
jobs = 1
[phases.bad]
run = "exit 1"
[phases.child]
run = "true"
needs = ["bad"]
[phases.independent]
run = "touch independent-ran"
"#,
    );
    let r = ws.orch(&["run", "--keep-going"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        statuses(&ws.record()),
        ["bad=failed", "child=blocked", "independent=succeeded"]
    );
    assert!(ws.exists("independent-ran"));
}

#[test]
fn allowed_failures_do_not_fail_the_run_or_block() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "af"
[phases.lint]
run = "exit 2"
allow_failure = true
[phases.after]
run = "true"
needs = ["lint"]
"#,
    );
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec = ws.record();
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(statuses(&rec), ["lint=failed", "after=succeeded"]);
    assert_eq!(rec["phases"]["lint"]["allowed_failure"], true);
}

#[test]
fn retries_count_attempts_and_see_orch_attempt() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "retry"
[phases.flaky]
run = "echo try $ORCH_ATTEMPT >> attempts.txt; test $ORCH_ATTEMPT -ge 3"
retries = 3
backoff = { initial = "10ms", factor = 2.0, max = "50ms" }
[phases.never]
run = "exit 1"
retries = 1
backoff = { initial = "10ms" }
"#,
    );
    let r = ws.orch(&["run", "--keep-going"]);
    assert_eq!(r.code, 1);
    let rec = ws.record();
    assert_eq!(rec["phases"]["flaky"]["status"], "succeeded");
    assert_eq!(rec["phases"]["flaky"]["attempts"], 3);
    assert_eq!(ws.read("attempts.txt"), "try 1\ntry 2\ntry 3\n");
    assert_eq!(rec["phases"]["never"]["status"], "failed");
    assert_eq!(rec["phases"]["never"]["attempts"], 2);
    assert!(r.stderr.contains("retry"), "{}", r.stderr);
}

#[test]
fn a_timeout_kills_the_whole_process_tree() {
    let marker = "31.4159265";
    let ws = Ws::new(&format!(
        r#"
[pipeline]
name = "timeout"
[phases.slow]
run = "sleep {marker} & (sleep {marker} &) ; setsid sleep {marker} & sh -c 'trap \"\" TERM; sleep {marker}' & wait"
timeout = "300ms"
[phases.after]
run = "true"
needs = ["slow"]
"#
    ));
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rec = ws.record();
    assert_eq!(statuses(&rec), ["slow=timed_out", "after=blocked"]);
    assert_eq!(rec["phases"]["slow"]["reason"], "timed out after 300ms");
    assert_no_leftovers(marker);
}

#[test]
fn finished_phases_leave_no_background_process() {
    let marker = "27.1828182";
    let ws = Ws::new(&format!(
        r#"
[pipeline]
name = "bg"
[phases.daemon]
run = "sleep {marker} & echo started"
"#
    ));
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_no_leftovers(marker);
}

#[test]
fn with_one_job_phases_start_in_declaration_order() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "order"
jobs = 1
[phases.c]
run = "echo c >> order.txt"
needs = ["a"]
[phases.b]
run = "echo b >> order.txt"
[phases.a]
run = "echo a >> order.txt"
[phases.d]
run = "echo d >> order.txt"
needs = ["b"]
"#,
    );
    assert_eq!(ws.orch(&["run"]).code, 0);
    // b and a are ready first; b is declared before a. Then d (needs b) and c (needs a)
    // are both ready: c is declared first.
    assert_eq!(ws.read("order.txt"), "b\na\nc\nd\n");
}

#[test]
fn selection_only_skip_and_from() {
    let pipeline = r#"
[pipeline]
name = "sel"
jobs = 1
[phases.fetch]
run = "echo fetch >> ran.txt"
[phases.build]
run = "echo build >> ran.txt"
needs = ["fetch"]
[phases.unit]
run = "echo unit >> ran.txt"
needs = ["build"]
tags = ["test"]
[phases.e2e]
run = "echo e2e >> ran.txt"
needs = ["build"]
tags = ["test", "slow"]
[phases.docs]
run = "echo docs >> ran.txt"
"#;
    let check = |args: &[&str], want: &str| {
        let ws = Ws::new(pipeline);
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let r = ws.orch(&full);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        let ran = if ws.exists("ran.txt") {
            ws.read("ran.txt")
        } else {
            String::new()
        };
        assert_eq!(
            ran.split_whitespace().collect::<Vec<_>>().join(" "),
            want,
            "{args:?}"
        );
        ws
    };
    check(&["--only", "unit"], "fetch build unit");
    check(
        &["--only", "tag:test", "--skip", "tag:slow"],
        "fetch build unit",
    );
    check(&["--from", "build"], "build unit e2e");
    let ws = check(&["--skip", "docs", "--skip", "e2e"], "fetch build unit");
    let rec = ws.record();
    assert_eq!(rec["phases"]["docs"]["status"], "skipped");
    assert_eq!(rec["phases"]["docs"]["reason"], "skipped by --skip");

    let ws = Ws::new(pipeline);
    let r = ws.orch(&["run", "--only", "biuld"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("did you mean `build`?"), "{}", r.stderr);
}

#[test]
fn interpolated_values_are_data_never_code() {
    let evil = r#"a'b"c; touch PWNED1 $(touch PWNED2) `touch PWNED3` \" \' $HOME
line2 && touch PWNED4"#;
    let ws = Ws::new(&format!(
        r#"
[pipeline]
name = "inject"
[vars]
evil = '''{evil}'''
[phases.make]
run = "printf '%s' \"$V\" > /dev/null; echo value=x >> $ORCH_OUTPUT"
env = {{ V = "${{{{ vars.evil }}}}" }}
[phases.bare]
run = "printf '%s' ${{{{ vars.evil }}}} > bare.txt"
[phases.single]
run = "printf '%s' '${{{{ vars.evil }}}}' > single.txt"
[phases.double]
run = "printf '%s' \"${{{{ vars.evil }}}}\" > double.txt"
[phases.argv]
run = ["sh", "-c", "printf '%s' \"$1\" > argv.txt", "sh", "${{{{ vars.evil }}}}"]
"#
    ));
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for f in ["bare.txt", "single.txt", "double.txt", "argv.txt"] {
        assert_eq!(ws.read(f), evil, "{f}");
    }
    for f in ["PWNED1", "PWNED2", "PWNED3", "PWNED4"] {
        assert!(!ws.exists(f), "{f} was created: a value ran as code");
    }
}

#[test]
fn secrets_never_appear_in_logs_records_or_output() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "secrets"
[phases.leak]
run = "printf 'tok=%s\n' \"$API_TOKEN\"; printf 'split: s3cr'; sleep 0.05; printf 'et-value-42 end\n'; printf 'multi=%s\n' \"$MULTI\" >&2; echo out=$API_TOKEN >> $ORCH_OUTPUT"
secrets = ["API_TOKEN", "MULTI"]
[phases.other]
run = "echo other sees [$API_TOKEN]"
"#,
    );
    let r = ws.orch_env(
        &["run", "-v"],
        &[
            ("API_TOKEN", "s3cret-value-42"),
            ("MULTI", "first-line\nsecond-line"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = std::fs::read_to_string(ws.latest_dir().join("logs/leak.log")).unwrap();
    let record = std::fs::read_to_string(ws.latest_dir().join("run.json")).unwrap();
    for (what, text) in [
        ("log", &log),
        ("record", &record),
        ("stderr", &r.stderr),
        ("stdout", &r.stdout),
    ] {
        for s in ["s3cret-value-42", "s3cr", "first-line", "second-line"] {
            if what != "stderr" || s != "s3cr" {
                assert!(!text.contains(s), "{what} contains {s:?}:\n{text}");
            }
        }
    }
    assert!(log.contains("tok=***"), "{log}");
    assert!(log.contains("split: *** end"), "{log}");
    assert!(log.contains("multi=***"), "{log}");
    assert_eq!(ws.record()["phases"]["leak"]["outputs"]["out"], "***");
    // A phase that did not declare the secret does not get it.
    let other = std::fs::read_to_string(ws.latest_dir().join("logs/other.log")).unwrap();
    assert_eq!(other, "other sees []\n");
}

#[test]
fn a_missing_secret_fails_the_phase_clearly() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "nosecret"
[phases.push]
run = "true"
secrets = ["ORCH_TEST_ABSENT_SECRET"]
"#,
    );
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 1);
    assert_eq!(
        ws.record()["phases"]["push"]["reason"],
        "secret `ORCH_TEST_ABSENT_SECRET` is not set in the environment"
    );
}

#[test]
fn a_program_that_cannot_be_executed_fails_its_phase_saying_why() {
    // The kernel refuses it in the child, after orch has gone on to other work: the phase
    // still fails with the reason, and its dependents are blocked.
    let ws = Ws::new(
        r#"
[pipeline]
name = "noexec"
[phases.tool]
run = ["./not-a-program"]
[phases.after]
run = "true"
needs = ["tool"]
[phases.other]
run = "true"
"#,
    );
    let bin = ws.path().join("not-a-program");
    std::fs::write(&bin, b"\x00\x01 neither a script nor a binary\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = ws.orch(&["run", "-j2"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let record = ws.record();
    let reason = record["phases"]["tool"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.starts_with("cannot start `./not-a-program` in ")
            && reason.ends_with(": Exec format error (os error 8)"),
        "{reason}"
    );
    assert_eq!(
        statuses(&record),
        ["tool=failed", "after=blocked", "other=succeeded"]
    );
}

#[test]
fn the_circuit_breaker_stops_sending_work_to_a_failing_agent() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "breaker"
jobs = 1
[agents.flaky]
type = "local"
capacity = 1
breaker = { failures = 2, cooldown = "1h" }
[phases.a]
run = "exit 1"
agent = "flaky"
[phases.b]
run = "exit 1"
agent = "flaky"
[phases.c]
run = "touch c-ran"
agent = "flaky"
[phases.d]
run = "touch d-ran"
"#,
    );
    let r = ws.orch(&["run", "--keep-going"]);
    assert_eq!(r.code, 1);
    let rec = ws.record();
    assert_eq!(
        statuses(&rec),
        ["a=failed", "b=failed", "c=failed", "d=succeeded"]
    );
    assert!(!ws.exists("c-ran"));
    assert!(
        rec["phases"]["c"]["reason"]
            .as_str()
            .unwrap()
            .contains("circuit breaker"),
        "{}",
        rec["phases"]["c"]
    );
}

#[test]
fn gates_and_when_conditions() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "gates"
jobs = 1
[vars]
env = "staging"
[phases.count]
run = "echo missing=7 >> $ORCH_OUTPUT"
[phases.deploy-prod]
run = "touch prod"
when = "vars.env == 'prod'"
[phases.gate]
kind = "gate"
assert = ["phases.count.outputs.missing <= 6"]
needs = ["count"]
"#,
    );
    let r = ws.orch(&["run", "--keep-going"]);
    assert_eq!(r.code, 1);
    let rec = ws.record();
    assert_eq!(rec["phases"]["deploy-prod"]["status"], "skipped");
    assert_eq!(
        rec["phases"]["deploy-prod"]["reason"],
        "`when` is false: vars.env == 'prod'"
    );
    assert!(!ws.exists("prod"));
    assert_eq!(rec["phases"]["gate"]["status"], "failed");
    assert_eq!(
        rec["phases"]["gate"]["reason"],
        "assertion failed: `phases.count.outputs.missing <= 6` (seen: phases.count.outputs.missing = \"7\")"
    );
    let ws2 = Ws::new(&ws.read("orch.toml"));
    let r = ws2.orch(&["run", "--var", "env=prod", "--skip", "gate"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(ws2.exists("prod"));
}

#[test]
fn plan_runs_nothing_and_writes_nothing() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "plan"
[phases.touch]
run = "touch should-not-exist"
"#,
    );
    for args in [&["plan"][..], &["run", "--dry-run"][..]] {
        let r = ws.orch(args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains("touch should-not-exist"), "{}", r.stdout);
    }
    assert!(!ws.exists("should-not-exist"));
    assert!(!ws.exists(".orch"), "plan created the state dir");
}

#[test]
fn a_pipeline_run_from_another_directory_gets_absolute_paths() {
    let ws = Ws::new("");
    std::fs::create_dir_all(ws.path().join("sub/work")).unwrap();
    std::fs::write(
        ws.path().join("sub/orch.toml"),
        r#"
[pipeline]
name = "elsewhere"
[phases.out]
run = "echo where=$(pwd) >> \"$ORCH_OUTPUT\""
cwd = "work"
"#,
    )
    .unwrap();
    let r = ws.orch(&["run", "sub/orch.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec: serde_json::Value =
        serde_json::from_str(&ws.read("sub/.orch/runs/latest/run.json")).unwrap();
    let canon = std::fs::canonicalize(ws.path().join("sub/work")).unwrap();
    assert_eq!(
        rec["phases"]["out"]["outputs"]["where"],
        canon.display().to_string()
    );
}

#[test]
fn every_run_leaves_its_reports_and_orch_report_renders_them() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "reports"
[phases.ok]
run = "echo fine"
[phases.bad]
run = "echo '<script>x</script>'; exit 1"
"#,
    );
    let r = ws.orch(&["run", "--keep-going"]);
    assert_eq!(r.code, 1);
    let dir = ws.latest_dir();
    for f in ["report.md", "junit.xml", "report.html", "run.json"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let md = ws.orch(&["report", "--format", "md"]);
    assert_eq!(md.code, 0, "{}", md.stderr);
    assert!(md.stdout.contains("`bad`"), "{}", md.stdout);
    let junit = ws.orch(&["report", "latest", "--format", "junit", "-o", "out.xml"]);
    assert_eq!(junit.code, 0, "{}", junit.stderr);
    assert!(ws.read("out.xml").contains("<testsuites"));
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        !html.contains("<script>x</script>"),
        "log text reached the HTML unescaped"
    );
    let bad = ws.orch(&["report", "--format", "docx"]);
    assert_eq!(bad.code, 2);
}

#[test]
fn packages_verify_and_tampered_ones_are_rejected() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "pkg"
[phases.package]
kind = "package"
with = { paths = ["src"], output = "dist/app.tar.gz" }
"#,
    );
    std::fs::create_dir_all(ws.path().join("src")).unwrap();
    std::fs::write(ws.path().join("src/main.py"), "print('hi')\n").unwrap();
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ok = ws.orch(&["verify", "dist/app.tar.gz"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("ok, 1 files match"), "{}", ok.stdout);

    // An archive without a manifest, made by plain tar, is rejected with the reason.
    let made = std::process::Command::new("tar")
        .args(["-czf", "plain.tar.gz", "src"])
        .current_dir(ws.path())
        .status()
        .unwrap();
    assert!(made.success());
    let bad = ws.orch(&["verify", "plain.tar.gz"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("rejected"), "{}", bad.stderr);
    let missing = ws.orch(&["verify", "nowhere.tar.gz"]);
    assert_eq!(missing.code, 2, "{}", missing.stderr);
}

#[test]
fn secrets_too_short_to_mask_are_refused_and_do_not_mangle_output() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "short"
[phases.uses]
run = "true"
secrets = ["SHORT_PW"]
[phases.other]
run = "echo xx=x >> $ORCH_OUTPUT"
"#,
    );
    let r = ws.orch_env(&["run", "--keep-going"], &[("SHORT_PW", "x")]);
    assert_eq!(r.code, 1);
    let rec = ws.record();
    assert_eq!(
        rec["phases"]["uses"]["reason"],
        "secret `SHORT_PW` is too short to redact safely (1 characters; use at least 4)"
    );
    assert_eq!(rec["phases"]["other"]["outputs"]["xx"], "x");
}

#[test]
fn a_phase_waiting_to_retry_when_the_run_stops_ends_failed_with_its_error() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "stop-during-backoff"
jobs = 2
[phases.flaky]
run = "exit 7"
retries = 3
backoff = { initial = "30s" }
[phases.bad]
run = "until grep -q attempt_failed .orch/runs/$ORCH_RUN_ID/journal; do sleep 0.01; done; exit 1"
"#,
    );
    // Handshake: `bad` fails only once the engine has journaled that `flaky`'s first
    // attempt failed, so `flaky` is waiting to retry when the run stops.
    let r = ws.orch(&["run"]);
    assert_eq!(r.code, 1);
    let rec = ws.record();
    assert_eq!(rec["phases"]["flaky"]["status"], "failed");
    assert_eq!(rec["phases"]["flaky"]["attempts"], 1);
    assert_eq!(
        rec["phases"]["flaky"]["reason"],
        "exited with code 7; not retried: the run stopped after `bad` failed"
    );
}
