//! Request rate limits per principal (access.md): a token bucket per principal id, so one
//! runaway client cannot take the database from the others. Refill and burst come from
//! `KOKUHO_RATE_LIMIT_PER_SECOND` and `KOKUHO_RATE_LIMIT_BURST`. Monotonic time, not the
//! ledger's clock (which tests fix): a limit is about the machine's load, not business time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A principal's allowance: `per_second` requests a second, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 300,
            burst: 600,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Buckets held before the next sweep of full ones (a full bucket is as good as none).
    sweep_at: Mutex<usize>,
}

const SWEEP_MIN: usize = 4096;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit: RateLimit {
                per_second: limit.per_second.max(1),
                burst: limit.burst.max(1),
            },
            buckets: Mutex::new(HashMap::new()),
            sweep_at: Mutex::new(SWEEP_MIN),
        }
    }

    pub fn check(&self, principal: &str) -> Result<(), Duration> {
        self.check_at(principal, Instant::now())
    }

    /// Takes one token of `principal`'s bucket, or says how long until one is there.
    pub fn check_at(&self, principal: &str, now: Instant) -> Result<(), Duration> {
        let rate = f64::from(self.limit.per_second);
        let burst = f64::from(self.limit.burst);
        let mut buckets = self.buckets.lock().expect("rate limiter");
        let bucket = match buckets.get_mut(principal) {
            Some(b) => b,
            None => {
                self.sweep(&mut buckets, now);
                buckets
                    .entry(principal.to_owned())
                    .or_insert(Bucket { tokens: burst, at: now })
            }
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Forgets the buckets that have refilled, when there are many (bounded memory).
    fn sweep(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let mut sweep_at = self.sweep_at.lock().expect("rate limiter");
        if buckets.len() < *sweep_at {
            return;
        }
        let (rate, burst) = (f64::from(self.limit.per_second), f64::from(self.limit.burst));
        buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
        *sweep_at = (buckets.len() * 2).max(SWEEP_MIN);
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_refill_rate_per_principal() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 10,
            burst: 5,
        });
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check_at("a", t0).is_ok());
        }
        let wait = limiter.check_at("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO, "{wait:?}");
        assert_eq!(retry_after_seconds(wait), 1);
        // Another principal has its own bucket.
        assert!(limiter.check_at("b", t0).is_ok());
        // 100 ms refills one token, not more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.check_at("a", t1).is_ok());
        assert!(limiter.check_at("a", t1).is_err());
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(limiter.check_at("a", t2).is_ok());
        }
        assert!(limiter.check_at("a", t2).is_err());
    }

    #[test]
    fn refilled_buckets_are_forgotten_when_there_are_many() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 1,
            burst: 2,
        });
        let t0 = Instant::now();
        for i in 0..SWEEP_MIN {
            limiter.check_at(&i.to_string(), t0).unwrap();
        }
        // Much later every bucket is full again: the next new principal sweeps them.
        limiter.check_at("new", t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
