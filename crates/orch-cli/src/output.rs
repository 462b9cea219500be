//! Writing to standard output and standard error without panicking.
//!
//! `print!` panics when the reader has gone away (`orch plan | head -1`: the write fails
//! with `EPIPE`, since the Rust runtime ignores `SIGPIPE`). Every printing command writes
//! through [`out!`] and [`outln!`] instead: a closed pipe ends the command quietly with exit
//! 0, as cargo and ripgrep do, and any other write error is reported. `SIGPIPE` stays
//! ignored in orch itself (so a closed pipe never kills a run half-way), while the
//! processes of phases get the default disposition back (the standard library resets it
//! in every child it spawns). Human messages on standard error go through [`errln!`],
//! which drops write errors: there is nowhere left to report them.

use std::fmt;
use std::io::Write as _;

use crate::exit_codes::ExitCodes;

/// Standard output could not be written.
#[derive(Debug)]
pub(crate) enum OutError {
    /// The reader went away: not a failure of the command.
    Closed,
    /// Any other write error (a full disk behind a redirection, ...).
    Failed(std::io::Error),
}

impl OutError {
    /// The message (empty for a closed pipe) and exit code the command ends with.
    pub(crate) fn into_parts(self) -> (String, u8) {
        match self {
            OutError::Closed => (String::new(), ExitCodes::OK),
            OutError::Failed(e) => (
                format!("error: cannot write to standard output: {e}"),
                ExitCodes::FAILED,
            ),
        }
    }
}

impl From<std::io::Error> for OutError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            OutError::Closed
        } else {
            OutError::Failed(e)
        }
    }
}

impl From<OutError> for (String, u8) {
    fn from(e: OutError) -> Self {
        e.into_parts()
    }
}

/// Writes formatted text to standard output and flushes it.
pub(crate) fn write_out(args: fmt::Arguments<'_>) -> Result<(), OutError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_fmt(args)?;
    stdout.flush()?;
    Ok(())
}

/// Writes bytes to standard output and flushes them.
pub(crate) fn write_out_bytes(bytes: &[u8]) -> Result<(), OutError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}

/// Writes formatted text to standard error; errors are dropped.
pub(crate) fn write_err(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// `print!` that returns `Result<(), OutError>` instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!($($arg)*))
    };
}

/// `println!` that returns `Result<(), OutError>` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    () => {
        $crate::output::write_err(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::output::write_err(format_args!($($arg)*))
    };
}

pub(crate) use {err, errln, out, outln};
