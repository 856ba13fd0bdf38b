//! Bodies of the local REST API (`/v1/...` on the agent's unix socket). The
//! OpenAPI document is `docs/openapi.yaml`.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{EndpointRecord, NetworkRecord};

/// Every error the API returns: a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateNetwork {
    pub name: String,
    /// CIDR, e.g. "10.2.0.0/16".
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `overlay` (the default) or `routed`; fixed for the network's life.
    #[serde(default)]
    pub mode: crate::NetworkMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    #[serde(flatten)]
    pub network: NetworkRecord,
    /// Endpoints attached, cluster-wide.
    pub endpoints: usize,
    /// What users should know about how the network is carried (e.g. that
    /// a routed network carries no broadcast or multicast between hosts),
    /// one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachEndpoint {
    /// The network's name (or its id).
    pub network: String,
    /// Network namespace to put the interface in; absent for runtimes that
    /// move it themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Request this address instead of the next free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// [`crate::ORIGIN_CNI`] when the CNI plugin attaches (the endpoint id
    /// then derives from network, container id and ifname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The endpoint, with `network` the network's name (as people use it).
    #[serde(flatten)]
    pub endpoint: EndpointRecord,
    /// The network's immutable id.
    #[serde(default)]
    pub network_id: String,
    pub node_name: String,
    pub host: Option<Ipv4Addr>,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    /// On the endpoint's own host: "ok", "failed" (its datapath could not
    /// be converged; retried with backoff) or "fenced" (the host is cut off
    /// from its cluster's majority). `None` for other hosts' endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Why the endpoint is not "ok".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The host end of the endpoint's veth, for endpoints of the answering
    /// host (what a CNI result lists as the host-side interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
}

/// A local endpoint this host's datapath could not converge, and why. The
/// rest of the host converged; this one is retried with backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointProblem {
    pub id: String,
    pub reason: String,
    /// Failed applies in a row.
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub node_id: String,
    pub node_name: String,
    pub cluster: String,
    pub addr: Ipv4Addr,
    pub iface: String,
    pub datapath: String,
    pub store: String,
    pub version: String,
    /// False while the agent is still founding or joining its cluster.
    pub ready: bool,
    /// True for a cluster founded with `--open`: anyone on the LAN may join.
    pub open_cluster: bool,
}

/// What `cluster remove NODE` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedNode {
    pub id: String,
    pub name: String,
    /// How many of its endpoints were reclaimed.
    pub endpoints: usize,
}

/// A node in `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: String,
    pub name: String,
    pub addr: Ipv4Addr,
    pub alive: bool,
    /// "leader", "voter", "replica" or "none".
    pub role: String,
    pub datapath: String,
    /// Store revisions its datapath is behind, as it last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_lag: Option<i64>,
    /// Why the node is unhealthy (dead, datapath failing); empty: healthy.
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    pub backend: String,
    pub healthy: bool,
    pub leader: Option<String>,
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub this_node: String,
    pub nodes: Vec<NodeStatus>,
    pub store: StoreHealth,
    /// This host's endpoints its datapath could not converge.
    #[serde(default)]
    pub endpoint_failures: Vec<EndpointProblem>,
    /// True while this host is cut off from its cluster's majority and has
    /// taken its workloads off the wire.
    #[serde(default)]
    pub fenced: bool,
    /// True for a cluster without authentication (`--open`, or no token).
    #[serde(default)]
    pub open: bool,
    /// Cluster-wide problems (e.g. the store); each node's are on the node.
    #[serde(default)]
    pub problems: Vec<String>,
    /// [`ClusterStatus::is_healthy`], as the agent saw it.
    #[serde(default)]
    pub healthy: bool,
}

impl ClusterStatus {
    /// Healthy: the store is, this host is not fenced and converged every
    /// endpoint, and every node is alive without problems.
    pub fn is_healthy(&self) -> bool {
        self.store.healthy
            && !self.fenced
            && self.endpoint_failures.is_empty()
            && self.problems.is_empty()
            && self.nodes.iter().all(|n| n.alive && n.problems.is_empty())
    }
}

/// `cluster token`: what another host joins with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterToken {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Cluster-port address of any member, "IP" or "IP:PORT".
    pub addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindRequest {
    pub iface: String,
}
