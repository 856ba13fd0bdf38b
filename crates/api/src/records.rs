//! Records kept in the store (JSON values under [`crate::keys`]).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::MacAddr;

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Stable id (16 hex digits), kept in the node's data dir.
    pub id: String,
    pub name: String,
    /// Underlay address: VXLAN tunnels end here.
    pub addr: Ipv4Addr,
    pub cluster_port: u16,
    pub datapath: String,
    pub version: String,
}

/// An overlay network. Its id never changes; its name is an attribute
/// (unique cluster-wide, see [`crate::keys::network_name`]) that nothing
/// else refers to, so a network can be renamed while in use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 16 hex digits, chosen at creation.
    pub id: String,
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub vni: u32,
    /// Overlay MTU if set by the user; otherwise each host uses its
    /// underlay MTU − 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// How hosts carry the network between them; fixed at creation.
    #[serde(default)]
    pub mode: NetworkMode,
}

/// How a network's traffic crosses between hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Ethernet frames in VXLAN between every pair of hosts: the network is
    /// one L2 segment (broadcast and multicast included).
    #[default]
    Overlay,
    /// Plain IP between hosts that share an underlay subnet (a route per
    /// remote endpoint via its host), VXLAN only to hosts on other subnets
    /// or on a datapath that does not route (OVS). Unicast IP only:
    /// broadcast and multicast do not cross hosts.
    Routed,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Overlay => "overlay",
            NetworkMode::Routed => "routed",
        }
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "overlay" => Ok(NetworkMode::Overlay),
            "routed" => Ok(NetworkMode::Routed),
            other => Err(format!(
                "unknown network mode {other:?} (overlay or routed)"
            )),
        }
    }
}

/// A workload interface on a network, on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    /// In the store: the network's id. In the local API's answers
    /// ([`crate::rest::EndpointInfo`]): the network's name.
    pub network: String,
    /// Id of the node the endpoint lives on.
    pub node: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// A friendly name (container name, workload name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Network namespace path on the node; `None` for runtimes that move
    /// the interface themselves (Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The namespace `netns` named when the endpoint was attached. A
    /// `/proc/PID/ns/net` path outlives its process: once the PID is reused
    /// it names another namespace, which must never be plumbed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_id: Option<NetnsId>,
    pub ifname: String,
    /// What made the endpoint when it was not the local API itself:
    /// [`ORIGIN_CNI`] for the CNI plugin, whose attachments are keyed by
    /// (container id, ifname) and collected by its GC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Kubernetes pod namespace and name (`K8S_POD_NAMESPACE`,
    /// `K8S_POD_NAME` in `CNI_ARGS`), when the runtime gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// More names the endpoint answers to in its network's DNS (Docker's
    /// `--network-alias`), besides [`EndpointRecord::name`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// [`EndpointRecord::origin`] of attachments made by the CNI plugin.
pub const ORIGIN_CNI: &str = "cni";

/// A namespace's identity: the device and inode of its nsfs file, stable
/// for as long as the namespace lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl std::fmt::Display for NetnsId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.dev, self.ino)
    }
}

/// An address handed out by a node's Docker IPAM driver that no endpoint
/// holds yet (kept under [`crate::keys::reservation`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    /// The node whose Docker plugin reserved the address.
    pub node: String,
}

/// What a Docker network id on one node maps to (kept under
/// [`crate::keys::docker_network`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerNetworkRecord {
    /// The cluster network's id.
    pub network: String,
    /// True when this Docker network created the cluster network; deleting
    /// it then deletes the cluster network too (if no endpoint is left).
    pub created: bool,
}

/// A host's own report of its datapath's health (at [`crate::keys::health`]),
/// written when it changes, not on every apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub node: String,
    /// The store revision its datapath had applied when it wrote this.
    pub applied: i64,
    /// Revisions it was behind its view then.
    pub lag: i64,
    /// True when it has been behind for a while (converging fails).
    #[serde(default)]
    pub stalled: bool,
    /// Why its last datapath apply failed: a short reason and the message.
    #[serde(default)]
    pub fault: Option<Fault>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub reason: String,
    pub message: String,
}
