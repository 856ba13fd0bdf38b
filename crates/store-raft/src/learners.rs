//! Replication to learners, paced. Every agent beyond the voters is a
//! Raft learner of the one leader, which runs a replication stream to each
//! of them: per entry an append, then a heartbeat to carry the new commit
//! index, and a heartbeat every 250 ms besides. At 100 hosts that is tens
//! of thousands of RPCs a second for the leader alone under churn. The
//! streams to learners therefore send at most one RPC per [`LEARNER_GAP`]
//! (entries that arrive meanwhile go together in the next), and idle
//! heartbeats, which tell a learner nothing new, at most every
//! [`LEARNER_QUIET`]. Voters are never paced: commits and elections depend
//! on them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{BasicNode, RaftMetrics};
use tokio::time::Instant;

use crate::types::{NodeId, TypeConfig};

/// The shortest time between two RPCs to one learner. A learner applies a
/// commit at most this much later than without pacing.
pub(crate) const LEARNER_GAP: Duration = Duration::from_millis(40);

/// The longest a learner goes without an RPC from the leader; well inside
/// its `no_quorum_after` (4 s) and the leader's alive window (3 s).
pub(crate) const LEARNER_QUIET: Duration = Duration::from_secs(1);

/// What one replication stream sent its learner last.
#[derive(Default)]
pub(crate) struct Pace {
    sent: Option<Instant>,
    commit: Option<openraft::LogId<NodeId>>,
}

impl Pace {
    /// Called before an append to a learner: waits out the gap since the
    /// last RPC, or answers an idle heartbeat in its place (`Some`).
    pub async fn before_send(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Option<AppendEntriesResponse<NodeId>> {
        if let Some(sent) = self.sent {
            let idle = rpc.entries.is_empty() && rpc.leader_commit == self.commit;
            if idle && sent.elapsed() < LEARNER_QUIET {
                // Nothing new for the learner: its log matches where the
                // stream says (the heartbeat's range is what it matched),
                // and the leader's liveness is carried by the next RPC.
                return Some(AppendEntriesResponse::Success);
            }
            tokio::time::sleep_until(sent + LEARNER_GAP).await;
        }
        self.sent = Some(Instant::now());
        self.commit = rpc.leader_commit;
        None
    }
}

/// Keeps the network's voter set current from the Raft metrics, for it to
/// tell learners from voters: `set` gets the voters at every membership
/// change, and returns false once the node is gone.
pub(crate) async fn track_voters(
    mut metrics: tokio::sync::watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    set: impl Fn(BTreeSet<NodeId>) -> bool,
) {
    let mut last = None;
    loop {
        let (log_id, voters) = {
            let m = metrics.borrow_and_update();
            let config = &m.membership_config;
            (
                config.log_id().clone(),
                config.membership().voter_ids().collect::<BTreeSet<_>>(),
            )
        };
        if last.as_ref() != Some(&log_id) {
            if !set(voters) {
                return;
            }
            last = Some(log_id);
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Whether `target` is known to be a learner (unknown: no).
pub(crate) fn is_learner(voters: &Option<Arc<BTreeSet<NodeId>>>, target: NodeId) -> bool {
    voters.as_ref().is_some_and(|v| !v.contains(&target))
}
