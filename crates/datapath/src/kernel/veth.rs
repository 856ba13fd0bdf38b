//! Local endpoints as both datapaths build them: a veth pair whose
//! workload end is created directly inside the workload's namespace with
//! its final name, MAC and MTU, then addressed and routed from inside (see
//! [`WorkloadJob`]); with `netns: None` the workload end stays in the host
//! namespace for a runtime to move. What differs between the datapaths is
//! in [`Attach`]: whether the host end is enslaved to a bridge over netlink
//! (Linux) or plugged in by OVSDB (OVS), and whether TX checksum offload
//! must be off (the OVS userspace datapath).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use netlink_packet_route::route::{RouteMessage, RouteType};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tracing::{debug, warn};

use super::nl::{self, Link};
use super::{ethtool, netns, sysctl};
use crate::error::{DatapathError, Result};
use crate::names::VethNames;
use crate::plan::{EndpointConfig, NetPlan};
use crate::tally::Tally;
use crate::DesiredState;

/// How often a configured workload namespace is re-entered and verified.
pub const ENDPOINT_RECHECK: Duration = Duration::from_secs(300);

/// How a datapath attaches an endpoint's host end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attach {
    /// Bridge to enslave the host end to (`None`: someone else plugs it in).
    pub master: Option<u32>,
    /// Turn TX checksum offload off on the workload end.
    pub tx_csum_off: bool,
    /// The host end is not a bridge port, so the host's own stack sees its
    /// frames too: keep the host from answering the workload's ARP (for
    /// the gateway, say) there with the veth's MAC.
    pub no_host_arp: bool,
    /// The host is fenced (cut off from its cluster's majority): host ends
    /// stay down, so the workloads' addresses are off the wire while their
    /// interfaces and addresses stay as they are.
    pub fenced: bool,
}

/// What was configured for each endpoint and when it was last verified:
/// lets apply skip re-entering a workload namespace.
#[derive(Debug, Default)]
pub(crate) struct EndpointCache(HashMap<String, (EndpointConfig, Instant)>);

impl Attach {
    /// A port of Linux bridge `master`: the bridge takes its frames.
    pub(crate) fn bridge_port(master: u32) -> Attach {
        Attach {
            master: Some(master),
            tx_csum_off: false,
            no_host_arp: false,
            fenced: false,
        }
    }

    /// Plugged in by a switch of its own (Open vSwitch), so the host's
    /// stack sees its frames too; `tx_csum_off` for a userspace switch.
    pub(crate) fn switch_port(tx_csum_off: bool) -> Attach {
        Attach {
            master: None,
            tx_csum_off,
            no_host_arp: true,
            fenced: false,
        }
    }

    /// The same, with host ends down while `fenced`.
    pub(crate) fn fenced(self, fenced: bool) -> Attach {
        Attach { fenced, ..self }
    }
}

impl EndpointCache {
    fn fresh(&self, cfg: &EndpointConfig) -> bool {
        self.0
            .get(&cfg.ep.id)
            .is_some_and(|(c, t)| c == cfg && t.elapsed() < ENDPOINT_RECHECK)
    }

    /// Forgets endpoints that are no longer desired.
    pub(crate) fn retain_live(&mut self, desired: &DesiredState) {
        let live: HashSet<&str> = desired.local.iter().map(|e| e.id.as_str()).collect();
        self.0.retain(|id, _| live.contains(id.as_str()));
    }
}

/// The local endpoints of one datapath (its netlink socket and veth names).
pub(crate) struct Endpoints<'a> {
    handle: &'a Handle,
    names: VethNames,
}

impl<'a> Endpoints<'a> {
    pub(crate) fn new(handle: &'a Handle, names: VethNames) -> Self {
        Endpoints { handle, names }
    }

