//! A full disk: a state directory on a small tmpfs that the phases fill. The run still
//! ends with its summary, records what it can, exits 3 (not recorded) and leaves no
//! temporary files; a log that could not be written is a warning on its phase.
//!
//! Mounting needs root (CI runs as root); elsewhere these tests say so and pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::Ws;

/// A tmpfs of `kib` KiB mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Tmpfs {
    /// `None` (with a message) when this process cannot mount.
    fn mount(kib: u32) -> Option<Self> {
        // `/proc/self` belongs to the effective user of this process.
        let root = std::fs::metadata("/proc/self")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        if !root {
            eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Some(Self { dir, mounted: true })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Every file under `dir` whose name says it is temporary.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || name.starts_with(".latest.") {
                found.push(path);
            }
        }
    }
    found
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("stdout is not the record ({e}): {stdout}"))
}

#[test]
fn a_disk_that_fills_up_during_the_run_is_reported_with_exit_3_and_the_summary() {
    let Some(fs) = Tmpfs::mount(512) else { return };
    let filler = fs.path().join("filler");
    // `fill` fills the disk, then writes lines its log has no room for.
    let ws = Ws::new(&format!(
        r#"
[pipeline]
name = "full"
[phases.fill]
run = "cat /dev/zero > '{}' 2>/dev/null; seq 1 5000; echo 'last words' >&2"
[phases.after]
run = "true"
needs = ["fill"]
"#,
        filler.display()
    ));
    let state = fs.path().join("state");
    let state_arg = state.to_string_lossy().into_owned();
    let r = ws.orch(&["run", "--state-dir", &state_arg, "--format", "json"]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    // The summary is printed, with what could not be written.
    assert!(r.stderr.contains("critical path: "), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("run.json NOT WRITTEN: No space left on device"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("not recorded: logs/fill.log: incomplete: No space left on device"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("  warning fill: log incomplete"),
        "{}",
        r.stderr
    );
    // The record still reaches stdout, with how each phase ended.
    let record = json(&r.stdout);
    assert_eq!(record["phases"]["fill"]["status"], "succeeded");
    let warnings = record["phases"]["fill"]["warnings"].to_string();
    assert!(warnings.contains("No space left on device"), "{warnings}");
    assert!(warnings.contains("lines lost"), "{warnings}");
    let files: Vec<&str> = record["record_errors"]
        .as_array()
        .expect("record_errors")
        .iter()
        .filter_map(|e| e["file"].as_str())
        .collect();
    assert!(
        files.contains(&"run.json") && files.contains(&"logs/fill.log"),
        "{files:?}"
    );
    assert!(files.contains(&"report.html"), "{files:?}");
    // Nothing half-written is left behind.
    assert_eq!(temporaries(fs.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_log_that_cannot_be_written_is_a_warning_on_its_phase_and_in_the_record() {
    let Some(fs) = Tmpfs::mount(512) else { return };
    let filler = fs.path().join("filler");
    // The disk is full while `fill` writes its output, and free again after it.
    let ws = Ws::new(&format!(
        r#"
[pipeline]
name = "log-lost"
jobs = 1
[phases.fill]
run = "cat /dev/zero > '{f}' 2>/dev/null; seq 1 5000; echo 'last words' >&2"
[phases.free]
run = "rm '{f}'"
needs = ["fill"]
"#,
        f = filler.display()
    ));
    let state = fs.path().join("state");
    let state_arg = state.to_string_lossy().into_owned();
    let r = ws.orch_env(
        &["run", "--state-dir", &state_arg],
        &[("ORCH_JOURNAL", "off")],
    );
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("not recorded: logs/fill.log: incomplete: No space left on device"),
        "{}",
        r.stderr
    );
    // The table notes it beside the phase, which still succeeded.
    let row = r
        .stderr
        .lines()
        .find(|l| l.starts_with("fill "))
        .unwrap_or_else(|| panic!("no row for fill: {}", r.stderr));
    assert!(
        row.contains("succeeded") && row.contains("warning: log incomplete"),
        "{row}"
    );
    // run.json could be written: it holds the warning and the record error.
    let run_json = std::fs::read_to_string(state.join("runs/latest/run.json")).expect("run.json");
    let record = json(&run_json);
    assert_eq!(record["status"], "succeeded");
    assert!(
        record["phases"]["fill"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("log incomplete: No space left on device")),
        "{record}"
    );
    assert_eq!(record["record_errors"][0]["file"], "logs/fill.log");
    assert_eq!(temporaries(fs.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_state_directory_that_cannot_be_written_exits_3() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "nowhere"
[phases.a]
run = "touch ran"
"#,
    );
    ws.write("blocker", "a file, not a directory");
    let r = ws.orch(&["run", "--state-dir", "blocker/state"]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("error: cannot write"), "{}", r.stderr);
    assert!(!ws.path().join("ran").exists(), "nothing ran");
}

#[test]
fn a_report_that_does_not_fit_exits_3_and_leaves_nothing() {
    let ws = Ws::new(
        r#"
[pipeline]
name = "reported"
[phases.a]
run = "seq 1 20000"
"#,
    );
    let r = ws.orch(&["run", "-q"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Not a directory: nothing can be written there.
    ws.write("blocker", "a file");
    let r = ws.orch(&["report", "--format", "html", "-o", "blocker/report.html"]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(
        r.stderr.contains("error: cannot write blocker/report.html"),
        "{}",
        r.stderr
    );
    // A disk too small for it: no partial report, no temporary file.
    let Some(fs) = Tmpfs::mount(16) else { return };
    let out = fs.path().join("report.html");
    let out_arg = out.to_string_lossy().into_owned();
    let r = ws.orch(&["report", "--format", "html", "-o", &out_arg]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    let left: Vec<_> = std::fs::read_dir(fs.path())
        .expect("read tmpfs")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
