//! Bad input: out-of-range numbers, files that are not regular files, closed pipes, and the
//! smaller mistakes a user makes. Each gets a clear error (exit 2) or a quiet end, never a
//! hang, a panic or a silent default.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Ws;

const OK: &str = "[pipeline]\nname = \"p\"\n[phases.a]\nrun = \"echo hi\"\n[phases.b]\nrun = \"true\"\nneeds = [\"a\"]\n";

fn validate(pipeline: &str) -> (i32, String) {
    let ws = Ws::new(pipeline);
    let r = ws.orch(&["validate"]);
    (r.code, r.stderr)
}

#[test]
fn out_of_range_numbers_are_errors_at_their_position() {
    let (code, out) = validate(
        r#"[pipeline]
name = "n"
jobs = 100000

[defaults]
retries = 4294967296

[agents.box]
type = "local"
capacity = 0

[phases.a]
run = "true"
retries = 4294967295

[phases.b]
run = "true"
retries = 99999999999999999999999999999999999999999
"#,
    );
    assert_eq!(code, 2, "{out}");
    insta::assert_snapshot!(out);
}

#[test]
fn retries_at_the_maximum_run_that_many_attempts() {
    let ws = Ws::new(
        "[pipeline]\nname = \"r\"\n[phases.a]\nrun = \"echo $ORCH_ATTEMPT >> attempts; exit 1\"\nretries = 100\nbackoff = { initial = \"1ms\", max = \"1ms\" }\n",
    );
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(ws.read("attempts").lines().count(), 101);
}

#[test]
fn defaults_retries_apply_to_phases_that_leave_it_out_wherever_defaults_stand() {
    // [defaults] after the phases: the phase that set `retries = 0` keeps it.
    let ws = Ws::new(
        "[pipeline]\nname = \"d\"\n[phases.a]\nrun = \"echo x >> a; exit 1\"\n[phases.b]\nrun = \"echo x >> b; exit 1\"\nretries = 0\n[defaults]\nretries = 2\nbackoff = { initial = \"1ms\" }\n",
    );
    let r = ws.orch(&["run", "--progress", "plain", "--keep-going"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(ws.read("a").lines().count(), 3);
    assert_eq!(ws.read("b").lines().count(), 1);
}

#[test]
fn small_mistakes_are_errors() {
    let cases: &[(&str, &str)] = &[
        ("no phases table", "[pipeline]\nname = \"x\"\n"),
        (
            "empty state_dir",
            "[pipeline]\nname = \"x\"\nstate_dir = \"\"\n[phases.a]\nrun = \"true\"\n",
        ),
        (
            "state_dir that is the file's directory",
            "[pipeline]\nname = \"x\"\nstate_dir = \"sub/..\"\n[phases.a]\nrun = \"true\"\n",
        ),
        (
            "gate reads an unknown phase",
            "[pipeline]\nname = \"x\"\n[phases.build]\nrun = \"true\"\n[phases.g]\nkind = \"gate\"\nneeds = [\"build\"]\nassert = [\"phases.biuld.outputs.ok == 'yes'\"]\n",
        ),
        (
            "when reads a phase it does not need",
            "[pipeline]\nname = \"x\"\n[phases.a]\nrun = \"true\"\n[phases.b]\nrun = \"true\"\nwhen = \"phases['a'].outputs.x == '1'\"\n",
        ),
    ];
    let mut all = String::new();
    for (name, text) in cases {
        let (code, out) = validate(text);
        assert_eq!(code, 2, "{name}: {out}");
        all.push_str(&format!("--- {name}\n{out}\n"));
    }
    insta::assert_snapshot!(all);
}

#[test]
fn state_dir_outside_the_project_root_still_works() {
    let ws = Ws::new(
        "[pipeline]\nname = \"s\"\nstate_dir = \"state/../other\"\n[phases.a]\nrun = \"true\"\n",
    );
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(ws.exists("other/runs/latest/run.json"));
}

#[test]
fn command_line_mistakes_are_errors() {
    let ws = Ws::new("[pipeline]\nname = \"c\"\n[vars]\nv = \"1\"\n[phases.a]\nrun = \"true\"\n");
    let cases: &[&[&str]] = &[
        &["plan", "--jobs", "0"],
        &["run", "--jobs", "0"],
        &["run", "--jobs", "5000"],
        &["run", "--state-dir", ""],
        &["validate", "--var", "=v"],
        &["validate", "--var", "v"],
    ];
    let mut all = String::new();
    for args in cases {
        let r = ws.orch(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        all.push_str(&format!("--- orch {}\n{}\n", args.join(" "), r.stderr));
    }
    assert!(!ws.exists(".orch"), "nothing ran");
    insta::assert_snapshot!(all);
}

#[test]
fn a_fifo_a_device_or_a_huge_file_is_refused_at_once() {
    let ws = Ws::new(OK);
    let fifo = ws.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let huge = ws.path().join("huge.toml");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(1 << 30).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["validate", "fifo.toml"],
            "it is a fifo, not a regular file",
        ),
        (&["run", "fifo.toml"], "it is a fifo, not a regular file"),
        (
            &["plan", "/dev/zero"],
            "it is a character device, not a regular file",
        ),
        (&["validate", "."], "it is a directory, not a regular file"),
        (
            &["validate", "huge.toml"],
            "larger than the limit of 16777216 bytes",
        ),
        (&["verify", "fifo.toml"], "it is a fifo, not a regular file"),
        (
            &["verify", "/dev/zero"],
            "it is a character device, not a regular file",
        ),
    ];
    for (args, want) in cases {
        let started = Instant::now();
        let r = bounded(&ws, args);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{args:?} took too long"
        );
        assert_eq!(r.0, 2, "{args:?}: {}", r.1);
        assert!(r.1.contains(want), "{args:?}: {}", r.1);
    }
    // `runs -f FIFO` reads the file's state_dir: it must not block either.
    let r = bounded(&ws, &["runs", "-f", "fifo.toml"]);
    assert_eq!(r.0, 0, "{}", r.1);
}

