//! `orch-core`: the orch engine.
//!
//! A pipeline is a DAG of [`Phase`]s (*what* runs) executed by [`Agent`]s (*who* runs it).
//! Pipelines come from a TOML file ([`Pipeline::load`]) or from code
//! ([`PipelineBuilder`]); a [`Runner`] schedules them on tokio with per-phase timeouts,
//! retries with backoff and per-agent circuit breakers, emits one stream of [`RunEvent`]s,
//! and writes a [`RunRecord`] (`run.json`).
#![doc = include_str!("../README.md")]

pub mod agent;
pub mod audit;
pub mod cgroup;
pub mod command;
pub mod diagnostics;
pub mod errors;
pub mod events;
pub mod expr;
pub mod failpoint;
mod gate;
pub mod history;
pub mod ids;
pub mod input;
pub mod interpolate;
mod journal;
pub mod list_output;
mod lock;
mod orch_output;
pub mod phase;
pub mod policy;
mod process;
pub mod record;
pub mod redact;
pub mod registry;
pub mod resume;
pub mod spec;
pub mod stats;
pub mod watchdog;

// The surface of the private modules (`journal`, `lock`, `process`): what other crates
// use, and nothing else.
pub use journal::{JournalMode, MemStorage, Storage, StorageFactory, SyncHandle};
pub use lock::{LockHolder, holder as lock_holder};
pub use process::{adopt_orphans, keep_alive};

/// What tests outside this crate need of the engine's internals (feature `test-support`;
/// `orch-test-utils` turns it on).
#[cfg(feature = "test-support")]
pub mod test_support {
    pub use crate::process::{marked_processes, signal_marked};

    /// The journal's format: reading journals back, writing and damaging them.
    pub mod journal {
        pub use crate::journal::{
            Contents, Entry, Finished, JournalError, MAX_ATTEMPT, PhaseResume, encode, header,
            parse, read,
        };
    }
}

pub use agent::{Agent, LocalAgent};
pub use errors::{AgentError, InterpolationError, KindError, LoadError, RunError, WriteFileError};
pub use events::{Event, EventSink, RunEvent, Stream};
pub use ids::{KindName, Needs, PhaseId, RunId};
pub use phase::{
    Description, Phase, PhaseContext, PhaseError, PhaseOutcome, PlanContext, WrittenFile,
};
pub use record::{
    Artifact, Outputs, PhaseRecord, PhaseStatus, Reason, RecordError, RunRecord, RunStatus, Stop,
    Timestamp,
};
pub use registry::Registry;
pub use spec::{AgentSpec, PhaseEnv, PhaseSpec, PipelineSpec, RunSpec, WithTable};
pub mod file;
pub mod pipeline;
pub use pipeline::{LoadOptions, Node, Pipeline, PipelineBuilder};
pub mod graph;
pub mod plan;
pub mod run;
mod scope;
pub mod select;
mod spawn;
pub use plan::Plan;
pub use run::{ResumeFrom, RunControl, RunOptions, Runner};
pub use select::{Selection, Selector};