    /// Converges every local endpoint whose network `attach` knows (`None`:
    /// the network's devices are not there yet), into `tally`.
    pub(crate) async fn ensure_all(
        &self,
        (plans, desired): (&[NetPlan], &DesiredState),
        links: &HashMap<String, Link>,
        cache: &mut EndpointCache,
        tally: &mut Tally,
        attach: impl Fn(&NetPlan) -> Option<Attach>,
    ) {
        for e in &desired.local {
            let Some(p) = plans.iter().find(|p| p.spec.name == e.network) else {
                continue;
            };
            let Some(how) = attach(p) else {
                continue;
            };
            let cfg = EndpointConfig::new(e, p);
            match self.ensure(&cfg, how, links, cache).await {
                Ok(Some(k)) => {
                    tally.changes += k;
                    cache.0.insert(e.id.clone(), (cfg, Instant::now()));
                }
                Ok(None) => {}
                Err(err) => {
                    cache.0.remove(&e.id);
                    warn!(endpoint = %e.id, error = %err, "Endpoint not converged; the rest goes on.");
                    tally.check(Err(DatapathError::EndpointFailed {
                        id: e.id.clone(),
                        source: Box::new(err),
                    }));
                }
            }
        }
    }

    /// Converges one endpoint; returns writes, or `None` when the cache
    /// showed it configured and nothing was checked.
    async fn ensure(
        &self,
        cfg: &EndpointConfig,
        how: Attach,
        links: &HashMap<String, Link>,
        cache: &EndpointCache,
    ) -> Result<Option<usize>> {
        let e = &cfg.ep;
        let host = self.names.host(&e.id);
        let l = match links.get(&host) {
            Some(l) if l.is_kind(InfoKind::Veth) => l,
            other => {
                let mut changes = 0;
                if let Some(l) = other {
                    nl::del_link(self.handle, l.index, &l.name).await?;
                    changes += 1;
                }
                return Ok(Some(changes + self.create(cfg, how).await?));
            }
        };
        let host_ok = l.up != how.fenced
            && l.mtu == cfg.mtu
            && how.master.is_none_or(|m| l.master == Some(m));
        if host_ok && cache.fresh(cfg) {
            return Ok(None);
        }
        let mut changes = 0;
        if !host_ok {
            let mut msg = LinkUnspec::new_with_index(l.index).mtu(cfg.mtu);
            if let Some(m) = how.master {
                msg = msg.controller(m);
            }
            let msg = if how.fenced { msg.down() } else { msg.up() };
            nl::change_link(self.handle, msg.build(), &host).await?;
            changes += 1;
        }
        if how.no_host_arp {
            changes += sysctl::ensure_no_arp_replies(&host)?;
        }
        match self.configure(cfg, how, links).await? {
            Some(n) => changes += n,
            None => {
                // The workload end is not where it should be: start over
                // with a fresh pair.
                warn!(endpoint = %e.id, "Workload interface missing; recreating the veth pair.");
                nl::del_link(self.handle, l.index, &host).await?;
                changes += 1 + self.create(cfg, how).await?;
            }
        }
        Ok(Some(changes))
    }

