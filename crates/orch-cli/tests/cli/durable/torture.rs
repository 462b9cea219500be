//! Crash-resume torture: a 33-phase pipeline (three parallel chains, a fan-out, a retried
//! phase, an allowed failure) whose phases log `start`/`end` lines to a shared ledger under
//! `flock`; `orch` is killed with SIGKILL at seeded random moments (or aborted at a named
//! failpoint) and resumed until it finishes. Every trial checks:
//! - the final run succeeds with every phase succeeded (or skipped as done earlier) and the
//!   same outputs as a clean run, and the allowed failure as failed-allowed;
//! - no phase whose success was journaled started again in a later run;
//! - no two copies of a phase ever ran at once (each phase holds a per-phase `flock` while
//!   it runs and logs `overlap` if it cannot get it);
//! - attempt numbers of a phase only grow, across runs;
//! - every journal of every run loads;
//! - no process of any run is left.
//!
//! `ORCH_TORTURE_TRIALS` (default 200) and `ORCH_TORTURE_SEED` (default 0) set the trials;
//! `scripts/soak-resume.sh` runs 2,000.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use orch_core::test_support::journal::{self, Entry};
use orch_core::{PhaseStatus, RunId};

use super::support::{Running, Ws, signal};

const PHASE_SH: &str = r#"#!/bin/sh
# phase.sh NAME [flaky|fail]: one torture phase.
name=$1
mode=${2:-}
line() { { flock 8; printf '%s\n' "$1" >> ledger; } 8>ledger.lock; }
exec 9>"locks/$name"
if ! flock -n 9; then
    line "overlap $name $ORCH_RUN_ID $ORCH_ATTEMPT"
fi
line "start $name $ORCH_RUN_ID $ORCH_ATTEMPT [$IN]"
case $mode in
    flaky) if [ "$ORCH_ATTEMPT" -lt 3 ]; then line "fail $name $ORCH_RUN_ID $ORCH_ATTEMPT"; exit 1; fi ;;
    fail) line "fail $name $ORCH_RUN_ID $ORCH_ATTEMPT"; exit 1 ;;
esac
printf 'v=%s(%s)\n' "$name" "$IN" > "$ORCH_OUTPUT"
line "end $name $ORCH_RUN_ID $ORCH_ATTEMPT"
"#;

/// The pipeline: (id, needs, mode).
fn shape() -> Vec<(String, Vec<String>, &'static str)> {
    let mut v: Vec<(String, Vec<String>, &'static str)> = vec![("init".into(), vec![], "")];
    for chain in ["a", "b", "c"] {
        for k in 1..=8 {
            let need = if k == 1 {
                "init".to_owned()
            } else {
                format!("{chain}{}", k - 1)
            };
            v.push((format!("{chain}{k}"), vec![need], ""));
        }
    }
    v.push(("flaky".into(), vec!["init".into()], "flaky"));
    v.push(("lint".into(), vec!["init".into()], "fail"));
    for k in 1..=4 {
        v.push((format!("x{k}"), vec!["a4".into(), "b4".into()], ""));
    }
    let mut merge: Vec<String> = vec!["a8".into(), "b8".into(), "c8".into(), "flaky".into()];
    merge.extend((1..=4).map(|k| format!("x{k}")));
    v.push(("merge".into(), merge, ""));
    v.push(("final".into(), vec!["merge".into(), "lint".into()], ""));
    v
}

fn pipeline() -> String {
    let mut s = String::from("[pipeline]\nname = \"torture\"\njobs = 4\n\n");
    for (id, needs, mode) in shape() {
        let _ = writeln!(s, "[phases.{id}]");
        let mut argv = vec!["sh".to_owned(), "phase.sh".to_owned(), id.clone()];
        if !mode.is_empty() {
            argv.push(mode.to_owned());
        }
        let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
        let _ = writeln!(s, "run = [{}]", argv.join(", "));
        if !needs.is_empty() {
            let quoted: Vec<String> = needs.iter().map(|n| format!("{n:?}")).collect();
            let _ = writeln!(s, "needs = [{}]", quoted.join(", "));
            // The allowed failure publishes nothing to read.
            let input: Vec<String> = needs
                .iter()
                .filter(|n| *n != "lint")
                .map(|n| format!("${{{{ phases.{n}.outputs.v }}}}"))
                .collect();
            let _ = writeln!(s, "env = {{ IN = {:?} }}", input.join("+"));
        } else {
            let _ = writeln!(s, "env = {{ IN = \"root\" }}");
        }
        match mode {
            "flaky" => {
                let _ = writeln!(s, "retries = 2\nbackoff = {{ initial = \"5ms\" }}");
            }
            "fail" => {
                let _ = writeln!(s, "allow_failure = true");
            }
            _ => {}
        }
        s.push('\n');
    }
    s
}

fn workspace() -> Ws {
    let ws = Ws::new(&pipeline());
    ws.write("phase.sh", PHASE_SH);
    std::fs::create_dir_all(ws.path().join("locks")).expect("locks dir");
    ws
}

#[derive(Debug, Clone)]
struct Line {
    kind: String,
    phase: String,
    run: String,
    attempt: u32,
    input: Option<String>,
}

fn ledger(ws: &Ws) -> Vec<Line> {
    ws.read("ledger")
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(5, ' ');
            Some(Line {
                kind: it.next()?.to_owned(),
                phase: it.next()?.to_owned(),
                run: it.next()?.to_owned(),
                attempt: it.next()?.parse().ok()?,
                input: it
                    .next()
                    .map(|s| s.trim_start_matches('[').trim_end_matches(']').to_owned()),
            })
        })
        .collect()
}