/// Runs orch under coreutils' `timeout`, so a hang fails the test (exit 124) instead of
/// blocking it.
fn bounded(ws: &Ws, args: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("20")
        .arg(env!("CARGO_BIN_EXE_orch"))
        .args(args)
        .current_dir(ws.path())
        .env_remove("ORCH_JOBS")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_on_random_bytes_says_so_in_printable_text() {
    let ws = Ws::new(OK);
    // Bytes that are not a tar header, with control characters and invalid UTF-8.
    let mut bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    bytes[0] = 0x1b;
    std::fs::write(ws.path().join("random.bin"), &bytes).unwrap();
    let r = ws.orch(&["verify", "random.bin"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(
        r.stderr
            .chars()
            .all(|c| c == '\n' || (!c.is_control() && c != '\u{fffd}')),
        "not printable: {:?}",
        r.stderr
    );
}

/// Runs orch with standard output (and, when asked, standard error) on a pipe whose reader
/// is already closed: every write fails with EPIPE.
fn with_closed_pipe(ws: &Ws, args: &[&str], close_stderr: bool) -> (i32, String) {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orch"));
    cmd.args(args)
        .current_dir(ws.path())
        .env_remove("ORCH_JOBS")
        .stdout(Stdio::from(write.try_clone().unwrap()));
    let err_path = ws.path().join("stderr.txt");
    if close_stderr {
        cmd.stderr(Stdio::from(write));
    } else {
        cmd.stderr(std::fs::File::create(&err_path).unwrap());
    }
    let status = cmd.status().unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let ws = Ws::new(OK);
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let archive = ws.path().join("pkg.tar.gz");
    std::fs::write(ws.path().join("f.txt"), "x").unwrap();
    make_package(ws.path(), &archive);
    let commands: &[&[&str]] = &[
        &["plan"],
        &["plan", "--format", "json"],
        &["run", "--dry-run"],
        &["graph"],
        &["graph", "--format", "mermaid"],
        &["validate", "--format", "json"],
        &["schema"],
        &["schema", "--run"],
        &["runs"],
        &["runs", "--json"],
        &["runs", "show", "latest"],
        &["runs", "show", "latest", "--json"],
        &["logs", "latest", "a"],
        &["report", "--format", "md"],
        &["report", "--format", "json"],
        &["verify", "pkg.tar.gz"],
        &["man"],
        &["completions", "bash"],
    ];
    for args in commands {
        let (code, stderr) = with_closed_pipe(&ws, args, false);
        assert_eq!(code, 0, "orch {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "orch {args:?}: {stderr}");
        assert_eq!(stderr, "", "orch {args:?}");
    }
    // A run whose terminal went away still runs to the end and records it.
    let (code, _) = with_closed_pipe(
        &ws,
        &["run", "--progress", "plain", "--format", "json"],
        true,
    );
    assert_eq!(code, 0);
    assert_eq!(ws.record()["status"], "succeeded");
}

/// A package made by a `package` phase.
fn make_package(base: &std::path::Path, archive: &std::path::Path) {
    std::fs::write(
        base.join("pkg.toml"),
        format!(
            "[pipeline]\nname = \"pkg\"\nstate_dir = \".pkg-state\"\n[phases.pkg]\nkind = \"package\"\nwith = {{ paths = [\"f.txt\"], output = \"{}\" }}\n",
            archive.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orch"))
        .args(["run", "pkg.toml", "--progress", "plain"])
        .current_dir(base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn phases_get_the_default_sigpipe_disposition() {
    // orch ignores SIGPIPE for itself; a phase's `yes | head -1` must end by SIGPIPE as in
    // a shell, not loop on EPIPE errors.
    let ws = Ws::new(
        "[pipeline]\nname = \"s\"\n[phases.a]\nrun = \"grep '^SigIgn' /proc/self/status > sigign\"\n",
    );
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = ws.read("sigign");
    let mask = u64::from_str_radix(line.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(
        mask & (1 << (13 - 1)),
        0,
        "SIGPIPE is ignored in phases: {line}"
    );
}

#[test]
fn scaffold_never_writes_through_a_symlinked_target_or_outside_the_project() {
    let outside = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("services", "refusing symlink"),
        ("apps/new", "refusing symlink"),
        ("apps/../services/x", "refusing symlink"),
        ("../elsewhere", "is outside the pipeline's directory"),
        (
            "/tmp/orch-scaffold-abs",
            "is outside the pipeline's directory",
        ),
    ];
    for (target, want) in cases {
        let ws = Ws::new(&format!(
            "[pipeline]\nname = \"s\"\n[phases.new]\nkind = \"scaffold\"\nwith = {{ modules = [\"svc\"], template = \"python-fastapi\", target = \"{target}\" }}\n"
        ));
        std::os::unix::fs::symlink(outside.path(), ws.path().join("services")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("apps")).unwrap();
        let r = ws.orch(&["run", "--progress", "plain"]);
        assert_eq!(r.code, 1, "{target}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{target}: {}", r.stderr);
        let written: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert!(written.is_empty(), "{target}: wrote outside: {written:?}");
        assert!(!Path::new("/tmp/orch-scaffold-abs").exists());
    }
    // A real directory on the way is fine.
    let ws = Ws::new(
        "[pipeline]\nname = \"s\"\n[phases.new]\nkind = \"scaffold\"\nwith = { modules = [\"svc\"], template = \"python-fastapi\", target = \"apps/../services\" }\n",
    );
    let r = ws.orch(&["run", "--progress", "plain"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(ws.exists("services/svc"));
}
