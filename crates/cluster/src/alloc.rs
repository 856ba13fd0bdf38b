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
use socketplane_store::{Compare, KeyValue, Listing, Op, Revision, Txn};
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
    async fn alloc_lock(&self, network: &str) -> Arc<Mutex<Option<Ipv4Net>>> {
        let mut locks = self.alloc_locks.lock().await;
        locks.entry(network.to_string()).or_default().clone()
    }

    /// Takes `wanted` (or the next free address) on `network` and writes
    /// what `claim` returns for it, in one transaction, retried on races.
    /// `net_rev` is the revision the caller read the network at. Returns
    /// the address and the revision of the write.
    pub(crate) async fn allocate(
        &self,
        network: &NetworkRecord,
        mut net_rev: Revision,
        wanted: Option<Ipv4Addr>,
        mut claim: impl FnMut(Ipv4Addr) -> Result<Claim>,
    ) -> Result<(Ipv4Addr, Revision)> {
        let pool = Pool::new(network.subnet, Some(network.gateway))?;
        if let Some(ip) = wanted {
            pool.check_assignable(ip)?;
        }
        let lock = self.alloc_lock(&network.id).await;
        let mut last_block = lock.lock().await;
        for attempt in 0..CAS_ATTEMPTS {
            // The first try picks from this node's copy of the store (no
            // round trip to the leader per read). The transaction compares
            // on everything the pick relied on, so a stale copy costs a
            // failed try, never a second holder; and what would be a
            // decision (lapsed, full) is read afresh before it is made.
            let local = attempt == 0;
            if attempt > 0 {
                // The caller's read may be what made the last try fail.
                net_rev = self.get_network(&network.id).await?.1;
            }
            // Never allocate while our own lease has lapsed: the others may
            // be counting us dead, and the write must not outlive that.
            let cached = if local {
                self.store.get_local(&keys::alive(&self.node_id)).await?
            } else {
                None
            };
            let alive = match cached {
                Some(kv) => kv.mod_revision,
                None => self.own_liveness().await?,
            };
            let ip = match wanted {
                Some(ip) => {
                    if let Some(holder) = self.holder(&network.id, ip).await? {
                        return Err(Error::Conflict(format!(
                            "address {ip} is already in use by {holder}"
                        )));
                    }
                    ip
                }
                None => {
                    let picked = self
                        .choose_address(&pool, &network.id, net_rev, &mut last_block, local)
                        .await;
                    match picked {
                        Ok(ip) => ip,
                        // "Full", say, from a stale copy: ask afresh.
                        Err(_) if local => continue,
                        Err(e) => return Err(e),
                    }
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
        self.taken_all(network, false).await
    }

    /// Every taken address of `network`: one listing of its IPAM keys.
    async fn taken_all(&self, network: &str, local: bool) -> Result<BTreeMap<Ipv4Addr, Holder>> {
        let ipam = self.read_list(&keys::ipam(network), local).await?;
        Ok(taken(network, &ipam.kvs))
    }

    /// A listing from this node's copy of the store (`local`), or a
    /// linearizable one.
    async fn read_list(&self, prefix: &str, local: bool) -> Result<Listing> {
        Ok(if local {
            self.store.list_local(prefix).await?
        } else {
            self.store.list(prefix).await?
        })
    }

    /// Who holds `ip` on `network`, if anybody: two reads, not a listing.
    async fn holder(&self, network: &str, ip: Ipv4Addr) -> Result<Option<Holder>> {
        let (address, reservation) = (keys::address(network, ip), keys::reservation(network, ip));
        let (address, reserved) =
            tokio::try_join!(self.store.get(&address), self.store.get(&reservation),)?;
        Ok(taken(network, address.iter().chain(reserved.iter())).remove(&ip))
    }

    /// The taken addresses of one block. Blocks are no larger than a /24
    /// (`socketplane_ipam::BLOCK_PREFIX`), so the keys of their addresses
    /// share the /24's prefix (`a.b.c.`) and the read costs at most 256
    /// keys, not O(network): an attach must not cost more as the network
    /// fills.
    async fn taken_in(
        &self,
        network: &str,
        block: Ipv4Net,
        local: bool,
    ) -> Result<BTreeMap<Ipv4Addr, Holder>> {
        if block.prefix_len() < 24 {
            return self.taken_all(network, local).await;
        }
        let [a, b, c, _] = block.network().octets();
        let octets = format!("{a}.{b}.{c}.");
        let addrs = format!("{}{octets}", keys::addresses(network));
        let reserved = format!("{}{octets}", keys::reservations(network));
        let (addrs, reserved) = tokio::try_join!(
            self.read_list(&addrs, local),
            self.read_list(&reserved, local)
        )?;
        let mut found = taken(network, addrs.kvs.iter().chain(reserved.kvs.iter()));
        found.retain(|ip, _| block.contains(ip));
        Ok(found)
    }

    /// Picks a candidate: first from a block this node owns (the one it
    /// last allocated from first), else from a block it claims now, else
    /// from anywhere. Only the later CAS on the address keys makes it
    /// ours. Each block is read alone, so a node scans its full blocks
    /// only once the one it fills is full (once per block's worth of
    /// allocations).
    async fn choose_address(
        &self,
        pool: &Pool,
        network: &str,
        net_rev: Revision,
        last_block: &mut Option<Ipv4Net>,
        local: bool,
    ) -> Result<Ipv4Addr> {
        let claims = self.read_list(&keys::blocks(network), local).await?;
        let owners = block_owners(network, &claims.kvs);
        let mut mine: Vec<Ipv4Net> = owners
            .iter()
            .filter(|(_, owner)| **owner == self.node_id)
            .map(|(block, _)| *block)
            .collect();
        if let Some(last) = *last_block {
            if let Some(i) = mine.iter().position(|b| *b == last) {
                mine[..=i].rotate_right(1);
            }
        }
        for block in mine {
            let taken = self.taken_in(network, block, local).await?;
            if let Some(ip) = pool.first_free(block, |ip| taken.contains_key(&ip)) {
                *last_block = Some(block);
                return Ok(ip);
            }
        }
        // In address order (a lone host fills the subnet from its start, as
        // Docker does) until a claim is lost to another host; from then on
        // from a place of this node's own, so hosts claiming at once (a cold
        // start, a rollout) spread over the pool instead of all racing for
        // the next free block, one lost race (and round trip) after another.
        let count = pool.block_count();
        let mut next = 0;
        let mut raced = false;
        let mut left = count;
        while left > 0 {
            left -= 1;
            let Some(block) = pool.block(next) else {
                break;
            };
            next = (next + 1) % count;
            if owners.contains_key(&block) {
                continue;
            }
            let taken = self.taken_in(network, block, local).await?;
            let Some(ip) = pool.first_free(block, |ip| taken.contains_key(&ip)) else {
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
                *last_block = Some(block);
                return Ok(ip);
            }
            if !raced {
                raced = true;
                next = socketplane_datapath::names::fnv1a(self.node_id.as_bytes()) % count;
                left = count;
            }
        }
        // Every block is claimed: the network is small for its hosts, and
        // one listing of it is bounded by its size.
        let ipam = self.read_list(&keys::ipam(network), local).await?;
        let taken = taken(network, &ipam.kvs);
        Ok(pool.first_free_anywhere(|ip| taken.contains_key(&ip))?)
    }
}

/// Addresses and reservations among a network's IPAM keys.
fn taken<'a>(
    network: &str,
    kvs: impl IntoIterator<Item = &'a KeyValue>,
) -> BTreeMap<Ipv4Addr, Holder> {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;
    use socketplane_api::rest::CreateNetwork;
    use socketplane_store::{Layer, Layered, Listing, MemStore, Store, Txn};

    use crate::testing::{attach_web, register, web};
    use crate::Cluster;

    /// Counts the keys the cluster reads.
    #[derive(Default)]
    struct Counting {
        inner: MemStore,
        keys_read: AtomicUsize,
    }

    #[async_trait]
    impl Layer for Counting {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }
        async fn list(&self, prefix: &str) -> socketplane_store::Result<Listing> {
            let listing = self.inner.list(prefix).await?;
            self.keys_read
                .fetch_add(listing.kvs.len(), Ordering::Relaxed);
            Ok(listing)
        }
    }

    #[tokio::test]
    async fn an_attach_reads_its_block_not_the_whole_network() {
        let store = Arc::new(Layered(Counting::default()));
        let a = Cluster::new(store.clone(), "a".into(), "c".into());
        let b = Cluster::new(store.clone(), "b".into(), "c".into());
        register(&a, "a").await;
        register(&b, "b").await;
        a.create_network(&CreateNetwork {
            subnet: "10.9.0.0/16".into(),
            ..web()
        })
        .await
        .expect("network");
        let mut ips = std::collections::HashSet::new();
        for _ in 0..600 {
            let (ep, _) = b.attach(&attach_web(), None).await.expect("attach on b");
            assert!(ips.insert(ep.ip), "{} twice", ep.ip);
        }
        let mut first = None;
        for _ in 0..150 {
            let (ep, _) = a.attach(&attach_web(), None).await.expect("attach on a");
            assert!(ips.insert(ep.ip), "{} twice", ep.ip);
            first.get_or_insert(ep);
        }
        // 750 addresses in 13 blocks: one more attach on either node reads
        // the block claims and the addresses of one block's /24 (at most
        // 256), and the amortised cost over the next block's worth stays
        // as small.
        for node in [&a, &b] {
            store.keys_read.store(0, Ordering::Relaxed);
            let (ep, _) = node.attach(&attach_web(), None).await.expect("attach");
            assert!(ips.insert(ep.ip), "{} twice", ep.ip);
            let read = store.keys_read.load(Ordering::Relaxed);
            assert!(read <= 256 + 16, "one attach read {read} keys");
        }
        store.keys_read.store(0, Ordering::Relaxed);
        for _ in 0..64 {
            let (ep, _) = b.attach(&attach_web(), None).await.expect("attach on b");
            assert!(ips.insert(ep.ip), "{} twice", ep.ip);
        }
        let read = store.keys_read.load(Ordering::Relaxed);
        assert!(read <= 64 * (256 + 16), "64 attaches read {read} keys");
        // A freed address in a full block is taken again once the block
        // being filled is full: nothing is lost to the hint.
        let freed = first.expect("an endpoint on a");
        a.detach(&freed.id).await.expect("detach");
        let mut reused = false;
        for _ in 0..64 {
            let (ep, _) = a.attach(&attach_web(), None).await.expect("attach on a");
            assert!(ep.ip == freed.ip || ips.insert(ep.ip), "{} twice", ep.ip);
            reused |= ep.ip == freed.ip;
        }
        assert!(reused, "{} was never handed out again", freed.ip);
    }

    /// Counts block claims, and answers listings late, so hosts started
    /// together all read the claims before any of them claims.
    #[derive(Default)]
    struct SlowClaims {
        inner: MemStore,
        claims: AtomicUsize,
    }

    #[async_trait]
    impl Layer for SlowClaims {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }
        async fn list(&self, prefix: &str) -> socketplane_store::Result<Listing> {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.inner.list(prefix).await
        }
        async fn txn(&self, txn: Txn) -> socketplane_store::Result<socketplane_store::TxnResult> {
            let claims_block = txn.ops.iter().any(|op| {
                matches!(op, socketplane_store::Op::Put { key, .. } if key.contains("/blocks/"))
            });
            if claims_block {
                self.claims.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.txn(txn).await
        }
    }

    #[tokio::test]
    async fn hosts_claiming_at_once_spread_over_the_pool() {
        const HOSTS: usize = 30;
        let store = Arc::new(Layered(SlowClaims::default()));
        let mut nodes = Vec::new();
        for i in 0..HOSTS {
            let node = Arc::new(Cluster::new(store.clone(), format!("n{i}"), "c".into()));
            register(&node, &format!("n{i}")).await;
            nodes.push(node);
        }
        nodes[0]
            .create_network(&CreateNetwork {
                subnet: "10.9.0.0/16".into(),
                ..web()
            })
            .await
            .expect("network");
        let attaches = nodes.iter().map(|node| {
            let node = node.clone();
            tokio::spawn(async move { node.attach(&attach_web(), None).await })
        });
        let mut ips = std::collections::HashSet::new();
        for done in futures::future::join_all(attaches).await {
            let (ep, _) = done.expect("task").expect("attach");
            assert!(ips.insert(ep.ip), "{} twice", ep.ip);
        }
        // Each host claims one block. Racing for the next free block in
        // address order, the k-th host lost k races: about HOSTS²/2 claims.
        let claims = store.claims.load(Ordering::Relaxed);
        assert!(
            claims <= 2 * HOSTS,
            "{HOSTS} hosts made {claims} block claims"
        );
        // A lone host still starts at the subnet's start.
        let lone = Cluster::new(Arc::new(MemStore::new()), "a".into(), "c".into());
        register(&lone, "a").await;
        lone.create_network(&web()).await.expect("network");
        let (ep, _) = lone.attach(&attach_web(), None).await.expect("attach");
        assert_eq!(ep.ip.octets()[3], 2, "{}", ep.ip);
    }

    /// A node whose copy of the store lags as far as it can: its local
    /// listings show no address and no block taken. Counts the listings
    /// that went to the leader.
    #[derive(Default)]
    struct Stale {
        inner: MemStore,
        lagging: std::sync::atomic::AtomicBool,
        fresh_lists: AtomicUsize,
    }

    #[async_trait]
    impl Layer for Stale {
        fn inner(&self) -> &dyn Store {
            &self.inner
        }
        async fn list(&self, prefix: &str) -> socketplane_store::Result<Listing> {
            self.fresh_lists.fetch_add(1, Ordering::Relaxed);
            self.inner.list(prefix).await
        }
        async fn list_local(&self, prefix: &str) -> socketplane_store::Result<Listing> {
            let mut listing = self.inner.list(prefix).await?;
            if self.lagging.load(Ordering::Relaxed) {
                listing
                    .kvs
                    .retain(|kv| !kv.key.contains("/addrs/") && !kv.key.contains("/blocks/"));
            }
            Ok(listing)
        }
    }

    #[tokio::test]
    async fn a_pick_from_a_stale_copy_never_takes_a_held_address() {
        let store = Arc::new(Layered(Stale::default()));
        let a = Cluster::new(store.clone(), "a".into(), "c".into());
        let b = Cluster::new(store.clone(), "b".into(), "c".into());
        register(&a, "a").await;
        register(&b, "b").await;
        a.create_network(&web()).await.expect("network");
        let mut ips = std::collections::HashSet::new();
        // Up to date, an attach picks from the node's copy alone.
        store.fresh_lists.store(0, Ordering::Relaxed);
        for _ in 0..10 {
            let (ep, _) = b.attach(&attach_web(), None).await.expect("attach on b");
            assert!(ips.insert(ep.ip), "{} twice", ep.ip);
        }
        let fresh = store.fresh_lists.load(Ordering::Relaxed);
        assert_eq!(
            fresh, 0,
            "10 attaches listed {fresh} times through the leader"
        );
        // Lagging, every pick is an address someone holds: the
        // transaction refuses it, and the retry reads afresh.
        store.lagging.store(true, Ordering::Relaxed);
        for _ in 0..10 {
            let (ep, _) = a.attach(&attach_web(), None).await.expect("attach on a");
            assert!(ips.insert(ep.ip), "{} twice", ep.ip);
        }
        assert!(store.fresh_lists.load(Ordering::Relaxed) > 0);
    }
}
