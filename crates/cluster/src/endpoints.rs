//! Endpoints: attach (allocate an address and record the endpoint in one
//! transaction), detach, look up, and what the local API shows of them.

use std::sync::Arc;
use std::time::Duration;

use socketplane_api::rest::{AttachEndpoint, EndpointInfo};
use socketplane_api::{keys, EndpointRecord, MacAddr, NetnsId, NodeRecord};
use socketplane_store::{Compare, Op, Revision, Txn};

use crate::alloc::Claim;
use crate::cluster::{Cluster, CAS_ATTEMPTS};
use crate::error::{Error, ErrorKind, Result};
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
        let netns_id = match &req.netns {
            Some(netns) => Some(check_netns(netns)?),
            None => None,
        };
        for (what, value) in [
            ("origin", &req.origin),
            ("pod namespace", &req.pod_namespace),
            ("pod name", &req.pod_name),
            ("container id", &req.container_id),
        ] {
            if let Some(v) = value {
                check_label(what, v)?;
            }
        }
        let (network, net_rev) = self.find_network(&req.network).await?;
        // A CNI attachment is keyed by (container id, ifname): its id is
        // derived from them, so a retried ADD cannot make a second one.
        let id = match (id, req.origin.as_deref(), &req.container_id) {
            (Some(id), _, _) => id,
            (None, Some(socketplane_api::ORIGIN_CNI), Some(cid)) => {
                cni_endpoint_id(&network.id, cid, &ifname)
            }
            _ => random_id(),
        };
        validate_name("endpoint id", &id)?;
        let template = EndpointRecord {
            id: id.clone(),
            network: network.id.clone(),
            node: self.node_id.clone(),
            ip: std::net::Ipv4Addr::UNSPECIFIED,
            mac: MacAddr([0; 6]),
            name: req.name.clone(),
            container_id: req.container_id.clone(),
            netns: req.netns.clone(),
            netns_id,
            ifname,
            origin: req.origin.clone(),
            pod_namespace: req.pod_namespace.clone(),
            pod_name: req.pod_name.clone(),
            aliases: Vec::new(),
        };
        let mut record = template.clone();
        let (_, revision) = self
            .allocate(&network, net_rev, req.ip, |ip| {
                record = EndpointRecord {
                    ip,
                    mac: MacAddr::from_ipv4(ip),
                    ..template.clone()
                };
                Ok(Claim {
                    compares: vec![
                        Compare::absent(keys::endpoint(&id)),
                        Compare::absent(keys::abandoned(&id)),
                    ],
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

    /// [`Cluster::attach`] for a front end. With a caller's `request_id`,
    /// the endpoint id is derived from it (and this node), so a retried
    /// request whose answer was lost finds the endpoint it made instead of
    /// making a second one. Without one, an attach whose write may have
    /// landed although it failed (outcome unknown) is removed later by
    /// [`Cluster::abandon_later`], so it never holds an address for nobody.
    pub async fn attach_request(
        self: &Arc<Self>,
        req: &AttachEndpoint,
        request_id: Option<&str>,
    ) -> Result<(EndpointRecord, Revision)> {
        // A keyed id (a request id's, or a CNI attachment's from network,
        // container id and ifname) makes a retry find what it made.
        let keyed = attach_is_keyed(req, request_id);
        let id = match (request_id, req.origin.as_deref(), &req.container_id) {
            (Some(r), _, _) => {
                validate_name("request id", r)?;
                request_endpoint_id(&self.node_id, r)
            }
            (None, Some(socketplane_api::ORIGIN_CNI), Some(cid)) => {
                let (network, _) = self.find_network(&req.network).await?;
                let ifname = ifname(req.ifname.as_deref())?;
                cni_endpoint_id(&network.id, cid, &ifname)
            }
            _ => random_id(),
        };
        match self.attach(req, Some(id.clone())).await {
            Ok(done) => Ok(done),
            Err(e) if e.kind() == ErrorKind::Conflict && keyed => {
                // Conflicts are also "no free address" and the like: only
                // an existing endpoint of this very request is a success.
                let Ok((ep, rev)) = self.get_endpoint(&id).await else {
                    return Err(e);
                };
                let Ok((network, _)) = self.find_network(&req.network).await else {
                    return Err(e);
                };
                if ep.node == self.node_id && ep.netns == req.netns && ep.network == network.id {
                    tracing::info!(endpoint = %id, "A retried attach found the endpoint it made.");
                    Ok((ep, rev))
                } else {
                    Err(e)
                }
            }
            Err(e) => {
                if e.kind() == ErrorKind::Unavailable && !keyed {
                    self.abandon_later(id);
                }
                Err(e)
            }
        }
    }

    /// Detaches endpoint `id` in the background, retrying until it is gone:
    /// garbage collection that finishes a rollback that failed.
    pub fn detach_later(self: &Arc<Self>, id: String) {
        self.clean_up_later(id, false);
    }

    /// [`Cluster::detach_later`] for a write whose outcome is unknown: it
    /// may still land. Where the endpoint is not there, its id is marked
    /// abandoned ([`keys::abandoned`]), which the write compares on: however
    /// late it lands, it cannot take the address any more. Only for random
    /// ids, which nobody retries with.
    fn abandon_later(self: &Arc<Self>, id: String) {
        self.clean_up_later(id, true);
    }

    fn clean_up_later(self: &Arc<Self>, id: String, in_flight: bool) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut wait = Duration::from_millis(500);
            while started.elapsed() < DETACH_LATER_FOR {
                let outcome = match cluster.detach(&id).await {
                    Ok(_) => {
                        tracing::info!(endpoint = %id, "Removed an endpoint left by a failed attach.");
                        return;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound && !in_flight => return,
                    Err(e) if e.kind() == ErrorKind::NotFound => cluster.abandon(&id).await,
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(true) => return,
                    // It landed between the two: detach it.
                    Ok(false) => continue,
                    Err(error) => {
                        tracing::debug!(endpoint = %id, %error, "Could not remove a failed attach's endpoint yet; retrying.");
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            tracing::warn!(endpoint = %id, "Gave up removing a failed attach's endpoint; the garbage collection of its namespace will.");
        });
    }

    /// Marks endpoint id `id` abandoned if no endpoint has it; false if one
    /// does (then it is to be detached instead).
    async fn abandon(&self, id: &str) -> Result<bool> {
        let lease = self.store.lease_grant(ABANDONED_FOR).await?;
        let txn = Txn::new()
            .when(Compare::absent(keys::endpoint(id)))
            .then(Op::put_with_lease(keys::abandoned(id), Vec::new(), lease));
        Ok(self.store.txn(txn).await?.succeeded)
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

    /// Records which container an endpoint belongs to, and its network
    /// aliases (the Docker plugin learns them only after the container
    /// started). No-op if the endpoint is gone or changed meanwhile.
    pub async fn set_endpoint_owner(
        &self,
        id: &str,
        name: Option<String>,
        container_id: Option<String>,
        aliases: Vec<String>,
    ) -> Result<()> {
        let (mut ep, rev) = self.get_endpoint(id).await?;
        ep.name = name;
        ep.container_id = container_id;
        ep.aliases = aliases;
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
            host_ifname: None,
        })
    }
}

/// How long [`Cluster::detach_later`] keeps trying.
const DETACH_LATER_FOR: Duration = Duration::from_secs(300);
/// Whether an attach's endpoint id is derived from the request (a caller's
/// request id, or a CNI attachment's container id and ifname), so that a
/// retry finds the endpoint the first try made. An unkeyed attach whose
/// caller never got the answer is to be undone instead.
pub fn attach_is_keyed(req: &AttachEndpoint, request_id: Option<&str>) -> bool {
    request_id.is_some()
        || (req.origin.as_deref() == Some(socketplane_api::ORIGIN_CNI)
            && req.container_id.is_some())
}

/// How long an abandoned endpoint id stays marked: far longer than any
/// write can stay in flight (a forwarded proposal is answered or dropped
/// within the store's request timeout and an election or two).
const ABANDONED_FOR: Duration = Duration::from_secs(600);

/// The endpoint id of a request id on a node: stable (FNV-1a 64), so a
/// retry on the same node derives the same id.
fn request_endpoint_id(node: &str, request_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0]).chain(request_id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The endpoint id of a CNI attachment: `cni` and 16 hex digits of a hash
/// of network id, container id and interface name.
pub fn cni_endpoint_id(network_id: &str, container_id: &str, ifname: &str) -> String {
    let key = format!("{network_id}\0{container_id}\0{ifname}");
    format!(
        "cni{:016x}",
        socketplane_datapath::names::fnv1a(key.as_bytes())
    )
}

/// Runtime labels (container ids, pod names) are shown and matched, never
/// interpreted: printable, without spaces, and of a sane length.
fn check_label(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > 253 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Error::Invalid(format!(
            "invalid {what} {value:?}: 1-253 printable characters without spaces"
        )));
    }
    Ok(())
}

/// A network namespace path must be absolute and name a network namespace
/// other than the host's (see [`socketplane_datapath::inspect_workload_ns`]).
/// Returns its identity, to pin the endpoint to it.
fn check_netns(path: &str) -> Result<NetnsId> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return Err(Error::Invalid(format!(
            "network namespace path {path:?} must be absolute"
        )));
    }
    socketplane_datapath::inspect_workload_ns(p).map_err(|why| Error::Netns {
        path: path.to_string(),
        why,
    })
}

