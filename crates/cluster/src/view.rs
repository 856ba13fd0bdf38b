//! A typed, in-memory view of the cluster state under the store prefix,
//! kept current from a listing plus watch events, and the desired datapath
//! state each host derives from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use imbl::ordmap::DiffItem;
use imbl::OrdMap;
use socketplane_api::{
    keys, EndpointRecord, NetworkMode, NetworkRecord, NodeRecord, ReservationRecord,
};
use socketplane_datapath::{
    DesiredState, EndpointChanges, HostBlock, LocalEndpoint, NetworkSpec, RemoteEndpoint,
};
use socketplane_store::{Event, EventKind, KeyValue, Revision};

/// The datapath (`NodeRecord::datapath`) that routes routed networks
/// natively; every other one carries them as an overlay.
pub const ROUTING_DATAPATH: &str = "linux";

#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Store revision this view reflects.
    pub revision: Revision,
    pub nodes: BTreeMap<String, NodeRecord>,
    pub alive: BTreeSet<String>,
    /// By id.
    pub networks: BTreeMap<String, NetworkRecord>,
    /// By id. A persistent map: cloning the view (once per datapath pass,
    /// for every subscriber) shares it instead of copying every record.
    /// Records sit behind an `Arc` so the map's nodes hold pointers, not
    /// 300-byte records in half-full slots.
    pub endpoints: OrdMap<String, Arc<EndpointRecord>>,
    /// Reservation and block keys, by key, with the node holding each: a
    /// dead node's are reclaimed with its endpoints.
    pub holdings: BTreeMap<String, String>,
}

/// An endpoint as one host's datapath sees it.
enum Placed {
    Local(LocalEndpoint),
    Remote(RemoteEndpoint),
}

