//! Endpoints: attach (allocate an address and record the endpoint in one
//! transaction), detach, look up, and what the local API shows of them.

use socketplane_api::rest::{AttachEndpoint, EndpointInfo};
use socketplane_api::{keys, EndpointRecord, MacAddr, NodeRecord};
use socketplane_store::{Compare, Op, Revision, Txn};

use crate::alloc::Claim;
use crate::cluster::{Cluster, CAS_ATTEMPTS};
use crate::error::{Error, Result};
use crate::names::{ifname, random_id, validate_name};
use crate::records;

impl Cluster {
    pub async fn list_endpoints(&self) -> Result<Vec<EndpointRecord>> {
        records::list(&*self.store, &keys::endpoints()).await
    }

    pub async fn get_endpoint(&self, id: &str) -> Result<(EndpointRecord, Revision)> {
        records::get(&*self.store, &keys::endpoint(id), || {
            format!("no endpoint with id {id:?}")
        })
        .await
    }

    /// Allocates an address and records an endpoint on this node, in one
    /// transaction. `id` defaults to a random one. Returns the record and
    /// the revision it was written at.
    pub async fn attach(
        &self,
        req: &AttachEndpoint,
        id: Option<String>,
    ) -> Result<(EndpointRecord, Revision)> {
        let ifname = ifname(req.ifname.as_deref())?;
        if let Some(name) = &req.name {
            validate_name("endpoint", name)?;
        }
        if let Some(netns) = &req.netns {
            check_netns(netns)?;
        }
        let id = id.unwrap_or_else(random_id);
        validate_name("endpoint id", &id)?;
        let (network, _) = self.find_network(&req.network).await?;
        let template = EndpointRecord {
            id: id.clone(),
            network: network.id.clone(),
            node: self.node_id.clone(),
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            mac: MacAddr([0; 6]),
            name: req.name.clone(),
            container_id: req.container_id.clone(),
            netns: req.netns.clone(),
            ifname,
        };
        let mut record = template.clone();
        let (_, revision) = self
            .allocate(&network, req.ip, |ip| {
                record = EndpointRecord {
                    ip,
                    mac: MacAddr::from_ipv4(ip),
                    ..template.clone()
                };
                Ok(Claim {
                    compares: vec![Compare::absent(keys::endpoint(&id))],
                    ops: vec![
                        Op::put(keys::address(&network.id, ip), id.clone()),
                        Op::put(keys::endpoint(&id), records::encode(&record)?),
                    ],
                    exclusive: Some((
                        keys::endpoint(&id),
                        format!("endpoint {id:?} already exists"),
                    )),
                })
            })
            .await?;
        Ok((record, revision))
    }

    /// Removes an endpoint and frees its address. Returns the revision.
    pub async fn detach(&self, id: &str) -> Result<Revision> {
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
        Err(Error::Unavailable("too much contention; try again".into()))
    }

    /// Deletes an endpoint whose network no longer exists.
    pub async fn remove_orphan(&self, id: &str) -> Result<()> {
        let (ep, rev) = self.get_endpoint(id).await?;
        let txn = Txn::new()
            .when(Compare::absent(keys::network(&ep.network)))
            .when(Compare::mod_revision(keys::endpoint(id), rev))
            .then(Op::delete(keys::endpoint(id)))
            .then(Op::delete(keys::address(&ep.network, ep.ip)));
        self.store.txn(txn).await?;
        Ok(())
    }

    /// Records which container an endpoint belongs to (the Docker plugin
    /// learns it only after the container started). No-op if the endpoint
    /// is gone or changed meanwhile.
    pub async fn set_endpoint_owner(
        &self,
        id: &str,
        name: Option<String>,
        container_id: Option<String>,
    ) -> Result<()> {
        let (mut ep, rev) = self.get_endpoint(id).await?;
        ep.name = name;
        ep.container_id = container_id;
        let txn = Txn::new()
            .when(Compare::mod_revision(keys::endpoint(id), rev))
            .then(Op::put(keys::endpoint(id), records::encode(&ep)?));
        self.store.txn(txn).await?;
        Ok(())
    }

    /// An endpoint as the local API shows it: with its network's name, its
    /// node's name and address, and the network's gateway.
    pub async fn endpoint_info(&self, mut ep: EndpointRecord) -> Result<EndpointInfo> {
        let view = self.view();
        let node = match view.as_ref().and_then(|v| v.nodes.get(&ep.node).cloned()) {
            Some(n) => Some(n),
            None => match self.store.get(&keys::node(&ep.node)).await? {
                Some(kv) => serde_json::from_slice::<NodeRecord>(&kv.value).ok(),
                None => None,
            },
        };
        let network = match view
            .as_ref()
            .and_then(|v| v.networks.get(&ep.network).cloned())
        {
            Some(n) => n,
            None => self.get_network(&ep.network).await?.0,
        };
        ep.network = network.name;
        let (status, reason) = match self.reconciler() {
            Some(r) if ep.node == self.node_id => {
                let (status, reason) = r.endpoint_status(&ep.id);
                (Some(status), reason)
            }
            _ => (None, None),
        };
        Ok(EndpointInfo {
            status,
            reason,
            node_name: node
                .as_ref()
                .map(|n| n.name.clone())
                .unwrap_or_else(|| ep.node.clone()),
            host: node.map(|n| n.addr),
            gateway: network.gateway,
            prefix_len: network.subnet.prefix_len(),
            network_id: network.id,
            endpoint: ep,
        })
    }
}

/// A network namespace path must exist and be a namespace file (nsfs).
fn check_netns(path: &str) -> Result<()> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(Error::Invalid(format!(
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
        Ok(_) => Err(Error::Invalid(format!(
            "{path:?} is not a network namespace"
        ))),
        Err(source) => Err(Error::Netns {
            path: path.to_string(),
            source,
        }),
    }
}
