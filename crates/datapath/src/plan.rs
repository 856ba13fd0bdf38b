//! Validation of a [`DesiredState`] before anything touches the host, and
//! what both datapaths derive from it: device names, MTUs and the per-endpoint
//! configuration.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use crate::{names, DatapathError, DesiredState, LocalEndpoint, MacAddr, NetworkSpec, Result};

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
    let mut v: Vec<Ipv4Addr> = desired
        .peers
        .iter()
        .copied()
        .chain(desired.remote.iter().map(|r| r.host))
        .chain(std::iter::once(own))
        .filter(|a| is_unicast_host(*a))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// An address a host can have on the underlay.
pub(crate) fn is_unicast_host(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast())
}

fn invalid(msg: impl Into<String>) -> DatapathError {
    DatapathError::invalid(msg)
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
            ..Default::default()
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
