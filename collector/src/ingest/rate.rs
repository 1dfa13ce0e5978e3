//! Ingest rate limits per API key and per org: token buckets counted in records, so one key (or
//! one org's keys together) cannot take the WAL every org shares.
//!
//! Hand-written rather than `governor`: a batch must be checked against its key's and its org's
//! bucket at once and take from neither when one refuses, and a batch larger than the burst must
//! still go through (once the bucket is full, leaving it in debt); governor's `check_n` refuses
//! such a batch forever and checks one limiter at a time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The buckets are swept of full ones (equal to no entry) when a map grows past this (or past
/// twice what the last sweep kept), so memory follows the keys and orgs that sent within about one
/// burst's refill time, not all ever seen, and sweeping costs O(1) per insert amortised.
const SWEEP_ABOVE: usize = 1024;

/// One limit: an average rate and the records that may come at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Records per second, on average.
    pub per_second: f64,
    /// Records that may come at once; also the most a bucket holds.
    pub burst: f64,
}

impl RateLimit {
    /// From config: 0 records/s is no limit, a burst of 0 is one second's worth.
    pub fn from_config(per_second: u32, burst: u32) -> Option<RateLimit> {
        (per_second > 0).then(|| RateLimit {
            per_second: f64::from(per_second),
            burst: f64::from(if burst == 0 { per_second } else { burst }),
        })
    }
}

/// Which limit refused a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    Key,
    Org,
}

impl RateScope {
    /// The metrics label and the config key's suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            RateScope::Key => "key",
            RateScope::Org => "org",
        }
    }
}

/// A batch refused by a rate limit; nothing of it was taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "rate limit of this {} exceeded ({} records per second, bursts of {}): \
     the batch of {records} records was not stored; retry in {}s",
    scope.as_str(), limit.per_second, limit.burst, retry_after_secs(*retry_after)
)]
pub struct RateLimited {
    pub scope: RateScope,
    pub limit: RateLimit,
    pub records: u64,
    /// How long until the batch would be taken, if nothing else is sent meanwhile.
    pub retry_after: Duration,
}

impl RateLimited {
    /// `retry_after` in whole seconds, at least 1 (for `Retry-After`).
    pub fn retry_after_secs(&self) -> u32 {
        retry_after_secs(self.retry_after)
    }
}

fn retry_after_secs(wait: Duration) -> u32 {
    (wait.as_secs_f64().ceil() as u32).max(1)
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// May be negative after a batch larger than the burst (debt).
    tokens: f64,
    at: Instant,
}

/// The buckets of one scope, by key id or org id.
#[derive(Debug)]
struct Buckets {
    limit: RateLimit,
    by_name: HashMap<String, Bucket>,
    /// Size at which the next sweep runs.
    sweep_at: usize,
}

impl Buckets {
    /// Tokens `name` has at `now`.
    fn available(&self, name: &str, now: Instant) -> f64 {
        self.by_name.get(name).map_or(self.limit.burst, |b| {
            let refill = now.saturating_duration_since(b.at).as_secs_f64() * self.limit.per_second;
            (b.tokens + refill).min(self.limit.burst)
        })
    }

    /// How long until `records` may be taken from `name`: zero if now. A batch larger than the
    /// burst needs a full bucket.
    fn wait(&self, name: &str, records: f64, now: Instant) -> Duration {
        let needed = records.min(self.limit.burst);
        let missing = needed - self.available(name, now);
        if missing <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.limit.per_second)
        }
    }

    fn take(&mut self, name: &str, records: f64, now: Instant) {
        let tokens = self.available(name, now) - records;
        if self.by_name.len() >= self.sweep_at && !self.by_name.contains_key(name) {
            let limit = self.limit;
            self.by_name.retain(|_, b| {
                let refill = now.saturating_duration_since(b.at).as_secs_f64() * limit.per_second;
                b.tokens + refill < limit.burst
            });
            self.sweep_at = SWEEP_ABOVE.max(2 * self.by_name.len());
        }
        self.by_name
            .insert(name.to_string(), Bucket { tokens, at: now });
    }
}

/// The rate limits of ingest: per key and per org, each optional.
#[derive(Debug)]
pub struct RateLimiter {
    /// Whether any limit is set: without, batches pass without taking the lock.
    enabled: bool,
    buckets: Mutex<(Option<Buckets>, Option<Buckets>)>,
}

impl Default for RateLimiter {
    /// No limits.
    fn default() -> Self {
        RateLimiter::new(None, None)
    }
}

impl RateLimiter {
    pub fn new(per_key: Option<RateLimit>, per_org: Option<RateLimit>) -> Self {
        let buckets = |limit: Option<RateLimit>| {
            limit.map(|limit| Buckets {
                limit,
                by_name: HashMap::new(),
                sweep_at: SWEEP_ABOVE,
            })
        };
        RateLimiter {
            enabled: per_key.is_some() || per_org.is_some(),
            buckets: Mutex::new((buckets(per_key), buckets(per_org))),
        }
    }

