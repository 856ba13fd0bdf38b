//! The Linux kernel datapath: per network a bridge and a VXLAN device,
//! veth pairs for local endpoints, static FDB/neighbour entries for remote
//! endpoints (L2 population with ARP suppression), head-end replication for
//! broadcast and multicast, and nftables (plus iptables when Docker's policy
//! is present) for isolation and masquerade.
//!
//! # Ownership
//!
//! Everything this datapath owns is recognisable by name: bridges `spbr<vni>`,
//! VXLAN devices `spvx<vni>`, veth ends `spv<hash>`/`spp<hash>`, the
//! nftables tables `inet <table>` and `bridge <table>` and the iptables chain
//! `<TABLE>`. FDB and neighbour entries it owns are the ones on its own
//! devices. Nothing else is ever modified or removed.
//!
//! # Anycast gateway
//!
//! Every host puts the network's gateway IP on its bridge with the MAC
//! [`MacAddr::GATEWAY`]. It never crosses the tunnel: the `bridge <table>`
//! table drops frames with the gateway MAC as source leaving through (or
//! arriving from) a VXLAN port, frames to the gateway MAC arriving from one,
//! and ARP arriving from a VXLAN port
//! before it reaches the host (remote hosts' ARP for the gateway is answered
//! by their own bridge). ARP for remote endpoints is answered locally by the
//! bridge (`neigh_suppress` on the VXLAN port, a permanent neighbour entry
//! on the bridge and a static bridge FDB entry pointing at the VXLAN port).
//!
//! # Routed networks
//!
//! A routed network keeps its bridge, anycast gateway, VXLAN device and
//! firewall; only the remote endpoints on hosts of this host's underlay
//! subnet that route too are different ([`routes`]): instead of FDB and
//! neighbour entries they are reached by routes via their host's underlay
//! address (protocol [`RTPROT_SOCKETPLANE`]): one per address block the
//! host holds, a /32 only for an endpoint outside its host's blocks, and the bridge answers ARP
//! for them with the gateway's MAC (proxy ARP), so workloads send them to
//! the gateway, which routes. Everyone else is reached through VXLAN as on
//! an overlay. Broadcast and multicast reach only tunnelled hosts.
//!
//! # Reconciliation
//!
//! [`Datapath::apply`] reads the kernel state it owns (one dump each of
//! links and IPv4 addresses), writes only the differences and counts the
//! writes. The entries of remote endpoints (FDB, neighbours, routes), the
//! bulk of a large cluster, are read back (one dump each of FDB,
//! neighbours and routes) only on the first apply, after a failure, after
//! [`Datapath::resync`] and at most every [`REMOTE_RECHECK`]; in between
//! an apply writes the differences to what the last one left, so one
//! remote endpoint added or removed costs its three writes, not a dump of
//! every table. Local endpoints whose host veth exists, is
//! attached and was configured by this instance with the same spec are not
//! re-entered; after a restart the first apply verifies each workload's
//! namespace once. Firewall rules carry a hash of their rendering so
//! checking them is one listing, done when the networks change, on the
//! first apply, and at most every [`FIREWALL_RECHECK`] otherwise.

pub mod names;
mod remote;
mod routes;

pub use remote::REMOTE_RECHECK;
pub use routes::RTPROT_SOCKETPLANE;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::link::{InfoBridge, InfoBridgePort, InfoKind, InfoVxlan};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVxlan};
use tokio::sync::Mutex;
use tracing::{debug, info};

use crate::error::Errno;
use crate::kernel::firewall::{Firewall, FirewallCheck, FwHost, FwPort, FwRouted};
pub use crate::kernel::firewall::{DEFAULT_FIREWALL_TABLE, FIREWALL_RECHECK};
use crate::kernel::nl::{self, Link};
use crate::kernel::sysctl::{ensure_ip_forward, ensure_neigh_room, ensure_proxy_arp};
use crate::kernel::underlay;
pub use crate::kernel::veth::ENDPOINT_RECHECK;
use crate::kernel::veth::{Attach, EndpointCache, Endpoints};
use crate::plan::NetPlan;
use crate::tally::Tally;
use crate::{
    ApplyReport, Datapath, DesiredState, EndpointIfnames, MacAddr, NetworkMode, RemoteEndpoint,
    Result, Underlay, VXLAN_PORT,
};
use remote::{NetCache, RemoteCache, RemoteEntries};

