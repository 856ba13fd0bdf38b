//! Enrollment attempts per source address and on this node in all: each
//! exchange costs one attempt of both budgets and a verified proof gives it
//! back, so only failures (wrong secrets, exchanges never finished) use
//! them. A budget refills one attempt per interval: online guessing from
//! one address runs at the source's pace, and from many addresses at the
//! node's, and honest joiners are never slowed down by them. (An attacker
//! can spend the node's budget: joins through this node then wait and
//! retry, but guessing gets no faster.)

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
    /// The node's budget, over every source: `global_burst` failures at
    /// once, then one per `global_refill`.
    pub global_burst: u32,
    pub global_refill: Duration,
}

impl Default for AttemptLimits {
    fn default() -> Self {
        AttemptLimits {
            burst: 5,
            refill: Duration::from_secs(10),
            max_sources: 4096,
            // Honest exchanges in flight hold an attempt too (until their
            // proof gives it back): room for a cold start of about a
            // hundred hosts enrolling through one node at once.
            global_burst: 128,
            global_refill: Duration::from_secs(2),
        }
    }
}

struct Budget {
    /// Failures that have not refilled yet.
    used: u32,
    since: Instant,
}

/// A refused attempt: how long to wait, and whether this node's budget
/// (every source's) is spent rather than the source's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spent {
    pub wait: Duration,
    pub node_wide: bool,
}

/// Failed enrollment attempts per source address and in all.
pub struct Attempts {
    limits: AttemptLimits,
    sources: Mutex<HashMap<IpAddr, Budget>>,
    global: Mutex<Budget>,
}

/// Refills `b` by one attempt per `refill` since it last changed.
fn refill(b: &mut Budget, refill: Duration, now: Instant) {
    let refill = refill.max(Duration::from_millis(1));
    let steps = (now.saturating_duration_since(b.since).as_millis() / refill.as_millis())
        .min(u128::from(u32::MAX)) as u32;
    if steps > 0 {
        b.used = b.used.saturating_sub(steps);
        b.since += refill * steps;
    }
}

/// How long until `b` has an attempt again.
fn wait(b: &Budget, refill: Duration, now: Instant) -> Duration {
    refill
        .saturating_sub(now.saturating_duration_since(b.since))
        .max(Duration::from_secs(1))
}

impl Attempts {
    pub fn new(limits: AttemptLimits) -> Attempts {
        Attempts {
            limits,
            sources: Mutex::new(HashMap::new()),
            global: Mutex::new(Budget {
                used: 0,
                since: Instant::now(),
            }),
        }
    }

    fn refill(&self, b: &mut Budget, now: Instant) {
        refill(b, self.limits.refill, now)
    }

    /// Takes one attempt for `ip`: `Err(wait)` when its budget or this
    /// node's is spent.
    pub fn begin(&self, ip: IpAddr) -> Result<(), Spent> {
        let now = Instant::now();
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut global = self.global.lock().unwrap_or_else(|e| e.into_inner());
        refill(&mut global, self.limits.global_refill, now);
        if global.used >= self.limits.global_burst {
            return Err(Spent {
                wait: wait(&global, self.limits.global_refill, now),
                node_wide: true,
            });
        }
        if !sources.contains_key(&ip) && sources.len() >= self.limits.max_sources {
            sources.retain(|_, b| {
                self.refill(b, now);
                b.used > 0
            });
            if sources.len() >= self.limits.max_sources {
                return Err(Spent {
                    wait: self.limits.refill,
                    node_wide: false,
                });
            }
        }
        let b = sources.entry(ip).or_insert(Budget {
            used: 0,
            since: now,
        });
        self.refill(b, now);
        if b.used >= self.limits.burst {
            return Err(Spent {
                wait: wait(b, self.limits.refill, now),
                node_wide: false,
            });
        }
        if b.used == 0 {
            b.since = now;
        }
        b.used += 1;
        if global.used == 0 {
            global.since = now;
        }
        global.used += 1;
        Ok(())
    }

    /// Gives the attempt back: `ip` proved the secret.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let mut global = self.global.lock().unwrap_or_else(|e| e.into_inner());
        global.used = global.used.saturating_sub(1);
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
            ..AttemptLimits::default()
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

    #[test]
    fn many_addresses_share_the_nodes_budget_and_successes_give_it_back() {
        let a = Attempts::new(AttemptLimits {
            burst: 5,
            refill: Duration::from_secs(60),
            max_sources: 4096,
            global_burst: 8,
            global_refill: Duration::from_millis(300),
        });
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i));
        // An honest joiner before any failure: never counted.
        for _ in 0..50 {
            a.begin(ip(1000)).unwrap();
            a.succeeded(ip(1000));
        }
        // Eight failures from eight addresses spend the node's budget,
        // though each address has four attempts left.
        for i in 0..8 {
            a.begin(ip(i)).unwrap();
        }
        for i in 8..100 {
            let spent = a.begin(ip(i)).expect_err("a ninth guess");
            assert!(spent.node_wide, "address {i}: {spent:?}");
        }
        assert!(a.begin(ip(0)).is_err(), "a known address got past it");
        // One refill: one more attempt in all, from any address.
        std::thread::sleep(Duration::from_millis(350));
        a.begin(ip(200)).unwrap();
        assert!(a.begin(ip(201)).is_err());
        // A proof that verifies gives its attempt back to both budgets.
        a.succeeded(ip(200));
        a.begin(ip(202)).unwrap();
    }
}
