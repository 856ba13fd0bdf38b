//! Routed networks: which remote endpoints are reached by plain IP routes
//! and which through VXLAN, and the routes themselves.
//!
//! A remote endpoint of a routed network is routed when its host is on this
//! host's underlay subnet (one L2 segment, so its underlay address is a
//! next hop) and its datapath routes too ([`DesiredState::routers`]);
//! everything else keeps the overlay's FDB and neighbour entries. The
//! routes, in the main table via the host's underlay address, are one per
//! address block the host holds ([`DesiredState::blocks`]) and a /32 per
//! endpoint outside its host's blocks (a fixed address, one left from a
//! reclaimed block; every endpoint when no blocks are known), each
//! tagged with our own protocol number ([`RTPROT_SOCKETPLANE`]): we own,
//! compare and prune exactly the routes with that tag, nothing else.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;

use crate::error::{Errno, Result};
use crate::kernel::nl;
use crate::plan::NetPlan;
use crate::tally::Tally;
use crate::{DesiredState, NetworkMode, RemoteEndpoint};

/// The routing protocol number of our routes (`ip route show proto 83`);
/// unassigned in iproute2's `rt_protos`.
pub const RTPROT_SOCKETPLANE: u8 = 83;

/// Where a remote endpoint's traffic goes.
#[derive(Debug, Default)]
pub(crate) struct Split<'a> {
    /// Our routes: a routed host's block, or a /32 for a routed endpoint
    /// outside its host's blocks → the host.
    pub routes: BTreeMap<Ipv4Net, Ipv4Addr>,
    /// Per routed network (its bridge), the addresses whose packets arrive
    /// routed on the underlay: the only sources accepted from there.
    pub sources: BTreeMap<&'a str, Vec<Ipv4Addr>>,
    /// The remote endpoints reached through VXLAN.
    pub tunnelled: Vec<&'a RemoteEndpoint>,
}

/// A block of a routed host, by its first address: (block, host, whether
/// it may be routed as a whole).
type Blocks = BTreeMap<Ipv4Addr, (Ipv4Net, Ipv4Addr, bool)>;

/// The block of `blocks` holding `ip` (blocks do not overlap: planned).
fn block_of(blocks: &mut Blocks, ip: Ipv4Addr) -> Option<&mut (Ipv4Net, Ipv4Addr, bool)> {
    blocks
        .range_mut(..=ip)
        .next_back()
        .map(|(_, b)| b)
        .filter(|b| b.0.contains(&ip))
}

/// Splits the remote endpoints of `desired` into routed and tunnelled ones,
/// for this host at `own` on underlay subnet `segment`, and makes the
/// routes: one per block of a routed host (strictly inside its network's
/// subnet), and a /32 for each routed endpoint outside its host's blocks.
/// A block holding an address reached otherwise (a local endpoint, a
/// tunnelled one) is not routed as a whole: its host's endpoints get
/// /32s. This host's own blocks never get a route.
pub(crate) fn split<'a>(
    plans: &'a [NetPlan],
    desired: &'a DesiredState,
    own: Ipv4Addr,
    segment: Option<Ipv4Net>,
) -> Split<'a> {
    let mut s = Split::default();
    let routes_to = |host: Ipv4Addr| {
        host != own
            && segment.is_some_and(|net| net.contains(&host))
            && desired.routers.contains(&host)
    };
    let routed_net = |name: &str| -> Option<&'a NetPlan> {
        plans
            .iter()
            .find(|p| p.spec.name == name && p.spec.mode == NetworkMode::Routed)
    };
    // Per routed network (by name), the blocks of the hosts routed to.
    let mut blocks: BTreeMap<&str, Blocks> = BTreeMap::new();
    for b in &desired.blocks {
        let Some(p) = routed_net(&b.network) else {
            continue;
        };
        if routes_to(b.host) && b.block.prefix_len() > p.spec.subnet.prefix_len() {
            let per = blocks.entry(p.spec.name.as_str()).or_default();
            per.insert(b.block.network(), (b.block, b.host, true));
        }
    }
    let mut routed: Vec<&RemoteEndpoint> = Vec::new();
    for r in &desired.remote {
        match routed_net(&r.network).filter(|_| routes_to(r.host)) {
            Some(p) => {
                s.sources.entry(p.bridge.as_str()).or_default().push(r.ip);
                routed.push(r);
            }
            None => {
                if let Some(b) = blocks
                    .get_mut(r.network.as_str())
                    .and_then(|per| block_of(per, r.ip))
                {
                    b.2 = false;
                }
                s.tunnelled.push(r);
            }
        }
    }
    for e in &desired.local {
        if let Some(b) = blocks
            .get_mut(e.network.as_str())
            .and_then(|per| block_of(per, e.ip))
        {
            b.2 = false;
        }
    }
    for r in routed {
        let covered = blocks
            .get_mut(r.network.as_str())
            .and_then(|per| block_of(per, r.ip))
            .is_some_and(|b| b.2 && b.1 == r.host);
        if !covered {
            s.routes.insert(Ipv4Net::from(r.ip), r.host);
        }
    }
    for (block, host, whole) in blocks.values().flat_map(|per| per.values()) {
        if *whole {
            s.routes.insert(*block, *host);
        }
    }
    s
}

