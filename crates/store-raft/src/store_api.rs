//! The [`Store`] trait on an embedded store node: reads are linearizable
//! and served locally, writes run on the leader, watches replay this
//! node's history.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use socketplane_store::kv::{self, history_watch};
use socketplane_store::{
    KeyValue, LeaseId, Listing, MemberRole, Revision, Store, StoreError, StoreMember, StoreStatus,
    Txn, TxnResult, WatchStream,
};

use crate::forward::{refuted, submit};
use crate::node::EmbeddedStore;
use crate::types::NodeId;
use crate::wire::ClientRequest;

fn unexpected(r: kv::Response) -> StoreError {
    StoreError::Internal(format!("unexpected response {r:?}"))
}

impl EmbeddedStore {
    /// This node's applied state under `prefix`, without asking the leader:
    /// possibly stale, but available at once and without a quorum (what
    /// the cluster port checks certificates against).
    pub fn local_list(&self, prefix: &str) -> Listing {
        self.core.sm.lock().state.list(prefix)
    }

    async fn write(&self, req: ClientRequest) -> Result<kv::Response, StoreError> {
        submit(&self.core, &self.leases, req).await
    }

    fn serving(&self) -> Result<(), StoreError> {
        if self.core.is_stopped() {
            return Err(StoreError::Unavailable("store is shut down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.reads.linearize(&self.core).await?;
        Ok(self.core.sm.lock().state.get(key))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.reads.linearize(&self.core).await?;
        Ok(self.core.sm.lock().state.list(prefix))
    }

    // Local reads: this node's applied state, without asking the leader.
    async fn get_local(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.serving()?;
        Ok(self.core.sm.lock().state.get(key))
    }

    async fn list_local(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.serving()?;
        Ok(self.core.sm.lock().state.list(prefix))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        kv::validate_txn(&txn)?;
        // No log entry for a compare this node can already refute.
        if let Some((r, _)) = refuted(&self.core, &txn) {
            return Ok(r);
        }
        match self.write(ClientRequest::Txn(txn)).await? {
            kv::Response::Txn(r) => Ok(r),
            r => Err(unexpected(r)),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        if from < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "negative revision {from}"
            )));
        }
        let sm = self.core.sm.clone();
        let (from, notify) = {
            let g = sm.lock();
            let from = if from == 0 {
                g.state.revision() + 1
            } else {
                from
            };
            // Fail at once (not only in the stream) if `from` is compacted.
            g.state.events_since(prefix, from)?;
            // Subscribed under the lock: no change between here and the
            // stream's first read is missed.
            let notify = sm
                .subscribe()
                .ok_or_else(|| StoreError::Unavailable("store is shut down".into()))?;
            (from, notify)
        };
        let weak = Arc::downgrade(&sm);
        Ok(history_watch(
            prefix.to_string(),
            from,
            notify,
            move |p, next| {
                let sm = weak
                    .upgrade()
                    .ok_or_else(|| StoreError::Unavailable("store shut down".into()))?;
                let g = sm.lock();
                Ok((g.state.events_since(p, next)?, g.state.revision()))
            },
        ))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(StoreError::InvalidArgument(
                "lease TTL must be positive".into(),
            ));
        }
        match self.write(ClientRequest::LeaseGrant { ttl_ms }).await? {
            kv::Response::LeaseGranted(id) => Ok(id),
            r => Err(unexpected(r)),
        }
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(ClientRequest::LeaseKeepAlive(lease))
            .await
            .map(|_| ())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(ClientRequest::LeaseRevoke(lease))
            .await
            .map(|_| ())
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let core = &self.core;
        let m = core.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| StoreMember {
                id: id.to_string(),
                addr: node.addr.clone(),
                role: if Some(*id) == m.current_leader {
                    MemberRole::Leader
                } else if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Replica
                },
            })
            .collect();
        let window = core.cfg.timing.election_max * 2;
        let healthy = !core.is_stopped()
            && match m.current_leader {
                None => false,
                Some(l) if l == core.id() => {
                    voters.len() <= 1
                        || m.millis_since_quorum_ack
                            .is_some_and(|ms| Duration::from_millis(ms) < window)
                }
                Some(_) => core.leader_seen_within(window),
            };
        let revision = core.sm.lock().state.revision();
        Ok(StoreStatus {
            backend: "embedded".into(),
            healthy,
            leader: m.current_leader.map(|l| l.to_string()),
            members,
            revision,
        })
    }
}
