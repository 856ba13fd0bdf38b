//! The one address-allocation routine: endpoints (attach) and Docker
//! reservations both take an address through [`Cluster::allocate`]. An
//! address is free when neither its address key nor its reservation key
//! exists; the claiming transaction compares on both and on the network.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use socketplane_api::{keys, NetworkRecord, ReservationRecord};
use socketplane_ipam::Pool;
use socketplane_store::{Compare, KeyValue, Op, Revision, Txn};
use tokio::sync::Mutex;

use crate::cluster::{Cluster, CAS_ATTEMPTS};
use crate::error::{Error, Result};

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Endpoint(String),
    /// Reserved by a node's Docker IPAM driver, no endpoint yet.
    Reservation(String),
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Endpoint(id) => write!(f, "endpoint {id}"),
            Holder::Reservation(node) => {
                write!(f, "a Docker container being created on node {node}")
            }
        }
    }
}

/// What a successful allocation writes besides the address: the claim's
/// own keys, compares and the message if it exists already.
pub(crate) struct Claim {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
    /// A key that must be absent (e.g. the endpoint's); if a failed
    /// transaction finds it present, the allocation fails with `Conflict`
    /// and this message instead of retrying.
    pub exclusive: Option<(String, String)>,
}

impl Cluster {
    async fn alloc_lock(&self, network: &str) -> Arc<Mutex<()>> {
        let mut locks = self.alloc_locks.lock().await;
        locks.entry(network.to_string()).or_default().clone()
    }

    /// Takes `wanted` (or the next free address) on `network` and writes
    /// what `claim` returns for it, in one transaction, retried on races.
    /// Returns the address and the revision of the write.
    pub(crate) async fn allocate(
        &self,
        network: &NetworkRecord,
        wanted: Option<Ipv4Addr>,
        mut claim: impl FnMut(Ipv4Addr) -> Result<Claim>,
    ) -> Result<(Ipv4Addr, Revision)> {
        let pool = Pool::new(network.subnet, Some(network.gateway))?;
        if let Some(ip) = wanted {
            pool.check_assignable(ip)?;
        }
        let lock = self.alloc_lock(&network.id).await;
        let _guard = lock.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let (_, net_rev) = self.get_network(&network.id).await?;
            // Never allocate while our own lease has lapsed: the others may
            // be counting us dead, and the write must not outlive that.
            let alive = self.own_liveness().await?;
            // One listing for addresses, reservations and block claims.
            let ipam = self.store.list(&keys::ipam(&network.id)).await?;
            let taken = taken(&network.id, &ipam.kvs);
            let ip = match wanted {
                Some(ip) => {
                    if let Some(holder) = taken.get(&ip) {
                        return Err(Error::Conflict(format!(
                            "address {ip} is already in use by {holder}"
                        )));
                    }
                    ip
                }
                None => {
                    let owners = block_owners(&network.id, &ipam.kvs);
                    self.choose_address(&pool, &network.id, net_rev, &taken, &owners)
                        .await?
                }
            };
            let Claim {
                compares,
                ops,
                exclusive,
            } = claim(ip)?;
            let mut txn = Txn::new()
                .when(Compare::mod_revision(keys::network(&network.id), net_rev))
                .when(Compare::mod_revision(keys::alive(&self.node_id), alive))
                .when(Compare::absent(keys::address(&network.id, ip)))
                .when(Compare::absent(keys::reservation(&network.id, ip)));
            for c in compares {
                txn = txn.when(c);
            }
            for op in ops {
                txn = txn.then(op);
            }
            let result = self.store.txn(txn).await?;
            if result.succeeded {
                tracing::debug!(network = %network.name, %ip, "Allocated address.");
                return Ok((ip, result.revision));
            }
            if let Some((key, message)) = exclusive {
                if self.store.get(&key).await?.is_some() {
                    return Err(Error::Conflict(message));
                }
            }
        }
        Err(Error::Unavailable(
            "too much contention allocating an address; try again".into(),
        ))
    }

    /// The revision of this node's liveness key; `Unavailable` while its
    /// lease has lapsed (e.g. after a stall), until it is renewed.
    pub(crate) async fn own_liveness(&self) -> Result<Revision> {
        match self.store.get(&keys::alive(&self.node_id)).await? {
            Some(kv) => Ok(kv.mod_revision),
            None => Err(Error::Unavailable(
                "this node's liveness lease has lapsed (the cluster has not heard from it within the lease TTL); not allocating until it is renewed, try again in a few seconds".into(),
            )),
        }
    }

    /// Every address of a network that is taken, and by whom.
    pub async fn taken_addresses(&self, network: &str) -> Result<BTreeMap<Ipv4Addr, Holder>> {
        let ipam = self.store.list(&keys::ipam(network)).await?;
        Ok(taken(network, &ipam.kvs))
    }

    /// Picks a candidate: first from a block this node owns, else from a
    /// block it claims now, else from anywhere. Only the later CAS on the
    /// address keys makes it ours.
    async fn choose_address(
        &self,
        pool: &Pool,
        network: &str,
        net_rev: Revision,
        taken: &BTreeMap<Ipv4Addr, Holder>,
        owners: &BTreeMap<Ipv4Net, String>,
    ) -> Result<Ipv4Addr> {
        let is_taken = |ip: Ipv4Addr| taken.contains_key(&ip);
        for (block, owner) in owners {
            if owner == &self.node_id {
                if let Some(ip) = pool.first_free(*block, is_taken) {
                    return Ok(ip);
                }
            }
        }
        for block in pool.blocks() {
            if owners.contains_key(&block) {
                continue;
            }
            let Some(ip) = pool.first_free(block, is_taken) else {
                continue;
            };
            // Only while the network is the one listed: a claim landing
            // after its delete would be a key nobody ever removes.
            let claim = Txn::new()
                .when(Compare::mod_revision(keys::network(network), net_rev))
                .when(Compare::absent(keys::block(network, block)))
                .then(Op::put(keys::block(network, block), self.node_id.clone()));
            if self.store.txn(claim).await?.succeeded {
                tracing::debug!(%network, %block, "Claimed an address block.");
                return Ok(ip);
            }
        }
        Ok(pool.first_free_anywhere(is_taken)?)
    }
}

/// Addresses and reservations among a network's IPAM keys.
fn taken(network: &str, kvs: &[KeyValue]) -> BTreeMap<Ipv4Addr, Holder> {
    let (addrs, reserved) = (keys::addresses(network), keys::reservations(network));
    let mut out = BTreeMap::new();
    for kv in kvs {
        let Some(ip) = keys::parse_ip(&kv.key) else {
            continue;
        };
        if kv.key.starts_with(&addrs) {
            let id = String::from_utf8_lossy(&kv.value).into_owned();
            out.insert(ip, Holder::Endpoint(id));
        } else if kv.key.starts_with(&reserved) {
            let node = serde_json::from_slice::<ReservationRecord>(&kv.value)
                .map(|r| r.node)
                .unwrap_or_default();
            out.entry(ip).or_insert(Holder::Reservation(node));
        }
    }
    out
}

/// Block claims among a network's IPAM keys: block → owning node.
fn block_owners(network: &str, kvs: &[KeyValue]) -> BTreeMap<Ipv4Net, String> {
    let blocks = keys::blocks(network);
    kvs.iter()
        .filter(|kv| kv.key.starts_with(&blocks))
        .filter_map(|kv| {
            let block = keys::parse_block(&kv.key)?;
            Some((block, String::from_utf8_lossy(&kv.value).into_owned()))
        })
        .collect()
}
