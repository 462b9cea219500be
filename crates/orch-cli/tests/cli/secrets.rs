//! Secrets: regression tests, and the secret-leak matrix. The matrix runs the real binary
//! with secrets of several shapes emitted in every way a phase or a kind can emit them,
//! then asserts that no file under the project (state directory included) and no byte
//! orch printed holds any revealing form of any of them.

use std::path::{Path, PathBuf};

use orch_test_utils::files_under;

use crate::support::{Run, Ws};

/// Secret shapes: plain, with quotes and backslashes, with control characters, spanning
/// lines, with HTML-special and non-ASCII characters, with URL-special characters.
const SHAPES: &[(&str, &str)] = &[
    ("plain", "Plain-s3cr3t-A9x7"),
    ("quotes", "Qu\"ot'ed\\back-B8y6"),
    ("control", "Ctl\tTab\u{1}\u{1b}[31m-C7z5"),
    ("multiline", "Multi-first-D6w4\nMulti-second-E5v3"),
    ("html-unicode", "Ünï<&>/-F4u2-ß"),
    ("url-special", "p@ss:w/rd?#%-G3t1"),
];

/// A credential in a URL that discovery reads; not a declared secret, stripped at the
/// source.
const URL_CREDENTIAL: &str = "Cred-Url-Pass-H2s0";