/// What a clean run gives: per phase (status, allowed_failure, output v), and the input
/// each phase sees.
struct Expected {
    phases: BTreeMap<String, (String, bool, String)>,
    inputs: HashMap<String, String>,
}

fn expected() -> &'static Expected {
    static E: std::sync::OnceLock<Expected> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        let ws = workspace();
        let r = ws.orch(&["run", "-q"]);
        assert_eq!(r.code, Some(0), "clean run: {}", r.stderr);
        let rec = ws.record("latest");
        let phases = rec["phases"]
            .as_object()
            .expect("phases")
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    (
                        p["status"].as_str().unwrap_or("").to_owned(),
                        p["allowed_failure"].as_bool().unwrap_or(false),
                        p["outputs"]["v"].as_str().unwrap_or("").to_owned(),
                    ),
                )
            })
            .collect::<BTreeMap<_, _>>();
        assert_eq!(phases.len(), 33);
        assert_eq!(phases["lint"].0, "failed");
        assert!(phases["lint"].1);
        assert_eq!(phases["flaky"].0, "succeeded");
        let inputs = ledger(&ws)
            .into_iter()
            .filter(|l| l.kind == "start")
            .filter_map(|l| Some((l.phase, l.input?)))
            .collect();
        Expected { phases, inputs }
    })
}

