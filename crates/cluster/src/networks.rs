//! Networks: create, look up (by name or id), rename, delete. A network's
//! id never changes; its name is unique through its
//! [`keys::network_name`] key, written in the same transaction.

use std::collections::HashSet;

use socketplane_api::rest::CreateNetwork;
use socketplane_api::{keys, EndpointRecord, NetworkRecord};
use socketplane_ipam::{overlaps, parse_subnet, Pool};
use socketplane_store::{Compare, Op, Revision, Txn};

use crate::cluster::{Cluster, CAS_ATTEMPTS};
use crate::error::{Error, Result};
use crate::names::{random_id, validate_network_name};
use crate::records;

/// VNIs below this are left for other uses; networks get the lowest free one
/// from here on.
pub const FIRST_VNI: u32 = 256;
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Valid overlay MTUs.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=9000;

impl Cluster {
    pub async fn list_networks(&self) -> Result<Vec<NetworkRecord>> {
        records::list(&*self.store, &keys::networks()).await
    }

    /// A network by id.
    pub async fn get_network(&self, id: &str) -> Result<(NetworkRecord, Revision)> {
        records::get(&*self.store, &keys::network(id), || {
            format!("no network with id {id:?}")
        })
        .await
    }

    /// A network by name, or else by id (what users and the API pass).
    pub async fn find_network(&self, name_or_id: &str) -> Result<(NetworkRecord, Revision)> {
        if let Some(kv) = self.store.get(&keys::network_name(name_or_id)).await? {
            let id = String::from_utf8_lossy(&kv.value).into_owned();
            if let Some(found) = records::find(&*self.store, &keys::network(&id)).await? {
                return Ok(found);
            }
        }
        match records::find(&*self.store, &keys::network(name_or_id)).await? {
            Some(found) => Ok(found),
            None => Err(Error::NotFound(format!("no network named {name_or_id:?}"))),
        }
    }

    /// The network with exactly this subnet, if any.
    pub async fn network_by_subnet(&self, subnet: ipnet::Ipv4Net) -> Result<Option<NetworkRecord>> {
        Ok(self
            .list_networks()
            .await?
            .into_iter()
            .find(|n| n.subnet == subnet))
    }