/// How the Linux datapath binds to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxConfig {
    /// Underlay interface the VXLAN devices are bound to (e.g. `eth0`).
    pub underlay_iface: String,
    /// Local tunnel address; `None`: the first IPv4 address of the interface.
    pub underlay_ip: Option<Ipv4Addr>,
    /// Default overlay MTU; `None`: the underlay MTU − 50.
    pub mtu: Option<u32>,
}

#[derive(Default)]
struct Cache {
    endpoints: EndpointCache,
    firewall: FirewallCheck,
    remote: RemoteCache,
}

/// The Linux kernel datapath, operating in the network namespace of the
/// thread that created it (its netlink socket is opened there).
pub struct LinuxDatapath {
    conn: nl::Connection,
    underlay_index: u32,
    underlay_iface: String,
    /// The underlay subnet: hosts in it are routed to directly (routed
    /// networks); `None` (the address is not on the interface): none are.
    segment: Option<ipnet::Ipv4Net>,
    underlay: Underlay,
    firewall: Firewall,
    cache: Mutex<Cache>,
    /// See [`Datapath::set_fenced`].
    fenced: AtomicBool,
    /// See [`Datapath::resync`].
    resync: AtomicBool,
}

impl LinuxDatapath {
    /// Opens a netlink socket in the calling thread's network namespace
    /// and looks up the underlay interface. Touches nothing.
    pub async fn new(cfg: LinuxConfig) -> Result<Self> {
        let conn = nl::connect()?;
        let (underlay_index, underlay) =
            underlay::lookup(&conn.handle, &cfg.underlay_iface, cfg.underlay_ip, cfg.mtu).await?;
        let segment = underlay::segment(&conn.handle, underlay_index, underlay.ip).await?;
        info!(
            underlay = %cfg.underlay_iface, underlay_ip = %underlay.ip, mtu = underlay.default_mtu,
            segment = ?segment, "Linux datapath ready."
        );
        Ok(LinuxDatapath {
            conn,
            underlay_index,
            underlay_iface: cfg.underlay_iface,
            segment,
            underlay,
            firewall: Firewall::new(DEFAULT_FIREWALL_TABLE),
            cache: Mutex::new(Cache::default()),
            fenced: AtomicBool::new(false),
            resync: AtomicBool::new(false),
        })
    }

    /// Uses `table` instead of [`DEFAULT_FIREWALL_TABLE`] for the nftables
    /// tables (and its upper-case form for the iptables chain).
    pub fn with_firewall_table(mut self, table: &str) -> Self {
        self.firewall = Firewall::new(table);
        self
    }

    /// The firewall table name in use.
    pub fn firewall_table(&self) -> &str {
        self.firewall.table()
    }

