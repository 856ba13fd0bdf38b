//! Cluster operations on the store: networks, IPAM and endpoints. Every
//! check happens before anything is written, and every write is one
//! compare-and-set transaction, so bad input and races change nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;
use socketplane_api::rest::{AttachEndpoint, CreateNetwork};
use socketplane_api::{keys, EndpointRecord, MacAddr, NetworkRecord};
use socketplane_ipam::{overlaps, parse_subnet, Pool};
use socketplane_store::{Compare, KeyValue, Op, Revision, Store, Txn};
use tokio::sync::Mutex;

use crate::error::{OpError, OpResult};

/// VNIs below this are left for other uses; networks get the lowest free one
/// from here on.
pub const FIRST_VNI: u32 = 256;
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Names Docker and users expect to mean something else.
pub const RESERVED_NAMES: &[&str] = &["host", "none", "bridge", "all"];
/// How often a transaction that lost a race is retried before giving up.
const CAS_ATTEMPTS: usize = 64;

/// Store operations, shared by the local API and the Docker plugin.
pub struct Ops {
    store: Arc<dyn Store>,
    node_id: String,
    /// Serialises this agent's allocations per network so concurrent local
    /// attaches do not race each other for the same candidate address.
    alloc_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn json<T: serde::Serialize>(value: &T) -> OpResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| OpError::Internal(format!("encoding a record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> OpResult<T> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| OpError::Internal(format!("record {} does not parse: {e}", kv.key)))
}

pub fn validate_name(kind: &str, name: &str) -> OpResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(OpError::Invalid(format!(
            "invalid {kind} name {name:?}: use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

impl Ops {
    pub fn new(store: Arc<dyn Store>, node_id: String) -> Self {
        Ops {
            store,
            node_id,
            alloc_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    // ----- networks -----

    /// Every record under a prefix, decoded.
    async fn list_records<T: serde::de::DeserializeOwned>(&self, prefix: &str) -> OpResult<Vec<T>> {
        let listing = self.store.list(prefix).await?;
        listing.kvs.iter().map(decode).collect()
    }

    /// One record and its revision, or `NotFound` with `missing`.
    async fn get_record<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        missing: impl FnOnce() -> String,
    ) -> OpResult<(T, Revision)> {
        match self.store.get(key).await? {
            Some(kv) => Ok((decode(&kv)?, kv.mod_revision)),
            None => Err(OpError::NotFound(missing())),
        }
    }

    pub async fn list_networks(&self) -> OpResult<Vec<NetworkRecord>> {
        self.list_records(&keys::networks()).await
    }

    pub async fn get_network(&self, name: &str) -> OpResult<(NetworkRecord, Revision)> {
        self.get_record(&keys::network(name), || {
            format!("no network named {name:?}")
        })
        .await
    }

    /// Creates a network after checking its name, subnet (no overlap with
    /// another network), gateway and MTU; one transaction, retried on races.
    pub async fn create_network(&self, req: &CreateNetwork) -> OpResult<NetworkRecord> {
        validate_name("network", &req.name)?;
        if RESERVED_NAMES.contains(&req.name.as_str()) {
            return Err(OpError::Invalid(format!(
                "network name {:?} is reserved",
                req.name
            )));
        }
        let subnet = parse_subnet(&req.subnet)?;
        let pool = Pool::new(subnet, req.gateway)?;
        if let Some(mtu) = req.mtu {
            if !(576..=9000).contains(&mtu) {
                return Err(OpError::Invalid(format!(
                    "MTU {mtu} is out of range (576-9000)"
                )));
            }
        }
        for _ in 0..CAS_ATTEMPTS {
            let lock_rev = self.lock_revision().await?;
            let existing = self.list_networks().await?;
            if existing.iter().any(|n| n.name == req.name) {
                return Err(OpError::Conflict(format!(
                    "a network named {:?} already exists",
                    req.name
                )));
            }
            if let Some(other) = existing.iter().find(|n| overlaps(n.subnet, subnet)) {
                return Err(OpError::Conflict(format!(
                    "subnet {subnet} overlaps network {:?} ({})",
                    other.name, other.subnet
                )));
            }
            let used: HashSet<u32> = existing.iter().map(|n| n.vni).collect();
            let vni = (FIRST_VNI..=MAX_VNI)
                .find(|v| !used.contains(v))
                .ok_or_else(|| OpError::Conflict("no free VNI left".into()))?;
            let record = NetworkRecord {
                name: req.name.clone(),
                subnet,
                gateway: pool.gateway(),
                vni,
                mtu: req.mtu,
            };
            let txn = Txn::new()
                .when(Compare::mod_revision(keys::networks_lock(), lock_rev))
                .when(Compare::absent(keys::network(&req.name)))
                .then(Op::put(keys::network(&req.name), json(&record)?))
                .then(Op::put(keys::networks_lock(), req.name.clone()));
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(network = %record.name, subnet = %subnet, vni, "Created network.");
                return Ok(record);
            }
        }
        Err(OpError::Unavailable(
            "too much contention creating networks; try again".into(),
        ))
    }

    async fn lock_revision(&self) -> OpResult<Revision> {
        Ok(self
            .store
            .get(&keys::networks_lock())
            .await?
            .map(|kv| kv.mod_revision)
            .unwrap_or(0))
    }

    /// Deletes a network; with endpoints attached only if `force`, which
    /// detaches them. Returns the revision of the delete.
    pub async fn delete_network(&self, name: &str, force: bool) -> OpResult<Revision> {
        for _ in 0..CAS_ATTEMPTS {
            let (_, net_rev) = self.get_network(name).await?;
            let endpoints: Vec<EndpointRecord> = self
                .list_endpoints()
                .await?
                .into_iter()
                .filter(|e| e.network == name)
                .collect();
            if !endpoints.is_empty() && !force {
                return Err(OpError::Conflict(format!(
                    "network {name:?} has {} endpoint(s) attached; detach them first or use --force",
                    endpoints.len()
                )));
            }
            let ipam = self.store.list(&keys::ipam(name)).await?;
            let mut txn = Txn::new()
                .when(Compare::mod_revision(keys::network(name), net_rev))
                .then(Op::delete(keys::network(name)))
                .then(Op::put(keys::networks_lock(), name.to_string()));
            for ep in &endpoints {
                txn = txn.then(Op::delete(keys::endpoint(&ep.id)));
            }
            for kv in &ipam.kvs {
                txn = txn.then(Op::delete(kv.key.clone()));
            }
            // An address released or taken meanwhile changes these keys;
            // one taken after the delete fails its own compare on the
            // network. (An attach racing exactly in between leaves an
            // endpoint without network, which the reconciler collects.)
            for kv in &ipam.kvs {
                txn = txn.when(Compare::mod_revision(kv.key.clone(), kv.mod_revision));
            }
            let result = self.store.txn(txn).await?;
            if result.succeeded {
                tracing::info!(network = %name, endpoints = endpoints.len(), "Deleted network.");
                return Ok(result.revision);
            }
        }
        Err(OpError::Unavailable(
            "too much contention deleting the network; try again".into(),
        ))
    }

    // ----- endpoints -----

    pub async fn list_endpoints(&self) -> OpResult<Vec<EndpointRecord>> {
        self.list_records(&keys::endpoints()).await
    }

    pub async fn get_endpoint(&self, id: &str) -> OpResult<(EndpointRecord, Revision)> {
        self.get_record(&keys::endpoint(id), || {
            format!("no endpoint with id {id:?}")
        })
        .await
    }

    async fn alloc_lock(&self, network: &str) -> Arc<Mutex<()>> {
        let mut locks = self.alloc_locks.lock().await;
        locks.entry(network.to_string()).or_default().clone()
    }

    /// Allocates an address and records an endpoint on this node, in one
    /// transaction. Returns the record and the revision it was written at.
    pub async fn attach(
        &self,
        req: &AttachEndpoint,
        id: Option<String>,
    ) -> OpResult<(EndpointRecord, Revision)> {
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".to_string());
        if ifname.is_empty()
            || ifname.len() > 15
            || ifname.contains('/')
            || ifname.contains(char::is_whitespace)
        {
            return Err(OpError::Invalid(format!(
                "invalid interface name {ifname:?} (1-15 characters, no '/' or spaces)"
            )));
        }
        if let Some(name) = &req.name {
            validate_name("endpoint", name)?;
        }
        if let Some(netns) = &req.netns {
            check_netns(netns)?;
        }
        let id = id.unwrap_or_else(random_id);
        validate_name("endpoint id", &id)?;
        let (network, _) = self.get_network(&req.network).await?;
        let pool = Pool::new(network.subnet, Some(network.gateway))?;
        if let Some(ip) = req.ip {
            pool.check_assignable(ip)?;
        }

        let lock = self.alloc_lock(&network.name).await;
        let _guard = lock.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let (_, net_rev) = self.get_network(&req.network).await?;
            let taken = self.taken_addresses(&network.name).await?;
            let ip = match req.ip {
                Some(ip) => {
                    if let Some(holder) = taken.get(&ip) {
                        return Err(OpError::Conflict(format!(
                            "address {ip} is already in use by endpoint {holder}"
                        )));
                    }
                    ip
                }
                None => self.choose_address(&pool, &network.name, &taken).await?,
            };
            let record = EndpointRecord {
                id: id.clone(),
                network: network.name.clone(),
                node: self.node_id.clone(),
                ip,
                mac: MacAddr::from_ipv4(ip),
                name: req.name.clone(),
                container_id: req.container_id.clone(),
                netns: req.netns.clone(),
                ifname: ifname.clone(),
            };
            let txn = Txn::new()
                .when(Compare::mod_revision(keys::network(&network.name), net_rev))
                .when(Compare::absent(keys::address(&network.name, ip)))
                .when(Compare::absent(keys::endpoint(&id)))
                .then(Op::put(keys::address(&network.name, ip), id.clone()))
                .then(Op::put(keys::endpoint(&id), json(&record)?));
            let result = self.store.txn(txn).await?;
            if result.succeeded {
                tracing::debug!(endpoint = %id, network = %network.name, %ip, "Allocated address.");
                return Ok((record, result.revision));
            }
            if self.store.get(&keys::endpoint(&id)).await?.is_some() {
                return Err(OpError::Conflict(format!("endpoint {id:?} already exists")));
            }
        }
        Err(OpError::Unavailable(
            "too much contention allocating an address; try again".into(),
        ))
    }

    async fn taken_addresses(&self, network: &str) -> OpResult<BTreeMap<Ipv4Addr, String>> {
        let listing = self.store.list(&keys::addresses(network)).await?;
        Ok(listing
            .kvs
            .iter()
            .filter_map(|kv| {
                let ip = kv.key.rsplit('/').next()?.parse().ok()?;
                Some((ip, String::from_utf8_lossy(&kv.value).into_owned()))
            })
            .collect())
    }

    /// Picks a candidate: first from a block this node owns, else from a
    /// block it claims now, else from anywhere. Only the later CAS on the
    /// address key makes it ours.
    async fn choose_address(
        &self,
        pool: &Pool,
        network: &str,
        taken: &BTreeMap<Ipv4Addr, String>,
    ) -> OpResult<Ipv4Addr> {
        let is_taken = |ip: Ipv4Addr| taken.contains_key(&ip);
        let blocks = self.store.list(&keys::blocks(network)).await?;
        let owners: BTreeMap<Ipv4Net, (String, Revision)> = blocks
            .kvs
            .iter()
            .filter_map(|kv| {
                let block = keys::parse_block(&kv.key)?;
                Some((
                    block,
                    (
                        String::from_utf8_lossy(&kv.value).into_owned(),
                        kv.mod_revision,
                    ),
                ))
            })
            .collect();
        for (block, (owner, _)) in &owners {
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
            let claim = Txn::new()
                .when(Compare::absent(keys::block(network, block)))
                .then(Op::put(keys::block(network, block), self.node_id.clone()));
            if self.store.txn(claim).await?.succeeded {
                tracing::debug!(%network, %block, "Claimed an address block.");
                return Ok(ip);
            }
        }
        Ok(pool.first_free_anywhere(is_taken)?)
    }

    /// Removes an endpoint and frees its address. Returns the revision.
    pub async fn detach(&self, id: &str) -> OpResult<Revision> {
        for _ in 0..CAS_ATTEMPTS {
            let (ep, rev) = self.get_endpoint(id).await?;
            let txn = Txn::new()
                .when(Compare::mod_revision(keys::endpoint(id), rev))
                .then(Op::delete(keys::endpoint(id)))
                .then(Op::delete(keys::address(&ep.network, ep.ip)));
            let result = self.store.txn(txn).await?;
            if result.succeeded {
                tracing::debug!(endpoint = %id, ip = %ep.ip, "Released address.");
                return Ok(result.revision);
            }
        }
        Err(OpError::Unavailable(
            "too much contention; try again".into(),
        ))
    }

    /// Removes the endpoints and block claims of a node whose liveness key
    /// is gone. Every agent may run this; the compare on the liveness key
    /// makes it a no-op if the node came back meanwhile.
    pub async fn reclaim_node(&self, node: &str) -> OpResult<usize> {
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
            let blocks = self.store.list(&keys::blocks(&net.name)).await?;
            for kv in blocks.kvs.iter().filter(|kv| kv.value == node.as_bytes()) {
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

/// A network namespace path must exist and be a namespace file (nsfs).
fn check_netns(path: &str) -> OpResult<()> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(OpError::Invalid(format!(
            "network namespace path {path:?} must be absolute"
        )));
    }
    match nix::sys::statfs::statfs(p) {
        Ok(fs)
            if fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC
                || fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC =>
        {
            Ok(())
        }
        Ok(_) => Err(OpError::Invalid(format!(
            "{path:?} is not a network namespace"
        ))),
        Err(e) => Err(OpError::Invalid(format!(
            "network namespace {path:?} is not usable: {e}"
        ))),
    }
}

impl Ops {
    /// Deletes an endpoint whose network no longer exists.
    pub async fn remove_orphan(&self, id: &str) -> OpResult<()> {
        let (ep, rev) = self.get_endpoint(id).await?;
        let txn = Txn::new()
            .when(Compare::absent(keys::network(&ep.network)))
            .when(Compare::mod_revision(keys::endpoint(id), rev))
            .then(Op::delete(keys::endpoint(id)))
            .then(Op::delete(keys::address(&ep.network, ep.ip)));
        self.store.txn(txn).await?;
        Ok(())
    }
}

/// Addresses the Docker IPAM driver hands out before Docker creates the
/// endpoint: the address key holds [`Ops::reservation_holder`] until
/// [`Ops::attach_reserved`] turns it into an endpoint, so no other host can
/// take the address in between.
impl Ops {
    /// The value of an address key reserved by this node's Docker plugin.
    pub fn reservation_holder(&self) -> String {
        format!("docker-reserved:{}", self.node_id)
    }

    /// Reserves `ip` (or the next free address) on `network` in the
    /// cluster IPAM, without an endpoint yet.
    pub async fn reserve_address(&self, network: &str, ip: Option<Ipv4Addr>) -> OpResult<Ipv4Addr> {
        let (record, _) = self.get_network(network).await?;
        let pool = Pool::new(record.subnet, Some(record.gateway))?;
        if let Some(ip) = ip {
            pool.check_assignable(ip)?;
        }
        let holder = self.reservation_holder();
        let lock = self.alloc_lock(network).await;
        let _guard = lock.lock().await;
        for _ in 0..CAS_ATTEMPTS {
            let (_, net_rev) = self.get_network(network).await?;
            let taken = self.taken_addresses(network).await?;
            let ip = match ip {
                Some(ip) => {
                    if let Some(by) = taken.get(&ip) {
                        return Err(OpError::Conflict(format!(
                            "address {ip} is already in use by endpoint {by}"
                        )));
                    }
                    ip
                }
                None => self.choose_address(&pool, network, &taken).await?,
            };
            let txn = Txn::new()
                .when(Compare::mod_revision(keys::network(network), net_rev))
                .when(Compare::absent(keys::address(network, ip)))
                .then(Op::put(keys::address(network, ip), holder.clone()));
            if self.store.txn(txn).await?.succeeded {
                tracing::debug!(%network, %ip, "Reserved an address for Docker.");
                return Ok(ip);
            }
        }
        Err(OpError::Unavailable(
            "too much contention allocating an address; try again".into(),
        ))
    }

    /// Frees an address reserved by this node and not yet used by an
    /// endpoint. Returns whether it was. Addresses held by endpoints are
    /// left alone (they go with the endpoint's detach).
    pub async fn release_reservation(&self, network: &str, ip: Ipv4Addr) -> OpResult<bool> {
        let key = keys::address(network, ip);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(false);
        };
        if kv.value != self.reservation_holder().as_bytes() {
            return Ok(false);
        }
        let txn = Txn::new()
            .when(Compare::mod_revision(key.clone(), kv.mod_revision))
            .then(Op::delete(key));
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Records an endpoint on the address `req.ip`, which this node
    /// reserved with [`Ops::reserve_address`]; without such a reservation
    /// it is a plain [`Ops::attach`] of that address.
    pub async fn attach_reserved(
        &self,
        req: &AttachEndpoint,
        id: String,
    ) -> OpResult<(EndpointRecord, Revision)> {
        let Some(ip) = req.ip else {
            return self.attach(req, Some(id)).await;
        };
        validate_name("endpoint id", &id)?;
        let key = keys::address(&req.network, ip);
        let reserved = match self.store.get(&key).await? {
            Some(kv) if kv.value == self.reservation_holder().as_bytes() => kv.mod_revision,
            _ => return self.attach(req, Some(id)).await,
        };
        let (network, net_rev) = self.get_network(&req.network).await?;
        let record = EndpointRecord {
            id: id.clone(),
            network: network.name.clone(),
            node: self.node_id.clone(),
            ip,
            mac: MacAddr::from_ipv4(ip),
            name: req.name.clone(),
            container_id: req.container_id.clone(),
            netns: None,
            ifname: req.ifname.clone().unwrap_or_else(|| "eth0".to_string()),
        };
        let txn = Txn::new()
            .when(Compare::mod_revision(keys::network(&network.name), net_rev))
            .when(Compare::mod_revision(key.clone(), reserved))
            .when(Compare::absent(keys::endpoint(&id)))
            .then(Op::put(key, id.clone()))
            .then(Op::put(keys::endpoint(&id), json(&record)?));
        let result = self.store.txn(txn).await?;
        if result.succeeded {
            return Ok((record, result.revision));
        }
        if self.store.get(&keys::endpoint(&id)).await?.is_some() {
            return Err(OpError::Conflict(format!("endpoint {id:?} already exists")));
        }
        Err(OpError::Conflict(format!(
            "the reservation of {ip} changed meanwhile; try again"
        )))
    }
}

impl Ops {
    /// Records which container an endpoint belongs to (the Docker plugin
    /// learns it only after the container started). No-op if the endpoint
    /// is gone or changed meanwhile.
    pub async fn set_endpoint_owner(
        &self,
        id: &str,
        name: Option<String>,
        container_id: Option<String>,
    ) -> OpResult<()> {
        let (mut ep, rev) = self.get_endpoint(id).await?;
        ep.name = name;
        ep.container_id = container_id;
        let txn = Txn::new()
            .when(Compare::mod_revision(keys::endpoint(id), rev))
            .then(Op::put(keys::endpoint(id), json(&ep)?));
        self.store.txn(txn).await?;
        Ok(())
    }
}

impl Ops {
    /// Renames a network nothing uses yet (no endpoint, no address, no
    /// block): the Docker plugin creates a network before Docker tells it
    /// the name, and renames it once known. Fails with `Conflict` if the
    /// network is in use or `new` exists.
    pub async fn rename_unused_network(&self, old: &str, new: &str) -> OpResult<NetworkRecord> {
        validate_name("network", new)?;
        if RESERVED_NAMES.contains(&new) || new == "default" {
            return Err(OpError::Invalid(format!(
                "network name {new:?} is reserved"
            )));
        }
        let lock_rev = self.lock_revision().await?;
        let (mut record, rev) = self.get_network(old).await?;
        if self
            .list_endpoints()
            .await?
            .iter()
            .any(|e| e.network == old)
            || !self.store.list(&keys::ipam(old)).await?.kvs.is_empty()
        {
            return Err(OpError::Conflict(format!("network {old:?} is in use")));
        }
        record.name = new.to_string();
        let txn = Txn::new()
            .when(Compare::mod_revision(keys::networks_lock(), lock_rev))
            .when(Compare::mod_revision(keys::network(old), rev))
            .when(Compare::absent(keys::network(new)))
            .then(Op::delete(keys::network(old)))
            .then(Op::put(keys::network(new), json(&record)?))
            .then(Op::put(keys::networks_lock(), new.to_string()));
        if self.store.txn(txn).await?.succeeded {
            tracing::info!(from = %old, to = %new, "Renamed network.");
            Ok(record)
        } else {
            Err(OpError::Conflict(format!(
                "network {old:?} changed meanwhile or {new:?} exists"
            )))
        }
    }
}
