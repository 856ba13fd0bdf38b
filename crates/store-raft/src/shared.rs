//! What every part of a node shares: its configuration, the Raft handle,
//! the state machine, the peer client, and who the leader is.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, RaftMetrics};

use crate::config::EmbeddedConfig;
use crate::network::NetCore;
use crate::sm::SmShared;
use crate::storage::LogStore;
use crate::types::{NodeId, Outcome, Raft};
use crate::wire::WireError;
use socketplane_store::kv::Command;

/// Where a proposal's outcome goes, with the index of its log entry.
pub(crate) type ProposalReply = tokio::sync::oneshot::Sender<Result<(Outcome, u64), WireError>>;

/// A command waiting to be proposed, with what it may write.
pub(crate) struct Queued {
    pub cmd: Command,
    pub reply: ProposalReply,
    /// Its place in arrival order (see [`Proposals::pending`]).
    pub seq: u64,
    /// The keys its ops write if it succeeds.
    pub writes: Vec<String>,
}

/// Commands waiting to be proposed together (see `forward::propose`), and
/// which keys the unanswered ones may write (see `forward::await_writers`).
#[derive(Default)]
pub(crate) struct Proposals {
    /// Proposals in flight.
    pub in_flight: usize,
    pub waiting: Vec<Queued>,
    /// Sequence number of the next command queued.
    pub next_seq: u64,
    /// Commands queued or in flight, not answered yet.
    pub pending: BTreeSet<u64>,
    /// Per key, the last unanswered command that may write it.
    pub writers: HashMap<String, u64>,
}

impl Proposals {
    /// The last unanswered command that may write one of `keys`.
    pub fn last_writer<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Option<u64> {
        keys.filter_map(|k| self.writers.get(k).copied()).max()
    }

    /// Whether every command up to `seq` has been answered.
    pub fn answered_up_to(&self, seq: u64) -> bool {
        self.pending.first().is_none_or(|&first| first > seq)
    }

    /// Forgets an answered command.
    pub fn answered(&mut self, seq: u64, writes: &[String]) {
        self.pending.remove(&seq);
        for k in writes {
            if self.writers.get(k) == Some(&seq) {
                self.writers.remove(k);
            }
        }
    }
}

pub(crate) struct Core {
    pub cfg: EmbeddedConfig,
    pub raft: Raft,
    pub sm: Arc<SmShared>,
    pub net: Arc<NetCore>,
    /// This node's log (for its last entry, see `elect.rs`).
    pub log: LogStore,
    stopped: AtomicBool,
    /// Last time the leader sent us anything (follower-side health).
    leader_seen: Mutex<Option<Instant>>,
    /// When this node started: "never heard from a leader" counts from here.
    started: Instant,
    pub proposals: Mutex<Proposals>,
    /// Woken whenever proposals were answered.
    pub answered: tokio::sync::Notify,
}

