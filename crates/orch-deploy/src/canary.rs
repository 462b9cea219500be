//! The canary analysis: one step watched through the proxy's own counters.

use std::time::{Duration, Instant};

use crate::deploy::{StepResult, millis};
use crate::deployment::Deployment;
use crate::proxy::{ServerStat, backend};
use crate::settings::{Analysis, Inconclusive};

/// Sums counters over a set of servers.
fn sum(stats: &[ServerStat], names: &[String]) -> (u64, u64) {
    stats
        .iter()
        .filter(|s| names.contains(&s.server))
        .fold((0, 0), |(t, e), s| (t + s.total(), e + s.errors()))
}

impl Deployment<'_> {
    /// Watches one canary step: the new version's responses (by status class) in the
    /// proxy's counters over the window. Fails as soon as the error rate passes the limit
    /// with at least `min_requests` seen.
    pub(crate) async fn analyse(
        &self,
        percent: u8,
        old: &[String],
        new: &[String],
        a: &Analysis,
    ) -> Result<StepResult, String> {
        let be = backend(&self.plan.service);
        let before = self.api.servers(&be).await.map_err(|e| e.to_string())?;
        let (n0, e0) = sum(&before, new);
        let (o0, _) = sum(&before, old);
        let started = Instant::now();
        let mut windows = 1u32;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.api.servers(&be).await.map_err(|e| e.to_string())?;
            let (n1, e1) = sum(&now, new);
            let (o1, _) = sum(&now, old);
            let requests = n1.saturating_sub(n0);
            let errors = e1.saturating_sub(e0);
            let rate = if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            };
            let elapsed = started.elapsed();
            let result = |verdict: &str| StepResult {
                percent,
                window_ms: millis(elapsed),
                requests,
                errors,
                error_rate: rate,
                old_requests: o1.saturating_sub(o0),
                verdict: verdict.to_owned(),
            };
            if requests >= a.min_requests && rate > a.max_error_rate {
                return Ok(result("fail"));
            }
            if elapsed >= a.interval * windows {
                if requests >= a.min_requests {
                    return Ok(result("pass"));
                }
                if a.inconclusive == Inconclusive::Extend && windows < a.max_windows {
                    windows += 1;
                    self.ctx.log(format!(
                        "canary step {percent}%: {requests} responses so far, fewer than min_requests {}: extending to window {windows} of {}",
                        a.min_requests, a.max_windows
                    ));
                    continue;
                }
                return Ok(result("inconclusive"));
            }
        }
    }
}