/// How one run of a trial is cut short.
#[derive(Debug, Clone)]
enum Crash {
    /// SIGKILL once the ledger has this many more lines.
    LedgerLines(usize),
    /// SIGKILL once the run's journals grew by this many bytes.
    JournalBytes(u64),
    /// Abort at a named failpoint, on its n-th hit.
    Failpoint(&'static str, u32),
}

fn journal_bytes(ws: &Ws) -> u64 {
    let Ok(dir) = std::fs::read_dir(ws.state().join("runs")) else {
        return 0;
    };
    dir.flatten()
        .filter(|e| e.file_name() != "latest")
        .filter_map(|e| std::fs::metadata(e.path().join("journal")).ok())
        .map(|m| m.len())
        .sum()
}

fn ledger_lines(ws: &Ws) -> usize {
    ws.read("ledger").lines().count()
}

fn start(ws: &Ws, env: &[(&str, String)]) -> Running {
    let resume = ws.state().join("runs").join("latest").exists();
    let args: &[&str] = if resume {
        &["run", "-q", "--resume"]
    } else {
        &["run", "-q"]
    };
    let mut c = ws.command(args);
    for (k, v) in env {
        c.env(k, v);
    }
    Running(
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn orch"),
    )
}

/// Runs one trial: the crashes in order, then resumes until a run ends. Returns a
/// description of what happened, or the violated invariant.
fn trial(crashes: &[Crash]) -> Result<String, String> {
    let ws = workspace();
    let mut story = String::new();
    for crash in crashes {
        let (lines0, bytes0) = (ledger_lines(&ws), journal_bytes(&ws));
        let mut child = match crash {
            Crash::Failpoint(name, n) => start(&ws, &[("ORCH_FAILPOINT", format!("{name}:{n}"))]),
            _ => start(&ws, &[]),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.0.try_wait().map_err(|e| e.to_string())? {
                break Some(status);
            }
            let reached = match crash {
                Crash::LedgerLines(n) => ledger_lines(&ws) >= lines0 + n,
                Crash::JournalBytes(n) => journal_bytes(&ws) >= bytes0 + n,
                Crash::Failpoint(..) => false,
            };
            if reached {
                signal(child.id(), Signal::SIGKILL);
                break None;
            }
            if Instant::now() > deadline {
                return Err(format!("run did not end: {crash:?}"));
            }
            std::thread::sleep(Duration::from_micros(300));
        };
        let status = match status {
            Some(s) => s,
            None => child.wait().map_err(|e| e.to_string())?,
        };
        let _ = write!(story, "{crash:?}->{status}; ");
        if status.success() {
            break;
        }
    }
    // Resume until done.
    let mut resumes = 0;
    loop {
        let mut child = start(&ws, &[]);
        let status = child.wait().map_err(|e| e.to_string())?;
        resumes += 1;
        if status.success() {
            break;
        }
        if resumes > 3 {
            return Err(format!("resume keeps failing: {status}; {story}"));
        }
    }
    let mut ws = ws;
    check(&ws).map_err(|e| {
        ws.keep();
        format!(
            "{e}\n  story: {story}\n  workspace kept at {}",
            ws.path().display()
        )
    })?;
    Ok(story)
}

/// The runs of the chain that ends at `runs/latest`, oldest first, with their journals.
fn chain(ws: &Ws) -> Result<Vec<(String, Vec<Entry>)>, String> {
    let mut out = Vec::new();
    let latest = std::fs::read_link(ws.state().join("runs/latest")).map_err(|e| e.to_string())?;
    let mut next = Some(latest.to_string_lossy().into_owned());
    while let Some(id) = next.take() {
        let path = ws.state().join("runs").join(&id).join("journal");
        let c = journal::read(&path).map_err(|e| format!("journal of {id} does not load: {e}"))?;
        if let Some(Entry::Run { resumed_from, .. }) = c.entries.first() {
            next = resumed_from.as_ref().map(RunId::to_string);
        }
        out.push((id, c.entries));
        if out.len() > 100 {
            return Err("resume chain loops".into());
        }
    }
    out.reverse();
    Ok(out)
}

fn check(ws: &Ws) -> Result<(), String> {
    let exp = expected();
    // Every journal of every run loads (torn tails allowed, corruption not).
    for e in std::fs::read_dir(ws.state().join("runs")).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let j = e.path().join("journal");
        if e.file_name() != "latest" && j.exists() {
            journal::read(&j).map_err(|err| format!("journal does not load: {err}"))?;
        }
    }
    // The final run ends as a clean run would.
    let rec = ws.record("latest");
    if rec["status"] != "succeeded" {
        return Err(format!("final run: {}", rec["status"]));
    }
    let phases = rec["phases"].as_object().ok_or("no phases")?;
    if phases.len() != exp.phases.len() {
        return Err(format!("{} phases in the final record", phases.len()));
    }
    for (id, p) in phases {
        let (want_status, want_allowed, want_v) = &exp.phases[id];
        let status = p["status"].as_str().unwrap_or("");
        let reason = p["reason"].as_str().unwrap_or("");
        let effective = if status == "skipped" && reason.starts_with("done in run ") {
            "succeeded"
        } else {
            status
        };
        if effective != want_status
            || p["allowed_failure"].as_bool().unwrap_or(false) != *want_allowed
        {
            return Err(format!(
                "phase {id}: {status} ({reason}), clean: {want_status}"
            ));
        }
        if want_status == "succeeded" && p["outputs"]["v"].as_str() != Some(want_v.as_str()) {
            return Err(format!("phase {id}: outputs {}", p["outputs"]));
        }
    }
    // Journaled successes never start again in a later run of the chain.
    let chain = chain(ws)?;
    let order: HashMap<&str, usize> = chain
        .iter()
        .enumerate()
        .map(|(k, (id, _))| (id.as_str(), k))
        .collect();
    let mut succeeded_in: HashMap<String, usize> = HashMap::new();
    for (k, (_, entries)) in chain.iter().enumerate() {
        for e in entries {
            if let Entry::Finished(f) = e
                && f.status == PhaseStatus::Succeeded
            {
                succeeded_in.entry(f.phase.clone()).or_insert(k);
            }
        }
    }
    let mut last_attempt: HashMap<&str, u32> = HashMap::new();
    for l in ledger(ws).iter() {
        if l.kind == "overlap" {
            return Err(format!(
                "two copies of {} ran at once (run {} attempt {})",
                l.phase, l.run, l.attempt
            ));
        }
        if l.kind != "start" {
            continue;
        }
        let Some(&k) = order.get(l.run.as_str()) else {
            return Err(format!(
                "{} started by run {}, not in the chain",
                l.phase, l.run
            ));
        };
        if let Some(&s) = succeeded_in.get(&l.phase)
            && s < k
        {
            return Err(format!(
                "{} succeeded (journaled) in run {} and started again in run {}",
                l.phase, chain[s].0, l.run
            ));
        }
        let prev = last_attempt.insert(&l.phase, l.attempt);
        if prev.is_some_and(|p| p >= l.attempt) {
            return Err(format!(
                "{} attempt {} after attempt {}",
                l.phase,
                l.attempt,
                prev.unwrap_or(0)
            ));
        }
        if l.input.as_ref() != exp.inputs.get(&l.phase) {
            return Err(format!("{} got input {:?}", l.phase, l.input));
        }
    }
    // Nothing of any run is left running.
    for (id, _) in &chain {
        let left: Vec<i32> = orch_core::test_support::marked_processes(id, None)
            .into_iter()
            .filter(|p| super::support::alive(*p))
            .collect();
        if !left.is_empty() {
            return Err(format!("processes of run {id} left: {left:?}"));
        }
    }
    Ok(())
}

