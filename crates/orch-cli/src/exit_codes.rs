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
    /// What orch had to write could not be (a full disk, a directory that is not
    /// writable). After `orch run`: the journal, a log, `run.json` or a report is missing
    /// or cut short; phases may have run, and the summary and `--format json` still say how
    /// each ended (takes precedence over [`Self::FAILED`]). After `orch report -o FILE`:
    /// the report, of which nothing half-written is left.
    pub const UNRECORDED: u8 = 3;
    /// The run was interrupted (SIGINT or SIGTERM).
    pub const INTERRUPTED: u8 = 130;
}
