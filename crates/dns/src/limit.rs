//! A token bucket per source address, so one workload's flood cannot take
//! the server from the others. The table is bounded: when it is full, the
//! buckets that have refilled completely (idle sources) are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most sources tracked at once.
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    /// Queries per second per source; 0: unlimited.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `rate` queries per second per source with bursts of `burst`; a rate
    /// of 0 turns limiting off.
    pub fn new(rate: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `source`; false when it has none left.
    pub fn allow(&self, source: IpAddr) -> bool {
        self.allow_at(source, Instant::now())
    }

    fn allow_at(&self, source: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        // A poisoned lock only means a panic elsewhere mid-update; the
        // buckets are still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&source) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let b = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.rate;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_per_source() {
        let l = RateLimiter::new(10, 5);
        let t = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((0..10).filter(|_| l.allow_at(a, t)).count(), 5);
        assert!(l.allow_at(b, t), "another source has its own bucket");
        assert!(l.allow_at(a, t + Duration::from_millis(100)));
        assert!(!l.allow_at(a, t + Duration::from_millis(100)));
        let off = RateLimiter::new(0, 0);
        assert!((0..1000).all(|_| off.allow_at(a, t)));
    }
}
