//! `orch policy eval` and `orch audit verify|show`: thin front-ends over
//! `orch_core::policy` and `orch_core::audit`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Subcommand};
use orch_core::audit::{self, AUDIT_FILE, Filter, Verdict};
use orch_core::history;
use orch_core::policy::{GitInput, Input, PhaseInput, RunInput};
use orch_core::{LoadOptions, Pipeline};

use crate::exit_codes::ExitCodes;
use crate::output::{out, outln};

type Outcome = Result<u8, (String, u8)>;

fn invalid(message: impl Into<String>) -> (String, u8) {
    (message.into(), ExitCodes::INVALID)
}

/// `orch policy`.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Print the input document the policy sees for a phase, and its decision
    /// (exit 0 allowed, 1 denied).
    Eval {
        /// The pipeline file.
        #[arg(default_value = "orch.toml")]
        file: PathBuf,
        /// The phase to decide.
        #[arg(long, value_name = "ID")]
        phase: String,
        /// Override a var: KEY=VALUE (repeatable).
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
    },
}

/// `orch policy ...`.
pub fn policy(a: &PolicyArgs) -> Outcome {
    let PolicyCommand::Eval { file, phase, vars } = &a.command;
    let vars = vars
        .iter()
        .map(|v| {
            v.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .ok_or_else(|| invalid(format!("error: `--var {v}` is not KEY=VALUE")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let p =
        Pipeline::load(file, &orch_kinds::registry(), &LoadOptions { vars }).map_err(
            |e| match e {
                orch_core::LoadError::Invalid(d) => invalid(d.render()),
                other => invalid(format!("error: {}", crate::app::chain(&other))),
            },
        )?;
    let i = p.index_of(phase).ok_or_else(|| {
        let hint = orch_core::diagnostics::did_you_mean(
            phase,
            p.nodes().iter().map(|n| n.spec.id.as_str()),
        )
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
        invalid(format!(
            "error: no phase `{phase}` in {}{hint}",
            file.display()
        ))
    })?;
    let mut input = Input {
        phase: PhaseInput::of(&p, i),
        run: RunInput::of(&p, "eval"),
        git: GitInput::read(&p.spec().base_dir),
    };
    // Secret values never leave in clear, even in a document printed for its author.
    let redactor = orch_core::redact::Redactor::new(
        p.nodes()
            .iter()
            .flat_map(|n| n.spec.secrets.iter())
            .filter_map(|n| std::env::var(n).ok())
            .filter(|v| v.len() >= orch_core::run::MIN_SECRET_LEN),
    );
    for v in input.run.vars.values_mut() {
        *v = redactor.redact(v).into_owned();
    }
    let (decision, allowed) = match p.policy() {
        None => (
            serde_json::json!({ "allowed": true, "reason": "the pipeline has no [policy]" }),
            true,
        ),
        Some(policy) => match policy.evaluator().decide(&input.to_json()) {
            Ok(d) => (
                serde_json::json!({
                    "allowed": d.permits(),
                    "allow": d.allow,
                    "deny": d.deny,
                    "reason": (!d.permits()).then(|| d.reason()),
                }),
                d.permits(),
            ),
            Err(e) => (
                serde_json::json!({
                    "allowed": false,
                    "error": format!("evaluation for phase `{phase}` failed: {e}"),
                }),
                false,
            ),
        },
    };
    let doc = serde_json::json!({ "input": input.to_json(), "decision": decision });
    let _ = outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    Ok(if allowed {
        ExitCodes::OK
    } else {
        ExitCodes::FAILED
    })
}

/// `orch audit`.
#[derive(Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Args, Debug)]
struct LogArgs {
    /// The audit log (default: `audit.log` in the state directory of `--file`).
    log: Option<PathBuf>,
    /// The pipeline file whose state directory holds the log.
    #[arg(long, short = 'f', default_value = "orch.toml")]
    file: PathBuf,
    /// The state directory (overrides the pipeline file's).
    #[arg(long, value_name = "DIR", env = "ORCH_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

impl LogArgs {
    fn path(&self) -> PathBuf {
        if let Some(log) = &self.log {
            return log.clone();
        }
        self.state_dir
            .clone()
            .unwrap_or_else(|| history::state_dir_of(&self.file))
            .join(AUDIT_FILE)
    }
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the chain: exit 0 intact, 1 tampered (naming the first bad line), 2
    /// unreadable. With ORCH_AUDIT_KEY set, HMACs are checked too.
    Verify {
        #[command(flatten)]
        log: LogArgs,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print entries, filtered by run, phase and time.
    Show {
        #[command(flatten)]
        log: LogArgs,
        /// Only this run.
        #[arg(long, value_name = "RUN_ID")]
        run: Option<String>,
        /// Only this phase.
        #[arg(long, value_name = "ID")]
        phase: Option<String>,
        /// Only entries since: an RFC 3339 time, or a duration ago ("1h", "7d").
        #[arg(long, value_name = "TIME|AGO")]
        since: Option<String>,
        /// Only entries before: an RFC 3339 time, or a duration ago.
        #[arg(long, value_name = "TIME|AGO")]
        until: Option<String>,
        /// One JSON entry per line (as written).
        #[arg(long)]
        json: bool,
    },
}

fn when(s: &str) -> Result<SystemTime, (String, u8)> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    humantime::parse_duration(s)
        .map(|d| SystemTime::now() - d)
        .map_err(|_| {
            invalid(format!(
                "error: `{s}` is neither a time (2026-01-02T03:04:05Z) nor a duration (1h)"
            ))
        })
}

/// `orch audit ...`.
pub fn audit(a: &AuditArgs) -> Outcome {
    match &a.command {
        AuditCommand::Verify { log, json } => verify(&log.path(), *json),
        AuditCommand::Show {
            log,
            run,
            phase,
            since,
            until,
            json,
        } => {
            let filter = Filter {
                run: run.clone(),
                phase: phase.clone(),
                since: since.as_deref().map(when).transpose()?,
                until: until.as_deref().map(when).transpose()?,
            };
            show(&log.path(), &filter, *json)
        }
    }
}

fn verify(path: &Path, json: bool) -> Outcome {
    let key = audit::key_from_env();
    let report = audit::verify(path, key.as_deref())
        .map_err(|e| invalid(format!("error: {}", crate::app::chain(&e))))?;
    if json {
        let (status, line, why) = match &report.verdict {
            Verdict::Intact => ("intact", None, None),
            Verdict::Tampered { line, why } => ("tampered", Some(*line), Some(why.clone())),
        };
        let doc = serde_json::json!({
            "log": path,
            "status": status,
            "line": line,
            "why": why,
            "entries": report.entries,
            "head": report.head.as_ref().map(|(seq, hash)| serde_json::json!({"seq": seq, "hash": hash})),
            "torn_bytes": report.torn,
            "keyed_entries": report.keyed,
            "key_checked": report.key_checked,
            "unfinished_runs": report.unfinished,
        });
        let _ = outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        let _ = out!("{}", report.render(path));
    }
    Ok(match report.verdict {
        Verdict::Intact => ExitCodes::OK,
        Verdict::Tampered { .. } => ExitCodes::FAILED,
    })
}

fn show(path: &Path, filter: &Filter, json: bool) -> Outcome {
    let entries =
        audit::read(path).map_err(|e| invalid(format!("error: {}", crate::app::chain(&e))))?;
    for e in entries.iter().filter(|e| filter.matches(e)) {
        let line = if json {
            e.value.to_string()
        } else {
            e.render()
        };
        if outln!("{line}").is_err() {
            break;
        }
    }
    Ok(ExitCodes::OK)
}
