//! Reclaim: what a node whose liveness key is gone still holds (endpoints,
//! Docker reservations, block claims) goes back to the pool, but only once
//! it has been dead for the grace (`--reclaim-after`): a stalled agent whose
//! lease merely lapsed keeps its workloads' addresses. "Dead since" is the
//! time the survivors first saw its liveness key gone, written once to the
//! store, so neither a leader change nor another reclaimer restarts it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socketplane_api::{keys, EndpointRecord, ReservationRecord};
use socketplane_store::{Compare, Op, Txn};

use crate::cluster::Cluster;
use crate::error::Result;
use crate::records;

/// Seconds since the epoch, as the store's timestamps are written.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What [`Cluster::reclaim_if_due`] did about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReclaimStep {
    /// The node is alive (again): nothing to do.
    Alive,
    /// Dead, within the grace (or reclaim is only by hand).
    Waiting,
    /// Reclaimed; this many endpoints went.
    Reclaimed(usize),
}

impl Cluster {
    /// One reclaimer pass for a node whose liveness key is gone: records
    /// when it was first seen dead, and reclaims once it has been dead for
    /// the grace, or at once if it was removed by `cluster remove`.
    pub async fn reclaim_if_due(&self, node: &str) -> Result<ReclaimStep> {
        if self.store.get(&keys::alive(node)).await?.is_some() {
            return Ok(ReclaimStep::Alive);
        }
        if self.store.get(&keys::removed(node)).await?.is_some() {
            return Ok(ReclaimStep::Reclaimed(self.reclaim_node(node).await?));
        }
        let since = match self.store.get(&keys::dead_since(node)).await? {
            Some(kv) => std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok()),
            None => None,
        };
        let Some(since) = since else {
            let now = unix_now();
            // Only the first to notice writes it, and only while the node
            // is still dead.
            let txn = Txn::new()
                .when(Compare::absent(keys::alive(node)))
                .when(Compare::absent(keys::dead_since(node)))
                .then(Op::put(keys::dead_since(node), now.to_string()));
            if self.store.txn(txn).await?.succeeded {
                match self.reclaim_after {
                    Some(after) => {
                        tracing::info!(%node, grace_secs = after.as_secs(), "A node's liveness lease is gone; its endpoints are reclaimed if it stays dead for the grace.")
                    }
                    None => {
                        tracing::info!(%node, "A node's liveness lease is gone; its endpoints stay until `socketplane cluster remove`.")
                    }
                }
            }
            return Ok(ReclaimStep::Waiting);
        };
        match self.reclaim_after {
            Some(after) if Duration::from_secs(unix_now().saturating_sub(since)) >= after => {
                Ok(ReclaimStep::Reclaimed(self.reclaim_node(node).await?))
            }
            _ => Ok(ReclaimStep::Waiting),
        }
    }

    /// Removes the endpoints, reservations and block claims of a dead node.
    /// Every agent may run this; the compare on the liveness key makes it a
    /// no-op if the node came back meanwhile. Returns the endpoints removed.
    pub async fn reclaim_node(&self, node: &str) -> Result<usize> {
        let endpoints: Vec<EndpointRecord> = self
            .list_endpoints()
            .await?
            .into_iter()
            .filter(|e| e.node == node)
            .collect();
        let mut reclaimed = 0;
        for ep in &endpoints {
            let txn = Txn::new()
                .when(Compare::absent(keys::alive(node)))
                .then(Op::delete(keys::endpoint(&ep.id)))
                .then(Op::delete(keys::address(&ep.network, ep.ip)));
            if self.store.txn(txn).await?.succeeded {
                reclaimed += 1;
            }
        }
        for net in self.list_networks().await? {
            let blocks = self.store.list(&keys::blocks(&net.id)).await?;
            let reserved = self.store.list(&keys::reservations(&net.id)).await?;
            let owned = blocks
                .kvs
                .iter()
                .filter(|kv| kv.value == node.as_bytes())
                .chain(reserved.kvs.iter().filter(|kv| {
                    records::decode::<ReservationRecord>(kv).is_ok_and(|r| r.node == node)
                }));
            for kv in owned {
                let txn = Txn::new()
                    .when(Compare::absent(keys::alive(node)))
                    .when(Compare::mod_revision(kv.key.clone(), kv.mod_revision))
                    .then(Op::delete(kv.key.clone()));
                self.store.txn(txn).await?;
            }
        }
        if reclaimed > 0 {
            tracing::info!(%node, endpoints = reclaimed, "Reclaimed the endpoints of a dead node.");
        }
        Ok(reclaimed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use socketplane_store::mem::MemStore;
    use socketplane_store::Store;

    use super::*;
    use crate::testing::{attach_web, node_record, register, web};

    /// Backdates node `id`'s death to longer ago than the tests' grace of
    /// an hour.
    async fn dead_for_over_an_hour(store: &Arc<dyn Store>, id: &str) {
        let long_ago = unix_now() - 3601;
        store
            .put(&keys::dead_since(id), long_ago.to_string().into_bytes())
            .await
            .unwrap();
    }

    /// Node "b" with one endpoint; returns its lease.
    async fn node_with_endpoint(store: &Arc<dyn Store>) -> (Cluster, socketplane_store::LeaseId) {
        let b = Cluster::new(store.clone(), "b".into(), "c".into());
        let lease = register(&b, "b").await;
        b.create_network(&web()).await.unwrap();
        let req = attach_web();
        b.attach(&req, None).await.unwrap();
        (b, lease)
    }

    #[tokio::test]
    async fn a_dead_node_is_reclaimed_only_after_the_grace() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let (b, lease) = node_with_endpoint(&store).await;
        let a = Cluster::new(store.clone(), "a".into(), "c".into())
            .with_reclaim_after(Some(Duration::from_secs(3600)));
        assert_eq!(a.reclaim_if_due("b").await.unwrap(), ReclaimStep::Alive);
        store.lease_revoke(lease).await.unwrap();
        // Lease gone: the death is recorded, nothing is reclaimed.
        assert_eq!(a.reclaim_if_due("b").await.unwrap(), ReclaimStep::Waiting);
        assert_eq!(a.reclaim_if_due("b").await.unwrap(), ReclaimStep::Waiting);
        assert_eq!(b.list_endpoints().await.unwrap().len(), 1);
        let since = store.get(&keys::dead_since("b")).await.unwrap().unwrap();
        // A second pass keeps the first time seen dead.
        assert_eq!(since.mod_revision, since.create_revision);
        // Dead for longer than the grace: reclaimed.
        dead_for_over_an_hour(&store, "b").await;
        assert_eq!(
            a.reclaim_if_due("b").await.unwrap(),
            ReclaimStep::Reclaimed(1)
        );
        assert!(b.list_endpoints().await.unwrap().is_empty());
    }

    /// Docker's reservations (addresses handed out before Docker makes the
    /// endpoint) go with their dead node, and only after the grace.
    #[tokio::test]
    async fn a_dead_nodes_docker_reservations_go_with_it() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let (b, lease) = node_with_endpoint(&store).await;
        let reserved = b.reserve_address("web", None).await.unwrap();
        let a = Cluster::new(store.clone(), "a".into(), "c".into())
            .with_reclaim_after(Some(Duration::from_secs(3600)));
        register(&a, "a").await;
        store.lease_revoke(lease).await.unwrap();
        assert_eq!(a.reclaim_if_due("b").await.unwrap(), ReclaimStep::Waiting);
        let refused = a.reserve_address("web", Some(reserved)).await;
        assert!(
            matches!(refused, Err(crate::Error::Conflict(_))),
            "within the grace the reservation holds: {refused:?}"
        );
        dead_for_over_an_hour(&store, "b").await;
        assert_eq!(
            a.reclaim_if_due("b").await.unwrap(),
            ReclaimStep::Reclaimed(1)
        );
        let (network, _) = a.find_network("web").await.unwrap();
        let left = store.list(&keys::reservations(&network.id)).await.unwrap();
        assert!(left.kvs.is_empty(), "reservations left: {:?}", left.kvs);
        assert_eq!(
            a.reserve_address("web", Some(reserved)).await.unwrap(),
            reserved
        );
    }

    /// `cluster remove` takes a dead node's reservations at once.
    #[tokio::test]
    async fn a_removed_nodes_docker_reservations_go_at_once() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let (b, lease) = node_with_endpoint(&store).await;
        let reserved = b.reserve_address("web", None).await.unwrap();
        let a = Cluster::new(store.clone(), "a".into(), "c".into()).with_reclaim_after(None);
        register(&a, "a").await;
        store.lease_revoke(lease).await.unwrap();
        a.remove_node("host-b").await.unwrap();
        assert_eq!(
            a.reserve_address("web", Some(reserved)).await.unwrap(),
            reserved
        );
    }

    #[tokio::test]
    async fn without_a_grace_only_removal_reclaims() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let (b, lease) = node_with_endpoint(&store).await;
        let a = Cluster::new(store.clone(), "a".into(), "c".into()).with_reclaim_after(None);
        store.lease_revoke(lease).await.unwrap();
        store
            .put(&keys::dead_since("b"), b"1".to_vec())
            .await
            .unwrap();
        assert_eq!(a.reclaim_if_due("b").await.unwrap(), ReclaimStep::Waiting);
        assert_eq!(b.list_endpoints().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn registering_again_restarts_the_grace() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let (b, lease) = node_with_endpoint(&store).await;
        let a = Cluster::new(store.clone(), "a".into(), "c".into());
        store.lease_revoke(lease).await.unwrap();
        a.reclaim_if_due("b").await.unwrap();
        assert!(store.get(&keys::dead_since("b")).await.unwrap().is_some());
        register(&b, "b").await;
        assert!(store.get(&keys::dead_since("b")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_removed_node_is_reclaimed_at_once_and_cannot_rejoin() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let (b, lease) = node_with_endpoint(&store).await;
        let a = Cluster::new(store.clone(), "a".into(), "c".into());
        let refused = a.remove_node("host-b").await;
        assert!(
            matches!(refused, Err(crate::Error::Conflict(_))),
            "a live node must not be removed: {refused:?}"
        );
        store.lease_revoke(lease).await.unwrap();
        let removed = a.remove_node("host-b").await.unwrap();
        assert_eq!((removed.id.as_str(), removed.endpoints), ("b", 1));
        assert!(b.list_endpoints().await.unwrap().is_empty());
        let again = b.register(&node_record("b"), Duration::from_secs(60)).await;
        assert!(
            matches!(again, Err(crate::Error::Conflict(_))),
            "a removed node must not rejoin silently: {again:?}"
        );
        assert!(store.get(&keys::alive("b")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_node_whose_lease_lapsed_does_not_allocate() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let (b, lease) = node_with_endpoint(&store).await;
        store.lease_revoke(lease).await.unwrap();
        let req = attach_web();
        let refused = b.attach(&req, None).await;
        assert!(
            matches!(&refused, Err(crate::Error::Unavailable(m)) if m.contains("lease")),
            "{refused:?}"
        );
        assert!(b.reserve_address("web", None).await.is_err());
        register(&b, "b").await;
        b.attach(&req, None).await.unwrap();
    }
}