fn route_msg(dst: Ipv4Net, via: Ipv4Addr, oif: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(RTPROT_SOCKETPLANE);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(
            dst.network(),
        )));
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

fn destination(r: &RouteMessage) -> Option<Ipv4Net> {
    let addr = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v)) => Some(*v),
        _ => None,
    })?;
    Ipv4Net::new(addr, r.header.destination_prefix_length).ok()
}

/// Makes our routes exactly `want` (block or endpoint address → host, out of
/// `oif`): adds what is missing or different, deletes ours that are not
/// wanted; returns writes. With `last` (what an earlier call made of
/// them, out of the same `oif`, trusted) it writes only the differences
/// to it, without a dump; without, it dumps our routes and compares: an
/// unchanged state costs one dump, no write.
pub(crate) async fn ensure(
    handle: &Handle,
    want: &BTreeMap<Ipv4Net, Ipv4Addr>,
    oif: u32,
    last: Option<&BTreeMap<Ipv4Net, Ipv4Addr>>,
) -> Result<usize> {
    if let Some(last) = last {
        return ensure_from(handle, want, oif, last).await;
    }
    let routes = nl::routes_v4(handle).await?;
    let mut tally = Tally::default();
    let mut have = BTreeMap::new();
    for r in routes.iter().filter(|r| {
        u8::from(r.header.protocol) == RTPROT_SOCKETPLANE
            && nl::route_table(r) == u32::from(RouteHeader::RT_TABLE_MAIN)
    }) {
        let (via, out) = nl::route_gw_oif(r);
        let dst = destination(r);
        let wanted = match (dst, via) {
            (Some(d), Some(v)) => want.get(&d) == Some(&v) && out == Some(oif),
            _ => false,
        };
        if wanted {
            if let Some(d) = dst {
                have.insert(d, ());
            }
            continue;
        }
        let deleted = nl::ack_unless(
            handle,
            RouteNetlinkMessage::DelRoute(r.clone()),
            Errno::ESRCH,
            || format!("delete route {dst:?} via {via:?}"),
        )
        .await;
        tally.add(deleted.map(|()| 1));
    }
    for (dst, via) in want.iter().filter(|(d, _)| !have.contains_key(*d)) {
        let added = nl::ack(
            handle,
            RouteNetlinkMessage::NewRoute(route_msg(*dst, *via, oif)),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("route {dst} via {via}"),
        )
        .await;
        tally.add(added.map(|()| 1));
    }
    tally.finish()
}

