//! The `command` kind: a string runs under `sh -c`, an array runs as an argv without a shell.

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::errors::KindError;
use crate::events::Stream;
use crate::orch_output::OutputFile;
use crate::phase::{Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PlanContext};
use crate::process::TreeGuard;
use crate::registry::Registry;
use crate::spec::{PhaseSpec, RunSpec};

pub(crate) fn register(r: &mut Registry) {
    r.register_kind(
        "command",
        "local",
        "run a shell script or an argv",
        Arc::new(|spec: &PhaseSpec| {
            if !spec.with.table().is_empty() {
                return Err(KindError {
                    message: "`command` phases take no `with` settings; use `run`, `env` and `cwd`"
                        .into(),
                    span: spec.with.span(),
                });
            }
            let run = spec
                .run
                .clone()
                .ok_or_else(|| KindError::new("a `command` phase needs `run`"))?;
            if let RunSpec::Argv(argv) = &run
                && argv.is_empty()
            {
                return Err(KindError::new("`run` is an empty array"));
            }
            Ok(Arc::new(CommandPhase { run }) as Arc<dyn Phase>)
        }),
    );
}

/// Runs a process: `sh -c SCRIPT` or an argv.
#[derive(Debug, Clone)]
pub struct CommandPhase {
    run: RunSpec,
}

impl CommandPhase {
    /// A phase that runs `run`.
    pub fn new(run: RunSpec) -> Self {
        Self { run }
    }
}

/// Quotes a word for display as a shell would need it.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[async_trait]
impl Phase for CommandPhase {
    fn describe(&self, ctx: &PlanContext<'_>) -> Description {
        let summary = match &self.run {
            RunSpec::Shell(s) => format!("sh -c {}", shell_quote(&ctx.render(s))),
            RunSpec::Argv(argv) => argv
                .iter()
                .map(|a| shell_quote(&ctx.render(a)))
                .collect::<Vec<_>>()
                .join(" "),
        };
        Description::new(summary)
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let mut extra_env = Vec::new();
        let mut cmd = match &self.run {
            RunSpec::Shell(script) => {
                let rendered = ctx
                    .render_shell(script)
                    .map_err(|e| PhaseError::failed(format!("cannot render `run`: {e}")))?;
                extra_env = rendered.env;
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(rendered.script);
                c
            }
            RunSpec::Argv(argv) => {
                let mut rendered = Vec::with_capacity(argv.len());
                for a in argv {
                    rendered
                        .push(ctx.render(a).map_err(|e| {
                            PhaseError::failed(format!("cannot render `run`: {e}"))
                        })?);
                }
                let mut c = tokio::process::Command::new(&rendered[0]);
                c.args(&rendered[1..]);
                c
            }
        };
        // Private to this attempt, and removed when this future ends or is dropped.
        let output_file =
            OutputFile::create(ctx.run_dir(), ctx.phase_id().as_str(), ctx.attempt())?;
        for k in ctx.env_remove() {
            cmd.env_remove(k);
        }
        cmd.envs(ctx.env().iter().map(|(k, v)| (k, v)))
            .envs(extra_env)
            .env("ORCH_OUTPUT", output_file.path())
            .current_dir(ctx.workdir())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The child enters the attempt's cgroup before it runs anything, so nothing it
        // starts can leave (by `setsid`, double forks or a cleared environment).
        let cgroup = ctx.process_cgroup();
        if let Some(cg) = &cgroup {
            let procs = cg.procs_fd();
            // SAFETY: `enter` makes one async-signal-safe `write` on a descriptor that
            // stays open until after the spawn.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || crate::cgroup::enter(procs));
            }
        }

        let mut child = cmd.spawn().map_err(|e| {
            let program = match &self.run {
                RunSpec::Shell(_) => "sh".to_owned(),
                RunSpec::Argv(argv) => argv[0].clone(),
            };
            PhaseError::failed(format!(
                "cannot start `{program}` in {}: {e}",
                ctx.workdir().display()
            ))
        })?;
        let pgid = child.id().unwrap_or(0);
        let guard = TreeGuard::new(pgid, ctx.run_id().as_str(), ctx.phase_id().as_str())
            .with_cgroup(cgroup);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let reading = async {
            tokio::join!(
                pump(ctx, Stream::Stdout, stdout),
                pump(ctx, Stream::Stderr, stderr)
            )
        };
        tokio::pin!(reading);
        let mut read_done = false;

        let status: ExitStatus = tokio::select! {
            status = child.wait() => status.map_err(|e| PhaseError::failed(format!("cannot wait for the process: {e}")))?,
            _ = &mut reading, if !read_done => {
                read_done = true;
                tokio::select! {
                    status = child.wait() => status.map_err(|e| PhaseError::failed(format!("cannot wait for the process: {e}")))?,
                    () = ctx.cancelled().cancelled() => {
                        return Err(cancel(ctx, guard, &mut child).await);
                    }
                }
            }
            () = ctx.cancelled().cancelled() => {
                return Err(cancel(ctx, guard, &mut child).await);
            }
        };
        // The main process is gone: whatever it left running goes too (its group, its
        // cgroup, or without one its marks), so the pipes close and nothing of the phase
        // outlives it, whether it succeeded or not.
        guard.finish().await;
        if !read_done {
            // A process that left the group may still hold the pipes; don't wait forever.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut reading).await;
        }

        let exit_code = status.code();
        if !status.success() {
            let message = match exit_code {
                Some(code) => format!("exited with code {code}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    format!("killed by signal {}", status.signal().unwrap_or(0))
                }
            };
            return Err(PhaseError::Failed { message, exit_code });
        }
        let outputs = output_file.read(&ctx.redactor)?;
        Ok(PhaseOutcome {
            outputs,
            artifacts: Vec::new(),
            exit_code,
        })
    }
}

async fn cancel(
    ctx: &PhaseContext,
    guard: TreeGuard,
    child: &mut tokio::process::Child,
) -> PhaseError {
    guard
        .terminate(ctx.grace(), || matches!(child.try_wait(), Ok(Some(_))))
        .await;
    let _ = child.wait().await;
    PhaseError::Cancelled
}

async fn pump<R: AsyncRead + Unpin>(ctx: &PhaseContext, stream: Stream, reader: Option<R>) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => ctx.output(stream, &buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_display() {
        assert_eq!(shell_quote("cargo"), "cargo");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
