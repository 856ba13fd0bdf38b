//! Lease time. Lease deadlines live in the replicated state
//! ([`socketplane_store::kv`]), in milliseconds of the leader's lease clock:
//! the leader stamps every grant, keep-alive and expiry with it, so every
//! node applies the same times. A new leader first replicates
//! `RefreshLeases` (every lease gets a fresh TTL on its clock, as etcd
//! does), and only then stamps anything, so clock differences between nodes
//! never expire a lease early.
//!
//! Keep-alives do not write the log (as in etcd): the leader, once a
//! heartbeat quorum confirmed it still leads, records the renewal in memory
//! for its term. Only when a lease's replicated deadline is reached does it
//! replicate the renewed deadline (`ExtendLeases`, at most one entry per
//! lease per TTL) together with the expiry of the leases nobody renewed.
//! Renewals recorded by a leader that lost its term are lost with it, which
//! is safe: the next leader's `RefreshLeases` gives every lease a full TTL
//! from a moment after every renewal the old leader confirmed.

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::ServerState;
use socketplane_store::kv::Command;
use socketplane_store::LeaseId;

use crate::shared::{lock, Core};
use crate::types::Rejected;
use crate::wire::{ClientRequest, WireError};

/// The leader's lease clock for one term.
#[derive(Clone, Copy)]
struct TermClock {
    term: u64,
    started: Instant,
    base_ms: u64,
}

impl TermClock {
    /// Monotonic within the term, whatever the wall clock does.
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

#[derive(Default)]
pub(crate) struct Leases {
    clock: Mutex<Option<TermClock>>,
    /// One refresh proposal at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Leader-local renewals: lease -> (term, deadline on the term clock).
    renewed: Mutex<HashMap<LeaseId, (u64, u64)>>,
}

fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Leases {
    fn clock_in(&self, term: u64) -> Option<TermClock> {
        lock(&self.clock).filter(|c| c.term == term)
    }

    /// The lease time to stamp a command with, on the leader of the
    /// current term. The first call of a term replicates the term's
    /// `RefreshLeases` first.
    pub async fn now_ms(&self, core: &Core) -> Result<u64, WireError> {
        let m = core.metrics();
        if m.current_leader != Some(core.id()) {
            return Err(core.not_leader());
        }
        let term = m.current_term;
        if let Some(c) = self.clock_in(term) {
            return Ok(c.now_ms());
        }
        let _one = self.refreshing.lock().await;
        if let Some(c) = self.clock_in(term) {
            return Ok(c.now_ms());
        }
        let clock = TermClock {
            term,
            started: Instant::now(),
            base_ms: wall_clock_ms(),
        };
        let resp = core
            .raft
            .client_write(
                Command::RefreshLeases {
                    now_ms: clock.base_ms,
                }
                .into(),
            )
            .await
            .map_err(|e| core.write_err(e))?;
        // Committed in another term means we lost leadership meanwhile.
        if resp.log_id.leader_id.term != term {
            return Err(core.not_leader());
        }
        *lock(&self.clock) = Some(clock);
        Ok(clock.now_ms())
    }

    /// The replicated command for a client request, lease times stamped.
    pub async fn command(&self, core: &Core, req: ClientRequest) -> Result<Command, WireError> {
        Ok(match req {
            ClientRequest::Txn(txn) => Command::Txn(txn),
            ClientRequest::LeaseRevoke(id) => Command::LeaseRevoke { id },
            ClientRequest::LeaseGrant { ttl_ms } => Command::LeaseGrant {
                id: None,
                ttl_ms,
                now_ms: self.now_ms(core).await?,
            },
            ClientRequest::LeaseKeepAlive(id) => Command::LeaseKeepAlive {
                id,
                now_ms: self.now_ms(core).await?,
            },
        })
    }

    /// Renews a lease on this leader without a log entry. The caller has
    /// confirmed the leadership with a heartbeat quorum.
    pub async fn renew(&self, core: &Core, id: LeaseId) -> Result<(), WireError> {
        let now = self.now_ms(core).await?;
        let term = lock(&self.clock)
            .map(|c| c.term)
            .ok_or_else(|| core.not_leader())?;
        let g = core.sm.lock();
        let lease = g
            .state
            .lease(id)
            .ok_or(WireError::from(Rejected::LeaseNotFound(id)))?;
        let mut renewed = lock(&self.renewed);
        let local = renewed
            .get(&id)
            .filter(|(t, _)| *t == term)
            .map_or(0, |(_, d)| *d);
        if lease.deadline_ms.max(local) <= now {
            return Err(Rejected::LeaseNotFound(id).into());
        }
        renewed.insert(id, (term, now.saturating_add(lease.ttl_ms)));
        Ok(())
    }

    /// Leader housekeeping: start the term's lease clock, and once leases
    /// reach their replicated deadline, replicate the renewals this leader
    /// recorded for them and expire the rest (one entry for all).
    async fn tick(&self, core: &Core) {
        if core.metrics().state != ServerState::Leader {
            lock(&self.clock).take();
            return;
        }
        let now = match self.now_ms(core).await {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!(error = %e, "Could not start this term's lease clock.");
                return;
            }
        };
        let Some(term) = lock(&self.clock).map(|c| c.term) else {
            return;
        };
        let (expire, extend) = {
            let g = core.sm.lock();
            let mut renewed = lock(&self.renewed);
            renewed.retain(|id, (t, _)| *t == term && g.state.lease(*id).is_some());
            let (mut expire, mut extend) = (false, Vec::new());
            for l in g.state.leases().filter(|l| l.deadline_ms <= now) {
                match renewed.get(&l.id) {
                    Some((_, d)) if *d > now => extend.push((l.id, *d)),
                    _ => expire = true,
                }
            }
            (expire, extend)
        };
        if !expire && extend.is_empty() {
            return;
        }
        let cmd = if extend.is_empty() {
            Command::ExpireLeases { now_ms: now }
        } else {
            // Renewals first, so the expiry spares the renewed leases.
            Command::Batch(vec![
                Command::ExtendLeases { deadlines: extend },
                Command::ExpireLeases { now_ms: now },
            ])
        };
        match core.raft.client_write(cmd.into()).await {
            Ok(r) => {
                if let Some(Ok(socketplane_store::kv::Response::LeasesExpired(ids))) =
                    r.data.0.last()
                {
                    tracing::debug!(leases = ?ids, "Leases expired.");
                }
            }
            Err(e) => tracing::debug!(error = %e, "Could not expire leases."),
        }
    }
}

/// Runs [`Leases::tick`] while the node lives.
pub(crate) async fn expiry_loop(core: Weak<Core>, leases: Weak<Leases>) {
    let period = match core.upgrade() {
        Some(c) => c.cfg.timing.heartbeat.min(Duration::from_millis(100)),
        None => return,
    };
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        let (Some(core), Some(leases)) = (core.upgrade(), leases.upgrade()) else {
            return;
        };
        if core.is_stopped() {
            return;
        }
        leases.tick(&core).await;
    }
}
