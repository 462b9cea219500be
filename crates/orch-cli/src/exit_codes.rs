//! Documented exit codes.

/// Exit codes of `orch`.
#[derive(Debug, Clone, Copy)]
pub struct ExitCodes;

impl ExitCodes {
    /// Every phase succeeded, was skipped, or was allowed to fail.
    pub const OK: u8 = 0;
    /// A phase failed.
    pub const FAILED: u8 = 1;
    /// The file or the command line is invalid; nothing ran.
    pub const INVALID: u8 = 2;
    /// What the run did could not all be recorded (a full disk, a state directory that is
    /// not writable): the journal, a log, `run.json` or a report is missing or cut short.
    /// Phases may have run; the summary and `--format json` still say how each ended.
    /// Takes precedence over [`Self::FAILED`].
    pub const UNRECORDED: u8 = 3;
    /// The run was interrupted (SIGINT or SIGTERM).
    pub const INTERRUPTED: u8 = 130;
}
