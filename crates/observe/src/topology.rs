//! The cluster as the page, `/metrics` and `cluster status` see it. It is
//! read-only and holds no secrets: no token, no namespace paths, no
//! container ids.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    pub cluster: String,
    /// The node id of the agent that answers.
    pub this_node: String,
    /// The store revision the view reflects.
    pub revision: i64,
    /// True for a cluster founded with `--open` (no authentication).
    pub open: bool,
    pub store: StoreSummary,
    pub hosts: Vec<Host>,
    pub networks: Vec<Network>,
    pub endpoints: Vec<Endpoint>,
    pub tunnels: Vec<Tunnel>,
    /// Cluster-wide problems (the store); a host's are on the host.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreSummary {
    pub backend: String,
    pub healthy: bool,
    /// Node id of the leader, if known.
    pub leader: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub addr: Ipv4Addr,
    pub alive: bool,
    /// "leader", "voter", "replica", "client" or "none".
    pub role: String,
    pub datapath: String,
    /// Store revisions its datapath is behind (as it last reported).
    pub applied_lag: Option<i64>,
    /// Why the host is unhealthy; empty when it is healthy.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub vni: u32,
    pub mtu: Option<u32>,
    /// Addresses in use (endpoints and reservations).
    pub used: u64,
    /// Addresses the pool can hand out.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub name: Option<String>,
    /// Network id.
    pub network: String,
    /// Node id of its host.
    pub host: String,
    pub ip: Ipv4Addr,
    pub mac: String,
}

/// A VXLAN tunnel in use: hosts `a` and `b` both have endpoints on the
/// network, so each floods and forwards the network's traffic to the other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tunnel {
    /// Network id.
    pub network: String,
    pub vni: u32,
    /// Node ids, `a < b`.
    pub a: String,
    pub b: String,
}

impl Topology {
    /// Every problem: the cluster's and each host's.
    pub fn problem_count(&self) -> usize {
        self.problems.len() + self.hosts.iter().map(|h| h.problems.len()).sum::<usize>()
    }

    pub fn healthy(&self) -> bool {
        self.problem_count() == 0
    }

    /// Fills [`Topology::tunnels`] from the endpoints: one per pair of
    /// hosts sharing a network.
    pub fn derive_tunnels(&mut self) {
        let vni: BTreeMap<&str, u32> = self
            .networks
            .iter()
            .map(|n| (n.id.as_str(), n.vni))
            .collect();
        let mut hosts: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for e in &self.endpoints {
            hosts
                .entry(e.network.as_str())
                .or_default()
                .insert(e.host.as_str());
        }
        let mut tunnels = Vec::new();
        for (network, members) in hosts {
            let members: Vec<&str> = members.into_iter().collect();
            for (i, a) in members.iter().enumerate() {
                for b in &members[i + 1..] {
                    tunnels.push(Tunnel {
                        network: network.to_string(),
                        vni: vni.get(network).copied().unwrap_or(0),
                        a: a.to_string(),
                        b: b.to_string(),
                    });
                }
            }
        }
        self.tunnels = tunnels;
    }
}

/// Addresses a subnet's pool can hand out: all but the network, the
/// broadcast and the gateway address.
pub fn pool_size(subnet: Ipv4Net) -> u64 {
    let total = 1u64 << (32 - u32::from(subnet.prefix_len()));
    total.saturating_sub(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, net: &str, host: &str) -> Endpoint {
        Endpoint {
            id: id.into(),
            name: None,
            network: net.into(),
            host: host.into(),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            mac: String::new(),
        }
    }

    #[test]
    fn tunnels_join_every_pair_of_hosts_sharing_a_network() {
        let mut t = Topology {
            endpoints: vec![
                ep("1", "web", "a"),
                ep("2", "web", "b"),
                ep("3", "web", "c"),
                ep("4", "db", "a"),
                ep("5", "db", "a"),
            ],
            ..Default::default()
        };
        t.derive_tunnels();
        let pairs: Vec<_> = t
            .tunnels
            .iter()
            .map(|x| (x.network.as_str(), x.a.as_str(), x.b.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![("web", "a", "b"), ("web", "a", "c"), ("web", "b", "c")]
        );
    }

    #[test]
    fn pool_size_leaves_out_network_gateway_and_broadcast() {
        assert_eq!(pool_size("10.0.0.0/24".parse().unwrap()), 253);
        assert_eq!(pool_size("10.0.0.0/16".parse().unwrap()), 65533);
    }
}
