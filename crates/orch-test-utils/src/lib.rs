//! Helpers shared by orch's integration tests: a temporary workspace holding a pipeline
//! file and running a binary in it ([`Workspace`]), processes and waiting with deadlines
//! ([`process`]), and insta settings that hide what changes from run to run
//! ([`redactions`]).
//!
//! A dev-dependency only: nothing here is part of orch.
//!
//! ```
//! let ws = orch_test_utils::Workspace::new("[pipeline]\nname = \"p\"\n");
//! assert!(ws.exists("orch.toml"));
//! ws.write("data/in.txt", "x");
//! assert_eq!(ws.read("data/in.txt"), "x");
//! ```

pub mod process;
mod redact;
mod workspace;

pub use redact::{redactions, regex_escape};
pub use workspace::{Run, Running, SETTINGS, Workspace};

/// Every regular file under `dir`, recursively (symlinks not followed), sorted.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let t = entry.file_type().expect("file type");
            if t.is_dir() {
                stack.push(entry.path());
            } else if t.is_file() {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}
