//! Enrollment attempts per source address: each exchange costs one
//! attempt and a verified proof gives it back, so only failures (wrong
//! secrets, exchanges never finished) use a source's budget. A budget
//! refills one attempt per interval: online guessing from one address runs
//! at that pace, and honest joiners are never slowed down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The budget: `burst` failures at once, then one per `refill`.
#[derive(Clone, Copy, Debug)]
pub struct AttemptLimits {
    pub burst: u32,
    pub refill: Duration,
    /// Sources tracked at once; past it new sources are refused until old
    /// ones have refilled (an address-rich attacker cannot evict others).
    pub max_sources: usize,
}

impl Default for AttemptLimits {
    fn default() -> Self {
        AttemptLimits {
            burst: 5,
            refill: Duration::from_secs(10),
            max_sources: 4096,
        }
    }
}

struct Budget {
    /// Failures that have not refilled yet.
    used: u32,
    since: Instant,
}

/// Failed enrollment attempts per source address.
pub struct Attempts {
    limits: AttemptLimits,
    sources: Mutex<HashMap<IpAddr, Budget>>,
}

impl Attempts {
    pub fn new(limits: AttemptLimits) -> Attempts {
        Attempts {
            limits,
            sources: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Budget, now: Instant) {
        let refill = self.limits.refill.max(Duration::from_millis(1));
        let steps = (now.saturating_duration_since(b.since).as_millis() / refill.as_millis())
            .min(u128::from(u32::MAX)) as u32;
        if steps > 0 {
            b.used = b.used.saturating_sub(steps);
            b.since += refill * steps;
        }
    }

    /// Takes one attempt for `ip`: `Err(wait)` when its budget is spent.
    pub fn begin(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if !sources.contains_key(&ip) && sources.len() >= self.limits.max_sources {
            sources.retain(|_, b| {
                self.refill(b, now);
                b.used > 0
            });
            if sources.len() >= self.limits.max_sources {
                return Err(self.limits.refill);
            }
        }
        let b = sources.entry(ip).or_insert(Budget {
            used: 0,
            since: now,
        });
        self.refill(b, now);
        if b.used >= self.limits.burst {
            let wait = self
                .limits
                .refill
                .saturating_sub(now.saturating_duration_since(b.since));
            return Err(wait.max(Duration::from_secs(1)));
        }
        if b.used == 0 {
            b.since = now;
        }
        b.used += 1;
        Ok(())
    }

    /// Gives the attempt back: `ip` proved the secret.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = sources.get_mut(&ip) {
            b.used = b.used.saturating_sub(1);
            if b.used == 0 {
                sources.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_spend_a_sources_budget_and_successes_do_not() {
        let a = Attempts::new(AttemptLimits {
            burst: 3,
            refill: Duration::from_millis(200),
            max_sources: 2,
        });
        let (x, y, z): (IpAddr, IpAddr, IpAddr) = (
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            "198.18.0.3".parse().unwrap(),
        );
        for _ in 0..10 {
            a.begin(y).unwrap();
            a.succeeded(y);
        }
        for _ in 0..3 {
            a.begin(x).unwrap();
        }
        assert!(a.begin(x).is_err(), "a fourth failure in a row is refused");
        a.begin(y).unwrap();
        assert!(a.begin(z).is_err(), "the table is full of spent budgets");
        std::thread::sleep(Duration::from_millis(450));
        a.begin(x).unwrap();
        a.begin(z).unwrap();
    }
}
