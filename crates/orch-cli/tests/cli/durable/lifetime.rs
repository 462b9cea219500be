//! The process-lifetime matrix: every way a phase's process may try to outlive it, against
//! every way a phase or a run can end, through the real `orch` binary. After each run, no
//! process of it may be left, found by a token unique to the case in its argv (not by the
//! marks orch itself uses, which `env -i` sheds).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::support::{Running, Ws, poll, signal};

/// How a phase's process tries to outlive it. `{T}` is the case's token (a `sleep`
/// duration) and `{R}` the file it touches once it runs; `{SH}`, `{TOUCH}`, `{SLEEP}`,
/// `{SETSID}` are absolute paths (for `env -i`, which clears `PATH`).
const KINDS: &[(&str, &str)] = &[
    ("background", "sh -c 'touch {R}; exec sleep {T}' &"),
    ("setsid", "setsid sh -c 'touch {R}; exec sleep {T}' &"),
    ("double fork", "( sh -c 'touch {R}; exec sleep {T}' & )"),
    (
        "env -i + setsid",
        "env -i {SETSID} {SH} -c '{TOUCH} {R}; exec {SLEEP} {T}' &",
    ),
    (
        "ignores TERM",
        "sh -c 'trap \"\" TERM INT HUP; touch {R}; exec sleep {T}' &",
    ),
    (
        "nohup",
        "nohup sh -c 'touch {R}; exec sleep {T}' >/dev/null 2>&1 &",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Succeeded,
    Failed,
    TimedOut,
    CtrlC,
    Sigterm,
    Sigkill,
}

const ENDS: &[End] = &[
    End::Succeeded,
    End::Failed,
    End::TimedOut,
    End::CtrlC,
    End::Sigterm,
    End::Sigkill,
];

fn which(program: &str) -> String {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!("{program} not found");
}

/// The case's token: a `sleep` duration no other process has.
fn token(kind: usize, end: usize) -> String {
    format!("4000.{:07}{kind}{end}", std::process::id() % 10_000_000)
}

/// Processes whose argv holds `token`.
fn holders(token: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let argv = std::fs::read(e.path().join("cmdline")).ok()?;
            let argv = String::from_utf8_lossy(&argv);
            (argv.contains(token) && super::support::alive(pid)).then_some(pid)
        })
        .collect()
}

/// A workspace whose phases each start one kind of process and then end as `end` says.
fn workspace(end: End, e: usize) -> Ws {
    let mut p = String::from("[pipeline]\nname = \"lifetime\"\njobs = 8\n");
    for (k, (_, spawn)) in KINDS.iter().enumerate() {
        let ready = format!("ready/{k}");
        let spawn = spawn
            .replace("{T}", &token(k, e))
            .replace("{R}", &ready)
            .replace("{SH}", &which("sh"))
            .replace("{TOUCH}", &which("touch"))
            .replace("{SLEEP}", &which("sleep"))
            .replace("{SETSID}", &which("setsid"));
        // The phase ends only once its process runs, so the case is real.
        let wait = format!(
            "i=0; until [ -e {ready} ] || [ $i -ge 2000 ]; do sleep 0.01; i=$((i+1)); done"
        );
        let last = match end {
            End::Succeeded => "exit 0",
            End::Failed => "exit 1",
            _ => "exec sleep 4000",
        };
        p.push_str(&format!(
            "\n[phases.k{k}]\nrun = {:?}\n",
            format!("{spawn}\n{wait}\n{last}\n")
        ));
        if end == End::TimedOut {
            p.push_str("timeout = \"3s\"\n");
        }
    }
    if end == End::Succeeded {
        // Each phase's processes end with the phase, not only with the run: a phase that
        // needs them all finds none left. (`[.]` keeps the pattern from matching itself.)
        let needs: Vec<String> = (0..KINDS.len()).map(|k| format!("\"k{k}\"")).collect();
        p.push_str(&format!(
            "\n[phases.after]\nneeds = [{}]\nrun = \"! grep -qsa '4000[.]{:07}' /proc/[0-9]*/cmdline\"\n",
            needs.join(", "),
            std::process::id() % 10_000_000
        ));
    }
    let ws = Ws::new(&p);
    std::fs::create_dir_all(ws.path().join("ready")).expect("ready dir");
    ws
}

fn all_ready(ws: &Ws) -> bool {
    (0..KINDS.len()).all(|k| ws.path().join(format!("ready/{k}")).exists())
}

/// Runs one end of the matrix; returns, per kind, the pids left after the run (and how
/// long the last one took to go).
fn run_end(e: usize, end: End) -> (Vec<(usize, Vec<i32>)>, Duration) {
    let ws = workspace(end, e);
    let mut child: Running = ws.spawn(&["run", "-q", "--grace", "300ms"]);
    poll(Duration::from_secs(30), "every process to start", || {
        all_ready(&ws).then_some(())
    });
    match end {
        End::CtrlC => signal(child.id(), Signal::SIGINT),
        End::Sigterm => signal(child.id(), Signal::SIGTERM),
        End::Sigkill => signal(child.id(), Signal::SIGKILL),
        _ => {}
    }
    let status = poll(Duration::from_secs(30), "orch to exit", || {
        child.0.try_wait().expect("wait")
    });
    let t0 = Instant::now();
    let expected = match end {
        End::Succeeded => Some(0),
        End::Failed | End::TimedOut => Some(1),
        End::CtrlC | End::Sigterm => Some(130),
        End::Sigkill => None,
    };
    assert_eq!(status.code(), expected, "{end:?}: {status}");
    // Survivors: whatever still holds a token once the processes had time to die (the
    // SIGKILL case relies on the run's watchdog alone: no later run cleans up).
    let deadline = t0 + Duration::from_secs(3);
    loop {
        let left: Vec<(usize, Vec<i32>)> = (0..KINDS.len())
            .map(|k| (k, holders(&token(k, e))))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return (left, t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn no_process_outlives_its_phase_or_run_however_they_end() {
    let mut survivors = Vec::new();
    let mut cases = 0;
    for (e, end) in ENDS.iter().enumerate() {
        let (left, took) = run_end(e, *end);
        cases += KINDS.len();
        eprintln!("{end:?}: all gone {took:?} after orch exited");
        for (k, pids) in left {
            survivors.push(format!("{} x {end:?}: pids {pids:?}", KINDS[k].0));
            for p in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }
    eprintln!(
        "process-lifetime matrix: {cases} cases ({} kinds x {} ends), {} survivors",
        KINDS.len(),
        ENDS.len(),
        survivors.len()
    );
    assert!(survivors.is_empty(), "survivors:\n{}", survivors.join("\n"));
}
