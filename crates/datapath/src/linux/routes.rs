//! Routed networks: which remote endpoints are reached by plain IP routes
//! and which through VXLAN, and the routes themselves.
//!
//! A remote endpoint of a routed network is routed when its host is on this
//! host's underlay subnet (one L2 segment, so its underlay address is a
//! next hop) and its datapath routes too ([`DesiredState::routers`]);
//! everything else keeps the overlay's FDB and neighbour entries. The
//! routes are /32s in the main table via the host's underlay address, each
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
    /// Remote endpoints reached by a route: endpoint address → its host.
    pub routes: BTreeMap<Ipv4Addr, Ipv4Addr>,
    /// Per routed network (its bridge), the addresses whose packets arrive
    /// routed on the underlay: the only sources accepted from there.
    pub sources: BTreeMap<&'a str, Vec<Ipv4Addr>>,
    /// The remote endpoints reached through VXLAN.
    pub tunnelled: Vec<&'a RemoteEndpoint>,
}

/// Splits the remote endpoints of `desired` into routed and tunnelled ones,
/// for this host at `own` on underlay subnet `segment`.
pub(crate) fn split<'a>(
    plans: &'a [NetPlan],
    desired: &'a DesiredState,
    own: Ipv4Addr,
    segment: Option<Ipv4Net>,
) -> Split<'a> {
    let mut s = Split::default();
    let routed = |r: &RemoteEndpoint| -> Option<&'a NetPlan> {
        let p = plans.iter().find(|p| p.spec.name == r.network)?;
        (p.spec.mode == NetworkMode::Routed
            && r.host != own
            && segment.is_some_and(|net| net.contains(&r.host))
            && desired.routers.contains(&r.host))
        .then_some(p)
    };
    for r in &desired.remote {
        match routed(r) {
            Some(p) => {
                s.routes.insert(r.ip, r.host);
                s.sources.entry(p.bridge.as_str()).or_default().push(r.ip);
            }
            None => s.tunnelled.push(r),
        }
    }
    s
}

fn route_msg(dst: Ipv4Addr, via: Ipv4Addr, oif: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 32;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(RTPROT_SOCKETPLANE);
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(via)));
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

fn destination(r: &RouteMessage) -> Option<Ipv4Addr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v)) => Some(*v),
        _ => None,
    })
}

/// Makes our routes exactly `want` (endpoint address → host, out of
/// `oif`): adds what is missing or different, deletes ours that are not
/// wanted; returns writes. With `last` (what an earlier call made of
/// them, out of the same `oif`, trusted) it writes only the differences
/// to it, without a dump; without, it dumps our routes and compares: an
/// unchanged state costs one dump, no write.
pub(crate) async fn ensure(
    handle: &Handle,
    want: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    oif: u32,
    last: Option<&BTreeMap<Ipv4Addr, Ipv4Addr>>,
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
            (Some(d), Some(v)) if r.header.destination_prefix_length == 32 => {
                want.get(&d) == Some(&v) && out == Some(oif)
            }
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
            || format!("route {dst}/32 via {via}"),
        )
        .await;
        tally.add(added.map(|()| 1));
    }
    tally.finish()
}

/// [`ensure`] from `last`, the routes known to be in place.
async fn ensure_from(
    handle: &Handle,
    want: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    oif: u32,
    last: &BTreeMap<Ipv4Addr, Ipv4Addr>,
) -> Result<usize> {
    let mut tally = Tally::default();
    for (dst, via) in last.iter().filter(|(d, _)| !want.contains_key(*d)) {
        let deleted = nl::ack_unless(
            handle,
            RouteNetlinkMessage::DelRoute(route_msg(*dst, *via, oif)),
            Errno::ESRCH,
            || format!("delete route {dst}/32 via {via}"),
        )
        .await;
        tally.add(deleted.map(|()| 1));
    }
    for (dst, via) in want.iter().filter(|(d, v)| last.get(*d) != Some(*v)) {
        let added = nl::ack(
            handle,
            RouteNetlinkMessage::NewRoute(route_msg(*dst, *via, oif)),
            NLM_F_CREATE | NLM_F_REPLACE,
            || format!("route {dst}/32 via {via}"),
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
            vec![(Ipv4Addr::new(10, 10, 0, 2), Ipv4Addr::from(near))]
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
}
