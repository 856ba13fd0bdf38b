//! Linearizable reads: confirm with the leader which log index a read must
//! see (its read index), wait until this node applied it, then serve from
//! the local state. Concurrent readers share one confirmation round.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::BasicNode;
use socketplane_store::StoreError;

use crate::shared::{lock, Core};
use crate::types::NodeId;
use crate::wire::WireError;

#[derive(Default)]
struct Batch {
    running: bool,
    waiters: Vec<tokio::sync::oneshot::Sender<Result<u64, WireError>>>,
}

#[derive(Default)]
pub(crate) struct Reads {
    batch: Mutex<Batch>,
}

impl Reads {
    /// Waits until this node may serve a linearizable read.
    pub async fn linearize(self: &Arc<Self>, core: &Arc<Core>) -> Result<(), StoreError> {
        let timeout = core.cfg.timing.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(5);
        let mut last;
        loop {
            if core.is_stopped() {
                return Err(StoreError::Unavailable("store is shut down".into()));
            }
            if let Some(why) = core.no_quorum() {
                return Err(StoreError::Unavailable(format!(
                    "the store has no quorum: {why}"
                )));
            }
            let read = tokio::select! {
                r = self.read_index(core) => r,
                why = core.until_no_quorum() => {
                    return Err(StoreError::Unavailable(format!("the store has no quorum: {why}")))
                }
            };
            match read {
                Ok(index) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match core
                        .raft
                        .wait(Some(left))
                        .applied_index_at_least(Some(index), "linearizable read")
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(last));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// The log index a linearizable read must wait for. Concurrent callers
    /// share one confirmation round with the leader (a round that started
    /// after each of them asked), so a burst of reads costs one heartbeat
    /// round instead of one each.
    pub async fn read_index(self: &Arc<Self>, core: &Arc<Core>) -> Result<u64, WireError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let drive = {
            let mut g = lock(&self.batch);
            g.waiters.push(tx);
            !std::mem::replace(&mut g.running, true)
        };
        if drive {
            let (me, core) = (self.clone(), core.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut g = lock(&me.batch);
                        if g.waiters.is_empty() {
                            g.running = false;
                            break;
                        }
                        std::mem::take(&mut g.waiters)
                    };
                    let res = round(&core).await;
                    for w in batch {
                        let _ = w.send(res.clone());
                    }
                }
            });
        }
        rx.await
            .unwrap_or_else(|_| Err(WireError::Unavailable("read aborted".into())))
    }

    /// Leader side of a follower's read index request.
    pub async fn serve_read_index(self: &Arc<Self>, core: &Arc<Core>) -> Result<u64, WireError> {
        if !core.is_leader() {
            return Err(core.not_leader());
        }
        self.read_index(core).await
    }
}

fn leader_err(
    core: &Core,
    e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>,
) -> WireError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)) => core.not_leader(),
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            WireError::Unavailable(format!("no quorum: {q}"))
        }
        RaftError::Fatal(f) => WireError::Unavailable(f.to_string()),
    }
}

/// One confirmation round: locally on the leader, else asked of it.
async fn round(core: &Core) -> Result<u64, WireError> {
    match core.leader() {
        Some((id, _)) if id == core.id() => {
            let (read, _) = core
                .raft
                .get_read_log_id()
                .await
                .map_err(|e| leader_err(core, e))?;
            Ok(read.map(|l| l.index).unwrap_or(0))
        }
        Some((_, addr)) => core
            .net
            .post::<_, Result<u64, WireError>>(
                &addr,
                "/raft/v1/read_index",
                &(),
                core.cfg.timing.request_timeout,
            )
            .await
            .unwrap_or_else(|e| Err(WireError::Unavailable(crate::error::chain(&e)))),
        None => Err(WireError::NotLeader { leader: None }),
    }
}
