//! Validation of a [`DesiredState`] before anything touches the host, and
//! what both datapaths derive from it: device names, MTUs and the per-endpoint
//! configuration.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::{
    names, DatapathError, DesiredState, HostBlock, LocalEndpoint, MacAddr, NetworkSpec, Result,
};

/// One validated network with everything derived from it.
#[derive(Debug, Clone)]
pub(crate) struct NetPlan {
    pub(crate) spec: NetworkSpec,
    /// The gateway device (Linux bridge, OVS gateway port).
    pub(crate) bridge: String,
    /// The VXLAN device (Linux only).
    pub(crate) vxlan: String,
    pub(crate) mtu: u32,
}

impl NetPlan {
    /// The gateway address and the subnet's prefix length.
    pub(crate) fn gateway_cidr(&self) -> (Ipv4Addr, u8) {
        (self.spec.gateway, self.spec.subnet.prefix_len())
    }
}

/// What is configured for a local endpoint; also what the endpoint cache
/// compares, so a changed spec is re-applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointConfig {
    pub(crate) ep: LocalEndpoint,
    pub(crate) mtu: u32,
    pub(crate) gateway: Ipv4Addr,
    pub(crate) prefix: u8,
}

impl EndpointConfig {
    pub(crate) fn new(ep: &LocalEndpoint, net: &NetPlan) -> Self {
        EndpointConfig {
            ep: ep.clone(),
            mtu: net.mtu,
            gateway: net.spec.gateway,
            prefix: net.spec.subnet.prefix_len(),
        }
    }
}

/// The underlay addresses of the cluster's members: the peers, the hosts of
/// remote endpoints and this host (`own`); only unicast addresses.
pub(crate) fn members(desired: &DesiredState, own: Ipv4Addr) -> Vec<Ipv4Addr> {
    // Sorted as it grows: there are far fewer hosts than endpoints, so a
    // lookup per endpoint is cheaper than sorting every endpoint's host.
    let mut v: Vec<Ipv4Addr> = Vec::new();
    let all = desired.peers.iter().copied();
    let all = all.chain(desired.remote.iter().map(|r| r.host));
    for a in all.chain(std::iter::once(own)) {
        if let Err(i) = v.binary_search(&a) {
            if is_unicast_host(a) {
                v.insert(i, a);
            }
        }
    }
    v
}

/// An address a host can have on the underlay.
pub(crate) fn is_unicast_host(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
}

fn invalid(msg: impl Into<String>) -> DatapathError {
    DatapathError::invalid(msg)
}

/// A validated desired state: the networks with what derives from them,
/// the records fit to plumb, and one error per record refused.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) nets: Vec<NetPlan>,
    /// `desired` without the refused records.
    pub(crate) desired: DesiredState,
    /// [`DatapathError::EndpointRejected`], one per refused record.
    pub(crate) rejected: Vec<DatapathError>,
}

/// Validates `desired` before anything touches the kernel, deriving device
/// names and MTUs. A bad network refuses the whole state; a bad endpoint
/// record (local or remote) is refused alone and the rest is planned.
/// Nothing from the store is trusted: a local endpoint's namespace must be
/// a network namespace that is not the host's own — `unfit_netns` says why
/// one is not (the backends pass `kernel::netns::unfit_workload_ns`, run on
/// the datapath's thread in the host's namespace; unit tests, which have no
/// namespaces, pass their own). Taking it as an argument keeps this module
/// free of kernel calls, so `kernel` may depend on `plan` and not back.
pub(crate) fn plan(
    desired: &DesiredState,
    default_mtu: u32,
    unfit_netns: impl Fn(&std::path::Path, Option<socketplane_api::NetnsId>) -> Option<String>,
) -> Result<Plan> {
    let nets = plan_networks(desired, default_mtu)?;
    let mut rejected = Vec::new();
    let mut reject = |id: &str, why: String| {
        rejected.push(DatapathError::EndpointRejected {
            id: id.to_string(),
            why,
        })
    };
    let mut ids = HashSet::new();
    let mut ips = HashSet::new();
    let mut local = Vec::new();
    for e in &desired.local {
        let why = if !ids.insert(e.id.as_str()) {
            Some("listed twice".to_string())
        } else {
            match nets.iter().find(|p| p.spec.name == e.network) {
                None => Some(format!("unknown network {}", e.network)),
                Some(net) => unfit_address(&net.spec, e.ip, e.mac)
                    .or_else(|| (!ips.insert(e.ip)).then(|| format!("{} used twice", e.ip)))
                    .or_else(|| match &e.netns {
                        Some(ns) => bad_ifname(&e.ifname).or_else(|| unfit_netns(ns, e.netns_id)),
                        None => None,
                    }),
            }
        };
        match why {
            Some(why) => reject(&e.id, why),
            None => local.push(e.clone()),
        }
    }
    let mut remote = Vec::new();
    for r in &desired.remote {
        let why = match nets.iter().find(|p| p.spec.name == r.network) {
            None => Some(format!("unknown network {}", r.network)),
            Some(net) => unfit_address(&net.spec, r.ip, r.mac).or_else(|| {
                (!is_unicast_host(r.host)).then(|| format!("host {} is no unicast address", r.host))
            }),
        };
        match why {
            Some(why) => reject(&r.id, format!("remote: {why}")),
            None => remote.push(r.clone()),
        }
    }
    // Blocks: inside their network's subnet, held by a unicast host, and
    // not overlapping another block of the network.
    let mut blocks: Vec<HostBlock> = Vec::new();
    for b in &desired.blocks {
        let why = match nets.iter().find(|p| p.spec.name == b.network) {
            None => Some(format!("unknown network {}", b.network)),
            Some(net) if !net.spec.subnet.contains(&b.block) => {
                Some(format!("{} is not inside {}", b.block, net.spec.subnet))
            }
            Some(_) if !is_unicast_host(b.host) => {
                Some(format!("host {} is no unicast address", b.host))
            }
            Some(_) => blocks
                .iter()
                .find(|o| {
                    o.network == b.network
                        && (o.block.contains(&b.block) || b.block.contains(&o.block))
                })
                .map(|o| format!("overlaps {} of host {}", o.block, o.host)),
        };
        match why {
            Some(why) => reject(&format!("block {} {}", b.network, b.block), why),
            None => blocks.push(b.clone()),
        }
    }
    let desired = DesiredState {
        networks: desired.networks.clone(),
        local,
        remote,
        peers: desired.peers.clone(),
        routers: desired.routers.clone(),
        blocks,
    };
    Ok(Plan {
        nets,
        desired,
        rejected,
    })
}

