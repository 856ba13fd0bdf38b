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
//! arriving from) a VXLAN port, and drops ARP arriving from a VXLAN port
//! before it reaches the host (remote hosts' ARP for the gateway is answered
//! by their own bridge). ARP for remote endpoints is answered locally by the
//! bridge (`neigh_suppress` on the VXLAN port, a permanent neighbour entry
//! on the bridge and a static bridge FDB entry pointing at the VXLAN port).
//!
//! # Reconciliation
//!
//! [`Datapath::apply`] reads the kernel state it owns (one dump each of
//! links, IPv4 addresses, FDB and neighbours), writes only the differences
//! and counts the writes. Local endpoints whose host veth exists, is
//! attached and was configured by this instance with the same spec are not
//! re-entered; after a restart the first apply verifies each workload's
//! namespace once. Firewall rules carry a hash of their rendering so
//! checking them is one listing, done when the networks change, on the
//! first apply, and at most every [`FIREWALL_RECHECK`] otherwise.

pub(crate) mod firewall;
pub mod names;
pub(crate) mod netns;
pub(crate) mod nl;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoVeth, InfoVxlan, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use self::firewall::{Firewall, FwNetwork};
use self::nl::Link;
use crate::{
    ApplyReport, Datapath, DatapathError, DesiredState, EndpointIfnames, LocalEndpoint, MacAddr,
    NetworkSpec, Result, VXLAN_OVERHEAD, VXLAN_PORT,
};

/// Default name of our nftables tables (and, upper-cased, the iptables chain).
pub const DEFAULT_FIREWALL_TABLE: &str = "socketplane";
/// How often an otherwise unchanged firewall is re-verified.
pub const FIREWALL_RECHECK: Duration = Duration::from_secs(30);
/// How often a configured workload namespace is re-entered and verified.
pub const ENDPOINT_RECHECK: Duration = Duration::from_secs(300);

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

/// What was configured for a local endpoint (the cache that lets apply skip
/// re-entering a workload namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointConfig {
    pub(crate) ep: LocalEndpoint,
    pub(crate) mtu: u32,
    pub(crate) gateway: Ipv4Addr,
    pub(crate) prefix: u8,
}

#[derive(Default)]
struct Cache {
    /// Endpoint id -> what was configured and when it was last verified.
    endpoints: HashMap<String, (EndpointConfig, Instant)>,
    firewall_hash: Option<String>,
    firewall_checked: Option<Instant>,
}

/// The Linux kernel datapath, operating in the network namespace of the
/// thread that created it (its netlink socket is opened there).
pub struct LinuxDatapath {
    handle: Handle,
    conn_task: tokio::task::JoinHandle<()>,
    underlay_index: u32,
    underlay_ip: Ipv4Addr,
    default_mtu: u32,
    firewall: Firewall,
    cache: Mutex<Cache>,
}

impl Drop for LinuxDatapath {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

/// One validated network with everything derived from it.
#[derive(Debug, Clone)]
pub(crate) struct NetPlan {
    pub(crate) spec: NetworkSpec,
    pub(crate) bridge: String,
    pub(crate) vxlan: String,
    pub(crate) mtu: u32,
}

fn invalid(msg: impl Into<String>) -> DatapathError {
    DatapathError::Invalid(msg.into())
}

fn nl_err(context: impl Into<String>, e: rtnetlink::Error) -> DatapathError {
    DatapathError::Netlink {
        context: context.into(),
        message: e.to_string(),
    }
}

pub(crate) fn collect(errors: Vec<DatapathError>) -> Result<()> {
    let mut errors = errors;
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(DatapathError::Many(errors)),
    }
}

