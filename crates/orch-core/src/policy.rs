//! Policy: which phases may start, decided by Rego rules (`[policy]` in the pipeline file).
//!
//! The policy files are read and compiled when the pipeline is loaded (a syntax error is a
//! load error with its file, line and column). Before a phase first starts in a run, the
//! engine evaluates `data.orch.allow` and `data.orch.deny` over an [`Input`] document:
//! the phase may start only when `allow` is `true` and `deny` (a set of messages) is empty.
//! Anything else (undefined, false, an error, a policy that runs past its time limit)
//! denies it. Without `[policy]` nothing is evaluated and every phase is allowed.
//!
//! ```
//! use orch_core::policy::{Policy, Input, PhaseInput, RunInput};
//! let policy = Policy::from_sources(
//!     vec![("p.rego".into(), r#"
//!         package orch
//!         default allow := false
//!         allow if input.phase.kind == "command"
//!         deny contains "no deploys on friday" if input.phase.tags[_] == "friday"
//!     "#.into())],
//!     std::time::Duration::from_secs(1),
//! )?;
//! let input = Input {
//!     phase: PhaseInput { id: "unit".into(), kind: "command".into(), ..PhaseInput::default() },
//!     run: RunInput::default(),
//!     git: None,
//! };
//! let decision = policy.evaluator().decide(&input.to_json())?;
//! assert!(decision.permits());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::pipeline::Pipeline;

/// The Rego package a policy's rules live in.
pub const PACKAGE: &str = "orch";
/// The rule that must be `true` for a phase to start.
pub const ALLOW_RULE: &str = "data.orch.allow";
/// The rule whose messages deny a phase.
pub const DENY_RULE: &str = "data.orch.deny";

/// What regorus says when asked for a rule the policy does not define.
const NO_SUCH_RULE: &str = "not a valid rule path";
/// How long one evaluation may take unless `[policy] timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// `[policy]` as declared.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySpec {
    /// Rego files: paths or glob patterns relative to the pipeline's directory.
    pub files: Vec<String>,
    /// Limit for one evaluation (both rules of one phase).
    pub timeout: Duration,
}

/// A policy that cannot be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A pattern matched no file.
    #[error("policy pattern `{pattern}` matches no file in {dir}")]
    NoFiles {
        /// The pattern as declared.
        pattern: String,
        /// The directory it was matched against.
        dir: PathBuf,
    },
    /// A pattern is not a valid glob.
    #[error("policy pattern `{pattern}` is invalid: {message}")]
    Pattern {
        /// The pattern as declared.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// A policy file could not be read.
    #[error("cannot read policy file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A policy file does not parse or compile.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
        /// What is wrong.
        message: String,
    },
    /// The policy as a whole does not compile (no position known).
    #[error("policy does not compile: {message}")]
    Compile {
        /// What is wrong.
        message: String,
    },
    /// No policy file declares `package orch`.
    #[error("no policy file declares `package orch` (found: {found})")]
    NoPackage {
        /// The packages found.
        found: String,
    },
    /// Evaluation failed (a runtime error, or `deny` is not a set of strings).
    #[error("policy evaluation failed: {message}")]
    Eval {
        /// What went wrong.
        message: String,
    },
    /// Evaluation ran past its time limit.
    #[error("policy evaluation took longer than {}", humantime::format_duration(*limit))]
    Timeout {
        /// The limit.
        limit: Duration,
    },
}

/// What the policy decided for one phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Decision {
    /// `data.orch.allow` was `true`.
    pub allow: bool,
    /// The messages of `data.orch.deny`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Decision {
    /// Whether the phase may start.
    pub fn permits(&self) -> bool {
        self.allow && self.deny.is_empty()
    }

    /// Why the phase may not start: the deny messages, or that `allow` is not true.
    pub fn reason(&self) -> String {
        if self.deny.is_empty() {
            format!("denied by policy: `{ALLOW_RULE}` is not true")
        } else {
            format!("denied by policy: {}", self.deny.join("; "))
        }
    }
}

/// `input.phase`: the phase about to start.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseInput {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// The agent that would run it.
    pub agent: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// The phases it needs.
    pub needs: Vec<String>,
    /// Its `with` table as declared (templates not rendered).
    pub with: serde_json::Map<String, serde_json::Value>,
}