    fn endpoints(&self) -> Endpoints<'_> {
        Endpoints::new(&self.conn.handle, names::VETHS)
    }

    /// Makes the bridge and VXLAN device of a network right; returns writes.
    async fn ensure_network(&self, p: &NetPlan, links: &HashMap<String, Link>) -> Result<usize> {
        let h = &self.conn.handle;
        let gw_mac = MacAddr::GATEWAY.0.to_vec();

        let bridge = |b: LinkMessageBuilder<LinkBridge>| {
            b.mtu(p.mtu)
                .address(gw_mac.clone())
                .mcast_snooping(false)
                .up()
                .build()
        };
        let bridge_ok = |l: &Link| {
            let snooping = l
                .bridge
                .iter()
                .any(|i| matches!(i, InfoBridge::MulticastSnooping(true)));
            l.mtu == p.mtu && l.mac == gw_mac && l.up && !snooping
        };
        let (br, mut changes) = nl::converge_link(
            h,
            (&p.bridge, links.get(&p.bridge)),
            |l| l.is_kind(InfoKind::Bridge),
            |l| (!bridge_ok(l)).then(|| bridge(LinkBridge::new(&p.bridge).index(l.index))),
            || bridge(LinkBridge::new(&p.bridge)),
        )
        .await?;

        let vxlan_ok = |l: &Link| {
            l.is_kind(InfoKind::Vxlan)
                && l.vxlan.contains(&InfoVxlan::Id(p.spec.vni))
                && l.vxlan.contains(&InfoVxlan::Local(self.underlay.ip))
                && l.vxlan.contains(&InfoVxlan::Link(self.underlay_index))
                && l.vxlan.contains(&InfoVxlan::Port(VXLAN_PORT))
                && l.vxlan.contains(&InfoVxlan::Learning(false))
        };
        let attached = |l: &Link| l.mtu == p.mtu && l.up && l.master == Some(br.index);
        let attach = |l: &Link| {
            let msg = LinkUnspec::new_with_index(l.index)
                .mtu(p.mtu)
                .controller(br.index);
            msg.up().build()
        };
        let create = || {
            let vx = LinkVxlan::new(&p.vxlan, p.spec.vni)
                .dev(self.underlay_index)
                .local(self.underlay.ip)
                .port(VXLAN_PORT)
                .learning(false);
            vx.mtu(p.mtu).controller(br.index).up().build()
        };
        let (vx, n) = nl::converge_link(
            h,
            (&p.vxlan, links.get(&p.vxlan)),
            vxlan_ok,
            |l| (!attached(l)).then(|| attach(l)),
            create,
        )
        .await?;
        changes += n;
        let port_ok = vx.port.contains(&InfoBridgePort::NeighSupress(true))
            && vx.port.contains(&InfoBridgePort::Learning(false));
        if !port_ok {
            let msg = LinkBridgePort::new(vx.index)
                .neigh_suppress(true)
                .learning(false)
                .build();
            nl::change_link(h, msg, &format!("bridge port {}", p.vxlan)).await?;
            changes += 1;
        }
        Ok(changes)
    }

    /// The gateway address, alone, on each bridge.
    async fn ensure_gateways(
        &self,
        plans: &[NetPlan],
        links: &HashMap<String, Link>,
    ) -> Result<usize> {
        let h = &self.conn.handle;
        let addrs = nl::addrs_v4(h).await?;
        let mut changes = 0;
        for p in plans {
            if let Some(br) = links.get(&p.bridge) {
                let dev = (br.index, p.bridge.as_str());
                changes += nl::ensure_sole_address(h, &addrs, dev, p.gateway_cidr()).await?;
            }
        }
        Ok(changes)
    }

    /// FDB, bridge FDB and neighbour entries for the remote endpoints
    /// `tunnelled`; returns writes. With `full` (or when the cache does
    /// not know a network's devices) the tables are dumped and compared;
    /// otherwise only the differences to what the last apply left are
    /// written, so one change costs its own writes and no dump.
    async fn ensure_remote(
        &self,
        (plans, tunnelled): (&[NetPlan], &[&RemoteEndpoint]),
        links: &HashMap<String, Link>,
        full: bool,
        cache: &mut RemoteCache,
    ) -> Result<usize> {
        // Per network (few), its remote endpoints in their order.
        let mut nets: Vec<(&NetPlan, u32, u32, Vec<remote::Remote>)> = plans
            .iter()
            .filter_map(|p| {
                let (br, vx) = (links.get(&p.bridge)?, links.get(&p.vxlan)?);
                Some((p, br.index, vx.index, Vec::new()))
            })
            .collect();
        for r in tunnelled.iter().filter(|r| r.host != self.underlay.ip) {
            if let Some(n) = nets.iter_mut().find(|n| n.0.spec.name == r.network) {
                n.3.push(remote::remote(r));
            }
        }
        let known = |vni: u32, br: u32, vx: u32| {
            cache
                .nets
                .get(&vni)
                .is_some_and(|c| c.bridge == br && c.vxlan == vx)
        };
        let trusted = !full && nets.iter().all(|n| known(n.0.spec.vni, n.1, n.2));
        let mut last = std::mem::take(&mut cache.nets);
        let started = Instant::now();
        let mut dumped = None;
        if !trusted {
            cache.checked = None;
            let fdb = nl::neighbours(&self.conn.handle, AddressFamily::Bridge).await?;
            let neigh = nl::neighbours(&self.conn.handle, AddressFamily::Inet).await?;
            dumped = Some((fdb, neigh));
        }
        let mut tally = Tally::default();
        let mut failed = false;
        for (p, br, vx, now) in nets {
            let vni = p.spec.vni;
            let (have, want, next) = match (&dumped, last.remove(&vni)) {
                (Some((fdb, neigh)), _) => {
                    let have = RemoteEntries::found(br, vx, fdb, neigh);
                    (have, RemoteEntries::wanted(br, vx, &now), None)
                }
                (None, Some(mut c)) => match c.delta(&now) {
                    Some((have, want)) => (have, want, Some(c)),
                    None => (c.everything(), RemoteEntries::wanted(br, vx, &now), None),
                },
                // Not reached: every network is known when trusted.
                (None, None) => (
                    RemoteEntries::default(),
                    RemoteEntries::wanted(br, vx, &now),
                    None,
                ),
            };
            let before = tally.failed();
            self.write_remote(p, &have, &want, &mut tally).await;
            if tally.failed() == before {
                let next = next.unwrap_or_else(|| NetCache::new(br, vx, now));
                cache.nets.insert(vni, next);
            } else {
                failed = true;
            }
        }
        if failed {
            cache.checked = None;
        } else if !trusted {
            cache.checked = Some(started);
        }
        tally.finish()
    }

    /// Turns `have` into `want` for network `p`: deletes what is not
    /// wanted, adds what is missing or different.
    async fn write_remote(
        &self,
        p: &NetPlan,
        have: &RemoteEntries,
        want: &RemoteEntries,
        tally: &mut Tally,
    ) {
        let (br, vx) = (want.bridge, want.vxlan);
        // VXLAN FDB (the device's own table: entries with a destination).
        for (mac, dst) in have.vx_fdb.difference(&want.vx_fdb) {
            let msg = vxlan_fdb_msg(vx, *mac, *dst);
            tally.add(self.del_neigh(msg).await.map(|()| 1));
        }
        // Unicast first, then the all-zero (flood) entries, appended.
        let mut missing: Vec<_> = want.vx_fdb.difference(&have.vx_fdb).copied().collect();
        missing.sort_by_key(|(mac, _)| *mac == [0; 6]);
        for (mac, dst) in missing {
            let flags = if mac == [0; 6] {
                NLM_F_CREATE | NLM_F_APPEND
            } else {
                NLM_F_CREATE | NLM_F_REPLACE
            };
            let msg = vxlan_fdb_msg(vx, mac, dst);
            tally.add(
                (nl::ack(
                    &self.conn.handle,
                    RouteNetlinkMessage::NewNeighbour(msg),
                    flags,
                    || format!("fdb {} dst {dst} on {}", MacAddr(mac), p.vxlan),
                )
                .await)
                    .map(|()| 1),
            );
        }

        // Bridge FDB: static entries for remote MACs on the VXLAN port.
        for mac in have.br_fdb.difference(&want.br_fdb) {
            let msg = bridge_fdb_msg(vx, *mac);
            tally.add(self.del_neigh(msg).await.map(|()| 1));
        }
        for mac in want.br_fdb.difference(&have.br_fdb) {
            let msg = bridge_fdb_msg(vx, *mac);
            tally.add(
                (nl::ack(
                    &self.conn.handle,
                    RouteNetlinkMessage::NewNeighbour(msg),
                    NLM_F_CREATE | NLM_F_REPLACE,
                    || format!("bridge fdb {} on {}", MacAddr(*mac), p.vxlan),
                )
                .await)
                    .map(|()| 1),
            );
        }

        // Permanent neighbours on the bridge.
        for ip in have.neigh.keys().filter(|ip| !want.neigh.contains_key(*ip)) {
            let msg = neigh_msg(br, *ip, None);
            tally.add(self.del_neigh(msg).await.map(|()| 1));
        }
        for (ip, mac) in want
            .neigh
            .iter()
            .filter(|(ip, mac)| have.neigh.get(*ip) != Some(*mac))
        {
            tally.add(
                (nl::ack(
                    &self.conn.handle,
                    RouteNetlinkMessage::NewNeighbour(neigh_msg(br, *ip, Some(*mac))),
                    NLM_F_CREATE | NLM_F_REPLACE,
                    || format!("neighbour {ip} on {}", p.bridge),
                )
                .await)
                    .map(|()| 1),
            );
        }
    }

    async fn del_neigh(&self, msg: NeighbourMessage) -> Result<()> {
        nl::ack_unless(
            &self.conn.handle,
            RouteNetlinkMessage::DelNeighbour(msg),
            Errno::ENOENT,
            || "delete neighbour/fdb entry".into(),
        )
        .await
    }

    /// Deletes our links that are not wanted (veths, then VXLAN devices,
    /// then bridges, since they hang off each other); returns writes.
    async fn remove_stale_links(
        &self,
        (plans, desired): (&[NetPlan], &DesiredState),
        links: &HashMap<String, Link>,
        cache: &mut Cache,
    ) -> Result<usize> {
        let mut tally = Tally::default();
        tally.add(self.endpoints().remove_stale(links, desired).await);
        cache.endpoints.retain_live(desired);
        let want: HashSet<&str> = plans
            .iter()
            .flat_map(|p| [p.bridge.as_str(), p.vxlan.as_str()])
            .collect();
        let mut stale: Vec<&Link> = links
            .values()
            .filter(|l| {
                names::parse_net_device(&l.name).is_some()
                    && (l.is_kind(InfoKind::Bridge) || l.is_kind(InfoKind::Vxlan))
                    && !want.contains(l.name.as_str())
            })
            .collect();
        stale.sort_by_key(|l| (!l.is_kind(InfoKind::Vxlan), l.name.clone()));
        for l in stale {
            debug!(link = %l.name, "Removing stale link.");
            let deleted = nl::del_link(&self.conn.handle, l.index, &l.name).await;
            tally.add(deleted.map(|()| 1));
        }
        tally.finish()
    }
}

