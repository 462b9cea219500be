//! The `command` kind: a string runs under `sh -c`, an array runs as an argv without a shell.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::OsStr;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, ReadBuf};

use crate::errors::{KindError, RegistryError};
use crate::events::Stream;
use crate::orch_output::OutputFile;
use crate::phase::{Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PlanContext};
use crate::process::TreeGuard;
use crate::registry::{Kind, Registry};
use crate::spawn::{Pipes, Spec};
use crate::spec::{PhaseSpec, RunSpec};

pub(crate) fn register(r: &mut Registry) -> Result<(), RegistryError> {
    r.add_kind(
        Kind::new("command", "run a shell script or an argv"),
        |spec: &PhaseSpec, with: toml::Table| {
            if !with.is_empty() {
                return Err(spec.with.error(
                    "`command` phases take no `with` settings; use `run`, `env` and `cwd`",
                ));
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
            Ok(CommandPhase { run })
        },
    )
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

    /// An attempt waits for its process and copies what it prints to the run's sinks:
    /// the engine polls it in its own loop, with no task and no wake-up of another thread.
    fn is_light(&self) -> bool {
        true
    }

    async fn run(&self, ctx: &PhaseContext) -> Result<PhaseOutcome, PhaseError> {
        let mut script_env: Vec<(String, String)> = Vec::new();
        let argv: Vec<Cow<'_, str>> =
            match &self.run {
                RunSpec::Shell(script) => {
                    let rendered = ctx
                        .render_shell(script)
                        .map_err(|e| PhaseError::failed(format!("cannot render `run`: {e}")))?;
                    script_env = rendered.env;
                    vec!["sh".into(), "-c".into(), rendered.script.into()]
                }
                RunSpec::Argv(argv) => {
                    let mut rendered = Vec::with_capacity(argv.len());
                    for a in argv {
                        // Text without a template renders as itself.
                        rendered.push(if a.contains("${{") {
                            Cow::Owned(ctx.render(a).map_err(|e| {
                                PhaseError::failed(format!("cannot render `run`: {e}"))
                            })?)
                        } else {
                            Cow::Borrowed(a.as_str())
                        });
                    }
                    rendered
                }
            };
        let argv: Vec<&OsStr> = argv.iter().map(|a| OsStr::new(a.as_ref())).collect();
        // Private to this attempt, and removed when this future ends or is dropped.
        let mut output_file = OutputFile::create(&ctx.run.private)?;
        // The child enters the attempt's cgroup before it runs anything, so nothing it
        // starts can leave (by `setsid`, double forks or a cleared environment).
        let cgroup = ctx.process_cgroup();
        // With a cgroup, the run's pipes: an earlier attempt's once nothing of it is left.
        let pool = cgroup.as_ref().map(|c| c.pipes().clone());
        let mut pipes = match &pool {
            Some(pool) => Some(match pool.take() {
                Some(p) => p,
                None => Pipes::new().map_err(|e| {
                    PhaseError::failed(format!("cannot make the pipes of its output: {e}"))
                })?,
            }),
            None => None,
        };
        let started = ctx.with_env(|phase_env| {
            // The phase's variables, then the script's values, then ORCH_OUTPUT (the last
            // value of a name is the one the process sees).
            let mut env: Vec<(&OsStr, &OsStr)> = Vec::with_capacity(8 + script_env.len());
            for (k, v) in phase_env {
                env.push((OsStr::new(k), OsStr::new(v)));
            }
            for (k, v) in &script_env {
                env.push((OsStr::new(k), OsStr::new(v)));
            }
            env.push((OsStr::new("ORCH_OUTPUT"), output_file.path().as_os_str()));
            let spec = Spec {
                argv: &argv,
                env_remove: ctx.env_remove(),
                env: &env,
                cwd: ctx.workdir(),
                cgroup_procs: cgroup.as_ref().map(|c| c.procs_fd()),
                cgroup_dir: cgroup.as_ref().map(|c| c.dir_fd()),
                pipes: pipes.as_ref(),
            };
            match crate::spawn::spawn(&spec) {
                Ok(Some(child)) => Ok(Process::Fast(child)),
                Ok(None) => spawn_std(&spec).map(Process::Std),
                Err(e) => Err(e),
            }
        });
        let cannot_start = |e: std::io::Error| {
            PhaseError::failed(format!(
                "cannot start `{}` in {}: {e}",
                argv[0].to_string_lossy(),
                ctx.workdir().display()
            ))
        };
        let mut child = started.map_err(cannot_start)?;
        if matches!(child, Process::Std(_)) {
            // It has pipes of its own.
            pipes = None;
        }
        let pgid = child.id();
        let guard = TreeGuard::new(pgid, ctx.run_id(), ctx.phase_id()).with_cgroup(cgroup);
        let (readers, mut writers) = match pipes {
            Some(p) => {
                let (readers, writers) = p.split();
                (Some(readers), Some(writers))
            }
            None => (None, None),
        };
        let (status, recycle) = {
            let (stdout, stderr) = match &readers {
                Some(r) => (Some(Output::Shared(&r.0)), Some(Output::Shared(&r.1))),
                None => child.take_output(),
            };
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
            let gone = guard.finish().await;
            if gone {
                output_file.processes_gone();
            }
            let recycle = match (gone, writers.is_some()) {
                // No process can write to the engine's pipes any more: what they hold is all
                // there is, read below, and they serve a later attempt.
                (true, true) => true,
                _ => {
                    // A process that left the group (or the cgroup that could not be emptied)
                    // may still hold the pipes; don't wait forever. The engine's write ends
                    // close first, so the end of the stream is seen, and the pipes are not reused.
                    writers = None;
                    if !read_done {
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_secs(2), &mut reading)
                                .await;
                    }
                    false
                }
            };
            (status, recycle)
        };
        if let (true, Some(readers), Some(writers), Some(pool)) = (recycle, readers, writers, &pool)
        {
            let pipes = Pipes::join(readers, writers);
            pipes.drain(
                |b| ctx.output(Stream::Stdout, b),
                |b| ctx.output(Stream::Stderr, b),
            );
            pool.put(pipes);
        }

        // A step before its program (its directory, its cgroup...) failed in the child.
        if let Some(e) = child.start_error() {
            return Err(cannot_start(e));
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
        let outputs = output_file.read(ctx.redactor())?;
        Ok(PhaseOutcome {
            outputs,
            artifacts: Vec::new(),
            exit_code,
        })
    }
}

async fn cancel(ctx: &PhaseContext, guard: TreeGuard, child: &mut Process) -> PhaseError {
    guard
        .terminate(ctx.grace(), || matches!(child.try_wait(), Ok(Some(_))))
        .await;
    let _ = child.wait().await;
    PhaseError::Cancelled
}

/// A started process: by [`crate::spawn`], or by `tokio::process` where the kernel has no
/// pidfds.
enum Process {
    Fast(crate::spawn::Child),
    Std(tokio::process::Child),
}

/// A started process's stdout or stderr.
enum Output<'a> {
    Pipe(tokio::net::unix::pipe::Receiver),
    /// A pipe the engine keeps (see [`Pipes`]).
    Shared(&'a tokio::net::unix::pipe::Receiver),
    Stdout(tokio::process::ChildStdout),
    Stderr(tokio::process::ChildStderr),
}

impl AsyncRead for Output<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Pipe(r) => Pin::new(r).poll_read(cx, buf),
            Self::Shared(r) => loop {
                std::task::ready!(r.poll_read_ready(cx))?;
                match r.try_read(buf.initialize_unfilled()) {
                    Ok(n) => {
                        buf.advance(n);
                        return Poll::Ready(Ok(()));
                    }
                    // The readiness is cleared: the next poll waits for more.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Self::Stdout(r) => Pin::new(r).poll_read(cx, buf),
            Self::Stderr(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl Process {
    fn id(&self) -> u32 {
        match self {
            Self::Fast(c) => c.id(),
            Self::Std(c) => c.id().unwrap_or(0),
        }
    }

    fn take_output(&mut self) -> (Option<Output<'static>>, Option<Output<'static>>) {
        match self {
            Self::Fast(c) => (
                c.stdout.take().map(Output::Pipe),
                c.stderr.take().map(Output::Pipe),
            ),
            Self::Std(c) => (
                c.stdout.take().map(Output::Stdout),
                c.stderr.take().map(Output::Stderr),
            ),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Self::Fast(c) => c.wait().await,
            Self::Std(c) => c.wait().await,
        }
    }

    /// Why it never ran its program (see [`crate::spawn::Child::start_error`]).
    fn start_error(&self) -> Option<std::io::Error> {
        match self {
            Self::Fast(c) => c.start_error(),
            // `tokio::process` reports it when it spawns.
            Self::Std(_) => None,
        }
    }

    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Self::Fast(c) => c.try_wait(),
            Self::Std(c) => c.try_wait(),
        }
    }
}

/// Starts `spec` with `tokio::process` (a fork, entering the cgroup in a `pre_exec` hook).
fn spawn_std(spec: &Spec<'_>) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(spec.argv[0]);
    cmd.args(&spec.argv[1..]);
    for k in spec.env_remove {
        cmd.env_remove(k);
    }
    cmd.envs(spec.env.iter().copied())
        .current_dir(spec.cwd)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(procs) = spec.cgroup_procs {
        // SAFETY: `enter` makes one async-signal-safe `write` on a descriptor that
        // stays open until after the spawn.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || crate::cgroup::enter(procs));
        }
    }
    cmd.spawn()
}

thread_local! {
    /// Where output is read into: one buffer per thread, used only within one poll.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 8192].into_boxed_slice());
}

/// Copies what `reader` gives to the phase's output until it ends.
async fn pump<R: AsyncRead + Unpin>(ctx: &PhaseContext, stream: Stream, reader: Option<R>) {
    let Some(mut reader) = reader else { return };
    std::future::poll_fn(|cx| {
        READ_BUF.with_borrow_mut(|buf| {
            loop {
                let mut read = ReadBuf::new(buf);
                match Pin::new(&mut reader).poll_read(cx, &mut read) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(()),
                    Poll::Ready(Ok(())) => ctx.output(stream, read.filled()),
                }
            }
        })
    })
    .await
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