/// Why an endpoint may not have `ip` and `mac` on `net`: the address must be
/// a host address of the subnet other than the gateway, the MAC a unicast
/// MAC other than the gateway's.
fn unfit_address(net: &NetworkSpec, ip: Ipv4Addr, mac: MacAddr) -> Option<String> {
    let s = net.subnet;
    let host_addr = s.contains(&ip)
        && (s.prefix_len() >= 31 || (ip != s.network() && ip != s.broadcast()))
        && ip != net.gateway;
    if !host_addr {
        return Some(format!("{ip} is not a usable address of {s}"));
    }
    if mac == MacAddr::GATEWAY || mac.0[0] & 1 == 1 || mac.0 == [0; 6] {
        return Some(format!("MAC {mac} not allowed"));
    }
    None
}

/// Why `name` is no valid interface name (the kernel's `dev_valid_name`).
fn bad_ifname(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    (!ok).then(|| format!("bad ifname {name:?}"))
}

fn plan_networks(desired: &DesiredState, default_mtu: u32) -> Result<Vec<NetPlan>> {
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
    Ok(plans)
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
            mode: Default::default(),
        }
    }

    fn ep(id: &str, network: &str, ip: Ipv4Addr) -> LocalEndpoint {
        LocalEndpoint {
            id: id.into(),
            network: network.into(),
            ip,
            mac: MacAddr::from_ipv4(ip),
            netns: Some("/var/run/netns/x".into()),
            netns_id: None,
            ifname: "eth0".into(),
        }
    }

    fn fit(_: &std::path::Path, _: Option<socketplane_api::NetnsId>) -> Option<String> {
        None
    }

    #[test]
    fn plan_derives_names_and_mtu() {
        let mut b = net("b", 200, 20);
        b.mtu = Some(1400);
        let d = DesiredState {
            networks: vec![net("a", 100, 10), b],
            local: vec![ep("e", "a", Ipv4Addr::new(10, 10, 0, 5))],
            remote: vec![],
            ..Default::default()
        };
        let p = plan(&d, 1450, fit).unwrap();
        assert!(p.rejected.is_empty());
        assert_eq!(p.desired, d);
        let p = p.nets;
        assert_eq!(p[0].bridge, "spbr100");
        assert_eq!(p[0].vxlan, "spvx100");
        assert_eq!(p[0].mtu, 1450);
        assert_eq!(p[1].mtu, 1400);
    }

    #[test]
    fn plan_rejects_bad_states() {
        let bad = |d: DesiredState| {
            assert!(matches!(
                plan(&d, 1450, fit),
                Err(DatapathError::Invalid(_))
            ))
        };
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
    }

    /// Each bad record is refused alone, with its id; the good one stays.
    #[test]
    fn bad_records_are_rejected_alone() {
        let good = ep("good", "a", Ipv4Addr::new(10, 10, 0, 5));
        let with = |f: &dyn Fn(&mut LocalEndpoint)| {
            let mut e = ep("bad", "a", Ipv4Addr::new(10, 10, 0, 6));
            f(&mut e);
            e
        };
        let gw_mac = MacAddr::GATEWAY;
        let bad_locals = [
            with(&|e| e.network = "zz".into()),
            with(&|e| e.ip = Ipv4Addr::new(10, 11, 0, 5)),
            with(&|e| e.ip = Ipv4Addr::new(10, 10, 0, 1)),
            with(&|e| e.ip = Ipv4Addr::new(10, 10, 0, 0)),
            with(&|e| e.ip = Ipv4Addr::new(10, 10, 0, 255)),
            with(&|e| e.ip = Ipv4Addr::new(10, 10, 0, 5)),
            with(&|e| e.mac = gw_mac),
            with(&|e| e.mac = MacAddr([1, 0, 0, 0, 0, 1])),
            with(&|e| e.ifname = "".into()),
            with(&|e| e.ifname = "a/b".into()),
            with(&|e| e.ifname = "0123456789abcdef".into()),
            with(&|e| e.ifname = "..".into()),
            with(&|e| e.netns = Some("/host".into())),
            with(&|e| e.id = "good".into()),
        ];
        for b in bad_locals {
            let d = DesiredState {
                networks: vec![net("a", 100, 10)],
                local: vec![good.clone(), b.clone()],
                ..Default::default()
            };
            let host =
                |p: &std::path::Path, _| (p == std::path::Path::new("/host")).then(String::new);
            let p = plan(&d, 1450, host).unwrap();
            assert_eq!(p.desired.local, vec![good.clone()], "{b:?}");
            assert!(
                matches!(&p.rejected[..], [DatapathError::EndpointRejected { .. }]),
                "{b:?}: {:?}",
                p.rejected
            );
            let msg = p.rejected[0].to_string();
            assert!(msg.contains("endpoint "), "{msg}");
        }
        let remote = |mac: MacAddr, host: Ipv4Addr| RemoteEndpoint {
            id: "r".into(),
            network: "a".into(),
            ip: Ipv4Addr::new(10, 10, 0, 9),
            mac,
            host,
        };
        let ok_host = Ipv4Addr::new(198, 18, 0, 2);
        for r in [
            remote(MacAddr::GATEWAY, ok_host),
            remote(MacAddr::from_ipv4(ok_host), Ipv4Addr::UNSPECIFIED),
        ] {
            let d = DesiredState {
                networks: vec![net("a", 100, 10)],
                local: vec![good.clone()],
                remote: vec![r],
                ..Default::default()
            };
            let p = plan(&d, 1450, fit).unwrap();
            assert!(p.desired.remote.is_empty());
            assert_eq!(p.desired.local.len(), 1);
            assert_eq!(p.rejected.len(), 1);
        }
    }

    /// A block outside its network's subnet, of an unknown network, of no
    /// unicast host or overlapping an earlier one is refused alone.
    #[test]
    fn bad_blocks_are_rejected_alone() {
        let block = |network: &str, b: &str, host: [u8; 4]| HostBlock {
            network: network.into(),
            block: b.parse().unwrap(),
            host: host.into(),
        };
        let good = block("a", "10.10.0.64/26", [198, 18, 0, 2]);
        for bad in [
            block("a", "10.11.0.0/26", [198, 18, 0, 2]),
            block("a", "10.10.0.0/16", [198, 18, 0, 2]),
            block("zz", "10.10.0.0/26", [198, 18, 0, 2]),
            block("a", "10.10.0.0/26", [0, 0, 0, 0]),
            block("a", "10.10.0.96/27", [198, 18, 0, 3]),
        ] {
            let d = DesiredState {
                networks: vec![net("a", 100, 10)],
                blocks: vec![good.clone(), bad.clone()],
                ..Default::default()
            };
            let p = plan(&d, 1450, fit).unwrap();
            assert_eq!(p.desired.blocks, vec![good.clone()], "{bad:?}");
            assert_eq!(p.rejected.len(), 1, "{bad:?}");
            assert!(
                p.rejected[0].to_string().contains("endpoint block "),
                "{}",
                p.rejected[0]
            );
        }
    }

    #[test]
    fn members_are_peers_remote_hosts_and_self() {
        let own = Ipv4Addr::new(198, 18, 0, 1);
        let d = DesiredState {
            peers: vec![Ipv4Addr::new(198, 18, 0, 3), Ipv4Addr::UNSPECIFIED, own],
            remote: vec![RemoteEndpoint {
                id: "r".into(),
                network: "a".into(),
                ip: Ipv4Addr::new(10, 10, 0, 9),
                mac: MacAddr::from_ipv4(Ipv4Addr::new(10, 10, 0, 9)),
                host: Ipv4Addr::new(198, 18, 0, 2),
            }],
            ..Default::default()
        };
        assert_eq!(
            members(&d, own),
            vec![
                own,
                Ipv4Addr::new(198, 18, 0, 2),
                Ipv4Addr::new(198, 18, 0, 3)
            ]
        );
    }
}