/// How many endpoints the workloads of this host may learn neighbour
/// entries for: every endpoint of each network with a local endpoint.
fn reachable_peers(desired: &DesiredState) -> usize {
    let nets: HashSet<&str> = desired.local.iter().map(|e| e.network.as_str()).collect();
    let remote = desired.remote.iter();
    desired.local.len() + remote.filter(|r| nets.contains(r.network.as_str())).count()
}

fn fdb_msg(
    index: u32,
    mac: [u8; 6],
    dst: Option<Ipv4Addr>,
    flags: NeighbourFlags,
    state: NeighbourState,
) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = state;
    m.header.flags = flags;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if let Some(d) = dst {
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(d)));
    }
    m
}

/// An entry of a VXLAN device's own FDB: `mac` is reached at host `dst`.
fn vxlan_fdb_msg(index: u32, mac: [u8; 6], dst: Ipv4Addr) -> NeighbourMessage {
    fdb_msg(
        index,
        mac,
        Some(dst),
        NeighbourFlags::Own,
        NeighbourState::Permanent,
    )
}

/// A static bridge FDB entry: `mac` is behind bridge port `index`.
fn bridge_fdb_msg(index: u32, mac: [u8; 6]) -> NeighbourMessage {
    fdb_msg(
        index,
        mac,
        None,
        NeighbourFlags::Controller,
        NeighbourState::Noarp,
    )
}

