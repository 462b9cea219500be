//! Named crash points for tests: `ORCH_FAILPOINT=NAME[:COUNT][,NAME[:COUNT]...]` makes the
//! process abort (SIGABRT, like a crash: no destructor runs, nothing is flushed) the
//! COUNT-th time (default: the first) it reaches the point NAME.
//!
//! The points, in the order a run meets them:
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

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable that arms failpoints.
pub const ENV: &str = "ORCH_FAILPOINT";

/// Every failpoint name the engine has.
pub const NAMES: &[&str] = &[
    "after-lock",
    "after-journal-header",
    "after-journal-append",
    "before-fsync",
    "after-fsync",
    "after-phase-start",
    "before-publish",
    "before-run-record",
    "after-run-record",
];

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> &'static [Armed] {
    static ARMED: OnceLock<Vec<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| match std::env::var(ENV) {
        Ok(spec) => parse(&spec),
        Err(_) => Vec::new(),
    })
}

fn parse(spec: &str) -> Vec<Armed> {
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

/// Reaches the failpoint `name`: aborts the process if it is armed and this is the hit it
/// was armed for.
pub fn hit(name: &str) {
    let armed = armed();
    if armed.is_empty() {
        return;
    }
    if let Some(at) = due(armed, name) {
        eprintln!("orch: failpoint `{name}` hit {at} time(s): aborting");
        std::process::abort();
    }
}

/// Counts a hit of `name` and returns the count it was armed for when this is that hit.
fn due(armed: &[Armed], name: &str) -> Option<u64> {
    armed
        .iter()
        .filter(|a| a.name == name)
        .find(|a| a.hits.fetch_add(1, Ordering::SeqCst) + 1 == a.at)
        .map(|a| a.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_names_and_counts() {
        let a = parse("after-fsync:3, before-fsync,,x:0");
        let got: Vec<(&str, u64)> = a.iter().map(|a| (a.name.as_str(), a.at)).collect();
        assert_eq!(got, [("after-fsync", 3), ("before-fsync", 1), ("x", 1)]);
    }

    #[test]
    fn a_point_fires_on_the_hit_it_was_armed_for_and_no_other() {
        let unarmed = parse("");
        for n in NAMES {
            assert_eq!(due(&unarmed, n), None, "{n}");
        }
        let armed = parse("after-fsync:2,before-publish");
        assert_eq!(due(&armed, "after-lock"), None);
        assert_eq!(due(&armed, "after-fsync"), None);
        assert_eq!(due(&armed, "after-fsync"), Some(2));
        assert_eq!(due(&armed, "after-fsync"), None);
        assert_eq!(due(&armed, "before-publish"), Some(1));
        // The test process has no ORCH_FAILPOINT: reaching any point returns.
        for n in NAMES {
            hit(n);
        }
    }
}
