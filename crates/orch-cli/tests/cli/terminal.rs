//! The live view on a real terminal: `orch run -v` in a tmux pane, read while it runs
//! (spinners, last log lines, streamed output, the overall bar) and after it ends (the
//! summary intact, the view erased, nothing garbled). Needs tmux
//! (`scripts/install/tmux.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::progress::poll;
use crate::support::Ws;

/// A tmux server of its own (private socket, no user config); killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-u")
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux")
    }

    /// The pane's text: scrollback and screen, one string per line, trailing blanks cut.
    fn capture(&self) -> Vec<String> {
        let out = self.cmd(&["capture-pane", "-p", "-J", "-S", "-", "-t", "orch"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn tmux_available() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("ORCH_REQUIRE_SERVICES").is_none_or(|v| v != "1"),
            "tmux is required (ORCH_REQUIRE_SERVICES=1): run scripts/install/tmux.sh"
        );
        eprintln!("skipping: tmux is not installed (scripts/install/tmux.sh)");
    }
    found
}

const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

fn shown(lines: &[String]) -> String {
    lines.join("\n")
}

/// Starts `orch ARGS` in `ws` in a 120x40 tmux pane; the pane stays after it exits and
/// shows `orch exited CODE`.
fn start_pane(ws: &Ws, args: &str) -> Tmux {
    let script = ws.path().join("pane.sh");
    // A handler (not an ignore, which orch would inherit) keeps the shell alive through
    // a ^C so it can report orch's exit code.
    std::fs::write(
        &script,
        format!(
            "unset ORCH_JOBS ORCH_STATE_DIR ORCH_PROGRESS ORCH_COLOR ORCH_GRACE NO_COLOR \
             GITHUB_STEP_SUMMARY\n\
             trap 'true' INT\n\
             cd '{dir}' || exit 1\n\
             '{orch}' {args}\n\
             echo \"orch exited $?\"\n\
             exec sleep 600\n",
            dir = ws.path().display(),
            orch = env!("CARGO_BIN_EXE_orch"),
        ),
    )
    .unwrap();
    let tmux = Tmux {
        socket: ws.path().join("tmux.sock"),
    };
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "orch",
        "-x",
        "120",
        "-y",
        "40",
        &format!(
            "LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM=screen sh '{}'",
            script.display()
        ),
    ]);
    assert!(
        started.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    tmux
}

/// Waits for `orch exited CODE` in the pane and returns the pane's lines.
fn wait_exit(tmux: &Tmux) -> Vec<String> {
    poll(Duration::from_secs(30), "orch to exit", || {
        let lines = tmux.capture();
        lines
            .iter()
            .any(|l| l.starts_with("orch exited "))
            .then_some(lines)
    })
}

/// Nothing of the live view is left: no spinner line, no overall bar, no control
/// characters.
fn assert_view_gone(after: &[String]) {
    let text = shown(after);
    for l in after {
        assert!(
            !l.starts_with(SPINNER) && !l.contains(" running ·") && !l.contains("] 3/3"),
            "a line of the live view was left behind: {l:?}\n{text}"
        );
        assert!(
            !l.chars().any(|c| c.is_control()),
            "control characters on screen: {l:?}"
        );
    }
}

// The phases below wait at most about 30 s: if a test fails and its tmux server is killed
// with orch in it, nothing it started outlives it by long.

