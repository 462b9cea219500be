//! The output pipes of command phases: with a cgroup per attempt, an attempt whose processes
//! are all gone leaves its pipes to a later one. Whatever the pipes carried stays with the
//! attempt that wrote it: read to the end before they are reused, and nothing a phase left
//! running writes into a later phase's output.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_core::{
    Event, PhaseId, PhaseSpec, PhaseStatus, Pipeline, RunControl, RunEvent, RunOptions, RunSpec,
    Runner, Stream,
};

/// Each phase's output lines (stream, line), in order.
type Lines = BTreeMap<String, Vec<(Stream, String)>>;

/// Runs `phases` (id, script) as a chain, one at a time; returns each phase's output lines,
/// and checks every phase succeeded.
async fn chain(phases: &[(&str, &str)]) -> Lines {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Pipeline::builder("pipes", dir.path()).jobs(1);
    let mut before: Option<PhaseId> = None;
    for (id, script) in phases {
        let mut spec = PhaseSpec::new(PhaseId::new(id).unwrap(), "command");
        spec.run = Some(RunSpec::Shell((*script).to_owned()));
        if let Some(prev) = before.take() {
            spec = spec.needs([prev]);
        }
        before = Some(spec.id.clone());
        b = b.phase(spec);
    }
    let options = RunOptions {
        write_files: false,
        ..RunOptions::default()
    };
    let mut runner = Runner::new(Arc::new(b.build().unwrap()), options);
    let lines: Arc<Mutex<Lines>> = Arc::default();
    let sink = lines.clone();
    runner.subscribe(Arc::new(move |e: &Event| {
        if let RunEvent::PhaseOutput {
            phase,
            stream,
            line,
        } = &e.kind
        {
            let mut lines = sink.lock().unwrap();
            let phase = lines.entry(phase.to_string()).or_default();
            phase.push((*stream, line.clone()));
        }
    }));
    let record = tokio::time::timeout(Duration::from_secs(60), runner.run(RunControl::new()))
        .await
        .expect("the run finished")
        .unwrap();
    for (id, phase) in &record.phases {
        assert_eq!(phase.status, PhaseStatus::Succeeded, "{id}: {phase:?}");
    }
    Arc::try_unwrap(lines).unwrap().into_inner().unwrap()
}

/// The pipe its stdout is, as `pipe:[INODE]`.
const PIPE: &str = "readlink /proc/$$/fd/1";

#[tokio::test]
async fn a_reused_pipe_carries_only_its_own_attempts_bytes() {
    // `a` fills its pipes several times over and exits right after its last bytes (no
    // newline), so they may still be in the pipe when the engine learns it exited.
    let a = format!(
        "{PIPE}; i=0; while [ $i -lt 4000 ]; do echo \"a-out-$i-................................................\"; \
         i=$((i+1)); done; echo a-err >&2; printf a-tail; printf a-err-tail >&2"
    );
    let b = format!("{PIPE}; echo b-out; echo b-err >&2");
    let c = format!("{PIPE}; printf c-tail");
    let out = chain(&[("a", &a), ("b", &b), ("c", &c)]).await;

    // Each stream of a phase in order (the two streams are read apart, so how their lines
    // interleave is not kept).
    let lines = |phase: &str, stream: Stream| -> Vec<&str> {
        out[phase]
            .iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, l)| l.as_str())
            .collect()
    };
    let stdout = lines("a", Stream::Stdout);
    assert_eq!(
        stdout.len(),
        4002,
        "every line of a, its pipe first and its tail last"
    );
    for (i, line) in stdout[1..4001].iter().enumerate() {
        assert!(line.starts_with(&format!("a-out-{i}-")), "{line}");
    }
    assert_eq!(stdout[4001], "a-tail");
    assert_eq!(lines("a", Stream::Stderr), ["a-err", "a-err-tail"]);
    assert_eq!(lines("b", Stream::Stdout)[1..], ["b-out"]);
    assert_eq!(lines("b", Stream::Stderr), ["b-err"]);
    assert_eq!(lines("c", Stream::Stdout)[1..], ["c-tail"]);
    assert!(lines("c", Stream::Stderr).is_empty());
    let pipe = |phase: &str| lines(phase, Stream::Stdout)[0].to_owned();
    if orch_core::cgroup::own_cgroup().is_some() {
        // One attempt after another, all on the same pipe.
        assert!(pipe("a").starts_with("pipe:["), "{}", pipe("a"));
        assert_eq!(pipe("b"), pipe("a"));
        assert_eq!(pipe("c"), pipe("a"));
    }
}

#[tokio::test]
async fn what_a_phase_left_running_never_writes_into_a_later_phase() {
    // `a` leaves a process that would write on its pipes after `a` is over; the pipes go to
    // `b`, which runs for longer than that process would wait.
    let out = chain(&[
        (
            "a",
            "(sleep 0.3; echo late-from-a; echo late-from-a >&2) & echo a",
        ),
        ("b", "sleep 0.8; echo b"),
    ])
    .await;
    assert_eq!(out["a"], [(Stream::Stdout, "a".to_owned())]);
    assert_eq!(out["b"], [(Stream::Stdout, "b".to_owned())]);
}