/// `input.run`: the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunInput {
    /// The run id (`plan` when planning).
    pub id: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// The vars as the run uses them.
    pub vars: IndexMap<String, String>,
    /// Who runs it (the user name of the process).
    pub user: String,
}

/// `input.git`: the repository the pipeline's directory is in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitInput {
    /// The checked-out branch (`HEAD` when detached).
    pub branch: String,
    /// The commit id of `HEAD`.
    pub commit: String,
    /// Whether tracked or untracked files differ from `HEAD`.
    pub dirty: bool,
}

impl GitInput {
    /// Reads the branch, commit and dirtiness of the repository `dir` is in with the `git`
    /// command; `None` when `dir` is not in a repository (or git is not installed).
    pub fn read(dir: &Path) -> Option<Self> {
        let git = |args: &[&str]| -> Option<String> {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
        };
        let commit = git(&["rev-parse", "--verify", "-q", "HEAD"])?;
        let branch =
            git(&["symbolic-ref", "-q", "--short", "HEAD"]).unwrap_or_else(|| "HEAD".into());
        let dirty = git(&["status", "--porcelain", "--untracked-files=normal"])
            .is_some_and(|s| !s.is_empty());
        Some(Self {
            branch,
            commit,
            dirty,
        })
    }
}

impl PhaseInput {
    /// The input of phase number `i` of `pipeline`.
    pub fn of(pipeline: &Pipeline, i: usize) -> Self {
        let node = &pipeline.nodes()[i];
        let with = match serde_json::to_value(node.spec.with.table()) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        Self {
            id: node.spec.id.to_string(),
            kind: node.spec.kind.to_string(),
            agent: pipeline
                .agents()
                .get(node.agent)
                .map(|a| a.name.clone())
                .unwrap_or_default(),
            tags: node.spec.tags.clone(),
            needs: node.spec.needs.iter().map(ToString::to_string).collect(),
            with,
        }
    }
}

impl RunInput {
    /// The input of a run of `pipeline` with id `run_id`, by the current user.
    pub fn of(pipeline: &Pipeline, run_id: &str) -> Self {
        Self {
            id: run_id.to_owned(),
            pipeline: pipeline.name().to_owned(),
            vars: pipeline.spec().vars.clone(),
            user: current_user(),
        }
    }
}

/// The name of the user this process runs as (`$USER` when the user database has none).
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| nix::unistd::getuid().to_string())
}

/// The input document of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Input {
    /// The phase.
    pub phase: PhaseInput,
    /// The run.
    pub run: RunInput,
    /// The repository, when the pipeline's directory is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInput>,
}

impl Input {
    /// The document as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// A compiled policy. Cheap to share; each run evaluates with its own [`Evaluator`].
pub struct Policy {
    engine: Mutex<regorus::Engine>,
    files: Vec<PathBuf>,
    timeout: Duration,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("files", &self.files)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Reads and compiles the files `spec` names, relative to `base_dir`.
    pub fn load(base_dir: &Path, spec: &PolicySpec) -> Result<Self, PolicyError> {
        let mut files = Vec::new();
        for pattern in &spec.files {
            let found = expand(base_dir, pattern)?;
            if found.is_empty() {
                return Err(PolicyError::NoFiles {
                    pattern: pattern.clone(),
                    dir: base_dir.to_owned(),
                });
            }
            for f in found {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
        let mut sources = Vec::with_capacity(files.len());
        for path in &files {
            let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
                path: path.clone(),
                source,
            })?;
            sources.push((path.display().to_string(), text));
        }
        let mut p = Self::from_sources(sources, spec.timeout)?;
        p.files = files;
        Ok(p)
    }

    /// Compiles policies given as `(name, text)` pairs (the name is used in errors).
    pub fn from_sources(
        sources: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(false);
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: timeout,
            check_interval: NonZeroU32::MIN,
        });
        let mut packages = Vec::new();
        for (name, text) in sources {
            let package = engine
                .add_policy(name.clone(), text)
                .map_err(|e| syntax_error(&name, &e.to_string()))?;
            packages.push(package);
        }
        if !packages.iter().any(|p| p == "data.orch") {
            packages.sort();
            packages.dedup();
            return Err(PolicyError::NoPackage {
                found: if packages.is_empty() {
                    "none".into()
                } else {
                    packages.join(", ")
                },
            });
        }
        // Compiling happens on the first evaluation: do it now, on a query that evaluates
        // none of the rules, so that an unsafe variable or an unknown function is a load
        // error too.
        engine
            .eval_query("true".into(), false)
            .map_err(|e| compile_error(&e.to_string()))?;
        Ok(Self {
            engine: Mutex::new(engine),
            files: Vec::new(),
            timeout,
        })
    }

    /// The files the policy was read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The limit for one evaluation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// An evaluator (a copy of the compiled policy) for one run or plan.
    pub fn evaluator(&self) -> Evaluator {
        let engine = self
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Evaluator {
            engine,
            timeout: self.timeout,
            absent: Vec::new(),
        }
    }
}

