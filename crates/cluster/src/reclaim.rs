//! Reclaim: what a node whose liveness key is gone still holds (endpoints,
//! Docker reservations, block claims) goes back to the pool.

use socketplane_api::{keys, EndpointRecord, ReservationRecord};
use socketplane_store::{Compare, Op, Txn};

use crate::cluster::Cluster;
use crate::error::Result;
use crate::records;

impl Cluster {
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
