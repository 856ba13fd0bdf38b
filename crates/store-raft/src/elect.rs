//! Elections, with a pre-vote: openraft's own election timer is off
//! (`enable_elect: false`) and a voter that has heard from no leader for an
//! election timeout first asks the other voters whether they would vote for
//! it; it campaigns only with a majority's yes.
//!
//! Why, from the fault suite:
//! - A node cut off from the majority campaigned again and again, raising
//!   its term. Once healed, its higher term made the healthy leader step
//!   down, and the whole cluster was without a leader (and every host
//!   without lease renewals) for another election: a healed host could
//!   then be reclaimed before it got its lease back. With the pre-vote a
//!   cut-off node gets no majority, never raises its term, and simply
//!   follows the leader again once healed.
//! - openraft 0.9 adds `2 × election_timeout_max` to a node's timer for
//!   good once a node with a longer log refused it a vote (every healed
//!   node is refused that way); with every voter so marked, a leader loss
//!   left the cluster leaderless for twice the normal time. This timer
//!   has no such mark.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Weak;
use std::time::{Duration, Instant};

use futures::future::join_all;
use openraft::ServerState;

use crate::shared::{Core, Ticker};
use crate::wire::{PreVoteRequest, PreVoteResponse};

/// How long after its last contact with a leader a voter tries: the leader
/// lease (`election_max`: a leader's followers refuse votes that long)
/// plus an election timeout.
fn patience(core: &Core, seed: &RandomState, attempt: u64) -> Duration {
    core.cfg.timing.election_max + election_timeout(core, seed, attempt)
}

/// A random time in `[election_min, election_max)`, so voters do not try
/// in lockstep; also the wait before the next try after one that won no
/// leadership (a split vote): the leases it waited for are over already.
fn election_timeout(core: &Core, seed: &RandomState, attempt: u64) -> Duration {
    let t = &core.cfg.timing;
    let spread = u64::try_from(t.election_max.saturating_sub(t.election_min).as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let random = seed.hash_one((core.id(), attempt));
    t.election_min + Duration::from_millis(random % spread)
}

/// Whether this node would vote for a candidate with `req`'s log now: it
/// hears from no leader (nor leads a majority) within the leader lease,
/// and the candidate's log is at least as long as its own.
pub(crate) fn answer_pre_vote(core: &Core, req: &PreVoteRequest) -> PreVoteResponse {
    let lease = core.cfg.timing.election_max;
    let m = core.metrics();
    let leading = m.state == ServerState::Leader
        && m.millis_since_quorum_ack
            .is_some_and(|ms| Duration::from_millis(ms) < lease);
    let following = m.state != ServerState::Leader && core.leader_seen_within(lease);
    let log_ok = req.last_log >= core.log.last_log_id();
    PreVoteResponse {
        granted: !leading && !following && log_ok,
    }
}

/// Asks the other voters; true if a majority (this node included) says
/// yes.
async fn pre_vote(core: &Core) -> bool {
    let m = core.metrics();
    let membership = m.membership_config.membership().clone();
    let voters: Vec<_> = membership.voter_ids().collect();
    let others: Vec<String> = voters
        .iter()
        .filter(|v| **v != core.id())
        .filter_map(|v| membership.get_node(v).map(|n| n.addr.clone()))
        .collect();
    let req = PreVoteRequest {
        last_log: core.log.last_log_id(),
    };
    let ttl = core.cfg.timing.election_min;
    let asks = others.iter().map(|addr| {
        let req = &req;
        async move {
            let r: Result<PreVoteResponse, _> =
                core.net.post(addr, "/raft/v1/prevote", req, ttl).await;
            r.is_ok_and(|r| r.granted)
        }
    });
    let yes = 1 + join_all(asks).await.into_iter().filter(|g| *g).count();
    yes * 2 > voters.len()
}

/// How much longer than [`patience`] a voter that has just started waits
/// for a leader before its first try: after a restart of the whole
/// cluster the old leader resumes, but on a machine busy starting many
/// agents its first appends can time out for seconds. An election then
/// would only interrupt it (and, split, cost another); if the old leader
/// did not come back, the first election comes this much later.
fn startup_grace(core: &Core) -> Duration {
    core.cfg.timing.election_max * 2
}

pub(crate) async fn election_loop(core: Weak<Core>) {
    // One random sequence per node: a timer drawn once per reset (new
    // leader contact, new try), not again on every tick.
    let seed = RandomState::new();
    // Ticks well below the election timeout's spread, so two voters' tries
    // fall on the same tick (a split vote) only by chance.
    let Some(mut ticker) = Ticker::every(&core, |c| {
        (c.cfg.timing.election_min / 10).max(Duration::from_millis(20))
    }) else {
        return;
    };
    let Some((mut next_try, grace_until)) = core.upgrade().map(|c| {
        let first = Instant::now() + patience(&c, &seed, 0);
        (first, first + startup_grace(&c))
    }) else {
        return;
    };
    let mut attempt = 0u64;
    let mut last_seen = None;
    while let Some(core) = ticker.tick().await {
        let m = core.metrics();
        let membership = m.membership_config.membership();
        let voter = membership.voter_ids().any(|v| v == core.id());
        if m.state == ServerState::Leader || !voter {
            next_try = Instant::now() + patience(&core, &seed, attempt);
            continue;
        }
        if let Some(seen) = core.leader_seen() {
            if last_seen.is_none_or(|l| seen > l) {
                last_seen = Some(seen);
                attempt += 1;
                next_try = seen + patience(&core, &seed, attempt);
            }
        }
        if Instant::now() < next_try {
            continue;
        }
        let sole = membership.voter_ids().count() == 1;
        if !sole && last_seen.is_none() && Instant::now() < grace_until {
            // Not heard from a leader since this node started: give the
            // one that may be resuming its grace.
            next_try = grace_until;
            continue;
        }
        attempt += 1;
        next_try = Instant::now() + election_timeout(&core, &seed, attempt);
        if !sole && !pre_vote(&core).await {
            tracing::debug!("No majority would vote for this node; not campaigning.");
            continue;
        }
        tracing::info!(term = m.current_term, "No leader: campaigning.");
        if let Err(error) = core.raft.trigger().elect().await {
            tracing::warn!(%error, "Could not start an election.");
        }
    }
}