/// SplitMix64: a seeded generator, enough for picking crash points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `lo..hi`.
    fn below(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn crash_resume_torture() {
    let trials = env_num("ORCH_TORTURE_TRIALS", 200);
    let seed = env_num("ORCH_TORTURE_SEED", 0);
    expected();
    let started = Instant::now();
    let mut kills = 0;
    for t in 0..trials {
        let mut rng = Rng(seed.wrapping_add(t));
        let crashes: Vec<Crash> = (0..rng.below(1, 4))
            .map(|_| {
                if rng.next().is_multiple_of(2) {
                    Crash::LedgerLines(rng.below(0, 80) as usize)
                } else {
                    Crash::JournalBytes(rng.below(0, 14_000))
                }
            })
            .collect();
        match trial(&crashes) {
            Ok(story) => kills += story.matches("signal: 9").count(),
            Err(e) => panic!("trial {t} (seed {}) failed: {e}", seed.wrapping_add(t)),
        }
    }
    eprintln!(
        "crash-resume torture: {trials}/{trials} trials passed, {kills} SIGKILLs, {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn every_failpoint_crash_resumes_consistently() {
    expected();
    for point in orch_core::failpoint::Failpoint::ALL {
        let name = point.name();
        for n in [1, 4, 19] {
            let story = trial(&[Crash::Failpoint(name, n)])
                .unwrap_or_else(|e| panic!("failpoint {name}:{n}: {e}"));
            // Every point is reached in a run: armed for its first hit, it aborts the run.
            if n == 1 {
                assert!(
                    story.contains("SIGABRT"),
                    "failpoint {name}:1 did not abort the run: {story}"
                );
            }
        }
    }
}

#[test]
fn a_failpoint_aborts_where_it_says() {
    let ws = workspace();
    let out = ws.orch_env(&["run", "-q"], &[("ORCH_FAILPOINT", "after-fsync:2")]);
    assert_eq!(out.code, None, "aborted by a signal: {}", out.stderr);
    assert!(
        out.stderr.contains("failpoint `after-fsync` hit 2 time(s)"),
        "{}",
        out.stderr
    );
    // The run it left is resumable, and its run.json says it never ended.
    let latest = std::fs::read_link(ws.state().join("runs/latest")).expect("latest");
    let rec = ws.record(&latest.to_string_lossy());
    assert_eq!(rec["status"], "running");
    let r = ws.orch(&["run", "-q", "--resume"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    check(&ws).unwrap();
    assert!(Path::new(&ws.state().join("lock")).exists());
}
