//! Exponential backoff with full jitter: the n-th wait is uniform in
//! `[0, min(max, initial * 2^n)]`, and the ceiling never exceeds [`BACKOFF_CAP`].

use std::time::Duration;

/// No wait is longer than this (the configuration refuses longer ones; a wait the collector
/// asks for is cut to it too).
pub const BACKOFF_CAP: Duration = codestax_config::MAX_RETRY_BACKOFF;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let max = max.min(BACKOFF_CAP).max(initial.min(BACKOFF_CAP));
        Backoff {
            initial: initial.min(max),
            max,
            failures: 0,
        }
    }

    /// The ceiling of the next wait.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next wait (random below the ceiling), counting one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(rand::random::<f64>())
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_with_jitter_below_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<_> = (0..6)
            .map(|_| {
                let c = b.ceiling();
                assert!(b.next_wait() <= c);
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        let waits: Vec<_> = (0..20).map(|_| b.next_wait()).collect();
        assert!(waits.iter().any(|w| *w != waits[0]), "jittered");
    }

    #[test]
    fn capped_at_thirty_seconds() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        for _ in 0..100 {
            assert!(b.next_wait() <= BACKOFF_CAP);
        }
        assert_eq!(b.ceiling(), BACKOFF_CAP);
    }
}
