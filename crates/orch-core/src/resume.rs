//! Resuming a run: what the journal of an earlier run says is done, and the fingerprint
//! that decides whether a done phase is still done.
//!
//! # The boundary
//! - A phase whose success is in the journal (durable before it was reported) is not run
//!   again while its fingerprint is unchanged: it ends `skipped` with the reason
//!   "done in run X" and its outputs and artifacts are restored for the phases after it.
//! - A phase that was running when the run died, or that failed, was cancelled or never
//!   started, runs again. Its attempt number goes on from the journal (`ORCH_ATTEMPT`
//!   never repeats); attempts cut short by a crash or an interruption do not count against
//!   `retries`, failed ones do until the phase ends failed.
//! - So completed work is never repeated and interrupted work runs at least once more:
//!   the work of a phase should be idempotent.
//!
//! # The fingerprint
//! sha256 over the phase's kind, `run`, `with` (keys sorted), `env` (sorted), `cwd`,
//! `when`, `assert`, the names of its secrets (never their values), and the values of
//! every var and upstream output its templates read (`${{ vars.X }}`,
//! `${{ phases.P.outputs.K }}`; `${{ run.id }}` is left out, it changes every run). A
//! phase with `when` or `assert` (CEL sees every var and the outputs of its needs) also
//! hashes all vars and all outputs of its needs. Timeouts, retries, tags and descriptions
//! are policy, not definition: changing them does not make a phase run again.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::ids::{PhaseId, RunId};
use crate::interpolate::{Reference, Scope};
use crate::journal::{Done, Entry, PhaseResume};
use crate::record::{PhaseStatus, RunStatus};
use crate::spec::{PhaseSpec, RunSpec};

/// What the journal of a run says, folded for resuming it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResumeState {
    /// The run the journal belongs to.
    pub run_id: Option<RunId>,
    /// Its pipeline.
    pub pipeline: Option<String>,
    /// The run it resumed.
    pub resumed_from: Option<RunId>,
    /// How it ended, if it did.
    pub finished: Option<RunStatus>,
    /// Per phase id.
    pub phases: BTreeMap<String, PhaseResume>,
}

impl ResumeState {
    /// Folds journal entries, in order.
    pub fn from_entries(entries: &[Entry]) -> Self {
        let mut s = Self::default();
        for e in entries {
            s.apply(e);
        }
        s
    }

    /// Applies one entry.
    pub fn apply(&mut self, e: &Entry) {
        match e {
            Entry::Run {
                run_id,
                pipeline,
                resumed_from,
                ..
            } => {
                self.run_id = Some(run_id.clone());
                self.pipeline = Some(pipeline.clone());
                self.resumed_from = resumed_from.clone();
            }
            Entry::Inherited { phases } => self.phases = phases.clone(),
            Entry::Started { phase, attempt, .. } => {
                let p = self.phases.entry(phase.clone()).or_default();
                p.attempts = p.attempts.max(*attempt);
                // It runs again: an earlier success no longer describes it.
                p.done = None;
            }
            Entry::AttemptFailed { phase, .. } => {
                let p = self.phases.entry(phase.clone()).or_default();
                p.failures = p.failures.saturating_add(1);
            }
            Entry::Finished(f) => {
                let p = self.phases.entry(f.phase.clone()).or_default();
                p.attempts = p.attempts.max(f.attempts);
                let run = match (&f.done_in, f.status) {
                    (Some(r), _) => Some(r.clone()),
                    (None, PhaseStatus::Succeeded) => self.run_id.clone(),
                    _ => None,
                };
                if let (Some(run), Some(fp)) = (run, &f.fingerprint) {
                    p.done = Some(Done {
                        run,
                        fingerprint: fp.clone(),
                        outputs: f.outputs.clone(),
                        artifacts: f.artifacts.clone(),
                        exit_code: f.exit_code,
                    });
                    p.failures = 0;
                } else if f.status.is_failure() {
                    // It used its retries and ended: a later resume gives it a fresh budget.
                    p.failures = 0;
                }
            }
            Entry::RunFinished { status, .. } => self.finished = Some(*status),
            Entry::Policy { .. } => {}
        }
    }

    /// What is known of `phase`.
    pub fn phase(&self, phase: &str) -> Option<&PhaseResume> {
        self.phases.get(phase)
    }
}