/// Evaluates a policy, one input at a time.
pub struct Evaluator {
    engine: regorus::Engine,
    timeout: Duration,
    /// Rules the policy does not define (found on first use): undefined for every input.
    absent: Vec<&'static str>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator").finish_non_exhaustive()
    }
}

impl Evaluator {
    /// Evaluates `allow` and `deny` over `input`.
    pub fn decide(&mut self, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        self.engine.set_input(regorus::Value::from(input.clone()));
        let allow = self.query(ALLOW_RULE)?;
        let allow = matches!(allow, Some(regorus::Value::Bool(true)));
        let deny = match self.query(DENY_RULE)? {
            None => Vec::new(),
            Some(regorus::Value::Set(set)) => {
                let mut msgs = Vec::with_capacity(set.len());
                for v in set.iter() {
                    msgs.push(match v {
                        regorus::Value::String(s) => s.to_string(),
                        other => other.to_json_str().unwrap_or_default().replace('\n', ""),
                    });
                }
                msgs.sort();
                msgs
            }
            Some(other) => {
                return Err(PolicyError::Eval {
                    message: format!(
                        "`{DENY_RULE}` must be a set of messages, not {}",
                        other.to_json_str().unwrap_or_default().replace('\n', "")
                    ),
                });
            }
        };
        Ok(Decision { allow, deny })
    }

    /// The value of a rule; `None` when undefined. The rule is evaluated by its path, not
    /// as a query: nothing is parsed per phase.
    fn query(&mut self, rule: &'static str) -> Result<Option<regorus::Value>, PolicyError> {
        if self.absent.contains(&rule) {
            return Ok(None);
        }
        match self.engine.eval_rule(rule.to_owned()) {
            Ok(v) => Ok(Some(v).filter(|v| *v != regorus::Value::Undefined)),
            Err(e) => {
                let message = e.to_string();
                if message == NO_SUCH_RULE {
                    self.absent.push(rule);
                    Ok(None)
                } else if message.contains("exceeded time limit") {
                    Err(PolicyError::Timeout {
                        limit: self.timeout,
                    })
                } else {
                    Err(PolicyError::Eval {
                        message: one_line(&message),
                    })
                }
            }
        }
    }
}