#[test]
fn the_live_view_under_tmux_during_and_after_the_run() {
    if !tmux_available() {
        return;
    }
    let ws = Ws::new(
        r#"
[pipeline]
name = "terminal"
jobs = 2

[phases.alpha]
run = "echo 'alpha is waiting for go'; i=0; while [ ! -f go ] && [ $i -lt 1500 ]; do i=$((i+1)); sleep 0.02; done; echo 'alpha done'"

[phases.beta]
run = "echo 'beta is waiting for go'; i=0; while [ ! -f go ] && [ $i -lt 1500 ]; do i=$((i+1)); sleep 0.02; done"
retries = 1

[phases.gamma]
needs = ["alpha", "beta"]
run = "echo 'gamma ran'"
"#,
    );
    let tmux = start_pane(&ws, "run -v");

    // During: both phases on spinner lines with their last log line, the streamed output
    // above them, and the overall bar at the bottom.
    let during = poll(Duration::from_secs(30), "the live view", || {
        let lines = tmux.capture();
        let spinning = |id: &str, last: &str| {
            lines.iter().any(|l| {
                l.starts_with(SPINNER) && l.contains(&format!(" {id} ")) && l.contains(last)
            })
        };
        (spinning("alpha", "alpha is waiting for go")
            && spinning("beta", "beta is waiting for go")
            && lines.iter().any(|l| l.contains("] 0/3 2 running")))
        .then_some(lines)
    });
    let text = shown(&during);
    assert!(
        during
            .iter()
            .any(|l| l == "alpha | alpha is waiting for go"),
        "-v streams output above the view:\n{text}"
    );
    assert!(
        during.iter().any(|l| l.contains("attempt 1/2")),
        "beta's line shows its attempt:\n{text}"
    );
    let bar = during.iter().position(|l| l.contains("] 0/3")).unwrap();
    assert_eq!(
        bar,
        during.len() - 1,
        "the overall bar is the last line:\n{text}"
    );

    std::fs::write(ws.path().join("go"), "").unwrap();

    // After: the summary is intact and the view is gone.
    let after = wait_exit(&tmux);
    let text = shown(&after);
    assert!(after.iter().any(|l| l == "orch exited 0"), "{text}");
    assert_view_gone(&after);
    let once = |needle: &str| {
        let n = after.iter().filter(|l| l.starts_with(needle)).count();
        assert_eq!(n, 1, "{needle:?} appears {n} times:\n{text}");
    };
    once("orch: running `terminal` (3 of 3 phases), run ");
    once("  ok      alpha (");
    once("  ok      beta (");
    once("  ok      gamma (");
    // The summary: header, one row per phase, the totals, then the shell's next line.
    let head = after
        .iter()
        .position(|l| l.starts_with("phase ") && l.contains("status") && l.ends_with("note"))
        .unwrap_or_else(|| panic!("no summary table:\n{text}"));
    for (k, id) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let row = &after[head + 1 + k];
        assert!(
            row.starts_with(&format!("{id:<5}  succeeded         1 ")),
            "row {k}: {row:?}\n{text}"
        );
    }
    let end = after.iter().position(|l| l == "orch exited 0").unwrap();
    assert!(
        after[end - 1].starts_with("report: .orch/runs/"),
        "the summary ends right before the shell's line:\n{text}"
    );
    assert!(
        after[head..end]
            .iter()
            .any(|l| l.starts_with("critical path: ") && l.contains(" -> gamma (")),
        "{text}"
    );
    assert!(Path::new(&ws.path().join(".orch/runs/latest/run.json")).is_file());
}

#[test]
fn ctrl_c_in_the_live_view_leaves_nothing_behind() {
    if !tmux_available() {
        return;
    }
    let ws = Ws::new(
        r#"
[pipeline]
name = "interrupted"
jobs = 2

[phases.one]
run = "echo 'one runs until interrupted'; i=0; while [ $i -lt 1500 ]; do i=$((i+1)); sleep 0.02; done"

[phases.two]
run = "echo 'two runs until interrupted'; i=0; while [ $i -lt 1500 ]; do i=$((i+1)); sleep 0.02; done"

[phases.three]
needs = ["one", "two"]
run = "true"
"#,
    );
    let tmux = start_pane(&ws, "run");
    poll(Duration::from_secs(30), "the live view", || {
        let lines = tmux.capture();
        (lines
            .iter()
            .filter(|l| l.starts_with(SPINNER) && l.contains("runs until interrupted"))
            .count()
            == 2)
            .then_some(())
    });
    // The terminal echoes `^C` where the cursor is, and sends SIGINT to orch and its
    // phases alike.
    let sent = tmux.cmd(&["send-keys", "-t", "orch", "C-c"]);
    assert!(sent.status.success());
    let after = wait_exit(&tmux);
    let text = shown(&after);
    assert!(after.iter().any(|l| l == "orch exited 130"), "{text}");
    assert_view_gone(&after);
    let once = |needle: &str| {
        let n = after.iter().filter(|l| l.starts_with(needle)).count();
        assert_eq!(n, 1, "{needle:?} appears {n} times:\n{text}");
    };
    once("orch: running `interrupted` (3 of 3 phases), run ");
    once("orch: interrupted: stopping");
    once("  CANCEL  one (");
    once("  CANCEL  two (");
    once("  CANCEL  three (");
    once("run ");
    let end = after.iter().position(|l| l == "orch exited 130").unwrap();
    assert!(
        after[end - 1].starts_with("report: .orch/runs/"),
        "the summary ends right before the shell's line:\n{text}"
    );
    assert_eq!(ws.record()["status"], "cancelled");
}