/// Whether the workload behind a namespace path is gone: the path no longer
/// exists, or (when pinned) names another namespace, e.g. a reused PID's.
pub(crate) fn workload_ns_gone(path: &std::path::Path, pinned: Option<NetnsId>) -> bool {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Err(_) => true,
        Ok(m) => pinned.is_some_and(|id| {
            id != NetnsId {
                dev: m.dev(),
                ino: m.ino(),
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use socketplane_api::rest::AttachEndpoint;
    use socketplane_store::mem::MemStore;
    use socketplane_store::Store;

    use proptest::prelude::*;

    use super::*;
    use crate::testing::{register, web};

    #[test]
    fn request_ids_map_to_stable_distinct_endpoint_ids() {
        let a = super::request_endpoint_id("n1", "req-1");
        assert_eq!(a, super::request_endpoint_id("n1", "req-1"));
        assert_ne!(a, super::request_endpoint_id("n2", "req-1"));
        assert_ne!(a, super::request_endpoint_id("n1", "req-2"));
        assert_eq!(a.len(), 16);
    }

    #[tokio::test]
    async fn a_cni_attachment_is_keyed_by_container_and_ifname() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let c = Cluster::new(store, "a".into(), "c".into());
        register(&c, "a").await;
        let net = c.create_network(&web()).await.unwrap();
        let req = AttachEndpoint {
            network: "web".into(),
            container_id: Some("abc".into()),
            origin: Some(socketplane_api::ORIGIN_CNI.into()),
            pod_namespace: Some("prod".into()),
            pod_name: Some("web-1".into()),
            ..Default::default()
        };
        let (ep, _) = c.attach(&req, None).await.unwrap();
        assert_eq!(ep.id, cni_endpoint_id(&net.id, "abc", "eth0"));
        assert_eq!(ep.pod_namespace.as_deref(), Some("prod"));
        let again = c.attach(&req, None).await;
        assert!(
            matches!(&again, Err(Error::Conflict(m)) if m.contains("already exists")),
            "{again:?}"
        );
        let other_if = AttachEndpoint {
            ifname: Some("eth1".into()),
            ..req.clone()
        };
        assert_ne!(c.attach(&other_if, None).await.unwrap().0.id, ep.id);
        let bad = AttachEndpoint {
            container_id: Some("has space".into()),
            ..req
        };
        assert!(matches!(c.attach(&bad, None).await, Err(Error::Invalid(_))));
        // Through the front ends' door, a retried ADD finds what it made.
        let c = Arc::new(c);
        let eth2 = AttachEndpoint {
            ifname: Some("eth2".into()),
            ..other_if
        };
        let (first, _) = c.attach_request(&eth2, None).await.unwrap();
        let (retried, _) = c.attach_request(&eth2, None).await.unwrap();
        assert_eq!(first, retried);
    }

    #[test]
    fn the_hosts_own_namespaces_are_refused() {
        for path in [
            "/proc/self/ns/net",
            "/proc/thread-self/ns/net",
            "/proc/self/ns/mnt",
        ] {
            assert!(check_netns(path).is_err(), "{path}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever path a client names: an error (none of these is a
        /// foreign network namespace), never a panic or a hang.
        #[test]
        fn arbitrary_paths_are_refused(
            path in prop_oneof![
                "\\PC{0,60}",
                "/proc/(self|thread-self|1)/[a-z/]{0,20}",
                "/(dev|sys|tmp)/[a-z/]{0,16}",
            ],
        ) {
            prop_assert!(check_netns(&path).is_err(), "{} was accepted", path);
        }
    }
}
