//! Named crash points for tests: `ORCH_FAILPOINT=NAME[:COUNT][,NAME[:COUNT]...]` makes the
//! process abort (SIGABRT, like a crash: no destructor runs, nothing is flushed) the
//! COUNT-th time (default: the first) it reaches the point NAME.
//!
//! The points are armed only in a build with the `failpoints` feature (the `orch` binary
//! that the workspace's tests run has it; a release build does not, and [`hit`] is then
//! nothing). They are, in the order a run meets them:
//!
//! | name | where |
//! |---|---|
//! | `after-lock` | the workspace lock is taken, nothing written yet |
//! | `after-journal-header` | the journal file exists with its header and first record |
//! | `after-journal-append` | a record was written to the journal (not yet synced) |
//! | `before-fsync` | the sync thread is about to make written records durable |
//! | `after-fsync` | records are durable, not yet reported |
//! | `after-phase-start` | an attempt was journaled and its task spawned |
//! | `before-publish` | a finished phase is durable and about to be reported |
//! | `before-run-record` | every phase is done; `run.json` is not yet written |
//! | `after-run-record` | `run.json` is written; the lock is still held |
//!
//! When the variable is unset, [`hit`] costs one atomic load.

/// The environment variable that arms failpoints.
pub const ENV: &str = "ORCH_FAILPOINT";

/// A point where a run can be made to crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failpoint {
    /// The workspace lock is taken, nothing written yet.
    AfterLock,
    /// The journal file exists with its header and first record.
    AfterJournalHeader,
    /// A record was written to the journal (not yet synced).
    AfterJournalAppend,
    /// The sync thread is about to make written records durable.
    BeforeFsync,
    /// Records are durable, not yet reported.
    AfterFsync,
    /// An attempt was journaled and its task spawned.
    AfterPhaseStart,
    /// A finished phase is durable and about to be reported.
    BeforePublish,
    /// Every phase is done; `run.json` is not yet written.
    BeforeRunRecord,
    /// `run.json` is written; the lock is still held.
    AfterRunRecord,
}

impl Failpoint {
    /// Every failpoint, in the order a run meets them.
    pub const ALL: [Self; 9] = [
        Self::AfterLock,
        Self::AfterJournalHeader,
        Self::AfterJournalAppend,
        Self::BeforeFsync,
        Self::AfterFsync,
        Self::AfterPhaseStart,
        Self::BeforePublish,
        Self::BeforeRunRecord,
        Self::AfterRunRecord,
    ];

    /// Its name in `ORCH_FAILPOINT`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AfterLock => "after-lock",
            Self::AfterJournalHeader => "after-journal-header",
            Self::AfterJournalAppend => "after-journal-append",
            Self::BeforeFsync => "before-fsync",
            Self::AfterFsync => "after-fsync",
            Self::AfterPhaseStart => "after-phase-start",
            Self::BeforePublish => "before-publish",
            Self::BeforeRunRecord => "before-run-record",
            Self::AfterRunRecord => "after-run-record",
        }
    }
}

/// Reaches `point`: aborts the process if it is armed and this is the hit it was armed
/// for. Nothing without the `failpoints` feature.
#[inline]
pub(crate) fn hit(point: Failpoint) {
    #[cfg(feature = "failpoints")]
    armed::hit(point);
    #[cfg(not(feature = "failpoints"))]
    let _ = point;
}

#[cfg(any(feature = "failpoints", test))]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::{ENV, Failpoint};

    pub(super) struct Armed {
        pub(super) name: String,
        pub(super) at: u64,
        hits: AtomicU64,
    }

    fn armed() -> &'static [Armed] {
        static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();
        ARMED.get_or_init(|| match std::env::var(ENV) {
            Ok(spec) => parse(&spec),
            Err(_) => Vec::new(),
        })
    }

    pub(super) fn parse(spec: &str) -> Vec<Armed> {
        spec.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                let (name, at) = match s.trim().split_once(':') {
                    Some((n, c)) => (n, c.trim().parse().unwrap_or(1)),
                    None => (s.trim(), 1),
                };
                Armed {
                    name: name.trim().to_owned(),
                    at: at.max(1),
                    hits: AtomicU64::new(0),
                }
            })
            .collect()
    }

    pub(super) fn hit(point: Failpoint) {
        let armed = armed();
        if armed.is_empty() {
            return;
        }
        let name = point.name();
        if let Some(at) = due(armed, name) {
            eprintln!("orch: failpoint `{name}` hit {at} time(s): aborting");
            std::process::abort();
        }
    }

    /// Counts a hit of `name` and returns the count it was armed for when this is that hit.
    pub(super) fn due(armed: &[Armed], name: &str) -> Option<u64> {
        armed
            .iter()
            .filter(|a| a.name == name)
            .find(|a| a.hits.fetch_add(1, Ordering::SeqCst) + 1 == a.at)
            .map(|a| a.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_names_and_counts() {
        let a = armed::parse("after-fsync:3, before-fsync,,x:0");
        let got: Vec<(&str, u64)> = a.iter().map(|a| (a.name.as_str(), a.at)).collect();
        assert_eq!(got, [("after-fsync", 3), ("before-fsync", 1), ("x", 1)]);
    }

    #[test]
    fn a_point_fires_on_the_hit_it_was_armed_for_and_no_other() {
        let unarmed = armed::parse("");
        for p in Failpoint::ALL {
            assert_eq!(armed::due(&unarmed, p.name()), None, "{p:?}");
        }
        let armed = armed::parse("after-fsync:2,before-publish");
        let after_fsync = Failpoint::AfterFsync.name();
        assert_eq!(armed::due(&armed, Failpoint::AfterLock.name()), None);
        assert_eq!(armed::due(&armed, after_fsync), None);
        assert_eq!(armed::due(&armed, after_fsync), Some(2));
        assert_eq!(armed::due(&armed, after_fsync), None);
        assert_eq!(armed::due(&armed, Failpoint::BeforePublish.name()), Some(1));
        // The test process has no ORCH_FAILPOINT: reaching any point returns.
        for p in Failpoint::ALL {
            armed::hit(p);
        }
    }

    #[test]
    fn each_point_has_a_name_of_its_own() {
        let names: std::collections::BTreeSet<&str> =
            Failpoint::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), Failpoint::ALL.len());
    }
}
