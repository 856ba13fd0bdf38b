//! An election watchdog: a voter that has heard from no leader for longer
//! than openraft's own election timer allows starts an election itself.
//!
//! Why: openraft 0.9 adds `2 × election_timeout_max` to a node's election
//! timer once one of its vote requests was refused by a node with a longer
//! log, and clears that flag only when the node next campaigns. A node cut
//! off and healed is refused that way, and keeps the flag through later
//! healthy months. After every voter has been cut off once, a leader loss
//! leaves all of them waiting the longer timer (about 8 s here instead of
//! 3-4 s), and a cluster is without a leader for that long. The watchdog
//! bounds that wait; it campaigns only where openraft's normal timer
//! (leader lease plus election timeout) has run out.

use std::hash::BuildHasher;
use std::sync::Weak;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::shared::{Core, Ticker};

/// How long a follower waits without a leader before it campaigns: past
/// the longest normal timer (the leader lease, `election_max`, plus an
/// election timeout, at most `election_max`), plus a random part of up to
/// `election_min`, so voters do not campaign in lockstep.
fn patience(core: &Core, attempt: u64) -> Duration {
    let t = &core.cfg.timing;
    let spread = u64::try_from(t.election_min.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let random = std::collections::hash_map::RandomState::new().hash_one((core.id(), attempt));
    t.election_max * 2 + Duration::from_millis(random % spread)
}

pub(crate) async fn watchdog_loop(core: Weak<Core>) {
    let Some(mut ticks) = Ticker::every(&core, |c| {
        c.cfg.timing.heartbeat.max(Duration::from_millis(50))
    }) else {
        return;
    };
    let mut attempt = 0u64;
    // The last time this node heard from a leader or campaigned.
    let mut quiet_since = Instant::now();
    let mut wait = match core.upgrade() {
        Some(c) => patience(&c, attempt),
        None => return,
    };
    loop {
        let Some(core) = ticks.tick().await else {
            return;
        };
        let m = core.metrics();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == core.id());
        if let Some(seen) = core.leader_seen() {
            quiet_since = quiet_since.max(seen);
        }
        if m.state != ServerState::Follower || !voter {
            // Leading, campaigning (openraft's own timer works) or not a
            // voter: nothing to bound.
            quiet_since = Instant::now();
            continue;
        }
        if quiet_since.elapsed() < wait {
            continue;
        }
        tracing::info!(
            quiet_ms = quiet_since.elapsed().as_millis() as u64,
            "No leader for longer than the election timer: campaigning."
        );
        if let Err(error) = core.raft.trigger().elect().await {
            tracing::warn!(%error, "Could not start an election.");
        }
        attempt += 1;
        wait = patience(&core, attempt);
        quiet_since = Instant::now();
    }
}
