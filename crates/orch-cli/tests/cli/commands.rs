//! `orch init`, `--format json`, completions, the man page, environment overrides and
//! `--version`.

use std::path::Path;
use std::process::Command;

use crate::progress::orch;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let out = orch(dir, args)
        .envs(env.iter().copied())
        .output()
        .expect("run orch");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn schema(args: &[&str]) -> jsonschema::Validator {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), args, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn toml_as_json(text: &str) -> serde_json::Value {
    let value: toml::Value = toml::from_str(text).unwrap();
    serde_json::to_value(value).unwrap()
}

#[test]
fn init_templates_validate_follow_the_schema_and_run() {
    let pipeline_schema = schema(&["schema"]);
    for (template, phases, files) in [
        ("minimal", 6, &["orch.toml"][..]),
        ("delivery", 6, &["orch.toml", "modules.toml"][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("shop");
        std::fs::create_dir(&ws).unwrap();
        let init = run(&ws, &["init", "--template", template], &[]);
        assert_eq!(init.code, 0, "{template}: {}", init.stderr);
        let mut written: Vec<String> = std::fs::read_dir(&ws)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        let mut expected: Vec<String> = files.iter().map(|f| (*f).to_owned()).collect();
        expected.sort();
        assert_eq!(written, expected, "{template}");
        let text = std::fs::read_to_string(ws.join("orch.toml")).unwrap();
        assert!(
            text.contains("name = \"shop\""),
            "{template}: named after the directory"
        );
        assert!(
            text.lines().filter(|l| l.starts_with('#')).count() > 5,
            "commented"
        );
        let errors: Vec<String> = pipeline_schema
            .iter_errors(&toml_as_json(&text))
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{template}: {errors:?}");

        let valid = run(&ws, &["validate"], &[]);
        assert_eq!(valid.code, 0, "{template}: {}", valid.stderr);
        assert_eq!(
            valid.stderr.trim(),
            format!("orch.toml: valid, {phases} phases"),
            "{template}"
        );
        let ran = run(&ws, &["run", "--format", "json"], &[]);
        assert_eq!(ran.code, 0, "{template}:\n{}", ran.stderr);
        let record: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
        assert_eq!(record["status"], "succeeded", "{template}");
        let statuses: Vec<&str> = record["phases"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p["status"].as_str().unwrap())
            .collect();
        assert!(
            statuses
                .iter()
                .all(|s| *s == "succeeded" || *s == "skipped"),
            "{template}: {statuses:?}"
        );
        assert!(
            statuses.iter().filter(|s| **s == "succeeded").count() >= 5,
            "{template}: {statuses:?}"
        );
        if template == "minimal" {
            // The conditional phase runs when asked to.
            let release = run(
                &ws,
                &["run", "--var", "release=true", "--format", "json"],
                &[],
            );
            assert_eq!(release.code, 0, "{}", release.stderr);
            let record: serde_json::Value = serde_json::from_str(&release.stdout).unwrap();
            assert_eq!(record["phases"]["release"]["status"], "succeeded");
            let tarball = record["phases"]["release"]["outputs"]["path"]
                .as_str()
                .unwrap();
            assert!(ws.join(tarball).is_file(), "{tarball}");
        } else {
            let package = &record["phases"]["package"]["outputs"];
            assert_eq!(
                package["files"], "2",
                "orch.toml and modules.toml: {package}"
            );
            assert_eq!(record["phases"]["verify"]["outputs"]["files"], "2");
            assert_eq!(record["phases"]["parity"]["outputs"]["missing"], "3");
            let report = record["phases"]["report"]["outputs"]["paths"]
                .as_str()
                .unwrap();
            assert!(report.contains("compliance.html"), "{report}");
        }
    }
}

#[test]
fn init_refuses_to_overwrite_and_writes_nothing_then() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("modules.toml"), "# mine\n").unwrap();
    let out = run(dir.path(), &["init", "--template", "delivery"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "error: modules.toml already exists; orch init never overwrites a file (move it away \
         or choose another directory: orch init DIR)"
    );
    assert!(!dir.path().join("orch.toml").exists(), "nothing is written");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("modules.toml")).unwrap(),
        "# mine\n"
    );
    // Into another directory (created), then again: refused.
    let first = run(dir.path(), &["init", "new/dir", "--name", "svc"], &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stderr.contains("wrote new/dir/orch.toml"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("orch run new/dir/orch.toml"),
        "{}",
        first.stderr
    );
    let text = std::fs::read_to_string(dir.path().join("new/dir/orch.toml")).unwrap();
    assert!(text.contains("name = \"svc\""));
    let again = run(dir.path(), &["init", "new/dir"], &[]);
    assert_eq!(again.code, 2);
    assert!(
        again.stderr.contains("new/dir/orch.toml already exists"),
        "{}",
        again.stderr
    );
}

