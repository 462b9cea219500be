//! The per-agent circuit breaker: opens after `failures` consecutive failures, lets one
//! probe through after its cooldown, and closes on a success.

use std::time::Duration;

use tokio::time::Instant;

use super::engine::Engine;

pub(super) struct Breaker {
    pub(super) failures: u32,
    pub(super) consecutive: u32,
    pub(super) cooldown: Duration,
    pub(super) open_until: Option<Instant>,
    pub(super) probing: bool,
}

impl Engine {
    pub(super) fn breaker_success(&mut self, ai: usize) {
        let b = &mut self.agents[ai].breaker;
        b.consecutive = 0;
        b.open_until = None;
        b.probing = false;
    }

    pub(super) fn breaker_failure(&mut self, ai: usize) {
        let b = &mut self.agents[ai].breaker;
        b.consecutive += 1;
        if b.failures > 0 && (b.consecutive >= b.failures || b.probing) {
            b.open_until = Some(Instant::now() + b.cooldown);
            b.probing = false;
        }
    }
}