/// Every form that would reveal `secret`: the value, its JSON, `{:?}`, `escape_default`
/// and HTML-escaped forms, and each line of a multi-line value.
fn revealing_forms(secret: &str) -> Vec<(String, Vec<u8>)> {
    let mut forms = vec![("raw".to_owned(), secret.as_bytes().to_vec())];
    let json = serde_json::to_string(secret).unwrap();
    forms.push(("json".into(), json.as_bytes()[1..json.len() - 1].to_vec()));
    let debug = format!("{secret:?}");
    forms.push((
        "debug".into(),
        debug.as_bytes()[1..debug.len() - 1].to_vec(),
    ));
    forms.push((
        "escape_default".into(),
        secret.escape_default().to_string().into_bytes(),
    ));
    let html = secret
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;");
    forms.push(("html".into(), html.into_bytes()));
    if secret.contains('\n') {
        for (n, line) in secret.lines().enumerate() {
            forms.push((format!("line {}", n + 1), line.as_bytes().to_vec()));
        }
    }
    forms.sort_by(|a, b| a.1.cmp(&b.1));
    forms.dedup_by(|a, b| a.1 == b.1);
    forms
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The phases of the matrix pipeline: (id, what it does), each one emission form.
fn matrix_phases() -> Vec<(&'static str, String)> {
    let sh = |id: &'static str, run: &str| (id, format!("run = {}\n", toml_str(run)));
    vec![
        sh("stdout", r#"printf 'tok=%s\n' "$TOK""#),
        sh("stderr", r#"printf 'tok=%s\n' "$TOK" >&2"#),
        // Two processes, two writes: the secret is cut in the middle.
        sh(
            "split",
            r#"printf 'split=%s' "$TOK" | head -c 9; printf '%s' "$TOK" | tail -c +4; echo"#,
        ),
        sh(
            "lines",
            r#"printf 'before\n%s\nafter\r\n%s\r\nend' "$TOK" "$TOK""#,
        ),
        sh("no_newline", r#"printf '%s' "$TOK""#),
        sh(
            "json_echo",
            r#"python3 -c 'import json,os; print(json.dumps({"t": os.environ["TOK"]}, ensure_ascii=False))'"#,
        ),
        sh("output_value", r#"printf 'v=%s\n' "$TOK" >> "$ORCH_OUTPUT""#),
        sh("output_key", r#"printf 'k%s=1\n' "$TOK" >> "$ORCH_OUTPUT""#),
        sh("output_bare_line", r#"printf '%s\n' "$TOK" >> "$ORCH_OUTPUT""#),
        sh(
            "output_bad_key",
            r#"printf 'bad key %s=1\n' "$TOK" >> "$ORCH_OUTPUT""#,
        ),
        sh(
            "output_then_fail",
            r#"printf 'v=%s\n' "$TOK" >> "$ORCH_OUTPUT"; echo "failing with $TOK" >&2; exit 3"#,
        ),
        (
            "output_then_timeout",
            format!(
                "run = {}\ntimeout = \"1s\"\n",
                toml_str(r#"printf 'v=%s\n' "$TOK" >> "$ORCH_OUTPUT"; exec sleep 30"#)
            ),
        ),
        (
            "gate_error",
            "kind = \"gate\"\nneeds = [\"output_value\"]\nassert = [\"phases.output_value.outputs.v == 'x'\"]\n"
                .to_owned(),
        ),
        ("discovery", "kind = \"discover\"\n".to_owned()),
        (
            "reports",
            "kind = \"report\"\nwith = { formats = [\"md\", \"junit\", \"html\", \"json\", \"compliance\"] }\n"
                .to_owned(),
        ),
    ]
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn matrix_pipeline() -> String {
    let mut text = String::from("[pipeline]\nname = \"leaks\"\njobs = 1\n");
    for (id, body) in matrix_phases() {
        // Failures are allowed, so every phase runs, also in a run started over HTTP.
        text.push_str(&format!(
            "\n[phases.{id}]\n{body}secrets = [\"TOK\"]\nallow_failure = true\n"
        ));
    }
    text
}

/// The Compose file discovery reads: the secret as a profile name (masked by the
/// redactor when discovery.json is written) and a credential in a build URL (stripped).
fn compose_file(secret: &str) -> String {
    let quoted = serde_json::to_string(secret).unwrap();
    format!(
        "services:\n  app:\n    build: https://ci-user:{URL_CREDENTIAL}@git.example/app.git#main\n    \
         image: https://{URL_CREDENTIAL}@registry.example/app:1\n    \
         environment:\n      DATABASE_URL: postgres://app:{URL_CREDENTIAL}@db/app\n    \
         profiles: [{quoted}]\n"
    )
}

/// Starts `orch serve`, starts a run over HTTP, follows its events to the end, fetches
/// the run list, the record and every phase's log, stops the server; every response and
/// what the server printed, as runs to scan.
fn served(ws: &Ws, env: &[(&str, &str)]) -> Vec<(String, Run)> {
    let server = ws.serve(env);
    let as_run = |code: u16, body: String| Run {
        code: i32::from(code),
        stdout: body,
        stderr: String::new(),
    };
    let mut out = Vec::new();
    let (code, body) = server.http("POST", "/api/runs", Some("{}"));
    assert_eq!(code, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut paths = vec![
        format!("/api/runs/{id}/events"),
        format!("/api/runs/{id}"),
        "/api/runs".to_owned(),
    ];
    for (phase, _) in matrix_phases() {
        paths.push(format!("/api/runs/{id}/logs/{phase}"));
    }
    for path in paths {
        let (code, body) = server.http("GET", &path, None);
        out.push((format!("serve GET {path}"), as_run(code, body)));
    }
    out.push(("serve".to_owned(), server.stop()));
    out
}

#[test]
fn secret_leak_matrix() {
    let mut cases = 0usize;
    let mut leaks = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (shape, secret) in SHAPES {
        let ws = Ws::new(&matrix_pipeline());
        std::fs::write(ws.path().join("compose.yaml"), compose_file(secret)).unwrap();
        let summary = ws.path().join("step-summary.md");
        let summary_env = summary.display().to_string();
        let env = [
            ("TOK", *secret),
            ("GITHUB_STEP_SUMMARY", summary_env.as_str()),
        ];

        // Every way a run prints, each a run of its own.
        let mut printed: Vec<(String, Run)> = Vec::new();
        for (mode, args) in [
            (
                "run --progress plain",
                &["run", "--keep-going", "--progress", "plain"][..],
            ),
            ("run -q", &["run", "--keep-going", "-q"][..]),
            (
                "run -v",
                &["run", "--keep-going", "-v", "--progress", "plain"][..],
            ),
            (
                "run --format json",
                &["run", "--keep-going", "--format", "json"][..],
            ),
        ] {
            let r = ws.orch_env(args, &env);
            assert_eq!(r.code, 0, "{shape}: {mode}: {}", r.stderr);
            printed.push((mode.to_owned(), r));
        }
        // A run started through `orch serve`, and everything it serves.
        printed.extend(served(&ws, &env));

        // The emissions happened (so the absence of the secret means something); checked
        // at the end, after the scan, which runs whatever happened.
        let record = ws.record();
        let phase = |id: &str| &record["phases"][id];
        let mut expect = |ok: bool, what: &str| {
            if !ok {
                missing.push(format!("{shape}: {what}"));
            }
        };
        for id in [
            "stdout",
            "stderr",
            "split",
            "lines",
            "no_newline",
            "json_echo",
            "discovery",
            "reports",
        ] {
            expect(
                phase(id)["status"] == "succeeded",
                &format!("{id} succeeded"),
            );
        }
        let events = printed
            .iter()
            .find(|(what, _)| what.ends_with("/events"))
            .map(|(_, r)| r.stdout.clone())
            .unwrap_or_default();
        expect(
            events.contains("tok=***") && events.contains("event: end"),
            "the served event stream shows `tok=***` to its end",
        );
        let stdout_log =
            std::fs::read_to_string(ws.latest_dir().join("logs/stdout.log")).unwrap_or_default();
        expect(
            stdout_log.contains("tok=***"),
            "the stdout log shows `tok=***`",
        );
        expect(
            phase("output_value")["outputs"]["v"] == "***",
            "output v is `***`",
        );
        expect(
            phase("output_then_timeout")["status"] == "timed_out",
            "output_then_timeout timed out",
        );
        expect(
            phase("gate_error")["status"] == "failed",
            "gate_error failed",
        );
        for id in ["output_bare_line", "output_bad_key"] {
            let reason = phase(id)["reason"].as_str().unwrap_or_default();
            expect(
                reason.contains("***"),
                &format!("{id}'s reason shows `***`"),
            );
        }
        // A key holding the secret is kept, masked.
        expect(
            phase("output_key")["outputs"]["k***"] == "1",
            "output_key published `k***`",
        );
        let discovery =
            std::fs::read_to_string(ws.latest_dir().join("discovery.json")).unwrap_or_default();
        expect(
            discovery.contains("\"***\""),
            "discovery.json shows the masked profile",
        );

        // Every command that prints a record, a log or a report.
        let mut commands: Vec<Vec<String>> = vec![
            vec!["runs".into()],
            vec!["runs".into(), "--json".into()],
            vec!["runs".into(), "show".into(), "latest".into()],
            vec![
                "runs".into(),
                "show".into(),
                "latest".into(),
                "--json".into(),
            ],
        ];
        for f in ["md", "junit", "html", "json", "compliance"] {
            commands.push(vec!["report".into(), "--format".into(), f.into()]);
        }
        for (id, _) in matrix_phases() {
            commands.push(vec!["logs".into(), "latest".into(), id.into()]);
            commands.push(vec![
                "logs".into(),
                "latest".into(),
                id.into(),
                "--json".into(),
            ]);
        }
        for args in &commands {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let r = ws.orch_env(&args, &env);
            printed.push((args.join(" "), r));
        }

        // Nothing printed and nothing on disk holds any revealing form.
        let forms = revealing_forms(secret);
        let mut check = |what: String, bytes: &[u8]| {
            cases += 1;
            for (form, needle) in &forms {
                if let Some(at) = find(bytes, needle) {
                    let from = at.saturating_sub(60);
                    let to = (at + needle.len() + 60).min(bytes.len());
                    leaks.push(format!(
                        "{shape}: {what}: {form} form at byte {at}: {:?}",
                        String::from_utf8_lossy(&bytes[from..to])
                    ));
                }
            }
            if let Some(at) = find(bytes, URL_CREDENTIAL.as_bytes()) {
                leaks.push(format!("{shape}: {what}: the URL credential at byte {at}"));
            }
        };
        for (what, r) in &printed {
            check(format!("`orch {what}` stdout"), r.stdout.as_bytes());
            check(format!("`orch {what}` stderr"), r.stderr.as_bytes());
        }
        let files = files_under(ws.path());
        // What the test wrote itself is input, not something orch wrote.
        let inputs = [ws.path().join("orch.toml"), ws.path().join("compose.yaml")];
        for f in &files {
            if inputs.contains(f) {
                continue;
            }
            let rel = f.strip_prefix(ws.path()).unwrap().display().to_string();
            check(format!("file {rel}"), &std::fs::read(f).unwrap());
        }
        // The files that must be there were scanned.
        let rels: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(ws.path()).unwrap().display().to_string())
            .collect();
        for must in [
            "step-summary.md",
            "journal",
            "run.json",
            "discovery.json",
            "report.html",
            "compliance.html",
            "junit.xml",
            "logs/output_then_fail.log",
        ] {
            if !rels.iter().any(|r| r.ends_with(must)) {
                missing.push(format!("{shape}: no {must} among {rels:?}"));
            }
        }
        // No attempt's ORCH_OUTPUT is left, whatever its end.
        for r in &rels {
            if r.contains("/private/") || r.contains("/outputs/") {
                leaks.push(format!("{shape}: an attempt's ORCH_OUTPUT is left: {r}"));
            }
        }
    }
    eprintln!("secret-leak matrix: {cases} cases, {} leaks", leaks.len());
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

#[test]
fn orch_output_is_private_to_its_attempt_and_removed_whatever_its_end() {
    // Each attempt notes where its ORCH_OUTPUT is and its mode; later phases look for it,
    // and for anything near it, after it ended.
    let ws = Ws::new(
        r#"
[pipeline]
name = "private"
jobs = 1
[phases.ok]
run = "printf 'v=%s\n' \"$TOK\" >> \"$ORCH_OUTPUT\"; echo \"$ORCH_OUTPUT\" > ok.path; stat -c '%a %U' \"$ORCH_OUTPUT\" > ok.mode; stat -c '%a' \"$(dirname \"$ORCH_OUTPUT\")\" > ok.dirmode"
secrets = ["TOK"]
[phases.fails]
run = "printf 'v=%s\n' \"$TOK\" >> \"$ORCH_OUTPUT\"; echo \"$ORCH_OUTPUT\" > fails.path; exit 1"
secrets = ["TOK"]
[phases.times_out]
run = "printf 'v=%s\n' \"$TOK\" >> \"$ORCH_OUTPUT\"; echo \"$ORCH_OUTPUT\" > times_out.path; exec sleep 30"
timeout = "1s"
secrets = ["TOK"]
[phases.thief]
needs = ["ok"]
run = "cat \"$(dirname \"$ORCH_OUTPUT\")\"/* \"$(dirname \"$ORCH_OUTPUT\")\"/../*/* > stolen.txt 2>/dev/null; for p in ok fails times_out; do test -e \"$(cat $p.path)\" && echo \"$p\" >> left.txt; done; true"
"#,
    );
    let r = ws.orch_env(&["run", "--keep-going"], &[("TOK", "0utput-s3cret-9")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(ws.record()["phases"]["thief"]["status"], "succeeded");
    // The process creates the file (with its own umask) in a directory only the user who
    // runs orch can enter.
    assert!(
        ws.read("ok.mode").trim_end().ends_with(" root"),
        "{}",
        ws.read("ok.mode")
    );
    assert_eq!(ws.read("ok.dirmode").trim_end(), "700");
    assert!(
        !ws.read("stolen.txt").contains("0utput-s3cret-9"),
        "a later phase read an earlier phase's outputs"
    );
    assert!(
        !ws.exists("left.txt"),
        "left on disk: {}",
        ws.read("left.txt")
    );
    for p in ["ok", "fails", "times_out"] {
        let path = ws.read(&format!("{p}.path"));
        assert!(!Path::new(path.trim_end()).exists(), "{p}: {path}");
    }
    // Nothing of them anywhere in the state directory.
    for f in files_under(&ws.path().join(".orch")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            find(&bytes, b"0utput-s3cret-9").is_none(),
            "{}",
            f.display()
        );
    }
}

#[test]
fn a_secret_that_is_not_utf8_is_named_as_such_and_never_written() {
    use std::os::unix::ffi::OsStrExt;
    let ws = Ws::new(
        r#"
[pipeline]
name = "bytes"
[phases.uses]
run = "true"
secrets = ["BIN_TOK"]
[phases.other]
run = "printenv BIN_TOK || echo unset"
"#,
    );
    let value = b"\xffbin-s3cret\xfe-42";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["run", "--keep-going", "-v"])
        .current_dir(ws.path())
        .env("BIN_TOK", std::ffi::OsStr::from_bytes(value))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let reason = ws.record()["phases"]["uses"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("secret `BIN_TOK` is set but its value is not valid UTF-8"),
        "{reason}"
    );
    // A phase that did not declare it does not get it.
    assert_eq!(
        std::fs::read_to_string(ws.latest_dir().join("logs/other.log")).unwrap(),
        "unset\n"
    );
    for bytes in [&out.stdout, &out.stderr] {
        assert!(find(bytes, b"bin-s3cret").is_none());
    }
    for f in files_under(ws.path()) {
        assert!(
            find(&std::fs::read(&f).unwrap(), b"bin-s3cret").is_none(),
            "{}",
            f.display()
        );
    }
}

#[test]
fn output_keys_holding_a_secret_are_masked_everywhere() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "keys"
[phases.a]
run = "printf 'key_%s=1\n' \"$TOK\" >> \"$ORCH_OUTPUT\""
secrets = ["TOK"]
"#,
    );
    let summary = ws.path().join("summary.md");
    let env = [
        ("TOK", "KeyS3cret77"),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
    ];
    let run = ws.orch_env(&["run", "--format", "json"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(ws.record()["phases"]["a"]["outputs"]["key_***"], "1");
    let show = ws.orch(&["runs", "show", "latest"]);
    let md = ws.orch(&["report", "--format", "md"]);
    let journal = std::fs::read(ws.latest_dir().join("journal")).unwrap();
    let record = std::fs::read(ws.latest_dir().join("run.json")).unwrap();
    for (what, bytes) in [
        ("run --format json", run.stdout.as_bytes()),
        ("runs show", show.stdout.as_bytes()),
        ("report md", md.stdout.as_bytes()),
        ("journal", &journal),
        ("run.json", &record),
        ("step summary", &std::fs::read(&summary).unwrap()),
    ] {
        assert!(find(bytes, b"KeyS3cret77").is_none(), "{what}");
    }
}

#[test]
fn a_malformed_output_line_is_quoted_only_after_masking() {
    // Quotes, backslashes and control characters are escaped when the line is quoted; the
    // first line of a multi-line secret is a line of its own.
    for secret in [
        "a\"quoted\\s3cret",
        "tab\tbell\u{7}s3cret",
        "first-s3cret\nsecond-s3cret",
    ] {
        let ws = Ws::new(
            r#"
[pipeline]
name = "malformed"
[phases.a]
run = "printf '%s\n' \"$TOK\" >> \"$ORCH_OUTPUT\""
secrets = ["TOK"]
"#,
        );
        let r = ws.orch_env(&["run"], &[("TOK", secret)]);
        assert_eq!(r.code, 1);
        let reason = ws.record()["phases"]["a"]["reason"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(reason.contains("***"), "{reason}");
        for (form, needle) in revealing_forms(secret) {
            for text in [&reason, &r.stderr] {
                assert!(
                    find(text.as_bytes(), &needle).is_none(),
                    "{form} form of {secret:?} in {text}"
                );
            }
        }
    }
}

/// A pipeline whose phase writes its output, says where, then waits to be stopped; on a
/// second run (file `second` present) it succeeds at once.
const WAITING: &str = r#"
[pipeline]
name = "waiting"
[phases.wait]
run = "if [ -e second ]; then exit 0; fi; printf 'v=%s\n' \"$TOK\" >> \"$ORCH_OUTPUT\"; echo \"$ORCH_OUTPUT\" > where.tmp; mv where.tmp where; exec sleep 30"
secrets = ["TOK"]
"#;

/// Starts `orch run` and waits until its phase said where its ORCH_OUTPUT is.
fn start_waiting(ws: &Ws, secret: &str) -> (std::process::Child, PathBuf) {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["run", "--grace", "1s"])
        .current_dir(ws.path())
        .env("TOK", secret)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ws.exists("where") {
        assert!(
            std::time::Instant::now() < deadline,
            "the phase never started"
        );
        std::thread::yield_now();
    }
    let path = PathBuf::from(ws.read("where").trim_end());
    assert!(path.exists(), "{}", path.display());
    (child, path)
}

fn assert_nothing_holds(dir: &Path, secret: &str) {
    for f in files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            find(&bytes, secret.as_bytes()).is_none(),
            "{} holds the secret",
            f.display()
        );
    }
}

#[test]
fn orch_output_is_removed_when_the_run_is_interrupted() {
    let ws = Ws::new(WAITING);
    let (mut child, path) = start_waiting(&ws, "Interrupt-s3cret-1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(!path.exists(), "{} is left", path.display());
    assert_nothing_holds(&ws.path().join(".orch"), "Interrupt-s3cret-1");
}

#[test]
fn what_a_killed_run_left_private_goes_when_the_next_run_takes_over() {
    let ws = Ws::new(WAITING);
    let (mut child, path) = start_waiting(&ws, "Killed-s3cret-22");
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing can clean up after SIGKILL; the next run does, when it takes the lock.
    std::fs::write(ws.path().join("second"), "").unwrap();
    let r = ws.orch_env(&["run"], &[("TOK", "Killed-s3cret-22")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!path.exists(), "{} is left", path.display());
    assert_nothing_holds(&ws.path().join(".orch"), "Killed-s3cret-22");
}
