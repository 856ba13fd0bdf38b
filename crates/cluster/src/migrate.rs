//! Store migration from the name-keyed layout (before networks had ids):
//! `networks/NAME` becomes `networks/ID` plus `network-names/NAME`, the
//! network's IPAM keys move from `ipam/NAME/` to `ipam/ID/`, endpoints and
//! Docker network mappings refer to the id, and Docker reservations (the
//! address value `docker-reserved:NODE`) become reservation records. One
//! transaction per network, compared on every key it rewrites, so agents
//! migrating at once cannot both succeed; run on every start (a no-op once
//! done).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Deserialize;
use socketplane_api::{
    keys, DockerNetworkRecord, EndpointRecord, NetworkRecord, ReservationRecord,
};
use socketplane_store::{Compare, KeyValue, Op, Txn};

use crate::cluster::{Cluster, CAS_ATTEMPTS};
use crate::error::{Error, Result};
use crate::names::random_id;
use crate::records;

/// A network record of the name-keyed layout.
#[derive(Deserialize)]
struct LegacyNetwork {
    #[serde(default)]
    id: Option<String>,
    name: String,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    vni: u32,
    #[serde(default)]
    mtu: Option<u32>,
}

/// The address value of a legacy Docker reservation.
const LEGACY_RESERVATION: &str = "docker-reserved:";

impl Cluster {
    /// Migrates every name-keyed network. Returns how many it migrated.
    pub async fn migrate_store(&self) -> Result<usize> {
        let mut migrated = 0;
        for _ in 0..CAS_ATTEMPTS {
            let listing = self.store.list(&keys::networks()).await?;
            let legacy: Vec<(KeyValue, LegacyNetwork)> = listing
                .kvs
                .into_iter()
                .filter_map(|kv| {
                    let n: LegacyNetwork = serde_json::from_slice(&kv.value).ok()?;
                    n.id.is_none().then_some((kv, n))
                })
                .collect();
            let Some((kv, old)) = legacy.into_iter().next() else {
                return Ok(migrated);
            };
            if self.migrate_network(&kv, old).await? {
                migrated += 1;
            }
        }
        Err(Error::Unavailable(
            "too much contention migrating networks; try again".into(),
        ))
    }

