//! Errors of this crate.

use std::path::PathBuf;

/// A size that cannot be read (`min_memory = "lots"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a size: write a number with a unit, like \"4GiB\", \"512MiB\" or \"10GB\", \
     or a number of bytes"
)]
pub struct SizeError {
    /// The text given.
    pub text: String,
}

/// `orch doctor` could not read the pipeline file.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: orch_core::input::InputError,
    },
    /// The file is not TOML.
    #[error("{path} is not valid TOML: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}
