//! Durable runs, in process: the journal is durable before a phase is reported, every
//! truncation of a real journal resumes to a consistent state, damage in the middle is
//! detected, and resume follows the boundary (done work skipped, interrupted work again).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orch_core::resume::ResumeState;
use orch_core::test_support::journal::{self, Entry, PhaseResume, encode, header};
use orch_core::{
    Description, Event, Phase, PhaseContext, PhaseError, PhaseId, PhaseOutcome, PhaseSpec,
    PhaseStatus, Pipeline, PlanContext, ResumeFrom, RunControl, RunError, RunEvent, RunId,
    RunOptions, RunRecord, RunStatus, Runner,
};
use orch_core::{JournalMode, MemStorage, StorageFactory};

/// Records each attempt (phase id, attempt) and publishes `v = ID<IN>`, where `IN` is
/// rendered from the outputs of the phases it needs.
struct Probe {
    log: Arc<Mutex<Vec<(String, u32)>>>,
}

#[async_trait]
impl Phase for Probe {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("probe")
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        self.log
            .lock()
            .unwrap()
            .push((ctx.phase_id().to_string(), ctx.attempt()));
        let input = ctx.env_var("IN").unwrap_or("").to_owned();
        Ok(PhaseOutcome::with_outputs([(
            "v",
            format!("{}<{input}>", ctx.phase_id()),
        )]))
    }
}

type Log = Arc<Mutex<Vec<(String, u32)>>>;

/// a -> b1 b2 b3 -> c1 (b1 b2), c2 (b2 b3) -> d; e and f alone; g needs f.
fn pipeline(dir: &Path, log: &Log, tweak: impl Fn(&mut PhaseSpec)) -> Arc<Pipeline> {
    let shape: &[(&str, &[&str])] = &[
        ("a", &[]),
        ("b1", &["a"]),
        ("b2", &["a"]),
        ("b3", &["a"]),
        ("c1", &["b1", "b2"]),
        ("c2", &["b2", "b3"]),
        ("d", &["c1", "c2"]),
        ("e", &[]),
        ("f", &[]),
        ("g", &["f"]),
    ];
    let mut b = Pipeline::builder("durable", dir).jobs(3).var("seed", "1");
    for (id, needs) in shape {
        let mut spec = PhaseSpec::new(PhaseId::new(id).unwrap(), "probe")
            .needs(needs.iter().map(|n| PhaseId::new(n).unwrap()));
        let input: Vec<String> = needs
            .iter()
            .map(|n| format!("${{{{ phases.{n}.outputs.v }}}}"))
            .collect();
        let input = if input.is_empty() {
            "${{ vars.seed }}".to_owned()
        } else {
            input.join(",")
        };
        spec.env.insert("IN".into(), input);
        tweak(&mut spec);
        b = b.custom(spec, Arc::new(Probe { log: log.clone() }));
    }
    Arc::new(b.build().unwrap())
}

fn options(state_dir: &Path, mode: JournalMode) -> RunOptions {
    RunOptions {
        state_dir: Some(state_dir.to_owned()),
        journal: Some(mode),
        ..RunOptions::default()
    }
}