/// The files a pattern names: the file itself when it has no glob characters, else every
/// file under its fixed leading directories that matches.
fn expand(base_dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, PolicyError> {
    let is_glob = |s: &str| s.contains(['*', '?', '[', '{']);
    if !is_glob(pattern) {
        let p = base_dir.join(pattern);
        return Ok(if p.is_file() { vec![p] } else { Vec::new() });
    }
    let mut root = PathBuf::new();
    for part in pattern.split('/') {
        if is_glob(part) {
            break;
        }
        root.push(part);
    }
    let matcher = globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| PolicyError::Pattern {
            pattern: pattern.to_owned(),
            message: e.kind().to_string(),
        })?
        .compile_matcher();
    let mut out = Vec::new();
    let mut stack = vec![base_dir.join(&root)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(base_dir)
                && matcher.is_match(rel)
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A regorus parse error (`--> FILE:LINE:COL` ... `error: MESSAGE`) as a located error.
fn syntax_error(name: &str, text: &str) -> PolicyError {
    match locate(text) {
        Some((path, line, column, message)) => PolicyError::Syntax {
            path: PathBuf::from(path),
            line,
            column,
            message,
        },
        None => PolicyError::Syntax {
            path: PathBuf::from(name),
            line: 1,
            column: 1,
            message: one_line(text),
        },
    }
}

fn compile_error(text: &str) -> PolicyError {
    match locate(text) {
        Some((path, line, column, message)) => PolicyError::Syntax {
            path: PathBuf::from(path),
            line,
            column,
            message,
        },
        None => PolicyError::Compile {
            message: one_line(text),
        },
    }
}

fn locate(text: &str) -> Option<(String, u32, u32, String)> {
    let at = text.lines().find_map(|l| l.trim().strip_prefix("--> "))?;
    let mut parts = at.rsplitn(3, ':');
    let column = parts.next()?.trim().parse().ok()?;
    let line = parts.next()?.trim().parse().ok()?;
    let path = parts.next()?.to_owned();
    let message = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map_or_else(|| one_line(text), str::to_owned);
    Some((path, line, column, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_sources(
            vec![("test.rego".into(), text.into())],
            Duration::from_millis(300),
        )
    }

    fn input(tags: &[&str]) -> serde_json::Value {
        Input {
            phase: PhaseInput {
                id: "deploy".into(),
                kind: "command".into(),
                agent: "local".into(),
                tags: tags.iter().map(|s| (*s).to_owned()).collect(),
                ..PhaseInput::default()
            },
            run: RunInput::default(),
            git: Some(GitInput {
                branch: "main".into(),
                commit: "abc".into(),
                dirty: false,
            }),
        }
        .to_json()
    }

    #[test]
    fn allowed_denied_and_undefined() {
        let p = policy(
            r#"package orch
            allow if input.git.branch == "main"
            deny contains sprintf("phase %s is tagged prod", [input.phase.id]) if "prod" in input.phase.tags
            "#,
        )
        .expect("compiles");
        let d = p.evaluator().decide(&input(&[])).expect("evaluates");
        assert_eq!(
            d,
            Decision {
                allow: true,
                deny: vec![]
            }
        );
        assert!(d.permits());
        let d = p.evaluator().decide(&input(&["prod"])).expect("evaluates");
        assert!(!d.permits());
        assert_eq!(d.reason(), "denied by policy: phase deploy is tagged prod");
        // `allow` undefined (no git branch match): denied.
        let mut other = input(&[]);
        other["git"]["branch"] = "feature".into();
        let d = p.evaluator().decide(&other).expect("evaluates");
        assert!(!d.allow);
        assert_eq!(
            d.reason(),
            "denied by policy: `data.orch.allow` is not true"
        );
    }

    #[test]
    fn a_policy_may_leave_out_allow_or_deny() {
        let only_allow = policy("package orch\nallow := true\n").expect("compiles");
        let mut e = only_allow.evaluator();
        for _ in 0..2 {
            let d = e.decide(&input(&[])).expect("evaluates");
            assert!(d.permits(), "{d:?}");
        }
        let only_deny = policy("package orch\ndeny contains \"no\" if true\n").expect("compiles");
        let d = only_deny
            .evaluator()
            .decide(&input(&[]))
            .expect("evaluates");
        assert!(!d.allow);
        assert_eq!(d.deny, ["no"]);
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let e = policy("package orch\n\nallow if {\n  input.x ==\n}\n").expect_err("bad");
        match e {
            PolicyError::Syntax {
                path, line, column, ..
            } => {
                assert_eq!(path, PathBuf::from("test.rego"));
                assert_eq!((line, column), (5, 1), "{path:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_policy_without_package_orch_is_refused() {
        let e = policy("package other\nallow := true\n").expect_err("no orch");
        assert!(e.to_string().contains("data.other"), "{e}");
    }

    #[test]
    fn a_runtime_error_and_a_loop_are_errors() {
        let p = policy("package orch\nallow := 1 / 0\n").expect("compiles");
        let e = p.evaluator().decide(&input(&[])).expect_err("errors");
        assert!(matches!(e, PolicyError::Eval { .. }), "{e:?}");

        let p = policy(
            "package orch\nr := numbers.range(1, 3000)\nallow if {\n  some i in r\n  some j in r\n  some k in r\n  i + j + k < 0\n}\n",
        )
        .expect("compiles");
        let t0 = std::time::Instant::now();
        let e = p
            .evaluator()
            .decide(&input(&[]))
            .expect_err("runs out of time");
        assert!(matches!(e, PolicyError::Timeout { .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn deny_must_be_a_set() {
        let p = policy("package orch\nallow := true\ndeny := \"no\"\n").expect("compiles");
        let e = p.evaluator().decide(&input(&[])).expect_err("not a set");
        assert!(e.to_string().contains("must be a set"), "{e}");
    }
}