/// Which record a key holds, by its place in the key layout.
enum Slot<'a> {
    Node(&'a str),
    Alive(&'a str),
    Network(&'a str),
    Endpoint(&'a str),
    /// A block claim (`ipam/<network>/blocks/<block>`).
    Block,
    Other,
}

fn slot(key: &str) -> Slot<'_> {
    let Some(rest) = key.strip_prefix(keys::PREFIX) else {
        return Slot::Other;
    };
    let Some((kind, name)) = rest.split_once('/') else {
        return Slot::Other;
    };
    if kind == "ipam" && block_claim(key).is_some() {
        return Slot::Block;
    }
    if name.is_empty() || name.contains('/') {
        return Slot::Other;
    }
    match kind {
        "nodes" => Slot::Node(name),
        "alive" => Slot::Alive(name),
        "networks" => Slot::Network(name),
        "endpoints" => Slot::Endpoint(name),
        _ => Slot::Other,
    }
}

/// The network and block a block-claim key is about.
fn block_claim(key: &str) -> Option<(&str, ipnet::Ipv4Net)> {
    let rest = key.strip_prefix(keys::PREFIX)?.strip_prefix("ipam/")?;
    let (network, tail) = rest.split_once('/')?;
    let last = tail.strip_prefix("blocks/")?;
    if last.contains('/') {
        return None;
    }
    Some((network, keys::parse_block(key)?))
}

/// The node holding a reservation (a record) or a block claim (the node id).
fn holder(kv: &KeyValue) -> Option<String> {
    let rest = kv.key.strip_prefix(keys::PREFIX)?.strip_prefix("ipam/")?;
    let (_, tail) = rest.split_once('/')?;
    if tail.starts_with("reserved/") {
        serde_json::from_slice::<ReservationRecord>(&kv.value)
            .ok()
            .map(|r| r.node)
    } else if tail.starts_with("blocks/") {
        String::from_utf8(kv.value.clone()).ok()
    } else {
        None
    }
}

impl ClusterView {
    pub fn from_kvs(kvs: &[KeyValue], revision: Revision) -> Self {
        let mut view = ClusterView {
            revision,
            ..Default::default()
        };
        for kv in kvs {
            view.put(kv);
        }
        view
    }

    /// Whether `event` can change what any datapath must look like (nodes,
    /// networks, endpoints, block claims: routed networks route blocks);
    /// address reservations, leases and the like cannot.
    pub fn shapes_datapath(event: &Event) -> bool {
        matches!(
            slot(&event.kv.key),
            Slot::Node(_) | Slot::Network(_) | Slot::Endpoint(_) | Slot::Block
        )
    }

    pub fn apply(&mut self, event: &Event) {
        match event.kind {
            EventKind::Put => self.put(&event.kv),
            EventKind::Delete => self.remove(&event.kv.key),
        }
        self.revision = self.revision.max(event.kv.mod_revision);
    }

    fn put(&mut self, kv: &KeyValue) {
        // A record that does not parse is skipped with a warning rather than
        // stopping the reconciler: one bad value must not take a host down.
        fn parse<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
            match serde_json::from_slice(&kv.value) {
                Ok(v) => Some(v),
                Err(error) => {
                    tracing::warn!(key = %kv.key, %error, "Skipping a record that does not parse.");
                    None
                }
            }
        }
        match slot(&kv.key) {
            Slot::Node(id) => {
                if let Some(n) = parse(kv) {
                    self.nodes.insert(id.to_string(), n);
                }
            }
            Slot::Alive(id) => {
                self.alive.insert(id.to_string());
            }
            Slot::Network(name) => {
                if let Some(n) = parse(kv) {
                    self.networks.insert(name.to_string(), n);
                }
            }
            Slot::Endpoint(id) => {
                if let Some(e) = parse(kv) {
                    self.endpoints.insert(id.to_string(), Arc::new(e));
                }
            }
            Slot::Block | Slot::Other => {
                if let Some(node) = holder(kv) {
                    self.holdings.insert(kv.key.clone(), node);
                }
            }
        }
    }

    fn remove(&mut self, key: &str) {
        match slot(key) {
            Slot::Node(id) => {
                self.nodes.remove(id);
            }
            Slot::Alive(id) => {
                self.alive.remove(id);
            }
            Slot::Network(name) => {
                self.networks.remove(name);
            }
            Slot::Endpoint(id) => {
                self.endpoints.remove(id);
            }
            Slot::Block | Slot::Other => {
                self.holdings.remove(key);
            }
        }
    }

    /// A network by name.
    pub fn network_named(&self, name: &str) -> Option<&NetworkRecord> {
        self.networks.values().find(|n| n.name == name)
    }

    /// What the datapath of node `me` must look like.
    ///
    /// Routed networks are routed only between hosts on the datapath named
    /// [`ROUTING_DATAPATH`].
    pub fn desired_for(&self, me: &str) -> DesiredState {
        let networks = self
            .networks
            .values()
            // The datapath knows networks by their immutable id, so a
            // rename changes nothing on the hosts.
            .map(|n| NetworkSpec {
                name: n.id.clone(),
                vni: n.vni,
                subnet: n.subnet,
                gateway: n.gateway,
                mtu: n.mtu,
                mode: n.mode,
            })
            .collect();
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for ep in self.endpoints.values() {
            match self.place(ep, me) {
                Some(Placed::Local(e)) => local.push(e),
                Some(Placed::Remote(e)) => remote.push(e),
                None => {}
            }
        }
        // Every registered member: VXLAN is accepted only from these, and
        // workloads are fenced from all of them.
        let mut peers: Vec<_> = self.nodes.values().map(|n| n.addr).collect();
        peers.sort();
        peers.dedup();
        // Only hosts whose datapath routes get routes; the others (OVS)
        // carry routed networks as overlays, so they are tunnelled to.
        let mut routers: Vec<_> = self
            .nodes
            .values()
            .filter(|n| n.datapath == ROUTING_DATAPATH)
            .map(|n| n.addr)
            .collect();
        routers.sort();
        routers.dedup();
        // The blocks each host holds, of the networks listed, by the host's
        // underlay address (routed networks route them as a whole).
        let blocks = self
            .holdings
            .iter()
            .filter_map(|(key, node)| {
                let (network, block) = block_claim(key)?;
                if !self.networks.contains_key(network) {
                    return None;
                }
                let host = self.nodes.get(node)?.addr;
                Some(HostBlock {
                    network: network.to_string(),
                    block,
                    host,
                })
            })
            .collect();
        DesiredState {
            networks,
            local,
            remote,
            peers,
            routers,
            blocks,
        }
    }

    /// What changed for node `me`'s datapath since `before`, when only
    /// endpoints did: found by comparing the two endpoint maps, which skips
    /// what they share, so it costs the change and not the cluster. `None`
    /// when networks, nodes or block claims of routed networks changed too
    /// (the whole desired state is needed then).
    pub fn changes_since(&self, before: &ClusterView, me: &str) -> Option<EndpointChanges> {
        if self.networks != before.networks
            || self.nodes != before.nodes
            || !self.routed_blocks().eq(before.routed_blocks())
        {
            return None;
        }
        let mut changes = EndpointChanges::default();
        for (was, now) in self.endpoints_changed_since(before) {
            let Some(now) = now else {
                changes.removed.extend(was.map(|e| e.id.clone()));
                continue;
            };
            match self.place(now, me) {
                Some(Placed::Local(e)) => changes.local.push(e),
                Some(Placed::Remote(e)) => changes.remote.push(e),
                None => changes.removed.push(now.id.clone()),
            }
        }
        Some(changes)
    }

    /// The endpoint records that differ from `before`'s, as (was, is now):
    /// added, changed or removed. Costs the change, not the cluster: the
    /// comparison skips what the two maps share.
    pub fn endpoints_changed_since<'a>(
        &'a self,
        before: &'a ClusterView,
    ) -> impl Iterator<Item = (Option<&'a EndpointRecord>, Option<&'a EndpointRecord>)> {
        before
            .endpoints
            .diff(&self.endpoints)
            .map(|item| match item {
                DiffItem::Add(_, now) => (None, Some(&**now)),
                DiffItem::Update {
                    old: (_, was),
                    new: (_, now),
                } => (Some(&**was), Some(&**now)),
                DiffItem::Remove(_, was) => (Some(&**was), None),
            })
    }

    /// The block claims of routed networks, by key, with the node holding
    /// each: only routed networks route blocks, so a claim on an overlay
    /// network (one per 64 addresses a host takes) changes no datapath.
    fn routed_blocks(&self) -> impl Iterator<Item = (&String, &String)> {
        let routed = |network: &str| {
            (self.networks.get(network)).is_some_and(|n| n.mode == NetworkMode::Routed)
        };
        (self.holdings.iter())
            .filter(move |(key, _)| block_claim(key).is_some_and(|(network, _)| routed(network)))
    }

    /// What endpoint `ep` is to node `me`'s datapath: one of its own, one
    /// on another host, or nothing (its network or host is unknown).
    fn place(&self, ep: &EndpointRecord, me: &str) -> Option<Placed> {
        if !self.networks.contains_key(&ep.network) {
            return None;
        }
        if ep.node == me {
            return Some(Placed::Local(LocalEndpoint {
                id: ep.id.clone(),
                network: ep.network.clone(),
                ip: ep.ip,
                mac: ep.mac,
                netns: ep.netns.as_ref().map(PathBuf::from),
                netns_id: ep.netns_id,
                ifname: ep.ifname.clone(),
            }));
        }
        let node = self.nodes.get(&ep.node)?;
        Some(Placed::Remote(RemoteEndpoint {
            id: ep.id.clone(),
            network: ep.network.clone(),
            ip: ep.ip,
            mac: ep.mac,
            host: node.addr,
        }))
    }

    /// Nodes whose liveness key is gone and that still hold endpoints,
    /// reservations or blocks: candidates for the reclaimer.
    pub fn dead_nodes_with_endpoints(&self) -> BTreeSet<String> {
        self.endpoints
            .values()
            .map(|e| &e.node)
            .chain(self.holdings.values())
            .filter(|n| !self.alive.contains(*n))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketplane_api::MacAddr;

    fn kv(key: String, value: impl serde::Serialize, rev: Revision) -> KeyValue {
        KeyValue {
            key,
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: rev,
            mod_revision: rev,
            lease: None,
        }
    }

    /// Network `web`, 10.2.0.0/16.
    fn web() -> NetworkRecord {
        NetworkRecord {
            id: "web".into(),
            name: "web".into(),
            subnet: "10.2.0.0/16".parse().unwrap(),
            gateway: "10.2.0.1".parse().unwrap(),
            vni: 256,
            mtu: None,
            mode: Default::default(),
        }
    }

    /// Node `id` on the Linux datapath at underlay address `ip`.
    fn node(id: &str, ip: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            name: id.into(),
            addr: ip.parse().unwrap(),
            cluster_port: 6675,
            datapath: "linux".into(),
            version: "1".into(),
        }
    }

    #[test]
    fn desired_state_splits_local_and_remote() {
        let net = web();
        let ep = |id: &str, node: &str, ip: &str| EndpointRecord {
            id: id.into(),
            network: "web".into(),
            node: node.into(),
            ip: ip.parse().unwrap(),
            mac: MacAddr::from_ipv4(ip.parse().unwrap()),
            name: None,
            container_id: None,
            netns: Some("/var/run/netns/x".into()),
            netns_id: None,
            ifname: "eth0".into(),
            origin: None,
            pod_namespace: None,
            pod_name: None,
            aliases: Vec::new(),
        };
        let kvs = vec![
            kv(keys::network("web"), &net, 1),
            kv(keys::node("a"), node("a", "198.18.0.1"), 2),
            kv(keys::node("b"), node("b", "198.18.0.2"), 3),
            kv(keys::endpoint("e1"), ep("e1", "a", "10.2.0.2"), 4),
            kv(keys::endpoint("e2"), ep("e2", "b", "10.2.0.3"), 5),
            kv(keys::address("web", "10.2.0.2".parse().unwrap()), "e1", 4),
            KeyValue {
                key: keys::block("web", "10.2.0.64/26".parse().unwrap()),
                value: b"b".to_vec(),
                create_revision: 5,
                mod_revision: 5,
                lease: None,
            },
        ];
        let mut view = ClusterView::from_kvs(&kvs, 5);
        let d = view.desired_for("a");
        assert_eq!(d.networks.len(), 1);
        assert_eq!(d.local.len(), 1);
        assert_eq!(d.local[0].id, "e1");
        assert_eq!(d.remote.len(), 1);
        assert_eq!(
            d.remote[0].host,
            "198.18.0.2".parse::<std::net::Ipv4Addr>().unwrap()
        );
        assert_eq!(
            d.blocks,
            vec![HostBlock {
                network: "web".into(),
                block: "10.2.0.64/26".parse().unwrap(),
                host: "198.18.0.2".parse().unwrap(),
            }]
        );
        assert_eq!(view.dead_nodes_with_endpoints().len(), 2);
        // A block claim can change a datapath (routed networks route it).
        let claim = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: keys::block("web", "10.2.0.128/26".parse().unwrap()),
                value: b"a".to_vec(),
                create_revision: 6,
                mod_revision: 6,
                lease: None,
            },
        };
        assert!(ClusterView::shapes_datapath(&claim));
        view.apply(&claim);
        assert_eq!(view.desired_for("a").blocks.len(), 2);

        view.apply(&Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: keys::endpoint("e2"),
                value: vec![],
                create_revision: 0,
                mod_revision: 6,
                lease: None,
            },
        });
        assert_eq!(view.revision, 6);
        assert!(view.desired_for("a").remote.is_empty());
    }

    /// The desired endpoints of `d`, by id: local ones as `Err`, remote
    /// ones as `Ok`.
    fn by_id(d: &DesiredState) -> BTreeMap<String, Result<RemoteEndpoint, LocalEndpoint>> {
        let local = d.local.iter().map(|e| (e.id.clone(), Err(e.clone())));
        let remote = d.remote.iter().map(|e| (e.id.clone(), Ok(e.clone())));
        local.chain(remote).collect()
    }

    /// An endpoint put (`Some(node)`) or delete (`None`) of endpoint `id`.
    fn endpoint_event(id: u8, node: Option<u8>, rev: Revision) -> Event {
        let key = keys::endpoint(&format!("e{id}"));
        let Some(node) = node else {
            let kv = KeyValue {
                key,
                value: vec![],
                create_revision: 0,
                mod_revision: rev,
                lease: None,
            };
            return Event {
                kind: EventKind::Delete,
                kv,
            };
        };
        let ip: std::net::Ipv4Addr = format!("10.2.{}.{}", node, id.max(2)).parse().unwrap();
        let record = EndpointRecord {
            id: format!("e{id}"),
            // Network "gone" is not listed: its endpoints are nobody's.
            network: if id.is_multiple_of(7) { "gone" } else { "web" }.into(),
            node: format!("n{node}"),
            ip,
            mac: MacAddr::from_ipv4(ip),
            name: None,
            container_id: None,
            netns: None,
            netns_id: None,
            ifname: "eth0".into(),
            origin: None,
            pod_namespace: None,
            pod_name: None,
            aliases: Vec::new(),
        };
        Event {
            kind: EventKind::Put,
            kv: kv(key, record, rev),
        }
    }

    /// Nodes n0..n2 (n3 is not registered: its endpoints are nobody's) and
    /// network `web`.
    fn three_nodes() -> ClusterView {
        let net = web();
        let mut kvs = vec![kv(keys::network("web"), &net, 1)];
        for n in 0..3u8 {
            let id = format!("n{n}");
            let record = node(&id, &format!("198.18.0.{}", n + 1));
            kvs.push(kv(keys::node(&id), record, 1));
        }
        ClusterView::from_kvs(&kvs, 1)
    }

    proptest::proptest! {
        /// Applying `changes_since` to what the base view wanted gives
        /// exactly what the new view wants, whatever the events between.
        #[test]
        fn changes_since_leads_where_a_full_state_does(
            before in proptest::collection::vec((0u8..24, proptest::option::of(0u8..4)), 0..40),
            after in proptest::collection::vec((0u8..24, proptest::option::of(0u8..4)), 0..40),
        ) {
            let mut view = three_nodes();
            let mut rev = 1;
            for (id, node) in before {
                rev += 1;
                view.apply(&endpoint_event(id, node, rev));
            }
            let base = view.clone();
            for (id, node) in after {
                rev += 1;
                view.apply(&endpoint_event(id, node, rev));
            }
            let changes = view.changes_since(&base, "n0").expect("only endpoints changed");
            let mut have = by_id(&base.desired_for("n0"));
            for id in &changes.removed {
                have.remove(id);
            }
            for e in &changes.local {
                have.insert(e.id.clone(), Err(e.clone()));
            }
            for e in &changes.remote {
                have.insert(e.id.clone(), Ok(e.clone()));
            }
            proptest::prop_assert_eq!(have, by_id(&view.desired_for("n0")));
            // Unchanged views differ in nothing.
            proptest::prop_assert!(view.changes_since(&view.clone(), "n0").unwrap().is_empty());
        }
    }

    #[test]
    fn changes_since_declines_when_more_than_endpoints_changed() {
        let base = three_nodes();
        let mut view = base.clone();
        view.apply(&endpoint_event(1, Some(1), 2));
        assert!(view.changes_since(&base, "n0").is_some());
        let claim = Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: keys::block("web", "10.2.0.64/26".parse().unwrap()),
                value: b"n1".to_vec(),
                create_revision: 3,
                mod_revision: 3,
                lease: None,
            },
        };
        let mut claimed = view.clone();
        claimed.apply(&claim);
        assert!(
            claimed.changes_since(&base, "n0").is_some(),
            "no datapath routes an overlay network's blocks"
        );
        let mut routed = base.clone();
        let mut net = routed.networks["web"].clone();
        net.mode = NetworkMode::Routed;
        routed.apply(&Event {
            kind: EventKind::Put,
            kv: kv(keys::network("web"), &net, 3),
        });
        let mut routed_claim = routed.clone();
        routed_claim.apply(&claim);
        assert!(
            routed_claim.changes_since(&routed, "n0").is_none(),
            "a block claim on a routed network"
        );
        assert!(routed.changes_since(&base, "n0").is_none(), "a network");
        let mut gone = view.clone();
        gone.apply(&Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: keys::node("n2"),
                value: vec![],
                create_revision: 0,
                mod_revision: 3,
                lease: None,
            },
        });
        assert!(gone.changes_since(&base, "n0").is_none(), "a node");
        // An address reservation is nothing a datapath sees.
        let mut reserved = view.clone();
        reserved.apply(&Event {
            kind: EventKind::Put,
            kv: kv(
                keys::reservation("web", "10.2.0.9".parse().unwrap()),
                ReservationRecord { node: "n1".into() },
                3,
            ),
        });
        assert!(reserved.changes_since(&base, "n0").is_some());
    }
}