    /// Whether any limit is set.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Takes `records` from the key's and the org's allowance, or from neither and says which
    /// limit refused and for how long.
    pub fn admit(&self, key_id: &str, org: &str, records: u64) -> Result<(), RateLimited> {
        self.admit_at(key_id, org, records, Instant::now())
    }

    fn admit_at(
        &self,
        key_id: &str,
        org: &str,
        records: u64,
        now: Instant,
    ) -> Result<(), RateLimited> {
        if records == 0 || !self.enabled {
            return Ok(());
        }
        let n = records as f64;
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (per_key, per_org) = &mut *guard;
        let refusal = [
            (RateScope::Key, per_key.as_ref(), key_id),
            (RateScope::Org, per_org.as_ref(), org),
        ]
        .into_iter()
        .filter_map(|(scope, buckets, name)| {
            let buckets = buckets?;
            let wait = buckets.wait(name, n, now);
            (!wait.is_zero()).then_some(RateLimited {
                scope,
                limit: buckets.limit,
                records,
                retry_after: wait,
            })
        })
        .max_by_key(|r| r.retry_after);
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        if let Some(b) = per_key {
            b.take(key_id, n, now);
        }
        if let Some(b) = per_org {
            b.take(org, n, now);
        }
        Ok(())
    }

    /// Buckets held (key and org), for tests of the memory bound.
    #[cfg(test)]
    fn held(&self) -> usize {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.0.as_ref().map_or(0, |b| b.by_name.len())
            + buckets.1.as_ref().map_or(0, |b| b.by_name.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> Option<RateLimit> {
        RateLimit::from_config(per_second, burst)
    }

    #[test]
    fn no_limits_take_anything() {
        let r = RateLimiter::default();
        assert!(!r.is_enabled());
        let now = Instant::now();
        for _ in 0..100 {
            r.admit_at("k", "o", 1_000_000, now).unwrap();
        }
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn counts_records_and_refills_at_the_rate() {
        let r = RateLimiter::new(limit(10, 20), None);
        let t0 = Instant::now();
        r.admit_at("k", "o", 15, t0).unwrap();
        let refused = r.admit_at("k", "o", 10, t0).unwrap_err();
        assert_eq!(refused.scope, RateScope::Key);
        assert_eq!(refused.records, 10);
        // 5 left, 10 needed: half a second at 10/s.
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.retry_after_secs(), 1);
        assert!(
            refused
                .to_string()
                .contains("10 records per second, bursts of 20"),
            "{refused}"
        );
        // A refused batch took nothing: after the wait it goes through, and the bucket is empty.
        let t1 = t0 + refused.retry_after;
        r.admit_at("k", "o", 10, t1).unwrap();
        assert!(r.admit_at("k", "o", 1, t1).is_err());
        r.admit_at("k", "o", 1, t1 + Duration::from_millis(100))
            .unwrap();
    }

    #[test]
    fn a_batch_larger_than_the_burst_goes_through_on_a_full_bucket_then_waits_its_debt() {
        let r = RateLimiter::new(limit(100, 100), None);
        let t0 = Instant::now();
        r.admit_at("k", "o", 50, t0).unwrap();
        let refused = r.admit_at("k", "o", 1000, t0).unwrap_err();
        assert_eq!(
            refused.retry_after,
            Duration::from_millis(500),
            "until full"
        );
        let t1 = t0 + Duration::from_millis(500);
        r.admit_at("k", "o", 1000, t1).unwrap();
        // 100 - 1000 = -900 tokens: 9 s to get back to zero, 9.01 s to one record.
        let refused = r.admit_at("k", "o", 1, t1).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 10);
        r.admit_at("k", "o", 1, t1 + Duration::from_millis(9010))
            .unwrap();
    }

    #[test]
    fn keys_are_limited_apart_and_an_org_limit_covers_all_its_keys() {
        let r = RateLimiter::new(limit(10, 10), limit(15, 15));
        let t0 = Instant::now();
        r.admit_at("a1", "a", 10, t0).unwrap();
        assert_eq!(
            r.admit_at("a1", "a", 1, t0).unwrap_err().scope,
            RateScope::Key
        );
        // Another org's key is not touched by a1's flood.
        r.admit_at("b1", "b", 10, t0).unwrap();
        // Another key of org a has its own 10, but the org has only 5 left.
        let refused = r.admit_at("a2", "a", 10, t0).unwrap_err();
        assert_eq!(refused.scope, RateScope::Org);
        // Refused by the org, so a2's own bucket was not taken from.
        r.admit_at("a2", "a", 5, t0).unwrap();
        r.admit_at("a2", "a", 5, t0 + Duration::from_secs(1))
            .unwrap();
    }

    #[test]
    fn memory_stays_bounded_with_many_keys() {
        let r = RateLimiter::new(limit(1000, 1000), None);
        let t0 = Instant::now();
        for i in 0..50_000u64 {
            // Each key sends once, then its bucket is full again 10 ms later.
            let now = t0 + Duration::from_millis(i);
            r.admit_at(&format!("key-{i}"), "o", 10, now).unwrap();
        }
        assert!(r.held() <= SWEEP_ABOVE + 1, "{} buckets held", r.held());
    }
}
