//! This node in the cluster: its registration with a liveness lease, the
//! `default` network every cluster has, and the cluster's status.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use socketplane_api::rest::{ClusterStatus, CreateNetwork, NodeStatus, RemovedNode, StoreHealth};
use socketplane_api::{defaults, keys, NodeRecord};
use socketplane_store::{Compare, LeaseId, MemberRole, Op, StoreError, StoreStatus, Txn};

use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, Result};
use crate::records;

/// A node's store role ("leader", "voter", "replica"; "client" on an
/// external store, else "none"). The store names members by number, nodes
/// by 16 hex digits.
pub fn store_role(status: &StoreStatus, node_hex: &str, external_store: bool) -> String {
    let numeric = u64::from_str_radix(node_hex, 16).ok();
    let member = status
        .members
        .iter()
        .find(|m| m.id == node_hex || (numeric.is_some() && m.id.parse::<u64>().ok() == numeric));
    match member.map(|m| m.role) {
        Some(MemberRole::Leader) => "leader".into(),
        Some(MemberRole::Voter) => "voter".into(),
        Some(MemberRole::Replica) => "replica".into(),
        None if external_store => "client".into(),
        None => "none".into(),
    }
}

/// The node id of a store member (the embedded store numbers them).
pub fn member_node_id(member: &str) -> String {
    match member.parse::<u64>() {
        Ok(n) => format!("{n:016x}"),
        Err(_) => member.to_string(),
    }
}

