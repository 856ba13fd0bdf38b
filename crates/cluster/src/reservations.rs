//! Docker reservations: Docker's IPAM driver hands out an address before
//! Docker creates the endpoint that takes it up. The address is reserved
//! under its own key ([`keys::reservation`], a [`ReservationRecord`]), so no
//! other host can take it, until [`Cluster::attach_reserved`] turns it into
//! an endpoint or [`Cluster::release_reservation`] frees it.

use std::net::Ipv4Addr;

use socketplane_api::rest::AttachEndpoint;
use socketplane_api::{keys, EndpointRecord, MacAddr, ReservationRecord};
use socketplane_store::{Compare, Op, Revision, Txn};

use crate::alloc::Claim;
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::names::{ifname, validate_name};
use crate::records;

/// An address reserved by this node, and since which store revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub network: String,
    pub ip: Ipv4Addr,
    pub revision: Revision,
}

impl Cluster {
    /// Reserves `ip` (or the next free address) on `network` (name or id)
    /// for this node.
    pub async fn reserve_address(&self, network: &str, ip: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
        let (network, net_rev) = self.find_network(network).await?;
        let record = records::encode(&ReservationRecord {
            node: self.node_id.clone(),
        })?;
        let (ip, _) = self
            .allocate(&network, net_rev, ip, |ip| {
                Ok(Claim {
                    compares: vec![],
                    ops: vec![Op::put(keys::reservation(&network.id, ip), record.clone())],
                    exclusive: None,
                })
            })
            .await?;
        tracing::debug!(network = %network.name, %ip, "Reserved an address for Docker.");
        Ok(ip)
    }

    /// This node's reservation of `ip`, with its revision.
    async fn own_reservation(&self, network: &str, ip: Ipv4Addr) -> Result<Option<Revision>> {
        let found: Option<(ReservationRecord, Revision)> =
            records::find(&*self.store, &keys::reservation(network, ip)).await?;
        Ok(found
            .filter(|(r, _)| r.node == self.node_id)
            .map(|(_, rev)| rev))
    }

    /// Frees an address this node reserved (network by id). Returns whether
    /// there was such a reservation; addresses held by endpoints are left
    /// alone (they go with the endpoint's detach).
    pub async fn release_reservation(&self, network: &str, ip: Ipv4Addr) -> Result<bool> {
        let Some(rev) = self.own_reservation(network, ip).await? else {
            return Ok(false);
        };
        let key = keys::reservation(network, ip);
        let txn = Txn::new()
            .when(Compare::mod_revision(key.clone(), rev))
            .then(Op::delete(key));
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Every reservation this node holds.
    pub async fn own_reservations(&self) -> Result<Vec<Reservation>> {
        let mut out = Vec::new();
        for n in self.list_networks().await? {
            let listing = self.store.list(&keys::reservations(&n.id)).await?;
            for kv in &listing.kvs {
                let Some(ip) = keys::parse_ip(&kv.key) else {
                    continue;
                };
                let Ok(r) = records::decode::<ReservationRecord>(kv) else {
                    continue;
                };
                if r.node == self.node_id {
                    out.push(Reservation {
                        network: n.id.clone(),
                        ip,
                        revision: kv.mod_revision,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Records an endpoint on the address `req.ip`, which this node
    /// reserved with [`Cluster::reserve_address`]; without such a
    /// reservation it is a plain [`Cluster::attach`] of that address.
    pub async fn attach_reserved(
        &self,
        req: &AttachEndpoint,
        id: String,
    ) -> Result<(EndpointRecord, Revision)> {
        let Some(ip) = req.ip else {
            return self.attach(req, Some(id)).await;
        };
        validate_name("endpoint id", &id)?;
        let (network, net_rev) = self.find_network(&req.network).await?;
        let Some(reserved) = self.own_reservation(&network.id, ip).await? else {
            return self.attach(req, Some(id)).await;
        };
        let record = EndpointRecord {
            id: id.clone(),
            network: network.id.clone(),
            node: self.node_id.clone(),
            ip,
            mac: MacAddr::from_ipv4(ip),
            name: req.name.clone(),
            container_id: req.container_id.clone(),
            netns: None,
            netns_id: None,
            ifname: ifname(req.ifname.as_deref())?,
            origin: req.origin.clone(),
            pod_namespace: req.pod_namespace.clone(),
            pod_name: req.pod_name.clone(),
            aliases: Vec::new(),
        };
        let reservation = keys::reservation(&network.id, ip);
        let alive = self.own_liveness().await?;
        let txn = Txn::new()
            .when(Compare::mod_revision(keys::network(&network.id), net_rev))
            .when(Compare::mod_revision(keys::alive(&self.node_id), alive))
            .when(Compare::mod_revision(reservation.clone(), reserved))
            .when(Compare::absent(keys::address(&network.id, ip)))
            .when(Compare::absent(keys::endpoint(&id)))
            .then(Op::delete(reservation))
            .then(Op::put(keys::address(&network.id, ip), id.clone()))
            .then(Op::put(keys::endpoint(&id), records::encode(&record)?));
        let result = self.store.txn(txn).await?;
        if result.succeeded {
            return Ok((record, result.revision));
        }
        if self.store.get(&keys::endpoint(&id)).await?.is_some() {
            return Err(Error::Conflict(format!("endpoint {id:?} already exists")));
        }
        Err(Error::Conflict(format!(
            "the reservation of {ip} changed meanwhile; try again"
        )))
    }
}