fn outputs(r: &RunRecord) -> BTreeMap<String, String> {
    r.phases
        .iter()
        .map(|(id, p)| {
            (
                id.to_string(),
                p.outputs.get("v").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

fn ran(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
}

fn done_phases(state: &ResumeState) -> BTreeSet<String> {
    state
        .phases
        .iter()
        .filter(|(_, p)| p.done.is_some())
        .map(|(id, _)| id.clone())
        .collect()
}

/// A clean run with a durable journal file: its record and its journal bytes.
async fn clean_run(dir: &Path) -> (RunRecord, Vec<u8>, Arc<Pipeline>, Log) {
    let log: Log = Arc::default();
    let p = pipeline(dir, &log, |_| {});
    let state = dir.join("clean");
    let record = Runner::new(p.clone(), options(&state, JournalMode::Durable))
        .run(RunControl::new())
        .await
        .unwrap();
    assert_eq!(record.status, RunStatus::Succeeded);
    let bytes = std::fs::read(
        state
            .join("runs")
            .join(record.run_id.as_str())
            .join("journal"),
    )
    .unwrap();
    (record, bytes, p, log)
}

/// Puts `bytes` in `state_dir` as the journal of run `id`, which `runs/latest` points at.
fn plant(state_dir: &Path, id: &str, bytes: &[u8]) -> PathBuf {
    let run = state_dir.join("runs").join(id);
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("journal"), bytes).unwrap();
    let latest = state_dir.join("runs").join("latest");
    let _ = std::fs::remove_file(&latest);
    std::os::unix::fs::symlink(id, &latest).unwrap();
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_are_reported_only_once_their_record_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let p = pipeline(dir.path(), &log, |_| {});
    let mem = MemStorage::new();
    let checked = Arc::new(Mutex::new(0usize));
    let mut runner = Runner::new(
        p,
        RunOptions {
            journal_storage: Some(StorageFactory::memory(mem.clone())),
            ..options(&dir.path().join(".orch"), JournalMode::Durable)
        },
    );
    {
        let mem = mem.clone();
        let checked = checked.clone();
        runner.subscribe(Arc::new(move |e: &Event| {
            if let RunEvent::PhaseFinished { phase, status, .. } = &e.kind {
                // What a power cut now would leave: only synced bytes.
                let durable = journal::parse(&mem.durable(), Path::new("mem")).unwrap();
                let found = durable.entries.iter().any(|x| {
                    matches!(x, Entry::Finished(f) if f.phase == phase.as_str() && f.status == *status)
                });
                assert!(found, "{phase} reported {status} before its record was durable");
                *checked.lock().unwrap() += 1;
            }
        }));
    }
    let record = runner.run(RunControl::new()).await.unwrap();
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(*checked.lock().unwrap(), 10);
    // The whole journal is durable at the end, and ends with the run's end.
    let all = journal::parse(&mem.durable(), Path::new("mem")).unwrap();
    assert!(matches!(
        all.entries.last(),
        Some(Entry::RunFinished {
            status: RunStatus::Succeeded,
            ..
        })
    ));
}

// One thread: thousands of short runs would otherwise mostly wait for thread wake-ups.
#[tokio::test]
async fn every_truncation_of_a_real_journal_resumes_consistently() {
    // Thousands of state directories: on tmpfs when there is one, metadata is cheap.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let (clean, bytes, _, _) = clean_run(dir.path()).await;
    let expected = outputs(&clean);
    let log: Log = Arc::default();
    let p = pipeline(dir.path(), &log, |_| {});
    let all: BTreeSet<String> = expected.keys().cloned().collect();
    let mut resumed_with_work = 0;
    let t0 = std::time::Instant::now();
    for cut in 0..=bytes.len() {
        let state_dir = dir.path().join(format!("cut{cut}"));
        plant(&state_dir, "R0", &bytes[..cut]);
        let prefix = journal::parse(&bytes[..cut], Path::new("j"))
            .unwrap_or_else(|e| panic!("cut {cut}: a truncation must load: {e}"));
        let done = done_phases(&ResumeState::from_entries(&prefix.entries));
        log.lock().unwrap().clear();
        let record = Runner::new(
            p.clone(),
            RunOptions {
                resume: Some(ResumeFrom::Latest),
                ..options(&state_dir, JournalMode::NoSync)
            },
        )
        .run(RunControl::new())
        .await
        .unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        assert_eq!(record.status, RunStatus::Succeeded, "cut {cut}");
        assert_eq!(outputs(&record), expected, "cut {cut}: outputs");
        // Done work is not repeated; everything else runs exactly once.
        let mut ran = ran(&log);
        ran.sort();
        let want: Vec<String> = all.difference(&done).cloned().collect();
        assert_eq!(ran, want, "cut {cut}");
        for (id, p) in &record.phases {
            if done.contains(id.as_str()) {
                assert_eq!(p.status, PhaseStatus::Skipped, "cut {cut} {id}");
                let reason = format!("done in run {}", clean.run_id);
                assert_eq!(p.reason.as_deref(), Some(reason.as_str()), "cut {cut} {id}");
            } else {
                assert_eq!(p.status, PhaseStatus::Succeeded, "cut {cut} {id}");
            }
        }
        if !done.is_empty() && done.len() < all.len() {
            resumed_with_work += 1;
        }
        // The resumed run's own journal loads and says the same.
        let own = state_dir
            .join("runs")
            .join(record.run_id.as_str())
            .join("journal");
        let own = journal::read(&own).unwrap();
        assert_eq!(own.torn, 0);
        let state = ResumeState::from_entries(&own.entries);
        assert_eq!(
            done_phases(&state),
            all,
            "cut {cut}: all done after the resume"
        );
        std::fs::remove_dir_all(&state_dir).unwrap();
    }
    eprintln!(
        "resumed from {} truncations of a {}-byte journal in {:.1}s",
        bytes.len() + 1,
        bytes.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(resumed_with_work > 100, "{resumed_with_work}");
}

/// Where the last record of a journal starts.
fn last_record_start(bytes: &[u8]) -> usize {
    let mut pos = 12;
    let mut last = pos;
    while pos < bytes.len() {
        last = pos;
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 12 + len;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_before_the_tail_is_detected_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, p, _) = clean_run(dir.path()).await;
    let end = last_record_start(&bytes);
    // Every byte, flipped.
    for at in 0..end {
        let mut d = bytes.clone();
        d[at] ^= 0xff;
        assert!(
            journal::parse(&d, Path::new("j")).is_err(),
            "flip at {at} of {} not detected",
            bytes.len()
        );
    }
    // Random bytes at random places.
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let at = rng.usize(0..end);
        let v = rng.u8(..);
        if v == bytes[at] {
            continue;
        }
        let mut d = bytes.clone();
        d[at] = v;
        assert!(journal::parse(&d, Path::new("j")).is_err(), "{at}={v}");
    }
    // Resuming a damaged journal is refused, naming the offset.
    let mut d = bytes.clone();
    d[end / 2] ^= 0x01;
    let state_dir = dir.path().join("damaged");
    plant(&state_dir, "R0", &d);
    let err = Runner::new(
        p,
        RunOptions {
            resume: Some(ResumeFrom::Latest),
            ..options(&state_dir, JournalMode::NoSync)
        },
    )
    .run(RunControl::new())
    .await
    .unwrap_err();
    assert!(matches!(err, RunError::Resume(_)), "{err:?}");
    assert!(err.to_string().contains("is corrupt at byte"), "{err}");
}

fn journal_of(entries: &[Entry]) -> Vec<u8> {
    let mut b = header().to_vec();
    for e in entries {
        encode(e, &mut b);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_phases_run_again_with_the_next_attempt_number() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _, _) = clean_run(dir.path()).await;
    // Keep the clean run's successes of a and e, and pretend b1 was on its third attempt
    // when the process died.
    let full = journal::parse(&bytes, Path::new("j")).unwrap();
    let mut entries: Vec<Entry> = full
        .entries
        .iter()
        .filter(|e| match e {
            Entry::Run { .. } => true,
            Entry::Started { phase, .. } => phase == "a" || phase == "e",
            Entry::Finished(f) => f.phase == "a" || f.phase == "e",
            _ => false,
        })
        .cloned()
        .collect();
    entries.push(Entry::Started {
        phase: "b1".into(),
        attempt: 3,
        at: "2026-01-01T00:00:00Z".into(),
    });
    let state_dir = dir.path().join("s");
    plant(&state_dir, "R0", &journal_of(&entries));
    let log: Log = Arc::default();
    let p = pipeline(dir.path(), &log, |_| {});
    let record = Runner::new(
        p,
        RunOptions {
            resume: Some(ResumeFrom::Latest),
            ..options(&state_dir, JournalMode::NoSync)
        },
    )
    .run(RunControl::new())
    .await
    .unwrap();
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(record.resumed_from.as_ref().map(RunId::as_str), Some("R0"));
    let attempts: BTreeMap<String, u32> = log.lock().unwrap().iter().cloned().collect();
    assert!(!attempts.contains_key("a") && !attempts.contains_key("e"));
    assert_eq!(attempts.get("b1"), Some(&4), "{attempts:?}");
    assert_eq!(attempts.get("b2"), Some(&1));
    assert_eq!(record.phases["b1"].attempts, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_definition_or_input_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let (clean, bytes, _, _) = clean_run(dir.path()).await;
    let resume = |tweak: fn(&mut PhaseSpec)| {
        let dir = dir.path().to_owned();
        let bytes = bytes.clone();
        async move {
            let state_dir = dir.join(format!("s{}", fastrand::u32(..)));
            plant(&state_dir, "R0", &bytes);
            let log: Log = Arc::default();
            let p = pipeline(&dir, &log, tweak);
            let record = Runner::new(
                p,
                RunOptions {
                    resume: Some(ResumeFrom::Latest),
                    ..options(&state_dir, JournalMode::NoSync)
                },
            )
            .run(RunControl::new())
            .await
            .unwrap();
            let mut ran = ran(&log);
            ran.sort();
            (record, ran)
        }
    };
    // Nothing changed: nothing runs, outputs are restored.
    let (r, ran) = resume(|_| {}).await;
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(outputs(&r), outputs(&clean));
    // b1's env changed, not its output: only b1 runs again.
    let (_, ran) = resume(|s| {
        if s.id.as_str() == "b1" {
            s.env.insert("EXTRA".into(), "1".into());
        }
    })
    .await;
    assert_eq!(ran, ["b1"]);
    // a reads a var whose template changed: a and everything reading its output runs.
    let (r, ran) = resume(|s| {
        if s.id.as_str() == "a" {
            s.env.insert("IN".into(), "${{ vars.seed }}!".into());
        }
    })
    .await;
    assert_eq!(ran, ["a", "b1", "b2", "b3", "c1", "c2", "d"]);
    assert_eq!(r.phases["d"].status, PhaseStatus::Succeeded);
    assert_eq!(r.phases["e"].status, PhaseStatus::Skipped);
    // Policy is not definition: retries and tags do not make a phase run again.
    let (_, ran) = resume(|s| {
        s.retries = Some(5);
        s.tags.push("x".into());
    })
    .await;
    assert!(ran.is_empty(), "{ran:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_carries_what_it_inherited_into_its_own_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _, _) = clean_run(dir.path()).await;
    // R0 finished only a; R1 resumed it and died before reaching anything.
    let full = journal::parse(&bytes, Path::new("j")).unwrap();
    let r0: Vec<Entry> = full
        .entries
        .iter()
        .filter(|e| match e {
            Entry::Run { .. } => true,
            Entry::Started { phase, .. } => phase == "a",
            Entry::Finished(f) => f.phase == "a",
            _ => false,
        })
        .cloned()
        .collect();
    let inherited = ResumeState::from_entries(&r0).phases;
    assert!(inherited["a"].done.is_some());
    let r1 = vec![
        Entry::Run {
            run_id: RunId::parse("R1").unwrap(),
            pipeline: "durable".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            resumed_from: Some(RunId::parse("R0").unwrap()),
            pid: 1,
        },
        Entry::Inherited {
            phases: inherited.clone(),
        },
    ];
    let state_dir = dir.path().join("s");
    plant(&state_dir, "R0", &journal_of(&r0));
    plant(&state_dir, "R1", &journal_of(&r1));
    let log: Log = Arc::default();
    let record = Runner::new(
        pipeline(dir.path(), &log, |_| {}),
        RunOptions {
            resume: Some(ResumeFrom::Latest),
            ..options(&state_dir, JournalMode::NoSync)
        },
    )
    .run(RunControl::new())
    .await
    .unwrap();
    assert!(!ran(&log).contains(&"a".to_owned()));
    // The reason names the run where the work was done, not the one resumed.
    assert_eq!(
        record.phases["a"].reason.as_deref(),
        Some(format!("done in run {}", record_run(&inherited)).as_str())
    );
}

/// Fails every attempt.
struct Fails;

#[async_trait]
impl Phase for Fails {
    fn describe(&self, _: &PlanContext<'_>) -> Description {
        Description::new("fails")
    }

    async fn run(&self, _: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        Err(PhaseError::failed("no"))
    }
}

fn run_header(id: &str) -> Entry {
    Entry::Run {
        run_id: RunId::parse(id).unwrap(),
        pipeline: "durable".into(),
        started_at: "2026-01-01T00:00:00Z".into(),
        resumed_from: None,
        pid: 1,
    }
}

async fn resume_in(state_dir: &Path, p: Arc<Pipeline>) -> Result<RunRecord, RunError> {
    Runner::new(
        p,
        RunOptions {
            resume: Some(ResumeFrom::Latest),
            ..options(state_dir, JournalMode::NoSync)
        },
    )
    .run(RunControl::new())
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_attempt_numbers_never_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let started = |attempt: u32| Entry::Started {
        phase: "b1".into(),
        attempt,
        at: "2026-01-01T00:00:00Z".into(),
    };
    // An attempt number with no next one: the record is refused, naming its offset.
    let state_dir = dir.path().join("max");
    let offset = journal_of(&[run_header("R0")]).len();
    plant(
        &state_dir,
        "R0",
        &journal_of(&[run_header("R0"), started(u32::MAX)]),
    );
    let log: Log = Arc::default();
    let err = resume_in(&state_dir, pipeline(dir.path(), &log, |_| {}))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("is corrupt at byte {offset}")) && text.contains("4294967295"),
        "{text}"
    );
    assert!(ran(&log).is_empty());

    // The highest number a journal may hold: the phase fails rather than start attempt 0.
    let state_dir = dir.path().join("last");
    plant(
        &state_dir,
        "R0",
        &journal_of(&[run_header("R0"), started(journal::MAX_ATTEMPT)]),
    );
    let log: Log = Arc::default();
    let record = resume_in(&state_dir, pipeline(dir.path(), &log, |_| {}))
        .await
        .unwrap();
    let b1 = &record.phases["b1"];
    assert_eq!(b1.status, PhaseStatus::Failed);
    assert_eq!(b1.attempts, journal::MAX_ATTEMPT);
    assert!(
        b1.reason
            .as_deref()
            .unwrap_or("")
            .contains("no attempt number left"),
        "{b1:?}"
    );
    let attempts = log.lock().unwrap().clone();
    assert!(attempts.iter().all(|(_, n)| *n >= 1), "{attempts:?}");
    assert!(!attempts.iter().any(|(p, _)| p == "b1"), "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_failure_count_saturates() {
    let dir = tempfile::tempdir().unwrap();
    let inherited = BTreeMap::from([(
        "only".to_owned(),
        PhaseResume {
            done: None,
            attempts: 3,
            failures: u32::MAX,
        },
    )]);
    // Folding more failed attempts onto it stays at the top.
    let mut state = ResumeState::from_entries(&[Entry::Inherited {
        phases: inherited.clone(),
    }]);
    state.apply(&Entry::AttemptFailed {
        phase: "only".into(),
        attempt: 4,
        error: "no".into(),
    });
    assert_eq!(state.phases["only"].failures, u32::MAX);
    // A run resuming it: the failing attempt is not retried (the count does not wrap to 0).
    let state_dir = dir.path().join("s");
    plant(
        &state_dir,
        "R0",
        &journal_of(&[run_header("R0"), Entry::Inherited { phases: inherited }]),
    );
    let mut spec = PhaseSpec::new(PhaseId::new("only").unwrap(), "fails");
    spec.retries = Some(3);
    let p = Arc::new(
        Pipeline::builder("durable", dir.path())
            .custom(spec, Arc::new(Fails))
            .build()
            .unwrap(),
    );
    let record = resume_in(&state_dir, p).await.unwrap();
    let only = &record.phases["only"];
    assert_eq!(only.status, PhaseStatus::Failed);
    assert_eq!(only.attempts, 4, "{only:?}");
}

fn record_run(phases: &BTreeMap<String, PhaseResume>) -> String {
    phases["a"].done.as_ref().unwrap().run.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_without_a_run_or_of_another_pipeline_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Arc::default();
    let p = pipeline(dir.path(), &log, |_| {});
    let err = Runner::new(
        p.clone(),
        RunOptions {
            resume: Some(ResumeFrom::Latest),
            ..options(&dir.path().join("empty"), JournalMode::NoSync)
        },
    )
    .run(RunControl::new())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no run in"), "{err}");
    let other = journal_of(&[Entry::Run {
        run_id: RunId::parse("R0").unwrap(),
        pipeline: "another".into(),
        started_at: "t".into(),
        resumed_from: None,
        pid: 1,
    }]);
    let state_dir = dir.path().join("other");
    plant(&state_dir, "R0", &other);
    let err = Runner::new(
        p,
        RunOptions {
            resume: Some(ResumeFrom::Latest),
            ..options(&state_dir, JournalMode::NoSync)
        },
    )
    .run(RunControl::new())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("ran pipeline `another`"), "{err}");
    assert!(ran(&log).is_empty());
}