#[test]
fn run_format_json_prints_the_record_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orch.toml"),
        r#"
[pipeline]
name = "json"
jobs = 1
[phases.produce]
run = "echo 'answer=42' >> \"$ORCH_OUTPUT\"; echo produced"
[phases.fail]
run = "exit 3"
needs = ["produce"]
allow_failure = true
[phases.skip]
run = "true"
when = "false"
"#,
    )
    .unwrap();
    let run_schema = schema(&["schema", "--run"]);
    let out = run(dir.path(), &["run", "--format", "json"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let record: serde_json::Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
    let errors: Vec<String> = run_schema
        .iter_errors(&record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(record["phases"]["produce"]["outputs"]["answer"], "42");
    assert_eq!(record["phases"]["fail"]["allowed_failure"], true);
    // The same record as run.json; the human summary on stderr.
    let file = dir.path().join(".orch/runs/latest/run.json");
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(record, on_disk);
    assert!(out.stderr.contains("\nphase "), "{}", out.stderr);
    assert!(out.stderr.contains(" succeeded in "), "{}", out.stderr);
    // A failed run prints its record too, and exits 1.
    std::fs::write(
        dir.path().join("fail.toml"),
        "[pipeline]\nname = \"fails\"\n[phases.bad]\nrun = \"exit 5\"\n",
    )
    .unwrap();
    let failed = run(dir.path(), &["run", "fail.toml", "--format", "json"], &[]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let record: serde_json::Value = serde_json::from_str(&failed.stdout).unwrap();
    assert_eq!(record["status"], "failed");
    assert_eq!(record["phases"]["bad"]["exit_code"], 5);
    assert!(run_schema.is_valid(&record));
    // Nothing ran: the problems, as `validate --format json` gives them, with positions.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[pipeline]\nname = \"bad\"\n[phases.a]\nrun = \"true\"\nneeds = [\"zz\"]\n",
    )
    .unwrap();
    for cmd in ["run", "plan", "validate"] {
        let invalid = run(dir.path(), &[cmd, "bad.toml", "--format", "json"], &[]);
        assert_eq!(invalid.code, 2, "{cmd}: {}", invalid.stderr);
        let problems: serde_json::Value = serde_json::from_str(&invalid.stdout).unwrap();
        assert_eq!(problems["valid"], false, "{cmd}");
        let first = &problems["errors"][0];
        assert_eq!(
            first["message"],
            "phase `a` needs `zz`, which is not a phase"
        );
        assert_eq!(
            (&first["line"], &first["column"]),
            (&5.into(), &10.into()),
            "{cmd}"
        );
    }
    let latest = std::fs::read_to_string(dir.path().join(".orch/runs/latest/run.json")).unwrap();
    assert!(
        latest.contains("\"pipeline\": \"fails\""),
        "no run started since"
    );
}

#[test]
fn env_overrides_state_dir_grace_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("orch.toml"),
        "[pipeline]\nname = \"env\"\n[phases.a]\nrun = \"true\"\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &["run"],
        &[("ORCH_STATE_DIR", "elsewhere/state")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        dir.path()
            .join("elsewhere/state/runs/latest/run.json")
            .is_file(),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join(".orch").exists());
    assert!(
        out.stderr.contains("record: elsewhere/state/runs/"),
        "{}",
        out.stderr
    );
    // The flag wins over the variable.
    let out = run(
        dir.path(),
        &["run", "--state-dir", "flag-state"],
        &[("ORCH_STATE_DIR", "elsewhere/state")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(dir.path().join("flag-state/runs/latest/run.json").is_file());
    // Bad values are command-line errors, named by their variable's flag.
    for (var, value, flag) in [
        ("ORCH_GRACE", "soon", "--grace"),
        ("ORCH_PROGRESS", "fancy", "--progress"),
        ("ORCH_COLOR", "rainbow", "--color"),
        ("ORCH_JOBS", "many", "--jobs"),
    ] {
        let out = run(dir.path(), &["run"], &[(var, value)]);
        assert_eq!(out.code, 2, "{var}={value}: {}", out.stderr);
        assert!(out.stderr.contains(flag), "{var}: {}", out.stderr);
    }
    let plain = run(
        dir.path(),
        &["run"],
        &[("ORCH_PROGRESS", "plain"), ("ORCH_GRACE", "1s")],
    );
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(plain.stderr.contains("  ok      a ("), "{}", plain.stderr);
}

#[test]
fn help_documents_the_environment_and_version_names_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let help = run(dir.path(), &["--help"], &[]);
    assert_eq!(help.code, 0);
    for var in [
        "ORCH_JOBS",
        "ORCH_STATE_DIR",
        "ORCH_PROGRESS",
        "ORCH_COLOR",
        "ORCH_GRACE",
        "NO_COLOR",
    ] {
        assert!(help.stdout.contains(var), "{var} is not in orch --help");
    }
    for cmd in ["init", "completions", "man"] {
        assert!(
            help.stdout.contains(&format!("\n  {cmd} ")),
            "{cmd}:\n{}",
            help.stdout
        );
    }
    let run_help = run(dir.path(), &["run", "--help"], &[]);
    assert!(
        run_help.stdout.contains("[env: ORCH_STATE_DIR=]"),
        "{}",
        run_help.stdout
    );
    assert!(
        run_help.stdout.contains("--progress <PROGRESS>"),
        "{}",
        run_help.stdout
    );

    let version = run(dir.path(), &["--version"], &[]);
    assert_eq!(version.code, 0);
    let line = version.stdout.trim();
    let pkg = env!("CARGO_PKG_VERSION");
    let in_git = Command::new("git")
        .args(["ls-files", "--error-unmatch", "build.rs"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        // `orch 0.1.0 (1a2b3c4d5e6f 2026-01-31)`
        let rest = line
            .strip_prefix(&format!("orch {pkg} ("))
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{line}"));
        let (hash, date) = rest.split_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(
            hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{line}"
        );
        assert!(
            date.len() == 10 && date.chars().filter(|c| *c == '-').count() == 2,
            "{line}"
        );
    } else {
        assert_eq!(line, format!("orch {pkg}"));
    }
}

#[test]
fn completions_for_each_shell_and_the_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let bash = run(dir.path(), &["completions", "bash"], &[]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    assert!(bash.stdout.contains("_orch()"), "{}", bash.stdout);
    for word in [
        "init",
        "completions",
        "--progress",
        "--state-dir",
        "--keep-going",
    ] {
        assert!(bash.stdout.contains(word), "bash completion lacks {word}");
    }
    // The script parses.
    let path = dir.path().join("orch.bash");
    std::fs::write(&path, &bash.stdout).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );

    let zsh = run(dir.path(), &["completions", "zsh"], &[]);
    assert_eq!(zsh.code, 0);
    assert!(zsh.stdout.starts_with("#compdef orch"), "{}", zsh.stdout);
    let fish = run(dir.path(), &["completions", "fish"], &[]);
    assert_eq!(fish.code, 0);
    assert!(fish.stdout.contains("complete -c orch"), "{}", fish.stdout);
    let bad = run(dir.path(), &["completions", "tcsh"], &[]);
    assert_eq!(bad.code, 2);

    let man = run(dir.path(), &["man"], &[]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(man.stdout.contains(".TH orch 1"), "{}", man.stdout);
    for word in ["init", "completions", "ORCH_STATE_DIR"] {
        assert!(man.stdout.contains(word), "orch(1) lacks {word}");
    }
    let run_page = run(dir.path(), &["man", "run"], &[]);
    assert_eq!(run_page.code, 0, "{}", run_page.stderr);
    assert!(
        run_page.stdout.contains(".TH orch-run 1"),
        "{}",
        run_page.stdout
    );
    assert!(
        run_page.stdout.contains("ORCH_GRACE"),
        "{}",
        run_page.stdout
    );
    let nope = run(dir.path(), &["man", "fly"], &[]);
    assert_eq!(nope.code, 2);
    assert!(nope.stderr.contains("no command `fly`"), "{}", nope.stderr);
}