/// [`ensure`] from `last`, the routes known to be in place.
async fn ensure_from(
    handle: &Handle,
    want: &BTreeMap<Ipv4Net, Ipv4Addr>,
    oif: u32,
    last: &BTreeMap<Ipv4Net, Ipv4Addr>,
) -> Result<usize> {
    let mut tally = Tally::default();
    for (dst, via) in last.iter().filter(|(d, _)| !want.contains_key(*d)) {
        let deleted = nl::ack_unless(
            handle,
            RouteNetlinkMessage::DelRoute(route_msg(*dst, *via, oif)),
            Errno::ESRCH,
            || format!("delete route {dst} via {via}"),
        )
        .await;
        tally.add(deleted.map(|()| 1));
    }
    for (dst, via) in want.iter().filter(|(d, v)| last.get(*d) != Some(*v)) {
        let added = nl::ack(
            handle,
            RouteNetlinkMessage::NewRoute(route_msg(*dst, *via, oif)),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("route {dst} via {via}"),
        )
        .await;
        tally.add(added.map(|()| 1));
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MacAddr, NetworkSpec};

    fn plan(name: &str, vni: u32, mode: NetworkMode) -> NetPlan {
        NetPlan {
            spec: NetworkSpec {
                name: name.into(),
                vni,
                subnet: format!("10.{}.0.0/24", vni / 10).parse().unwrap(),
                gateway: Ipv4Addr::new(10, (vni / 10) as u8, 0, 1),
                mtu: None,
                mode,
            },
            bridge: crate::names::bridge(vni),
            vxlan: crate::names::vxlan(vni),
            mtu: 1450,
        }
    }

    fn remote(net: &str, ip: [u8; 4], host: [u8; 4]) -> RemoteEndpoint {
        let ip = Ipv4Addr::from(ip);
        RemoteEndpoint {
            id: format!("r{ip}"),
            network: net.into(),
            ip,
            mac: MacAddr::from_ipv4(ip),
            host: Ipv4Addr::from(host),
        }
    }

    #[test]
    fn only_routed_networks_to_routing_hosts_on_the_segment_are_routed() {
        let plans = [
            plan("r", 100, NetworkMode::Routed),
            plan("o", 200, NetworkMode::Overlay),
        ];
        let near = [198, 18, 0, 2];
        let far = [198, 18, 1, 2];
        let ovs = [198, 18, 0, 3];
        let d = DesiredState {
            remote: vec![
                remote("r", [10, 10, 0, 2], near),
                remote("r", [10, 10, 0, 3], far),
                remote("r", [10, 10, 0, 4], ovs),
                remote("o", [10, 20, 0, 2], near),
            ],
            routers: vec![near.into(), far.into()],
            ..Default::default()
        };
        let own = Ipv4Addr::new(198, 18, 0, 1);
        let s = split(&plans, &d, own, Some("198.18.0.0/24".parse().unwrap()));
        assert_eq!(
            s.routes.into_iter().collect::<Vec<_>>(),
            vec![(
                Ipv4Net::from(Ipv4Addr::new(10, 10, 0, 2)),
                Ipv4Addr::from(near)
            )]
        );
        assert_eq!(
            s.sources.get("spbr100"),
            Some(&vec![Ipv4Addr::new(10, 10, 0, 2)])
        );
        let tunnelled: Vec<Ipv4Addr> = s.tunnelled.iter().map(|r| r.ip).collect();
        assert_eq!(
            tunnelled,
            [[10, 10, 0, 3], [10, 10, 0, 4], [10, 20, 0, 2]].map(Ipv4Addr::from)
        );
        // Without a known segment everything is tunnelled.
        let s = split(&plans, &d, own, None);
        assert!(s.routes.is_empty());
        assert_eq!(s.tunnelled.len(), 4);
    }

    /// One route per block of a routed host, /32s only outside its blocks;
    /// no route for this host's own blocks, none via a tunnelled host, and
    /// a block holding an address reached otherwise is not routed whole.
    #[test]
    fn blocks_of_routed_hosts_get_one_route_and_exceptions_a_32() {
        let plans = [plan("r", 100, NetworkMode::Routed)];
        let (own, b, c, far) = (
            [198, 18, 0, 1],
            [198, 18, 0, 2],
            [198, 18, 0, 3],
            [198, 18, 1, 2],
        );
        let block = |net: &str, host: [u8; 4]| crate::HostBlock {
            network: "r".into(),
            block: net.parse().unwrap(),
            host: host.into(),
        };
        let mut local = remote("r", [10, 10, 0, 10], own);
        local.id = "l".into();
        let d = DesiredState {
            local: vec![crate::LocalEndpoint {
                id: "l".into(),
                network: "r".into(),
                ip: local.ip,
                mac: local.mac,
                netns: None,
                netns_id: None,
                ifname: "eth0".into(),
            }],
            remote: vec![
                // Covered by b's block: no /32.
                remote("r", [10, 10, 0, 66], b),
                // b's fixed address outside its blocks: a /32.
                remote("r", [10, 10, 0, 200], b),
                // c's endpoint inside b's block: a /32 via c.
                remote("r", [10, 10, 0, 70], c),
                // c's block holds a tunnelled endpoint: not routed whole.
                remote("r", [10, 10, 0, 130], c),
                remote("r", [10, 10, 0, 140], far),
            ],
            routers: vec![b.into(), c.into(), far.into()],
            blocks: vec![
                block("10.10.0.0/26", own),
                block("10.10.0.64/26", b),
                block("10.10.0.128/26", c),
                block("10.10.0.192/27", far),
            ],
            ..Default::default()
        };
        let s = split(
            &plans,
            &d,
            own.into(),
            Some("198.18.0.0/24".parse().unwrap()),
        );
        let got: Vec<(String, Ipv4Addr)> =
            s.routes.iter().map(|(n, h)| (n.to_string(), *h)).collect();
        let want: Vec<(String, Ipv4Addr)> = [
            ("10.10.0.64/26", b),
            ("10.10.0.70/32", c),
            ("10.10.0.130/32", c),
            ("10.10.0.200/32", b),
        ]
        .iter()
        .map(|(n, h)| (n.to_string(), Ipv4Addr::from(*h)))
        .collect();
        assert_eq!(got, want);
        // Every routed endpoint is an accepted source, covered or not.
        assert_eq!(s.sources.get("spbr100").map(Vec::len), Some(4));
        assert_eq!(s.tunnelled.len(), 1);
        // A local endpoint inside b's block: b's endpoints get /32s.
        let mut d2 = d.clone();
        d2.local[0].ip = Ipv4Addr::new(10, 10, 0, 80);
        let s = split(
            &plans,
            &d2,
            own.into(),
            Some("198.18.0.0/24".parse().unwrap()),
        );
        assert!(!s.routes.contains_key(&"10.10.0.64/26".parse().unwrap()));
        assert_eq!(
            s.routes.get(&"10.10.0.66/32".parse().unwrap()),
            Some(&Ipv4Addr::from(b))
        );
        // A block as large as the subnet is never routed whole (it would
        // replace the bridge's own route).
        let mut d3 = d.clone();
        d3.blocks = vec![block("10.10.0.0/24", b)];
        let s = split(
            &plans,
            &d3,
            own.into(),
            Some("198.18.0.0/24".parse().unwrap()),
        );
        assert!(
            s.routes.keys().all(|n| n.prefix_len() == 32),
            "{:?}",
            s.routes
        );
    }
}