/// Locks a mutex whose data stays usable after a panic elsewhere.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Core {
    pub fn new(
        cfg: EmbeddedConfig,
        raft: Raft,
        sm: Arc<SmShared>,
        net: Arc<NetCore>,
        log: LogStore,
    ) -> Self {
        Self {
            cfg,
            raft,
            sm,
            net,
            log,
            stopped: AtomicBool::new(false),
            leader_seen: Mutex::new(None),
            started: Instant::now(),
            proposals: Mutex::new(Proposals::default()),
            answered: tokio::sync::Notify::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.cfg.node_id
    }

    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.leader(), Some((id, _)) if id == self.id())
    }

    pub fn not_leader(&self) -> WireError {
        WireError::NotLeader {
            leader: self.leader().map(|(_, a)| a),
        }
    }

    /// Marks the node stopped; true if it already was.
    pub fn stop(&self) -> bool {
        self.stopped.swap(true, Ordering::SeqCst)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub fn note_leader_contact(&self) {
        *lock(&self.leader_seen) = Some(Instant::now());
    }

    /// When a leader last reached this node (or it last led a majority).
    pub fn leader_seen(&self) -> Option<Instant> {
        *lock(&self.leader_seen)
    }

    /// Whether the leader reached this node within `window`.
    pub fn leader_seen_within(&self, window: Duration) -> bool {
        lock(&self.leader_seen).is_some_and(|t| t.elapsed() < window)
    }

    /// Why this node cannot reach a quorum now, if it has been out of touch
    /// for longer than `no_quorum_after`: a follower that heard from no
    /// leader, a leader no majority answered. `None` while it may still
    /// (a sole voter always can).
    pub fn no_quorum(&self) -> Option<String> {
        let window = self.cfg.timing.no_quorum_after;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters = membership.voter_ids().count();
        let sole_voter = voters == 1 && membership.voter_ids().any(|v| v == self.id());
        if voters == 0 || sole_voter {
            return None;
        }
        if m.current_leader == Some(self.id()) {
            let quiet = m.millis_since_quorum_ack.map(Duration::from_millis);
            return match quiet {
                Some(q) if q < window => {
                    // Leading with a majority counts as contact with a
                    // leader: a node that steps down starts from here.
                    *lock(&self.leader_seen) = Some(Instant::now());
                    None
                }
                // Just elected, no quorum acknowledgement yet (a loaded
                // machine elects often): judged like a follower, by its
                // last contact with a leader (it won a majority's votes).
                None if lock(&self.leader_seen).unwrap_or(self.started).elapsed() < window => None,
                _ => Some(format!(
                    "this node leads, but no majority of the {voters} voters has answered for {}",
                    quiet.map_or("ever".to_string(), |q| format!("{:.1} s", q.as_secs_f64()))
                )),
            };
        }
        let since = lock(&self.leader_seen).unwrap_or(self.started);
        let quiet = since.elapsed();
        (quiet >= window).then(|| {
            format!(
                "this node has heard from no leader for {:.1} s (it may be cut off from the majority of the {voters} voters)",
                quiet.as_secs_f64()
            )
        })
    }

    /// Resolves with [`Core::no_quorum`]'s reason once there is one: raced
    /// against a request in flight, so it fails as soon as the node is
    /// known to be cut off.
    pub async fn until_no_quorum(&self) -> String {
        loop {
            if let Some(why) = self.no_quorum() {
                return why;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resolves once this node no longer knows `id` as the leader (a vote
    /// for a candidate, a new leader, or Raft shut down): raced against a
    /// request forwarded to `id`, which a leader cut off never answers.
    pub async fn until_leader_is_not(&self, id: NodeId) {
        let mut rx = self.raft.metrics();
        loop {
            if rx.borrow_and_update().current_leader != Some(id) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Classifies a failed Raft write (client request or membership change).
    pub fn write_err(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> WireError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => self.not_leader(),
            RaftError::APIError(e) => WireError::Unavailable(e.to_string()),
            RaftError::Fatal(e) => WireError::Unavailable(e.to_string()),
        }
    }
}

/// The pace of a background loop over a node's core: ticks every period
/// (a late tick delays the next, no burst) and hands out the core while
/// the node lives and runs.
pub(crate) struct Ticker {
    core: Weak<Core>,
    iv: tokio::time::Interval,
}

impl Ticker {
    /// `None` if the node is already gone.
    pub fn every(core: &Weak<Core>, period: impl FnOnce(&Core) -> Duration) -> Option<Ticker> {
        let period = period(core.upgrade()?.as_ref());
        let mut iv = tokio::time::interval(period);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(Ticker {
            core: core.clone(),
            iv,
        })
    }

    /// Waits for the next tick; `None` once the node is gone or stopped.
    pub async fn tick(&mut self) -> Option<Arc<Core>> {
        self.iv.tick().await;
        let core = self.core.upgrade()?;
        (!core.is_stopped()).then_some(core)
    }
}