fn neigh_msg(index: u32, ip: Ipv4Addr, mac: Option<[u8; 6]>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    if let Some(mac) = mac {
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    m
}

#[async_trait]
impl Datapath for LinuxDatapath {
    async fn apply(&self, desired: &DesiredState) -> Result<ApplyReport> {
        let planned = crate::kernel::plan(desired, self.underlay.default_mtu)?;
        let (plans, desired) = (planned.nets, &planned.desired);
        let mut cache = self.cache.lock().await;
        if self.resync.swap(false, Ordering::SeqCst) {
            cache.remote.checked = None;
            cache.firewall = FirewallCheck::default();
        }
        let mut tally = Tally::default();
        let h = &self.conn.handle;

        let mut links = nl::links(h).await?;
        let removed = self.remove_stale_links((&plans, desired), &links, &mut cache);
        let before = tally.failed();
        if tally.add(removed.await) > 0 || tally.failed() != before {
            links = nl::links(h).await?;
        }
        let mut net_changes = 0;
        for p in &plans {
            net_changes += tally.add(self.ensure_network(p, &links).await);
        }
        if net_changes > 0 {
            links = nl::links(h).await?;
        }
        tally.add(self.ensure_gateways(&plans, &links).await);
        if !plans.is_empty() {
            tally.add(ensure_ip_forward());
            tally.add(ensure_neigh_room(reachable_peers(desired)));
        }
        for p in plans.iter().filter(|p| p.spec.mode == NetworkMode::Routed) {
            if links.contains_key(&p.bridge) {
                tally.add(ensure_proxy_arp(&p.bridge));
            }
        }
        let fenced = self.fenced.load(Ordering::SeqCst);
        let attach = |p: &NetPlan| {
            links
                .get(&p.bridge)
                .map(|br| Attach::bridge_port(br.index).fenced(fenced))
        };
        let (endpoints, cached) = (self.endpoints(), &mut cache.endpoints);
        endpoints
            .ensure_all((&plans, desired), &links, cached, &mut tally, attach)
            .await;
        let split = routes::split(&plans, desired, self.underlay.ip, self.segment);
        let full = cache.remote.check_due();
        let nets = (&plans[..], &split.tunnelled[..]);
        let remote = self.ensure_remote(nets, &links, full, &mut cache.remote);
        tally.add(remote.await);
        let last = cache.remote.routes.take().filter(|_| !full);
        let routed = routes::ensure(h, &split.routes, self.underlay_index, last.as_ref());
        match routed.await {
            Ok(n) => {
                tally.add(Ok(n));
                cache.remote.routes = Some(split.routes.clone());
            }
            Err(e) => {
                tally.add(Err(e));
                cache.remote.checked = None;
            }
        }
        let ports = desired
            .local
            .iter()
            .map(|e| FwPort {
                ifname: names::VETHS.host(&e.id),
                mac: e.mac,
                ip: e.ip,
            })
            .collect();
        tally.refuse(planned.rejected);
        let routed = plans
            .iter()
            .filter(|p| p.spec.mode == NetworkMode::Routed)
            .map(|p| FwRouted {
                bridge: p.bridge.clone(),
                subnet: p.spec.subnet,
                underlay: self.underlay_iface.clone(),
                sources: split
                    .sources
                    .get(p.bridge.as_str())
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        let host = FwHost::new(desired, self.underlay.ip, ports).with_routed(routed);
        let firewall = self.firewall.ensure(&plans, &host, &mut cache.firewall);
        tally.add(firewall.await);
        tally.report(self.name())
    }

    async fn teardown(&self) -> Result<()> {
        let none = DesiredState::default();
        let mut cache = self.cache.lock().await;
        let mut tally = Tally::default();
        match nl::links(&self.conn.handle).await {
            Ok(links) => {
                let removed = self.remove_stale_links((&[], &none), &links, &mut cache);
                tally.add(removed.await);
            }
            Err(e) => tally.check(Err(e)),
        }
        let no_routes = BTreeMap::new();
        let routes = routes::ensure(&self.conn.handle, &no_routes, self.underlay_index, None);
        tally.add(routes.await);
        tally.check(self.firewall.remove().await);
        *cache = Cache::default();
        tally.finish().map(drop)
    }

    fn set_fenced(&self, fenced: bool) {
        self.fenced.store(fenced, Ordering::SeqCst);
    }

    fn resync(&self) {
        self.resync.store(true, Ordering::SeqCst);
    }

    fn endpoint_ifnames(&self, endpoint_id: &str) -> EndpointIfnames {
        names::VETHS.ifnames(endpoint_id)
    }

    fn underlay(&self) -> Underlay {
        self.underlay
    }

    fn name(&self) -> &'static str {
        "linux"
    }
}