/// Fingerprints a phase's definition and the inputs it reads, looked up in `scope`.
pub fn fingerprint(spec: &PhaseSpec, needs: &[PhaseId], scope: &dyn Scope) -> String {
    // The fields are gathered and hashed at once: the same bytes as hashing them one by
    // one, without the hasher's work per piece.
    let mut bytes: Vec<u8> = Vec::with_capacity(256);
    let mut field = |name: &str, value: &str| {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&(value.len() as u64).to_le_bytes());
        bytes.extend_from_slice(value.as_bytes());
    };
    field("v", "1");
    field("kind", &spec.kind);
    let mut templates: Vec<&str> = Vec::new();
    match &spec.run {
        None => {}
        Some(RunSpec::Shell(s)) => {
            field("run.sh", s);
            templates.push(s);
        }
        Some(RunSpec::Argv(argv)) => {
            for a in argv {
                field("run.arg", a);
                templates.push(a);
            }
        }
    }
    let with = spec.with.table();
    if with.is_empty() {
        // What `canonical` gives for it, without building it.
        field("with", "{}");
    } else {
        field("with", &canonical(with));
    }
    with.values()
        .for_each(|v| collect_strings(v, &mut templates));
    let mut env: Vec<(&String, &String)> = spec.env.iter().collect();
    env.sort();
    for (k, v) in env {
        field("env.key", k);
        field("env.value", v);
        templates.push(v);
    }
    if let Some(c) = &spec.cwd {
        field("cwd", c);
        templates.push(c);
    }
    if let Some(w) = &spec.when {
        field("when", w);
    }
    for a in &spec.assert {
        field("assert", a);
    }
    let mut secrets: Vec<&String> = spec.secrets.iter().collect();
    secrets.sort();
    for s in secrets {
        field("secret", s);
    }
    // The values it reads.
    let mut refs: Vec<(String, Reference)> = templates
        .iter()
        .filter(|t| t.contains("${{"))
        .filter_map(|t| crate::interpolate::references(t).ok())
        .flatten()
        .filter(|r| *r != Reference::RunId)
        .map(|r| (r.to_string(), r))
        .collect();
    refs.sort_by(|a, b| a.0.cmp(&b.0));
    refs.dedup_by(|a, b| a.1 == b.1);
    for (name, r) in &refs {
        let v = scope.lookup(r);
        field(name, v.as_deref().unwrap_or("\u{0}<missing>"));
    }
    if spec.when.is_some() || !spec.assert.is_empty() {
        let mut vars = scope.vars();
        vars.sort();
        for (k, v) in vars {
            field("var", &k);
            field("var.value", &v);
        }
        for n in needs {
            for (k, v) in scope.phase_outputs(n.as_str()).unwrap_or_default() {
                field(&format!("phases.{n}.outputs"), &k);
                field("output.value", &v);
            }
        }
    }
    let digest = Sha256::digest(&bytes);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// A stable text form of a TOML table: sorted keys, nested tables too.