impl LinuxDatapath {
    /// Opens a netlink socket in the calling thread's network namespace
    /// and looks up the underlay interface. Touches nothing.
    pub async fn new(cfg: LinuxConfig) -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
            DatapathError::Unavailable("netlink".into(), format!("cannot open socket: {e}"))
        })?;
        let conn_task = tokio::spawn(conn);
        let links = nl::links(&handle).await?;
        let under = links.get(&cfg.underlay_iface).ok_or_else(|| {
            invalid(format!(
                "underlay interface {} not found",
                cfg.underlay_iface
            ))
        })?;
        let underlay_ip = match cfg.underlay_ip {
            Some(ip) => ip,
            None => nl::addrs_v4(&handle)
                .await?
                .into_iter()
                .find(|a| a.index == under.index)
                .map(|a| a.ip)
                .ok_or_else(|| {
                    invalid(format!(
                        "underlay interface {} has no IPv4 address",
                        cfg.underlay_iface
                    ))
                })?,
        };
        let default_mtu = match cfg.mtu {
            Some(m) => m,
            None => under
                .mtu
                .checked_sub(VXLAN_OVERHEAD)
                .filter(|m| *m >= 576)
                .ok_or_else(|| {
                    invalid(format!("underlay MTU {} too small for VXLAN", under.mtu))
                })?,
        };
        info!(
            underlay = %cfg.underlay_iface, %underlay_ip, mtu = default_mtu,
            "Linux datapath ready."
        );
        Ok(LinuxDatapath {
            handle,
            conn_task,
            underlay_index: under.index,
            underlay_ip,
            default_mtu,
            firewall: Firewall::new(DEFAULT_FIREWALL_TABLE),
            cache: Mutex::new(Cache::default()),
        })
    }

    /// Uses `table` instead of [`DEFAULT_FIREWALL_TABLE`] for the nftables
    /// tables (and its upper-case form for the iptables chain).
    pub fn with_firewall_table(mut self, table: &str) -> Self {
        self.firewall = Firewall::new(table);
        self
    }

    /// The local tunnel endpoint address.
    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    /// The overlay MTU used when a network sets none.
    pub fn default_mtu(&self) -> u32 {
        self.default_mtu
    }

    /// Forgets what was verified, so the next `apply` re-enters every
    /// workload namespace and re-checks the firewall (a full sync).
    pub async fn forget_cache(&self) {
        *self.cache.lock().await = Cache::default();
    }

    /// The firewall table name in use.
    pub fn firewall_table(&self) -> &str {
        self.firewall.table()
    }

    async fn link_by_name(&self, name: &str) -> Result<Link> {
        let links = nl::links(&self.handle).await?;
        links
            .get(name)
            .cloned()
            .ok_or_else(|| DatapathError::Netlink {
                context: format!("link {name}"),
                message: "not found after creation".into(),
            })
    }

    async fn del_link(&self, l: &Link) -> Result<()> {
        match self.handle.link().del(l.index).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if -e.raw_code() == nl::ENODEV => Ok(()),
            Err(e) => Err(nl_err(format!("delete link {}", l.name), e)),
        }
    }

    async fn new_link(&self, msg: LinkMessage, what: &str) -> Result<()> {
        nl::ack(
            &self.handle,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            || format!("create {what}"),
        )
        .await
    }

    async fn change_link(&self, msg: LinkMessage, what: &str) -> Result<()> {
        nl::ack(&self.handle, RouteNetlinkMessage::NewLink(msg), 0, || {
            format!("change {what}")
        })
        .await
    }

    /// Makes the bridge and VXLAN device of a network right; returns writes.
    async fn ensure_network(&self, p: &NetPlan, links: &HashMap<String, Link>) -> Result<usize> {
        let mut changes = 0;
        let gw_mac = MacAddr::GATEWAY.0.to_vec();

        // Bridge.
        let br = match links.get(&p.bridge) {
            Some(l) if l.is_kind(InfoKind::Bridge) => {
                let snooping = l
                    .bridge
                    .iter()
                    .any(|i| matches!(i, InfoBridge::MulticastSnooping(true)));
                if l.mtu != p.mtu || l.mac != gw_mac || !l.up || snooping {
                    let msg = LinkBridge::new(&p.bridge)
                        .index(l.index)
                        .mtu(p.mtu)
                        .address(gw_mac.clone())
                        .mcast_snooping(false)
                        .up()
                        .build();
                    self.change_link(msg, &p.bridge).await?;
                    changes += 1;
                }
                l.clone()
            }
            other => {
                if let Some(l) = other {
                    self.del_link(l).await?;
                    changes += 1;
                }
                let msg = LinkBridge::new(&p.bridge)
                    .mtu(p.mtu)
                    .address(gw_mac.clone())
                    .mcast_snooping(false)
                    .up()
                    .build();
                self.new_link(msg, &p.bridge).await?;
                changes += 1;
                self.link_by_name(&p.bridge).await?
            }
        };

        // VXLAN device.
        let vx_ok = |l: &Link| {
            l.is_kind(InfoKind::Vxlan)
                && l.vxlan.contains(&InfoVxlan::Id(p.spec.vni))
                && l.vxlan.contains(&InfoVxlan::Local(self.underlay_ip))
                && l.vxlan.contains(&InfoVxlan::Link(self.underlay_index))
                && l.vxlan.contains(&InfoVxlan::Port(VXLAN_PORT))
                && l.vxlan.contains(&InfoVxlan::Learning(false))
        };
        let vx = match links.get(&p.vxlan) {
            Some(l) if vx_ok(l) => {
                if l.mtu != p.mtu || !l.up || l.master != Some(br.index) {
                    let msg = LinkUnspec::new_with_index(l.index)
                        .mtu(p.mtu)
                        .controller(br.index)
                        .up()
                        .build();
                    self.change_link(msg, &p.vxlan).await?;
                    changes += 1;
                }
                l.clone()
            }
            other => {
                if let Some(l) = other {
                    self.del_link(l).await?;
                    changes += 1;
                }
                let msg = LinkVxlan::new(&p.vxlan, p.spec.vni)
                    .dev(self.underlay_index)
                    .local(self.underlay_ip)
                    .port(VXLAN_PORT)
                    .learning(false)
                    .mtu(p.mtu)
                    .controller(br.index)
                    .up()
                    .build();
                self.new_link(msg, &p.vxlan).await?;
                changes += 1;
                self.link_by_name(&p.vxlan).await?
            }
        };
        let port_ok = vx.port.contains(&InfoBridgePort::NeighSupress(true))
            && vx.port.contains(&InfoBridgePort::Learning(false));
        if !port_ok {
            let msg = LinkBridgePort::new(vx.index)
                .neigh_suppress(true)
                .learning(false)
                .build();
            self.change_link(msg, &format!("bridge port {}", p.vxlan))
                .await?;
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
        let addrs = nl::addrs_v4(&self.handle).await?;
        let mut changes = 0;
        for p in plans {
            let Some(br) = links.get(&p.bridge) else {
                continue;
            };
            let prefix = p.spec.subnet.prefix_len();
            let mut present = false;
            for a in addrs.iter().filter(|a| a.index == br.index) {
                if a.ip == p.spec.gateway && a.prefix == prefix {
                    present = true;
                } else {
                    self.handle
                        .address()
                        .del(a.msg.clone())
                        .execute()
                        .await
                        .map_err(|e| {
                            nl_err(format!("remove address {} from {}", a.ip, p.bridge), e)
                        })?;
                    changes += 1;
                }
            }
            if !present {
                self.handle
                    .address()
                    .add(br.index, IpAddr::V4(p.spec.gateway), prefix)
                    .execute()
                    .await
                    .map_err(|e| nl_err(format!("add gateway to {}", p.bridge), e))?;
                changes += 1;
            }
        }
        Ok(changes)
    }

    /// Creates the veth pair of a local endpoint (workload end already
    /// named, addressed and in its namespace when it has one).
    async fn create_veth(&self, e: &LocalEndpoint, cfg: &EndpointConfig, br: u32) -> Result<()> {
        let host = names::veth_host(&e.id);
        let ns_file = match &e.netns {
            Some(path) => Some(netns::open(path)?),
            None => None,
        };
        let peer_name = match &e.netns {
            Some(_) => e.ifname.clone(),
            None => names::veth_peer(&e.id),
        };
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name)
            .mtu(cfg.mtu)
            .address(e.mac.0.to_vec());
        if let Some(f) = &ns_file {
            peer = peer.setns_by_fd(f.as_raw_fd());
        }
        let msg = LinkVeth::new(&host, "unused")
            .mtu(cfg.mtu)
            .controller(br)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        let r = self.new_link(msg, &format!("veth {host}")).await;
        drop(ns_file);
        r
    }

    /// Converges one local endpoint; returns writes, or `None` when the
    /// cache showed it configured and nothing was checked.
    async fn ensure_endpoint(
        &self,
        e: &LocalEndpoint,
        cfg: &EndpointConfig,
        br: u32,
        links: &HashMap<String, Link>,
        cache: &HashMap<String, (EndpointConfig, Instant)>,
    ) -> Result<Option<usize>> {
        let host = names::veth_host(&e.id);
        let mut changes = 0;
        match links.get(&host) {
            Some(l) if l.is_kind(InfoKind::Veth) => {
                let host_ok = l.master == Some(br) && l.up && l.mtu == cfg.mtu;
                let cached = cache
                    .get(&e.id)
                    .is_some_and(|(c, t)| c == cfg && t.elapsed() < ENDPOINT_RECHECK);
                if host_ok && cached {
                    return Ok(None);
                }
                if !host_ok {
                    let msg = LinkUnspec::new_with_index(l.index)
                        .mtu(cfg.mtu)
                        .controller(br)
                        .up()
                        .build();
                    self.change_link(msg, &host).await?;
                    changes += 1;
                }
                match &e.netns {
                    Some(path) => {
                        let job = WorkloadJob::from(cfg);
                        match netns::run_in(path, move |h| job.run(h)).await? {
                            Some(n) => changes += n,
                            None => {
                                // The workload end is not where it should be:
                                // start over with a fresh pair.
                                warn!(endpoint = %e.id, "Workload interface missing; recreating the veth pair.");
                                self.del_link(l).await?;
                                changes += 1 + self.create_endpoint(e, cfg, br).await?;
                            }
                        }
                    }
                    None => {
                        let peer = names::veth_peer(&e.id);
                        if let Some(pl) = links.get(&peer) {
                            if pl.mac != e.mac.0 || pl.mtu != cfg.mtu {
                                let msg = LinkUnspec::new_with_index(pl.index)
                                    .mtu(cfg.mtu)
                                    .address(e.mac.0.to_vec())
                                    .build();
                                self.change_link(msg, &peer).await?;
                                changes += 1;
                            }
                        }
                    }
                }
            }
            other => {
                if let Some(l) = other {
                    self.del_link(l).await?;
                    changes += 1;
                }
                changes += self.create_endpoint(e, cfg, br).await?;
            }
        }
        Ok(Some(changes))
    }

    async fn create_endpoint(
        &self,
        e: &LocalEndpoint,
        cfg: &EndpointConfig,
        br: u32,
    ) -> Result<usize> {
        self.create_veth(e, cfg, br).await?;
        let mut changes = 1;
        if let Some(path) = &e.netns {
            let job = WorkloadJob::from(cfg);
            match netns::run_in(path, move |h| job.run(h)).await? {
                Some(n) => changes += n,
                None => {
                    return Err(DatapathError::Netns {
                        path: path.display().to_string(),
                        message: format!("interface {} vanished after creation", e.ifname),
                    })
                }
            }
        }
        Ok(changes)
    }

    /// FDB, bridge FDB and neighbour entries for remote endpoints; returns writes.
    async fn ensure_remote(
        &self,
        plans: &[NetPlan],
        desired: &DesiredState,
        links: &HashMap<String, Link>,
    ) -> Result<usize> {
        let fdb = nl::neighbours(&self.handle, AddressFamily::Bridge).await?;
        let neigh = nl::neighbours(&self.handle, AddressFamily::Inet).await?;
        let mut changes = 0;
        let mut errors = Vec::new();
        for p in plans {
            let (Some(br), Some(vx)) = (links.get(&p.bridge), links.get(&p.vxlan)) else {
                continue;
            };
            let remotes: Vec<_> = desired
                .remote
                .iter()
                .filter(|r| r.network == p.spec.name && r.host != self.underlay_ip)
                .collect();
            let mut want_vx: HashSet<([u8; 6], Ipv4Addr)> = HashSet::new();
            let mut want_brfdb: HashSet<[u8; 6]> = HashSet::new();
            let mut want_neigh: BTreeMap<Ipv4Addr, [u8; 6]> = BTreeMap::new();
            for r in &remotes {
                want_vx.insert((r.mac.0, r.host));
                want_vx.insert(([0; 6], r.host));
                want_brfdb.insert(r.mac.0);
                want_neigh.insert(r.ip, r.mac.0);
            }

            // VXLAN FDB (the device's own table: entries with a destination).
            let mut have_vx = HashSet::new();
            for n in fdb
                .iter()
                .filter(|n| n.index == vx.index && n.dst.is_some())
            {
                let (Some(mac), Some(dst)) = (mac6(n.lladdr.as_deref()), n.dst) else {
                    continue;
                };
                if want_vx.contains(&(mac, dst)) {
                    have_vx.insert((mac, dst));
                } else {
                    let msg = fdb_msg(
                        vx.index,
                        mac,
                        Some(dst),
                        NeighbourFlags::Own,
                        NeighbourState::Permanent,
                    );
                    match self.del_neigh(msg).await {
                        Ok(()) => changes += 1,
                        Err(e) => errors.push(e),
                    }
                }
            }
            // Unicast first, then the all-zero (flood) entries, appended.
            let mut missing: Vec<_> = want_vx.difference(&have_vx).copied().collect();
            missing.sort_by_key(|(mac, _)| *mac == [0; 6]);
            for (mac, dst) in missing {
                let flags = if mac == [0; 6] {
                    NLM_F_CREATE | NLM_F_APPEND
                } else {
                    NLM_F_CREATE | NLM_F_REPLACE
                };
                let msg = fdb_msg(
                    vx.index,
                    mac,
                    Some(dst),
                    NeighbourFlags::Own,
                    NeighbourState::Permanent,
                );
                match nl::ack(
                    &self.handle,
                    RouteNetlinkMessage::NewNeighbour(msg),
                    flags,
                    || format!("fdb {} dst {dst} on {}", MacAddr(mac), p.vxlan),
                )
                .await
                {
                    Ok(()) => changes += 1,
                    Err(e) => errors.push(e),
                }
            }

            // Bridge FDB: static entries for remote MACs on the VXLAN port.
            let mut have_br = HashSet::new();
            for n in fdb.iter().filter(|n| {
                n.index == vx.index
                    && n.dst.is_none()
                    && n.master == Some(br.index)
                    && n.state == NeighbourState::Noarp
            }) {
                let Some(mac) = mac6(n.lladdr.as_deref()) else {
                    continue;
                };
                if want_brfdb.contains(&mac) {
                    have_br.insert(mac);
                } else {
                    let msg = fdb_msg(
                        vx.index,
                        mac,
                        None,
                        NeighbourFlags::Controller,
                        NeighbourState::Noarp,
                    );
                    match self.del_neigh(msg).await {
                        Ok(()) => changes += 1,
                        Err(e) => errors.push(e),
                    }
                }
            }
            for mac in want_brfdb.difference(&have_br) {
                let msg = fdb_msg(
                    vx.index,
                    *mac,
                    None,
                    NeighbourFlags::Controller,
                    NeighbourState::Noarp,
                );
                match nl::ack(
                    &self.handle,
                    RouteNetlinkMessage::NewNeighbour(msg),
                    NLM_F_CREATE | NLM_F_REPLACE,
                    || format!("bridge fdb {} on {}", MacAddr(*mac), p.vxlan),
                )
                .await
                {
                    Ok(()) => changes += 1,
                    Err(e) => errors.push(e),
                }
            }

            // Neighbours on the bridge.
            let mut have_neigh = HashSet::new();
            for n in neigh.iter().filter(|n| n.index == br.index) {
                let Some(ip) = n.dst else { continue };
                let mac = mac6(n.lladdr.as_deref());
                match want_neigh.get(&ip) {
                    Some(w) if n.state == NeighbourState::Permanent && mac.as_ref() == Some(w) => {
                        have_neigh.insert(ip);
                    }
                    Some(_) => {} // replaced below
                    None if n.state == NeighbourState::Permanent => {
                        match self.del_neigh(neigh_msg(br.index, ip, None)).await {
                            Ok(()) => changes += 1,
                            Err(e) => errors.push(e),
                        }
                    }
                    None => {}
                }
            }
            for (ip, mac) in want_neigh.iter().filter(|(ip, _)| !have_neigh.contains(ip)) {
                match nl::ack(
                    &self.handle,
                    RouteNetlinkMessage::NewNeighbour(neigh_msg(br.index, *ip, Some(*mac))),
                    NLM_F_CREATE | NLM_F_REPLACE,
                    || format!("neighbour {ip} on {}", p.bridge),
                )
                .await
                {
                    Ok(()) => changes += 1,
                    Err(e) => errors.push(e),
                }
            }
        }
        collect(errors).map(|()| changes)
    }

    async fn del_neigh(&self, msg: NeighbourMessage) -> Result<()> {
        match nl::request_ack(&self.handle, RouteNetlinkMessage::DelNeighbour(msg), 0).await {
            Ok(()) => Ok(()),
            Err(e) if e.errno == Some(nl::ENOENT) => Ok(()),
            Err(e) => Err(e.into_dp("delete neighbour/fdb entry")),
        }
    }

    async fn ensure_firewall(&self, plans: &[NetPlan], cache: &mut Cache) -> Result<usize> {
        let nets: Vec<FwNetwork> = plans
            .iter()
            .map(|p| FwNetwork {
                bridge: p.bridge.clone(),
                subnet: p.spec.subnet,
                gateway: p.spec.gateway,
            })
            .collect();
        let rendered = self.firewall.render(&nets);
        let fresh = cache
            .firewall_checked
            .is_some_and(|t| t.elapsed() < FIREWALL_RECHECK);
        if cache.firewall_hash.as_deref() == Some(rendered.hash.as_str()) && fresh {
            return Ok(0);
        }
        let current = self.firewall.is_current(&rendered).await?;
        let changes = if current {
            0
        } else {
            debug!(table = self.firewall.table(), "Writing firewall rules.");
            self.firewall.write(&rendered).await?;
            1
        };
        cache.firewall_hash = Some(rendered.hash);
        cache.firewall_checked = Some(Instant::now());
        Ok(changes)
    }

    /// Deletes our links that are not wanted; returns writes.
    async fn remove_stale_links(
        &self,
        plans: &[NetPlan],
        desired: &DesiredState,
        links: &HashMap<String, Link>,
        cache: &mut Cache,
    ) -> Result<usize> {
        let want_nets: HashSet<&str> = plans
            .iter()
            .flat_map(|p| [p.bridge.as_str(), p.vxlan.as_str()])
            .collect();
        let mut want_veths: HashSet<String> = HashSet::new();
        for e in &desired.local {
            want_veths.insert(names::veth_host(&e.id));
            if e.netns.is_none() {
                want_veths.insert(names::veth_peer(&e.id));
            }
        }
        let mut changes = 0;
        let mut errors = Vec::new();
        // Veths first (they hang off the bridges), then VXLAN, then bridges.
        let mut stale: Vec<&Link> = links
            .values()
            .filter(|l| {
                (l.is_kind(InfoKind::Veth)
                    && names::is_veth_name(&l.name)
                    && !want_veths.contains(&l.name))
                    || (names::parse_net_device(&l.name).is_some()
                        && (l.is_kind(InfoKind::Bridge) || l.is_kind(InfoKind::Vxlan))
                        && !want_nets.contains(l.name.as_str()))
            })
            .collect();
        stale.sort_by_key(|l| match l.kind {
            Some(InfoKind::Veth) => 0,
            Some(InfoKind::Vxlan) => 1,
            _ => 2,
        });
        let mut deleted = HashSet::new();
        for l in stale {
            // Deleting one veth end removes its peer too.
            if deleted.contains(&l.index) {
                continue;
            }
            debug!(link = %l.name, "Removing stale link.");
            match self.del_link(l).await {
                Ok(()) => {
                    changes += 1;
                    deleted.insert(l.index);
                    if l.is_kind(InfoKind::Veth) {
                        if let Some(peer) = links.values().find(|o| {
                            o.is_kind(InfoKind::Veth)
                                && o.name != l.name
                                && names::is_veth_name(&o.name)
                                && o.name[3..] == l.name[3..]
                        }) {
                            deleted.insert(peer.index);
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        let live: HashSet<&str> = desired.local.iter().map(|e| e.id.as_str()).collect();
        cache.endpoints.retain(|id, _| live.contains(id.as_str()));
        collect(errors).map(|()| changes)
    }
}

/// Validates `desired` before anything touches the kernel, deriving device
/// names and MTUs.
pub(crate) fn plan(desired: &DesiredState, default_mtu: u32) -> Result<Vec<NetPlan>> {
    let mut names = HashSet::new();
    let mut vnis = HashSet::new();
    let mut plans = Vec::new();
    for n in &desired.networks {
        if !names.insert(n.name.as_str()) {
            return Err(invalid(format!("network {} listed twice", n.name)));
        }
        if n.vni == 0 || n.vni > 0x00ff_ffff {
            return Err(invalid(format!(
                "network {}: VNI {} out of range",
                n.name, n.vni
            )));
        }
        if !vnis.insert(n.vni) {
            return Err(invalid(format!("VNI {} used by two networks", n.vni)));
        }
        if !n.subnet.contains(&n.gateway)
            || n.gateway == n.subnet.network()
            || n.gateway == n.subnet.broadcast()
        {
            return Err(invalid(format!(
                "network {}: gateway {} is not a host address of {}",
                n.name, n.gateway, n.subnet
            )));
        }
        let mtu = n.mtu.unwrap_or(default_mtu);
        if !(576..=65535).contains(&mtu) {
            return Err(invalid(format!(
                "network {}: MTU {mtu} out of range",
                n.name
            )));
        }
        plans.push(NetPlan {
            spec: n.clone(),
            bridge: names::bridge(n.vni),
            vxlan: names::vxlan(n.vni),
            mtu,
        });
    }
    let mut ids = HashSet::new();
    for e in &desired.local {
        if !ids.insert(e.id.as_str()) {
            return Err(invalid(format!("endpoint {} listed twice", e.id)));
        }
        let net = plans
            .iter()
            .find(|p| p.spec.name == e.network)
            .ok_or_else(|| invalid(format!("endpoint {}: unknown network {}", e.id, e.network)))?;
        if !net.spec.subnet.contains(&e.ip) || e.ip == net.spec.gateway {
            return Err(invalid(format!(
                "endpoint {}: {} is not a usable address of {}",
                e.id, e.ip, net.spec.subnet
            )));
        }
        if e.mac == MacAddr::GATEWAY || e.mac.0[0] & 1 == 1 {
            return Err(invalid(format!(
                "endpoint {}: MAC {} not allowed",
                e.id, e.mac
            )));
        }
        if e.netns.is_some() && (e.ifname.is_empty() || e.ifname.len() > 15) {
            return Err(invalid(format!(
                "endpoint {}: bad ifname {:?}",
                e.id, e.ifname
            )));
        }
    }
    for r in &desired.remote {
        let net = plans
            .iter()
            .find(|p| p.spec.name == r.network)
            .ok_or_else(|| {
                invalid(format!(
                    "remote endpoint {}: unknown network {}",
                    r.id, r.network
                ))
            })?;
        if !net.spec.subnet.contains(&r.ip) {
            return Err(invalid(format!(
                "remote endpoint {}: {} not in {}",
                r.id, r.ip, net.spec.subnet
            )));
        }
        if r.mac == MacAddr::GATEWAY || r.mac.0[0] & 1 == 1 {
            return Err(invalid(format!(
                "remote endpoint {}: MAC {} not allowed",
                r.id, r.mac
            )));
        }
    }
    Ok(plans)
}

/// The part of endpoint setup that runs inside the workload's namespace.
#[derive(Debug, Clone)]
pub(crate) struct WorkloadJob {
    ifname: String,
    ip: Ipv4Addr,
    prefix: u8,
    mac: [u8; 6],
    mtu: u32,
    gateway: Ipv4Addr,
}

impl From<&EndpointConfig> for WorkloadJob {
    fn from(c: &EndpointConfig) -> Self {
        WorkloadJob {
            ifname: c.ep.ifname.clone(),
            ip: c.ep.ip,
            prefix: c.prefix,
            mac: c.ep.mac.0,
            mtu: c.mtu,
            gateway: c.gateway,
        }
    }
}

impl WorkloadJob {
    /// Returns writes made, or `None` when the interface is not there.
    pub(crate) async fn run(self, h: Handle) -> Result<Option<usize>> {
        let links = nl::links(&h).await?;
        let mut changes = 0;
        let Some(l) = links.get(&self.ifname) else {
            return Ok(None);
        };
        if let Some(lo) = links.get("lo") {
            if !lo.up {
                let msg = LinkUnspec::new_with_index(lo.index).up().build();
                nl::ack(&h, RouteNetlinkMessage::NewLink(msg), 0, || {
                    "set lo up".into()
                })
                .await?;
                changes += 1;
            }
        }
        if l.mac != self.mac || l.mtu != self.mtu || !l.up {
            let msg = LinkUnspec::new_with_index(l.index)
                .address(self.mac.to_vec())
                .mtu(self.mtu)
                .up()
                .build();
            nl::ack(&h, RouteNetlinkMessage::NewLink(msg), 0, || {
                format!("configure {}", self.ifname)
            })
            .await?;
            changes += 1;
        }
        let addrs = nl::addrs_v4(&h).await?;
        let mut present = false;
        for a in addrs.iter().filter(|a| a.index == l.index) {
            if a.ip == self.ip && a.prefix == self.prefix {
                present = true;
            } else {
                h.address()
                    .del(a.msg.clone())
                    .execute()
                    .await
                    .map_err(|e| nl_err(format!("remove address {}", a.ip), e))?;
                changes += 1;
            }
        }
        if !present {
            h.address()
                .add(l.index, IpAddr::V4(self.ip), self.prefix)
                .execute()
                .await
                .map_err(|e| nl_err(format!("add address {}", self.ip), e))?;
            changes += 1;
        }
        let routes = nl::routes_v4(&h).await?;
        let defaults: Vec<&RouteMessage> = routes
            .iter()
            .filter(|r| {
                r.header.destination_prefix_length == 0
                    && nl::route_table(r) == 254
                    && r.header.kind == RouteType::Unicast
            })
            .collect();
        // The default route goes via the gateway of the first network the
        // workload joined; a default through another interface (a second
        // network, or the runtime's own) is left alone.
        let ours = |r: &&&RouteMessage| nl::route_gw_oif(r).1 == Some(l.index);
        let ok = match defaults.iter().find(ours) {
            Some(r) => nl::route_gw_oif(r) == (Some(self.gateway), Some(l.index)),
            None => !defaults.is_empty(),
        };
        if !ok {
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(self.gateway)
                .output_interface(l.index)
                .build();
            nl::ack(
                &h,
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
                || format!("default route via {}", self.gateway),
            )
            .await?;
            changes += 1;
        }
        Ok(Some(changes))
    }
}

fn mac6(v: Option<&[u8]>) -> Option<[u8; 6]> {
    v.and_then(|b| b.try_into().ok())
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

pub(crate) fn ensure_ip_forward() -> Result<usize> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    let cur = std::fs::read_to_string(PATH)
        .map_err(|e| DatapathError::Unavailable(PATH.into(), e.to_string()))?;
    if cur.trim() == "1" {
        return Ok(0);
    }
    std::fs::write(PATH, "1")
        .map_err(|e| DatapathError::Unavailable(PATH.into(), e.to_string()))?;
    Ok(1)
}

#[async_trait]
impl Datapath for LinuxDatapath {
    fn name(&self) -> &'static str {
        "linux"
    }

    async fn apply(&self, desired: &DesiredState) -> Result<ApplyReport> {
        let plans = plan(desired, self.default_mtu)?;
        let mut cache = self.cache.lock().await;
        let mut changes = 0;
        let mut errors = Vec::new();

        let mut links = nl::links(&self.handle).await?;
        let n = self
            .remove_stale_links(&plans, desired, &links, &mut cache)
            .await;
        let mut dirty = matches!(n, Ok(k) if k > 0);
        match n {
            Ok(k) => changes += k,
            Err(e) => {
                dirty = true;
                errors.push(e)
            }
        }
        if dirty {
            links = nl::links(&self.handle).await?;
        }

        let mut net_changes = 0;
        for p in &plans {
            match self.ensure_network(p, &links).await {
                Ok(k) => net_changes += k,
                Err(e) => errors.push(e),
            }
        }
        if net_changes > 0 {
            changes += net_changes;
            links = nl::links(&self.handle).await?;
        }
        match self.ensure_gateways(&plans, &links).await {
            Ok(k) => changes += k,
            Err(e) => errors.push(e),
        }
        if !plans.is_empty() {
            match ensure_ip_forward() {
                Ok(k) => changes += k,
                Err(e) => errors.push(e),
            }
        }

        for e in &desired.local {
            let Some(p) = plans.iter().find(|p| p.spec.name == e.network) else {
                continue;
            };
            let Some(br) = links.get(&p.bridge) else {
                continue;
            };
            let cfg = EndpointConfig {
                ep: e.clone(),
                mtu: p.mtu,
                gateway: p.spec.gateway,
                prefix: p.spec.subnet.prefix_len(),
            };
            match self
                .ensure_endpoint(e, &cfg, br.index, &links, &cache.endpoints)
                .await
            {
                Ok(Some(k)) => {
                    changes += k;
                    cache.endpoints.insert(e.id.clone(), (cfg, Instant::now()));
                }
                Ok(None) => {}
                Err(err) => {
                    cache.endpoints.remove(&e.id);
                    errors.push(err)
                }
            }
        }

        match self.ensure_remote(&plans, desired, &links).await {
            Ok(k) => changes += k,
            Err(e) => errors.push(e),
        }
        match self.ensure_firewall(&plans, &mut cache).await {
            Ok(k) => changes += k,
            Err(e) => {
                cache.firewall_hash = None;
                errors.push(e)
            }
        }
        if changes > 0 {
            debug!(changes, "Datapath converged.");
        }
        collect(errors).map(|()| ApplyReport { changes })
    }

    fn endpoint_ifnames(&self, endpoint_id: &str) -> EndpointIfnames {
        EndpointIfnames {
            host: names::veth_host(endpoint_id),
            peer: names::veth_peer(endpoint_id),
        }
    }

    async fn teardown(&self) -> Result<()> {
        let mut cache = self.cache.lock().await;
        let mut errors = Vec::new();
        match nl::links(&self.handle).await {
            Ok(links) => {
                if let Err(e) = self
                    .remove_stale_links(&[], &DesiredState::default(), &links, &mut cache)
                    .await
                {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        if let Err(e) = self.firewall.remove().await {
            errors.push(e);
        }
        *cache = Cache::default();
        collect(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RemoteEndpoint;

    fn net(name: &str, vni: u32, third: u8) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            vni,
            subnet: format!("10.{third}.0.0/24").parse().unwrap(),
            gateway: Ipv4Addr::new(10, third, 0, 1),
            mtu: None,
        }
    }

    fn ep(id: &str, network: &str, ip: Ipv4Addr) -> LocalEndpoint {
        LocalEndpoint {
            id: id.into(),
            network: network.into(),
            ip,
            mac: MacAddr::from_ipv4(ip),
            netns: Some("/var/run/netns/x".into()),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn plan_derives_names_and_mtu() {
        let mut b = net("b", 200, 20);
        b.mtu = Some(1400);
        let d = DesiredState {
            networks: vec![net("a", 100, 10), b],
            local: vec![ep("e", "a", Ipv4Addr::new(10, 10, 0, 5))],
            remote: vec![],
        };
        let p = plan(&d, 1450).unwrap();
        assert_eq!(p[0].bridge, "spbr100");
        assert_eq!(p[0].vxlan, "spvx100");
        assert_eq!(p[0].mtu, 1450);
        assert_eq!(p[1].mtu, 1400);
    }

    #[test]
    fn plan_rejects_bad_states() {
        let bad =
            |d: DesiredState| assert!(matches!(plan(&d, 1450), Err(DatapathError::Invalid(_))));
        bad(DesiredState {
            networks: vec![net("a", 100, 10), net("a", 101, 11)],
            ..Default::default()
        });
        bad(DesiredState {
            networks: vec![net("a", 100, 10), net("b", 100, 11)],
            ..Default::default()
        });
        bad(DesiredState {
            networks: vec![net("a", 0, 10)],
            ..Default::default()
        });
        bad(DesiredState {
            networks: vec![net("a", 1 << 24, 10)],
            ..Default::default()
        });
        let mut g = net("a", 100, 10);
        g.gateway = Ipv4Addr::new(10, 99, 0, 1);
        bad(DesiredState {
            networks: vec![g],
            ..Default::default()
        });
        // Unknown network, address outside the subnet, the gateway's address.
        bad(DesiredState {
            networks: vec![net("a", 100, 10)],
            local: vec![ep("e", "zz", Ipv4Addr::new(10, 10, 0, 5))],
            ..Default::default()
        });
        bad(DesiredState {
            networks: vec![net("a", 100, 10)],
            local: vec![ep("e", "a", Ipv4Addr::new(10, 11, 0, 5))],
            ..Default::default()
        });
        bad(DesiredState {
            networks: vec![net("a", 100, 10)],
            local: vec![ep("e", "a", Ipv4Addr::new(10, 10, 0, 1))],
            ..Default::default()
        });
        // A remote endpoint may not claim the gateway MAC.
        bad(DesiredState {
            networks: vec![net("a", 100, 10)],
            remote: vec![RemoteEndpoint {
                id: "r".into(),
                network: "a".into(),
                ip: Ipv4Addr::new(10, 10, 0, 9),
                mac: MacAddr::GATEWAY,
                host: Ipv4Addr::new(198, 18, 0, 2),
            }],
            ..Default::default()
        });
    }
}
