//! Fencing: a node cut off from its cluster's majority takes its
//! workloads' addresses off the wire before anyone may reclaim them, and
//! puts them back once it is in touch again and they are still its own.
//!
//! The clock is this node's own liveness lease: while a renewal it sent at
//! `t` succeeded, nobody can count it dead before `t + ttl`, and nobody
//! reclaims before that plus `--reclaim-after`. So the node fences when no
//! renewal has succeeded for a lease TTL plus [`fence_margin`] of the time
//! it actually ran: a
//! process that was stalled (SIGSTOP, a paused VM) cannot have fenced
//! during the stall, and counting the stall would make it fence the moment
//! it resumes, before its first renewal had a chance.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A gap between two checks longer than this means the process was
/// stalled, not cut off.
const STALL: Duration = Duration::from_secs(2);

/// When this node's liveness lease was last renewed, as the keep-alive
/// loop records it.
#[derive(Debug, Default)]
pub(crate) struct LeaseClock(Mutex<Option<(Instant, Duration)>>);

impl LeaseClock {
    /// A renewal (or registration) sent at `sent` succeeded.
    pub(crate) fn renewed(&self, sent: Instant, ttl: Duration) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none_or(|(t, _)| t < sent) {
            *g = Some((sent, ttl));
        }
    }

    pub(crate) fn get(&self) -> Option<(Instant, Duration)> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Decides from the lease clock whether this node is cut off.
#[derive(Debug)]
pub(crate) struct FenceClock {
    last_check: Instant,
    resumed: Instant,
}

impl FenceClock {
    pub(crate) fn new(now: Instant) -> Self {
        FenceClock {
            last_check: now,
            resumed: now,
        }
    }

    /// Whether this node must be fenced at `now`, given its last renewal
    /// (`None`: never registered, so it holds nothing yet). Called often
    /// (well under [`STALL`] apart).
    /// `margin`: how long past the lease TTL to wait (see [`fence_margin`]).
    pub(crate) fn cut_off(
        &mut self,
        now: Instant,
        lease: Option<(Instant, Duration)>,
        margin: Duration,
    ) -> bool {
        if now.saturating_duration_since(self.last_check) > STALL {
            self.resumed = now;
        }
        self.last_check = now;
        let Some((renewed, ttl)) = lease else {
            return false;
        };
        now.saturating_duration_since(renewed.max(self.resumed)) >= ttl + margin
    }
}

/// How long past its lease TTL a node without renewals waits before it
/// fences: half the reclaim grace, so the fence is up well before anyone
/// may reclaim, but at least 3 s, so the few seconds of a leader failover
/// (when renewals fail everywhere) do not fence healthy hosts; at most
/// 30 s. Without a grace (only `cluster remove` reclaims), 30 s.
pub(crate) fn fence_margin(reclaim_after: Option<Duration>) -> Duration {
    reclaim_after.map_or(MAX_MARGIN, |g| (g / 2).clamp(MIN_MARGIN, MAX_MARGIN))
}

const MIN_MARGIN: Duration = Duration::from_secs(3);
const MAX_MARGIN: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);
    const STEP: Duration = Duration::from_millis(250);
    const M: Duration = Duration::ZERO;

    #[test]
    fn fences_after_a_ttl_without_renewal_of_running_time() {
        let t0 = Instant::now();
        let mut c = FenceClock::new(t0);
        let lease = Some((t0, TTL));
        let mut now = t0;
        while now < t0 + TTL - STEP {
            now += STEP;
            assert!(!c.cut_off(now, lease, M), "fenced early at {:?}", now - t0);
        }
        now += STEP * 2;
        assert!(c.cut_off(now, lease, M));
        // A renewal ends it.
        assert!(!c.cut_off(now + STEP, Some((now, TTL)), M));
    }

    #[test]
    fn a_stall_does_not_count_as_cut_off_time() {
        let t0 = Instant::now();
        let mut c = FenceClock::new(t0);
        let lease = Some((t0, TTL));
        assert!(!c.cut_off(t0 + STEP, lease, M));
        // 30 s stalled: the first check after it does not fence ...
        let resumed = t0 + Duration::from_secs(30);
        assert!(!c.cut_off(resumed, lease, M));
        assert!(!c.cut_off(resumed + STEP, lease, M));
        // ... but still no renewal a TTL of running time later does.
        let mut now = resumed;
        while now < resumed + TTL {
            now += STEP;
            c.cut_off(now, lease, M);
        }
        assert!(c.cut_off(now + STEP, lease, M));
    }

    #[test]
    fn never_registered_is_not_cut_off() {
        let t0 = Instant::now();
        let mut c = FenceClock::new(t0);
        assert!(!c.cut_off(t0 + Duration::from_secs(1), None, M));
    }

    #[test]
    fn the_margin_is_half_the_grace_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(fence_margin(Some(s(300))), s(30));
        assert_eq!(fence_margin(Some(s(10))), s(5));
        assert_eq!(fence_margin(Some(s(1))), s(3));
        assert_eq!(fence_margin(None), s(30));
        // The fence is up before the grace ends, for graces of 6 s and more.
        for g in [6, 10, 20, 60, 300, 3600] {
            assert!(fence_margin(Some(s(g))) < s(g));
        }
    }

    #[test]
    fn lease_clock_keeps_the_newest_renewal() {
        let l = LeaseClock::default();
        let t0 = Instant::now();
        l.renewed(t0 + STEP, TTL);
        l.renewed(t0, TTL);
        assert_eq!(l.get(), Some((t0 + STEP, TTL)));
    }
}
