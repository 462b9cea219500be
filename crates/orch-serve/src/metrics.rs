//! `/metrics`: Prometheus text exposition, written by hand (a handful of series).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the phase duration histogram.
const BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Counters fed by the event sinks of the runs this server started.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Runs finished since the server started, by status.
    runs_finished: Mutex<BTreeMap<&'static str, u64>>,
    /// Phases finished, by status.
    phases_finished: Mutex<BTreeMap<&'static str, u64>>,
    /// Histogram of phase durations (phases that ran).
    hist: Mutex<Histogram>,
    /// Output lines streamed.
    pub(crate) output_lines: AtomicU64,
    /// SSE clients connected now.
    pub(crate) clients: AtomicU64,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    pub(crate) fn run_finished(&self, status: &'static str) {
        if let Ok(mut m) = self.runs_finished.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    pub(crate) fn phase_finished(&self, status: &'static str, ran: Option<Duration>) {
        if let Ok(mut m) = self.phases_finished.lock() {
            *m.entry(status).or_default() += 1;
        }
        if let Some(d) = ran
            && let Ok(mut h) = self.hist.lock()
        {
            let s = d.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += s;
        }
    }

    /// The exposition text. `runs` counts the state directory's runs by status (as
    /// `orch runs` shows them), `queue` the runs waiting.
    pub(crate) fn render(
        &self,
        runs: &BTreeMap<String, u64>,
        queue: usize,
        active: bool,
    ) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP orch_runs Runs in the state directory, by status.\n# TYPE orch_runs gauge"
        );
        for (status, n) in runs {
            let _ = writeln!(s, "orch_runs{{status=\"{status}\"}} {n}");
        }
        let _ = writeln!(
            s,
            "# HELP orch_runs_finished_total Runs this server ran to their end, by status.\n\
             # TYPE orch_runs_finished_total counter"
        );
        if let Ok(m) = self.runs_finished.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(s, "orch_runs_finished_total{{status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(
            s,
            "# HELP orch_phases_finished_total Phases of this server's runs that ended, by status.\n\
             # TYPE orch_phases_finished_total counter"
        );
        if let Ok(m) = self.phases_finished.lock() {
            for (status, n) in m.iter() {
                let _ = writeln!(s, "orch_phases_finished_total{{status=\"{status}\"}} {n}");
            }
        }
        let _ = writeln!(
            s,
            "# HELP orch_phase_duration_seconds Wall time of phases that ran.\n\
             # TYPE orch_phase_duration_seconds histogram"
        );
        if let Ok(h) = self.hist.lock() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "orch_phase_duration_seconds_bucket{{le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                s,
                "orch_phase_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
                 orch_phase_duration_seconds_sum {}\norch_phase_duration_seconds_count {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            s,
            "# HELP orch_output_lines_total Output lines of this server's runs.\n\
             # TYPE orch_output_lines_total counter\norch_output_lines_total {}",
            self.output_lines.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP orch_queue_length Runs waiting to start.\n# TYPE orch_queue_length gauge\n\
             orch_queue_length {queue}"
        );
        let _ = writeln!(
            s,
            "# HELP orch_run_active Whether this server is running a run now.\n\
             # TYPE orch_run_active gauge\norch_run_active {}",
            u8::from(active)
        );
        let _ = writeln!(
            s,
            "# HELP orch_connected_clients Event-stream (SSE) clients connected now.\n\
             # TYPE orch_connected_clients gauge\norch_connected_clients {}",
            self.clients.load(Ordering::Relaxed)
        );
        s
    }
}