    /// Creates the pair and configures the workload end; returns writes.
    async fn create(&self, cfg: &EndpointConfig, how: Attach) -> Result<usize> {
        let e = &cfg.ep;
        let host = self.names.host(&e.id);
        let ns_file = match &e.netns {
            Some(path) => Some(netns::open(path, e.netns_id)?),
            None => None,
        };
        let peer_name = match &e.netns {
            Some(_) => e.ifname.clone(),
            None => self.names.peer(&e.id),
        };
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name)
            .mtu(cfg.mtu)
            .address(e.mac.0.to_vec());
        if let Some(f) = &ns_file {
            peer = peer.setns_by_fd(f.as_raw_fd());
        }
        let mut msg = LinkVeth::new(&host, "unused").mtu(cfg.mtu);
        if let Some(m) = how.master {
            msg = msg.controller(m);
        }
        let msg = if how.fenced { msg } else { msg.up() };
        let msg = msg
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        let r = nl::create_link(self.handle, msg, &format!("veth {host}")).await;
        drop(ns_file);
        r?;
        let mut changes = 1;
        if how.no_host_arp {
            changes += sysctl::ensure_no_arp_replies(&host)?;
        }
        // The peer was just made right: nothing to compare it with.
        match self.configure(cfg, how, &HashMap::new()).await? {
            Some(n) => Ok(changes + n),
            None => Err(DatapathError::DeviceMissing {
                device: e.ifname.clone(),
                why: "vanished from the workload namespace after creation",
            }),
        }
    }

    /// Configures the workload end: inside its namespace, or the unmoved
    /// peer in `links`. Returns writes, or `None` when the workload end is
    /// missing from its namespace.
    async fn configure(
        &self,
        cfg: &EndpointConfig,
        how: Attach,
        links: &HashMap<String, Link>,
    ) -> Result<Option<usize>> {
        let e = &cfg.ep;
        if let Some(path) = &e.netns {
            let job = WorkloadJob::from(cfg);
            return netns::run_in(path, e.netns_id, move |h| async move {
                let ifname = job.ifname.clone();
                let Some(n) = job.run(h).await? else {
                    return Ok(None);
                };
                let off = how.tx_csum_off && ethtool::tx_csum_off(&ifname)?;
                Ok(Some(n + usize::from(off)))
            })
            .await;
        }
        let peer = self.names.peer(&e.id);
        let mut changes = 0;
        if let Some(pl) = links.get(&peer) {
            if pl.mac != e.mac.0 || pl.mtu != cfg.mtu {
                let msg = LinkUnspec::new_with_index(pl.index)
                    .mtu(cfg.mtu)
                    .address(e.mac.0.to_vec())
                    .build();
                nl::change_link(self.handle, msg, &peer).await?;
                changes += 1;
            }
        }
        if how.tx_csum_off && ethtool::tx_csum_off(&peer)? {
            changes += 1;
        }
        Ok(Some(changes))
    }

    /// Deletes our veths that no desired endpoint uses; returns writes.
    pub(crate) async fn remove_stale(
        &self,
        links: &HashMap<String, Link>,
        desired: &DesiredState,
    ) -> Result<usize> {
        let mut want = HashSet::new();
        for e in &desired.local {
            want.insert(self.names.host(&e.id));
            if e.netns.is_none() {
                want.insert(self.names.peer(&e.id));
            }
        }
        let mut stale: Vec<&Link> = links
            .values()
            .filter(|l| {
                l.is_kind(InfoKind::Veth) && self.names.is_ours(&l.name) && !want.contains(&l.name)
            })
            .collect();
        stale.sort_by(|a, b| a.name.cmp(&b.name));
        let mut tally = Tally::default();
        // Deleting one end removes its peer too.
        let mut gone = HashSet::new();
        for l in stale {
            if gone.contains(&l.name) {
                continue;
            }
            debug!(link = %l.name, "Removing stale veth.");
            let deleted = nl::del_link(self.handle, l.index, &l.name).await;
            if tally.add(deleted.map(|()| 1)) > 0 {
                gone.extend(self.names.other_end(&l.name));
            }
        }
        tally.finish()
    }
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
                nl::change_link(&h, msg, "lo").await?;
                changes += 1;
            }
        }
        if l.mac != self.mac || l.mtu != self.mtu || !l.up {
            let msg = LinkUnspec::new_with_index(l.index)
                .address(self.mac.to_vec())
                .mtu(self.mtu)
                .up()
                .build();
            nl::change_link(&h, msg, &self.ifname).await?;
            changes += 1;
        }
        let addrs = nl::addrs_v4(&h).await?;
        let dev = (l.index, self.ifname.as_str());
        changes += nl::ensure_sole_address(&h, &addrs, dev, (self.ip, self.prefix)).await?;
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
