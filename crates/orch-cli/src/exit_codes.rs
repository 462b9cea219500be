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
    /// The run was interrupted (SIGINT or SIGTERM).
    pub const INTERRUPTED: u8 = 130;
}
