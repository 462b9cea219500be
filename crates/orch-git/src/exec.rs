//! Runs libgit2 work (blocking) off the async runtime, forwarding its log lines to the phase
//! log, stopping it at safe points when the run is cancelled or the phase future is dropped,
//! and serialising writers of one repository.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use orch_core::{PhaseContext, PhaseError};
use tokio::sync::mpsc;

use crate::errors::GitError;
use crate::sanitize::Sanitizer;

/// The blocking side's handle: logging, cancellation, and the sanitiser for messages.
pub(crate) struct Job {
    lines: mpsc::UnboundedSender<String>,
    cancelled: Arc<AtomicBool>,
    sanitizer: Mutex<Sanitizer>,
}

impl Job {
    /// Logs one line (credentials in URLs stripped; secrets are redacted by the context).
    pub(crate) fn log(&self, line: impl AsRef<str>) {
        let clean = self.sanitizer().clean(line.as_ref());
        // The receiver is gone only when the phase future was dropped; nobody reads then.
        let _ = self.lines.send(clean);
    }

    /// Fails with [`GitError::Cancelled`] once the run is cancelled or the phase dropped.
    pub(crate) fn check(&self) -> Result<(), GitError> {
        if self.is_cancelled() {
            Err(GitError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Whether the work should stop.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Learns the credentials in the repository's remote URLs, so that they are masked
    /// wherever they appear.
    pub(crate) fn know_repo(&self, repo: &git2::Repository) {
        *self.sanitizer.lock().unwrap_or_else(|p| p.into_inner()) = Sanitizer::for_repo(repo);
    }

    /// The current sanitiser.
    pub(crate) fn sanitizer(&self) -> Sanitizer {
        self.sanitizer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Sets the cancel flag when the phase future is dropped (timeout) before the work ends.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `work` on the blocking pool. Its log lines go to the phase log as they come; its
/// error becomes a [`PhaseError`] whose message has URL credentials stripped and secrets
/// redacted.
pub(crate) async fn run_blocking<T, F>(ctx: &PhaseContext, work: F) -> Result<T, PhaseError>
where
    T: Send + 'static,
    F: FnOnce(&Job) -> Result<T, GitError> + Send + 'static,
{
    if ctx.cancelled().is_cancelled() {
        return Err(PhaseError::Cancelled);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancelled = Arc::new(AtomicBool::new(false));
    let job = Arc::new(Job {
        lines: tx,
        cancelled: cancelled.clone(),
        sanitizer: Mutex::new(Sanitizer::default()),
    });
    let _guard = CancelOnDrop(cancelled.clone());
    let worker = job.clone();
    let mut handle = tokio::task::spawn_blocking(move || work(&worker));
    let token = ctx.cancelled().clone();
    let mut cancel_seen = false;
    let joined = loop {
        tokio::select! {
            biased;
            Some(line) = rx.recv() => ctx.log(line),
            joined = &mut handle => break joined,
            () = token.cancelled(), if !cancel_seen => {
                cancel_seen = true;
                cancelled.store(true, Ordering::Relaxed);
            }
        }
    };
    while let Ok(line) = rx.try_recv() {
        ctx.log(line);
    }
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(GitError::Cancelled)) => Err(PhaseError::Cancelled),
        Ok(Err(error)) => Err(phase_error(ctx, &job.sanitizer(), &error)),
        Err(join) => Err(PhaseError::failed(format!("git task failed: {join}"))),
    }
}

/// A phase error from a git error: the whole source chain, sanitised and redacted.
pub(crate) fn phase_error(
    ctx: &PhaseContext,
    sanitizer: &Sanitizer,
    error: &GitError,
) -> PhaseError {
    let PhaseError::Failed { message, exit_code } = PhaseError::from_error(error) else {
        return PhaseError::failed(ctx.redact(&sanitizer.clean(&error.to_string())));
    };
    let message = ctx.redact(&sanitizer.clean(&message)).into_owned();
    PhaseError::Failed { message, exit_code }
}

/// One lock per repository (keyed by its git directory), so phases of one process never
/// write the same repository at once, whatever the agents' capacities.
pub(crate) struct RepoLock(Arc<Mutex<()>>);

impl RepoLock {
    /// The lock of the repository whose git directory is `git_dir`.
    pub(crate) fn of(git_dir: &Path) -> Self {
        static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
        let key = git_dir
            .canonicalize()
            .unwrap_or_else(|_| git_dir.to_owned());
        let mut locks = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Self(locks.entry(key).or_default().clone())
    }

    /// Blocks until the repository is free.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}