    /// Creates a network after checking its name, subnet (no overlap with
    /// another network), gateway and MTU; one transaction, retried on races.
    pub async fn create_network(&self, req: &CreateNetwork) -> Result<NetworkRecord> {
        validate_network_name(&req.name)?;
        let subnet = parse_subnet(&req.subnet)?;
        let pool = Pool::new(subnet, req.gateway)?;
        if let Some(mtu) = req.mtu {
            if !MTU_RANGE.contains(&mtu) {
                return Err(Error::Invalid(format!(
                    "MTU {mtu} is out of range ({}-{})",
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                )));
            }
        }
        for _ in 0..CAS_ATTEMPTS {
            let lock_rev = self.lock_revision().await?;
            let existing = self.list_networks().await?;
            if let Some(same) = existing.iter().find(|n| n.name == req.name) {
                // A mode is fixed for a network's life: switching it under
                // running workloads would silently change how (and whether)
                // their broadcast and multicast cross hosts.
                if same.mode != req.mode {
                    return Err(Error::Conflict(format!(
                        "a network named {:?} already exists in {} mode; a network's mode \
                         cannot be changed: create a new network with --mode {} instead",
                        req.name, same.mode, req.mode
                    )));
                }
                return Err(Error::Conflict(format!(
                    "a network named {:?} already exists",
                    req.name
                )));
            }
            if let Some(other) = existing.iter().find(|n| overlaps(n.subnet, subnet)) {
                return Err(Error::Conflict(format!(
                    "subnet {subnet} overlaps network {:?} ({})",
                    other.name, other.subnet
                )));
            }
            let used: HashSet<u32> = existing.iter().map(|n| n.vni).collect();
            let vni = (FIRST_VNI..=MAX_VNI)
                .find(|v| !used.contains(v))
                .ok_or_else(|| Error::Conflict("no free VNI left".into()))?;
            let record = NetworkRecord {
                id: random_id(),
                name: req.name.clone(),
                subnet,
                gateway: pool.gateway(),
                vni,
                mtu: req.mtu,
                mode: req.mode,
            };
            let txn = Txn::new()
                .when(Compare::mod_revision(keys::networks_lock(), lock_rev))
                .when(Compare::absent(keys::network(&record.id)))
                .when(Compare::absent(keys::network_name(&record.name)))
                .then(Op::put(
                    keys::network(&record.id),
                    records::encode(&record)?,
                ))
                .then(Op::put(keys::network_name(&record.name), record.id.clone()))
                .then(Op::put(keys::networks_lock(), record.id.clone()));
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(network = %record.name, id = %record.id, subnet = %subnet, vni, mode = %record.mode, "Created network.");
                return Ok(record);
            }
        }
        Err(Error::Unavailable(
            "too much contention creating networks; try again".into(),
        ))
    }

    pub(crate) async fn lock_revision(&self) -> Result<Revision> {
        Ok(self
            .store
            .get(&keys::networks_lock())
            .await?
            .map(|kv| kv.mod_revision)
            .unwrap_or(0))
    }

    /// Deletes a network (by name or id); with endpoints attached only if
    /// `force`, which detaches them. Returns the revision of the delete.
    pub async fn delete_network(&self, name_or_id: &str, force: bool) -> Result<Revision> {
        for _ in 0..CAS_ATTEMPTS {
            let (network, net_rev) = self.find_network(name_or_id).await?;
            let endpoints: Vec<EndpointRecord> = self
                .list_endpoints()
                .await?
                .into_iter()
                .filter(|e| e.network == network.id)
                .collect();
            if !endpoints.is_empty() && !force {
                return Err(Error::Conflict(format!(
                    "network {:?} has {} endpoint(s) attached; detach them first or use --force",
                    network.name,
                    endpoints.len()
                )));
            }
            // Addresses, reservations and block claims.
            let ipam = self.store.list(&keys::ipam(&network.id)).await?;
            let mut txn = Txn::new()
                .when(Compare::mod_revision(keys::network(&network.id), net_rev))
                .then(Op::delete(keys::network(&network.id)))
                .then(Op::delete(keys::network_name(&network.name)))
                .then(Op::put(keys::networks_lock(), network.id.clone()));
            for ep in &endpoints {
                txn = txn.then(Op::delete(keys::endpoint(&ep.id)));
            }
            for kv in &ipam.kvs {
                txn = txn.then(Op::delete(kv.key.clone()));
            }
            // An address released or taken meanwhile changes these keys;
            // one taken after the delete fails its own compare on the
            // network. (A write landing exactly in between is removed by
            // the sweep after the delete.)
            for kv in &ipam.kvs {
                txn = txn.when(Compare::mod_revision(kv.key.clone(), kv.mod_revision));
            }
            let result = self.store.txn(txn).await?;
            if result.succeeded {
                tracing::info!(network = %network.name, id = %network.id, endpoints = endpoints.len(), "Deleted network.");
                self.sweep_deleted_network(&network.id).await;
                return Ok(result.revision);
            }
        }
        Err(Error::Unavailable(
            "too much contention deleting the network; try again".into(),
        ))
    }

    /// Removes what a write racing the delete left of network `id`: an
    /// attach, reservation or block claim that landed between the delete's
    /// listing and its transaction. None can land after it (they compare
    /// on the network), so one pass leaves nothing behind.
    async fn sweep_deleted_network(&self, id: &str) {
        let left = async {
            let mut stale: Vec<String> = self
                .store
                .list(&keys::ipam(id))
                .await?
                .kvs
                .into_iter()
                .map(|kv| kv.key)
                .collect();
            stale.extend(
                self.list_endpoints()
                    .await?
                    .into_iter()
                    .filter(|e| e.network == id)
                    .map(|e| keys::endpoint(&e.id)),
            );
            if stale.is_empty() {
                return Ok(0);
            }
            let mut txn = Txn::new().when(Compare::absent(keys::network(id)));
            for key in &stale {
                txn = txn.then(Op::delete(key.clone()));
            }
            self.store.txn(txn).await?;
            Ok::<_, Error>(stale.len())
        };
        match left.await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(network = %id, keys = n, "Removed what writes racing the network's delete left.")
            }
            Err(error) => {
                tracing::warn!(network = %id, %error, "Could not sweep a deleted network's keys.")
            }
        }
    }

    /// Gives a network a new name. Endpoints and addresses refer to the
    /// network's id, so this works while the network is in use. Fails with
    /// `Conflict` if another network has the name.
    pub async fn rename_network(&self, id: &str, new: &str) -> Result<NetworkRecord> {
        validate_network_name(new)?;
        if new == socketplane_api::defaults::NETWORK {
            return Err(Error::Invalid(format!("network name {new:?} is reserved")));
        }
        for _ in 0..CAS_ATTEMPTS {
            let (mut record, rev) = self.get_network(id).await?;
            if record.name == new {
                return Ok(record);
            }
            if record.name == socketplane_api::defaults::NETWORK {
                return Err(Error::Invalid(format!(
                    "the {:?} network keeps its name",
                    record.name
                )));
            }
            let old = std::mem::replace(&mut record.name, new.to_string());
            let txn = Txn::new()
                .when(Compare::mod_revision(keys::network(id), rev))
                .when(Compare::absent(keys::network_name(new)))
                .then(Op::delete(keys::network_name(&old)))
                .then(Op::put(keys::network_name(new), id.to_string()))
                .then(Op::put(keys::network(id), records::encode(&record)?));
            if self.store.txn(txn).await?.succeeded {
                tracing::info!(from = %old, to = %new, %id, "Renamed network.");
                return Ok(record);
            }
            if self.store.get(&keys::network_name(new)).await?.is_some() {
                return Err(Error::Conflict(format!(
                    "a network named {new:?} already exists"
                )));
            }
        }
        Err(Error::Unavailable(
            "too much contention renaming the network; try again".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use socketplane_api::NetworkMode;
    use socketplane_store::{MemStore, Store};

    use super::*;

    fn req(name: &str, subnet: &str, mode: NetworkMode) -> CreateNetwork {
        CreateNetwork {
            name: name.into(),
            subnet: subnet.into(),
            gateway: None,
            mtu: None,
            mode,
        }
    }

    #[tokio::test]
    async fn a_network_keeps_its_mode_and_a_change_is_refused() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let c = Cluster::new(store, "a".into(), "c".into());
        let web = c
            .create_network(&req("web", "10.9.0.0/24", NetworkMode::Routed))
            .await
            .unwrap();
        assert_eq!(web.mode, NetworkMode::Routed);
        let (found, _) = c.find_network("web").await.unwrap();
        assert_eq!(found.mode, NetworkMode::Routed);
        let default = c
            .create_network(&req("other", "10.8.0.0/24", NetworkMode::default()))
            .await
            .unwrap();
        assert_eq!(default.mode, NetworkMode::Overlay);

        let err = c
            .create_network(&req("web", "10.7.0.0/24", NetworkMode::Overlay))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists in routed mode"), "{err}");
        assert!(err.contains("create a new network"), "{err}");
        let (still, _) = c.find_network("web").await.unwrap();
        assert_eq!(still, web, "the refused change touched nothing");
    }

    #[test]
    fn a_record_without_mode_is_an_overlay() {
        let old = r#"{"id":"0123456789abcdef","name":"web","subnet":"10.2.0.0/16","gateway":"10.2.0.1","vni":256}"#;
        let rec: NetworkRecord = serde_json::from_str(old).unwrap();
        assert_eq!(rec.mode, NetworkMode::Overlay);
    }
}