    /// One network in one transaction; false if it lost a race (the
    /// caller lists again).
    async fn migrate_network(&self, kv: &KeyValue, old: LegacyNetwork) -> Result<bool> {
        let record = NetworkRecord {
            id: random_id(),
            name: old.name.clone(),
            subnet: old.subnet,
            gateway: old.gateway,
            vni: old.vni,
            mtu: old.mtu,
            mode: Default::default(),
        };
        let id = record.id.as_str();
        let mut txn = Txn::new()
            .when(Compare::mod_revision(kv.key.clone(), kv.mod_revision))
            .when(Compare::absent(keys::network(id)))
            .when(Compare::absent(keys::network_name(&record.name)))
            .then(Op::delete(kv.key.clone()))
            .then(Op::put(keys::network(id), records::encode(&record)?))
            .then(Op::put(keys::network_name(&record.name), id.to_string()));

        // IPAM keys: same layout below the network, under the id.
        let old_ipam = keys::ipam(&old.name);
        for a in self.store.list(&old_ipam).await?.kvs {
            let rest = &a.key[old_ipam.len()..];
            let value = String::from_utf8_lossy(&a.value);
            let (key, value) = match (
                value.strip_prefix(LEGACY_RESERVATION),
                keys::parse_ip(&a.key),
            ) {
                (Some(node), Some(ip)) if rest.starts_with("addrs/") => (
                    keys::reservation(id, ip),
                    records::encode(&ReservationRecord {
                        node: node.to_string(),
                    })?,
                ),
                _ => (format!("{}{rest}", keys::ipam(id)), a.value.clone()),
            };
            txn = txn
                .when(Compare::mod_revision(a.key.clone(), a.mod_revision))
                .then(Op::delete(a.key.clone()))
                .then(Op::put(key, value));
        }
        // Endpoints refer to the network by id.
        for e in self.store.list(&keys::endpoints()).await?.kvs {
            let Ok(mut ep) = records::decode::<EndpointRecord>(&e) else {
                continue;
            };
            if ep.network != old.name {
                continue;
            }
            ep.network = id.to_string();
            txn = txn
                .when(Compare::mod_revision(e.key.clone(), e.mod_revision))
                .then(Op::put(e.key.clone(), records::encode(&ep)?));
        }
        // So do the Docker network mappings of every node.
        for m in self.store.list(&keys::docker_prefix()).await?.kvs {
            let Ok(mut mapping) = records::decode::<DockerNetworkRecord>(&m) else {
                continue;
            };
            if mapping.network != old.name {
                continue;
            }
            mapping.network = id.to_string();
            txn = txn
                .when(Compare::mod_revision(m.key.clone(), m.mod_revision))
                .then(Op::put(m.key.clone(), records::encode(&mapping)?));
        }
        let done = self.store.txn(txn).await?.succeeded;
        if done {
            tracing::info!(network = %record.name, %id, "Migrated a network to the id-keyed store layout.");
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use socketplane_store::mem::MemStore;
    use socketplane_store::Store;

    use super::*;

    #[tokio::test]
    async fn name_keyed_networks_become_id_keyed() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let put = |k: String, v: &[u8]| {
            let store = store.clone();
            let v = v.to_vec();
            async move { store.put(&k, v).await.unwrap() }
        };
        put(
            format!("{}networks/blue", keys::PREFIX),
            br#"{"name":"blue","subnet":"10.31.0.0/24","gateway":"10.31.0.1","vni":256}"#,
        )
        .await;
        put(format!("{}ipam/blue/addrs/10.31.0.2", keys::PREFIX), b"ep1").await;
        put(
            format!("{}ipam/blue/addrs/10.31.0.3", keys::PREFIX),
            b"docker-reserved:n2",
        )
        .await;
        put(
            format!("{}ipam/blue/blocks/10.31.0.0_26", keys::PREFIX),
            b"n1",
        )
        .await;
        put(
            keys::endpoint("ep1"),
            br#"{"id":"ep1","network":"blue","node":"n1","ip":"10.31.0.2","mac":"02:53:0a:1f:00:02","ifname":"eth0"}"#,
        )
        .await;
        put(
            keys::docker_network("n1", "abc"),
            br#"{"network":"blue","created":true}"#,
        )
        .await;

        let cluster = Cluster::new(store.clone(), "n1".into(), "c".into());
        assert_eq!(cluster.migrate_store().await.unwrap(), 1);
        assert_eq!(cluster.migrate_store().await.unwrap(), 0, "idempotent");

        let (net, _) = cluster.find_network("blue").await.unwrap();
        assert_eq!(net.name, "blue");
        assert_eq!(net.id.len(), 16);
        assert_eq!(net.vni, 256);
        let (ep, _) = cluster.get_endpoint("ep1").await.unwrap();
        assert_eq!(ep.network, net.id);
        let taken = cluster.taken_addresses(&net.id).await.unwrap();
        assert_eq!(
            taken.get(&ip("10.31.0.2")),
            Some(&crate::alloc::Holder::Endpoint("ep1".into()))
        );
        assert_eq!(
            taken.get(&ip("10.31.0.3")),
            Some(&crate::alloc::Holder::Reservation("n2".into()))
        );
        assert!(store
            .get(&keys::block(&net.id, "10.31.0.0/26".parse().unwrap()))
            .await
            .unwrap()
            .is_some());
        let (m, _): (DockerNetworkRecord, _) =
            records::get(&*store, &keys::docker_network("n1", "abc"), String::new)
                .await
                .unwrap();
        assert_eq!(m.network, net.id);
        assert!(store
            .list(&keys::ipam("blue"))
            .await
            .unwrap()
            .kvs
            .is_empty());
    }
}
