//! The durable tests' workspace: `orch-test-utils`'s, running this crate's `orch`, with
//! exit codes as `Option` (a run killed by a signal has none) and `read` giving an empty
//! text for a file a run has not written yet.

use std::ops::{Deref, DerefMut};

pub use orch_test_utils::Running;
pub use orch_test_utils::process::{alive, assert_all_gone, poll, signal};

use orch_test_utils::Workspace;

pub struct Ws(Workspace);

impl Ws {
    pub fn new(pipeline: &str) -> Self {
        Self(Workspace::new(pipeline).with_binary(env!("CARGO_BIN_EXE_orch")))
    }

    pub fn read(&self, rel: &str) -> String {
        self.0.read_or_empty(rel)
    }

    pub fn record(&self, run: &str) -> serde_json::Value {
        self.0.record_of(run)
    }
}

impl Deref for Ws {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.0
    }
}

impl DerefMut for Ws {
    fn deref_mut(&mut self) -> &mut Workspace {
        &mut self.0
    }
}
