//! The CLI tests' workspace: `orch-test-utils`'s, running this crate's `orch`, with the
//! exit code as a number (-1 when a signal ended the run).

use std::ops::Deref;

pub use orch_test_utils::process::assert_no_leftovers;

use orch_test_utils::Workspace;

pub struct Ws(Workspace);

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ws {
    pub fn new(pipeline: &str) -> Self {
        Self(Workspace::new(pipeline).with_binary(env!("CARGO_BIN_EXE_orch")))
    }

    pub fn orch(&self, args: &[&str]) -> Run {
        self.orch_env(args, &[])
    }

    pub fn orch_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let r = self.0.orch_env(args, env);
        Run {
            code: r.code.unwrap_or(-1),
            stdout: r.stdout,
            stderr: r.stderr,
        }
    }
}

impl Deref for Ws {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.0
    }
}

/// The status of every phase in a record, as `id=status` in record order.
pub fn statuses(record: &serde_json::Value) -> Vec<String> {
    record["phases"]
        .as_object()
        .expect("phases")
        .iter()
        .map(|(k, v)| format!("{k}={}", v["status"].as_str().unwrap_or("?")))
        .collect()
}

/// insta settings that hide the workspace's paths, run ids and times.
pub fn redactions(ws: &Ws) -> insta::Settings {
    orch_test_utils::redactions(ws.path())
}