fn canonical(t: &toml::Table) -> String {
    fn table(t: &toml::Table, out: &mut String) {
        let mut keys: Vec<&String> = t.keys().collect();
        keys.sort();
        out.push('{');
        for k in keys {
            out.push_str(&serde_json::to_string(k).unwrap_or_default());
            out.push(':');
            walk(&t[k.as_str()], out);
            out.push(',');
        }
        out.push('}');
    }
    fn walk(v: &toml::Value, out: &mut String) {
        match v {
            toml::Value::Table(t) => table(t, out),
            toml::Value::Array(a) => {
                out.push('[');
                for x in a {
                    walk(x, out);
                    out.push(',');
                }
                out.push(']');
            }
            toml::Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    table(t, &mut out);
    out
}

fn collect_strings<'a>(v: &'a toml::Value, out: &mut Vec<&'a str>) {
    match v {
        toml::Value::String(s) => out.push(s),
        toml::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::errors::InterpolationError;
    use crate::journal::Finished;

    struct S(BTreeMap<String, String>);
    impl Scope for S {
        fn lookup(&self, r: &Reference) -> Result<Cow<'_, str>, InterpolationError> {
            self.0
                .get(&r.to_string())
                .map(|v| Cow::Borrowed(v.as_str()))
                .ok_or(InterpolationError::UnknownVar {
                    name: r.to_string(),
                })
        }
    }

    fn scope(pairs: &[(&str, &str)]) -> S {
        S(pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect())
    }

    fn spec(run: &str) -> PhaseSpec {
        PhaseSpec::command(PhaseId::new("p").unwrap(), RunSpec::Shell(run.into()))
    }

    #[test]
    fn fingerprint_follows_definition_and_inputs() {
        let s = scope(&[("vars.v", "1"), ("phases.a.outputs.x", "X")]);
        let base = fingerprint(&spec("echo ${{ vars.v }}"), &[], &s);
        assert_eq!(base, fingerprint(&spec("echo ${{ vars.v }}"), &[], &s));
        assert!(base.starts_with("sha256:"));
        assert_ne!(base, fingerprint(&spec("echo  ${{ vars.v }}"), &[], &s));
        let s2 = scope(&[("vars.v", "2")]);
        assert_ne!(base, fingerprint(&spec("echo ${{ vars.v }}"), &[], &s2));
        // Unread values do not matter; run.id does not either.
        let s3 = scope(&[("vars.v", "1"), ("vars.other", "z")]);
        assert_eq!(base, fingerprint(&spec("echo ${{ vars.v }}"), &[], &s3));
        let a = fingerprint(&spec("echo ${{ run.id }}"), &[], &s);
        assert_eq!(a, fingerprint(&spec("echo ${{ run.id }}"), &[], &s2));
        let out = fingerprint(
            &spec("echo ${{ phases.a.outputs.x }}"),
            &[PhaseId::new("a").unwrap()],
            &s,
        );
        let s4 = scope(&[("phases.a.outputs.x", "Y")]);
        assert_ne!(
            out,
            fingerprint(
                &spec("echo ${{ phases.a.outputs.x }}"),
                &[PhaseId::new("a").unwrap()],
                &s4
            )
        );
        let mut with_env = spec("echo ${{ vars.v }}");
        with_env.env.insert("A".into(), "1".into());
        assert_ne!(base, fingerprint(&with_env, &[], &s));
        let mut policy = spec("echo ${{ vars.v }}");
        policy.retries = Some(3);
        policy.tags.push("t".into());
        assert_eq!(base, fingerprint(&policy, &[], &s));
    }

    #[test]
    fn with_tables_hash_independently_of_key_order() {
        let mut a = spec("x");
        let mut b = spec("x");
        let ta: toml::Table = toml::from_str("k1 = 1\nk2 = \"v\"").unwrap();
        let tb: toml::Table = toml::from_str("k2 = \"v\"\nk1 = 1").unwrap();
        a.with = crate::spec::WithTable::new(ta);
        b.with = crate::spec::WithTable::new(tb);
        let s = scope(&[]);
        assert_eq!(fingerprint(&a, &[], &s), fingerprint(&b, &[], &s));
    }

    /// Journals of earlier builds must keep resuming: the fingerprint of a phase must not
    /// change with the code that computes it.
    #[test]
    fn fingerprint_is_stable_across_builds() {
        let s = scope(&[
            ("vars.v", "1"),
            ("phases.a.outputs.x", "X"),
            ("vars.w", "W"),
        ]);
        let mut a =
            spec("echo ${{ vars.v }} ${{ phases.a.outputs.x }} ${{ vars.v }} ${{ run.id }}");
        let t: toml::Table = toml::from_str(
            "k2 = \"${{ vars.w }}\"\nk1 = 1\n[n]\nz = [1, \"a\\\"b\"]\ny = { q = true }",
        )
        .unwrap();
        a.with = crate::spec::WithTable::new(t);
        a.env.insert("B".into(), "${{ vars.w }}".into());
        a.env.insert("A".into(), "x".into());
        a.secrets = vec!["Z".into(), "Y".into()];
        a.cwd = Some("d/${{ vars.v }}".into());
        a.when = Some("true".into());
        let needs = [PhaseId::new("a").unwrap()];
        assert_eq!(
            fingerprint(&a, &needs, &s),
            "sha256:ba9a2ecc62b37eae765dcf59e48ff74a4ee1f6604faf13ae8070bfe0d3477d43"
        );
        let b = PhaseSpec::new(PhaseId::new("q").unwrap(), "noop");
        assert_eq!(
            fingerprint(&b, &[], &s),
            "sha256:98574886ab7e2f4eec6c745b04705b5da72b3447d764272af627ed88f313899d"
        );
    }

    fn finished(phase: &str, status: PhaseStatus, fp: Option<&str>) -> Entry {
        Entry::Finished(Box::new(Finished {
            phase: phase.into(),
            kind: "command".into(),
            status,
            attempts: 1,
            exit_code: None,
            reason: None,
            cause: None,
            allowed_failure: false,
            outputs: BTreeMap::new(),
            artifacts: Vec::new(),
            fingerprint: fp.map(Into::into),
            done_in: None,
            started_at: None,
            finished_at: "t".into(),
            duration_ms: None,
        }))
    }

    #[test]
    fn state_folds_attempts_failures_and_successes() {
        let run = RunId::parse("r1").unwrap();
        let started = |p: &str, a| Entry::Started {
            phase: p.into(),
            attempt: a,
            at: "t".into(),
        };
        let s = ResumeState::from_entries(&[
            Entry::Run {
                run_id: run.clone(),
                pipeline: "x".into(),
                started_at: "t".into(),
                resumed_from: None,
                pid: 1,
            },
            started("a", 1),
            finished("a", PhaseStatus::Succeeded, Some("fa")),
            started("b", 1),
            Entry::AttemptFailed {
                phase: "b".into(),
                attempt: 1,
                error: "e".into(),
            },
            started("b", 2),
            started("c", 1),
            finished("c", PhaseStatus::Failed, Some("fc")),
        ]);
        let a = s.phase("a").unwrap();
        assert_eq!(a.done.as_ref().map(|d| d.run.clone()), Some(run));
        let b = s.phase("b").unwrap();
        assert_eq!((b.attempts, b.failures, b.done.is_none()), (2, 1, true));
        let c = s.phase("c").unwrap();
        assert_eq!((c.attempts, c.failures, c.done.is_none()), (1, 0, true));
        // A phase that starts again loses its earlier success.
        let mut s2 = s.clone();
        s2.apply(&started("a", 2));
        assert!(s2.phase("a").unwrap().done.is_none());
    }
}