impl Cluster {
    /// Writes this node's record and its liveness key on a fresh lease.
    /// Refused for a node removed by `cluster remove`: it may not come back
    /// silently under its old identity.
    pub async fn register(&self, record: &NodeRecord, ttl: Duration) -> Result<LeaseId> {
        let sent = Instant::now();
        let lease = self.store.lease_grant(ttl).await?;
        let result = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::absent(keys::removed(&record.id)))
                    .then(Op::put(keys::node(&record.id), records::encode(record)?))
                    .then(Op::put_with_lease(
                        keys::alive(&record.id),
                        ttl.as_secs().to_string(),
                        lease,
                    ))
                    // Alive again: a later death starts a fresh grace.
                    .then(Op::delete(keys::dead_since(&record.id))),
            )
            .await?;
        if !result.succeeded {
            let _ = self.store.lease_revoke(lease).await;
            tracing::error!(node = %record.id, "This node was removed from the cluster (`socketplane cluster remove`); refusing to rejoin under its old identity.");
            return Err(Error::Conflict(format!(
                "node {} ({}) was removed from the cluster with `socketplane cluster remove`; to rejoin as a new node, stop the agent and delete its identity in the data dir",
                record.name, record.id
            )));
        }
        self.lease_clock.renewed(sent, ttl);
        Ok(lease)
    }

    /// Keeps the liveness lease alive; registers again if it expired
    /// meanwhile (e.g. after a long partition). Runs until dropped.
    pub async fn keep_alive(&self, record: NodeRecord, ttl: Duration, mut lease: LeaseId) {
        let period = ttl / 3;
        loop {
            tokio::time::sleep(period).await;
            let sent = Instant::now();
            match self.store.lease_keep_alive(lease).await {
                Ok(()) => self.lease_clock.renewed(sent, ttl),
                Err(StoreError::LeaseNotFound(_)) => {
                    tracing::warn!("Our liveness lease expired; registering again.");
                    match self.register(&record, ttl).await {
                        Ok(l) => lease = l,
                        Err(error) => tracing::warn!(%error, "Re-registering failed."),
                    }
                }
                Err(error) => tracing::warn!(%error, "Could not renew the liveness lease."),
            }
        }
    }

    /// The `default` network exists as soon as a cluster does: 10.1.0.0/16
    /// unless that overlaps one of `routes` (this host's), else the first
    /// free 10.x.0.0/16 from 10.100.
    pub async fn ensure_default_network(&self, routes: &[Ipv4Net]) -> Result<()> {
        let exists = || async {
            Ok::<_, Error>(
                self.store
                    .get(&keys::network_name(defaults::NETWORK))
                    .await?
                    .is_some(),
            )
        };
        if exists().await? {
            return Ok(());
        }
        let candidates = std::iter::once(1u8).chain(100..=250);
        for second in candidates {
            let subnet = Ipv4Net::new(Ipv4Addr::new(10, second, 0, 0), 16)
                .map_err(|e| Error::Internal(e.to_string()))?;
            if routes
                .iter()
                .filter(|r| r.prefix_len() > 0)
                .any(|r| socketplane_ipam::overlaps(*r, subnet))
            {
                continue;
            }
            let req = CreateNetwork {
                name: defaults::NETWORK.into(),
                subnet: subnet.to_string(),
                gateway: None,
                mtu: None,
                mode: Default::default(),
            };
            match self.create_network(&req).await {
                Ok(_) => return Ok(()),
                // Another node created it first, or the subnet is used by
                // another network: check again / try the next one.
                Err(Error::Conflict(_)) => {
                    if exists().await? {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(
            "no free 10.x.0.0/16 for the default network".into(),
        ))
    }

    /// Members, their liveness and store roles. `external_store`: the
    /// store is not replicated by the agents (etcd), so nodes are clients.
    pub async fn status(&self, external_store: bool) -> Result<ClusterStatus> {
        let mut status = self.store.status().await?;
        let listed = async {
            let nodes = self.store.list(&keys::nodes()).await?;
            let alive = self.store.list(&keys::alive_prefix()).await?;
            Ok::<_, Error>((nodes.kvs, alive.kvs))
        };
        let (nodes, alive): (Vec<NodeRecord>, BTreeSet<String>) = match listed.await {
            Ok((nodes, alive)) => (
                nodes
                    .iter()
                    .filter_map(|kv| serde_json::from_slice::<NodeRecord>(&kv.value).ok())
                    .collect(),
                alive
                    .iter()
                    .filter_map(|kv| kv.key.rsplit('/').next().map(str::to_string))
                    .collect(),
            ),
            // Cut off (no quorum): answer from this node's last view, with
            // the store shown unhealthy, so a cut-off host can still say
            // what it knows (and that it is fenced).
            Err(error) if error.kind() == ErrorKind::Unavailable => {
                let Some(view) = self.view() else {
                    return Err(error);
                };
                tracing::debug!(%error, "Cluster status from the last view.");
                status.healthy = false;
                (view.nodes.values().cloned().collect(), view.alive.clone())
            }
            Err(error) => return Err(error),
        };
        let role_of = |node_hex: &str| store_role(&status, node_hex, external_store);
        let mut out = Vec::new();
        for node in nodes {
            out.push(NodeStatus {
                alive: alive.contains(&node.id),
                role: role_of(&node.id),
                id: node.id,
                name: node.name,
                addr: node.addr,
                datapath: node.datapath,
                applied_lag: None,
                problems: Vec::new(),
            });
        }
        let (endpoint_failures, fenced) = match self.reconciler() {
            Some(r) => (
                r.failures.borrow().values().cloned().collect(),
                *r.fenced.borrow(),
            ),
            None => (Vec::new(), false),
        };
        Ok(ClusterStatus {
            endpoint_failures,
            fenced,
            cluster: self.name().to_string(),
            this_node: self.node_id.clone(),
            nodes: out,
            store: StoreHealth {
                backend: status.backend,
                healthy: status.healthy,
                // The store names members by number; show node ids.
                leader: status.leader.as_deref().map(member_node_id),
                revision: status.revision,
            },
            open: false,
            problems: Vec::new(),
            healthy: false,
        })
    }

    /// `cluster remove NODE` (id or name): marks a dead node removed, so it
    /// cannot register again under that id, reclaims what it held at once,
    /// and deletes its record. A live node is refused: it would keep using
    /// the addresses.
    pub async fn remove_node(&self, node: &str) -> Result<RemovedNode> {
        let nodes = self.store.list(&keys::nodes()).await?;
        let record = nodes
            .kvs
            .iter()
            .filter_map(|kv| records::decode::<NodeRecord>(kv).ok())
            .find(|n| n.id == node || n.name == node)
            .ok_or_else(|| Error::NotFound(format!("no node {node:?} in the cluster")))?;
        if record.id == self.node_id {
            return Err(Error::Invalid(
                "this is the node you are on; use `socketplane cluster leave`".into(),
            ));
        }
        let marked = self
            .store
            .txn(
                Txn::new()
                    .when(Compare::absent(keys::alive(&record.id)))
                    .then(Op::put(
                        keys::removed(&record.id),
                        crate::reclaim::unix_now().to_string(),
                    )),
            )
            .await?;
        if !marked.succeeded {
            return Err(Error::Conflict(format!(
                "node {} ({}) is alive; stop its agent first, or run `socketplane cluster leave` on it",
                record.name, record.id
            )));
        }
        let endpoints = self.reclaim_node(&record.id).await?;
        self.store
            .txn(
                Txn::new()
                    .then(Op::delete(keys::node(&record.id)))
                    .then(Op::delete(keys::dead_since(&record.id))),
            )
            .await?;
        tracing::info!(node = %record.id, name = %record.name, endpoints, "Removed a node from the cluster; its addresses are free.");
        Ok(RemovedNode {
            id: record.id,
            name: record.name,
            endpoints,
        })
    }

    /// Removes this node's endpoints and records: it leaves for good.
    pub async fn deregister(&self) -> Result<()> {
        let id = self.node_id.clone();
        for ep in self
            .list_endpoints()
            .await?
            .into_iter()
            .filter(|e| e.node == id)
        {
            self.detach(&ep.id).await?;
        }
        self.store
            .txn(
                Txn::new()
                    .then(Op::delete(keys::alive(&id)))
                    .then(Op::delete(keys::node(&id))),
            )
            .await?;
        Ok(())
    }
}
