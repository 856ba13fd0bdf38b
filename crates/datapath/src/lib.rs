//! The datapath: what turns cluster state into packets on the wire.
//!
//! The agent computes a [`DesiredState`] for its host (the networks, the
//! endpoints on this host, the endpoints on other hosts) and hands it to a
//! [`Datapath`], which converges the host to it. The interface speaks of
//! networks and endpoints only, never of bridges or flows, so the Linux and
//! Open vSwitch implementations are interchangeable.

mod error;
pub mod names;
pub mod record;

#[cfg(target_os = "linux")]
mod command;
#[cfg(target_os = "linux")]
mod kernel;
#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub mod ovs;
#[cfg(target_os = "linux")]
mod plan;
#[cfg(target_os = "linux")]
mod tally;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
pub use socketplane_api::{MacAddr, NetworkMode};

pub use crate::error::{DatapathError, Errno, Result};
pub use crate::kernel::netns::inspect_workload_ns;

/// UDP port of VXLAN (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN over IPv4 adds to each frame: outer IP 20 + UDP 8 + VXLAN 8 +
/// inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;

/// One overlay network as the datapath needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    /// VXLAN network identifier, unique per network in the cluster.
    pub vni: u32,
    pub subnet: Ipv4Net,
    /// The distributed gateway address (the same on every host).
    pub gateway: Ipv4Addr,
    /// MTU inside the overlay; `None` means underlay MTU − 50.
    pub mtu: Option<u32>,
    /// `Routed`: hosts on this host's underlay subnet that are in
    /// [`DesiredState::routers`] are reached by plain IP routes, everyone
    /// else through VXLAN. A datapath that does not route (OVS) carries
    /// every network as an overlay.
    #[serde(default)]
    pub mode: NetworkMode,
}

/// An endpoint on this host: a veth pair, host end on the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    /// Cluster-unique endpoint id; host-side device names derive from it.
    pub id: String,
    /// Name of the network (a [`NetworkSpec::name`]).
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// The workload's network namespace (e.g. `/var/run/netns/X` or
    /// `/proc/PID/ns/net`). `None`: leave the workload end in the host
    /// namespace, named [`Datapath::endpoint_ifnames`]'s peer name, for a
    /// runtime (Docker) to move and configure.
    pub netns: Option<PathBuf>,
    /// The namespace `netns` named at attach: plumbed only while it still
    /// does (see [`socketplane_api::NetnsId`]). `None`: not pinned.
    #[serde(default)]
    pub netns_id: Option<socketplane_api::NetnsId>,
    /// Interface name inside the workload namespace (default `eth0`).
    pub ifname: String,
}

/// An endpoint on another host, reached through the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    pub id: String,
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Underlay address of the host the endpoint lives on.
    pub host: Ipv4Addr,
}

/// Everything the datapath must make true on this host. Whatever the
/// datapath owns and is not in here is removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub networks: Vec<NetworkSpec>,
    pub local: Vec<LocalEndpoint>,
    pub remote: Vec<RemoteEndpoint>,
    /// Underlay addresses of the cluster's members (this host's own may be
    /// in it). Together with the hosts of `remote` they are the only
    /// sources VXLAN is accepted from, and workloads are fenced from all of
    /// them. Members without endpoints are known only from here.
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    /// Underlay addresses of the members whose datapath routes routed
    /// networks natively (Linux): only to these are routes made; every
    /// other host is reached through VXLAN, as it reaches us.
    #[serde(default)]
    pub routers: Vec<Ipv4Addr>,
    /// The address blocks the IPAM gave each host, per network. On a
    /// routed network a block of a host that is routed to gets one route
    /// via that host; only its endpoints outside their host's blocks get
    /// /32s. A datapath that does not route (OVS) ignores them.
    #[serde(default)]
    pub blocks: Vec<HostBlock>,
}

/// An address block a host holds on a network (an IPAM block claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostBlock {
    /// Name of the network (a [`NetworkSpec::name`]).
    pub network: String,
    /// Inside the network's subnet.
    pub block: Ipv4Net,
    /// Underlay address of the host holding it.
    pub host: Ipv4Addr,
}

/// A change to some endpoints on top of the state a datapath last applied:
/// what [`Datapath::apply_changes`] takes. The networks, peers, routers and
/// blocks are those of that state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointChanges {
    /// Local endpoints added or changed (by id).
    pub local: Vec<LocalEndpoint>,
    /// Remote endpoints added or changed (by id).
    pub remote: Vec<RemoteEndpoint>,
    /// Ids of endpoints, local or remote, that are no longer desired.
    pub removed: Vec<String>,
}

impl EndpointChanges {
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.remote.is_empty() && self.removed.is_empty()
    }

    /// How many endpoints it touches.
    pub fn len(&self) -> usize {
        self.local.len() + self.remote.len() + self.removed.len()
    }
}

/// The underlay a datapath is bound to on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Underlay {
    /// The local tunnel address.
    pub ip: Ipv4Addr,
    /// The overlay MTU of a network that sets none (underlay MTU − 50).
    pub default_mtu: u32,
}

/// What one `apply` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Number of kernel (or OVS) writes made; 0 when already converged.
    pub changes: usize,
}

/// Host-side and workload-side interface names of a local endpoint before the
/// workload end is moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointIfnames {
    pub host: String,
    pub peer: String,
}

/// A datapath implementation (Linux kernel, Open vSwitch).
#[async_trait]
pub trait Datapath: Send + Sync + 'static {
    /// Converges the host to `desired`: creates what is missing, fixes what
    /// differs, removes what this datapath owns but is no longer desired,
    /// and touches nothing it does not own. Idempotent: applying the same
    /// state twice makes no changes the second time. Every endpoint record
    /// is re-validated first; a bad one is not plumbed (and what it had is
    /// removed), the rest is converged, and the error names it
    /// ([`DatapathError::EndpointRejected`], [`DatapathError::rejected_endpoints`]).
    async fn apply(&self, desired: &DesiredState) -> Result<ApplyReport>;

    /// Applies `changes` on top of the last state [`Datapath::apply`] (or
    /// this method) converged, at a cost that grows with the change rather
    /// than with the cluster: what lets one attach on a host with 10,000
    /// remote endpoints cost one entry's writes. `Ok(None)`: this datapath
    /// cannot here (it has no such state, or would rather compare in
    /// full); the caller then applies the whole desired state. The caller
    /// makes sure the base is the last state applied without an error.
    /// The default always declines.
    async fn apply_changes(&self, changes: &EndpointChanges) -> Result<Option<ApplyReport>> {
        let _ = changes;
        Ok(None)
    }

    /// Fences this host (`true`): from the next apply on, the host ends of
    /// local endpoints are kept down, so their addresses are off the wire
    /// while the workloads keep their interfaces and addresses; `false`
    /// brings them back. For a node cut off from its cluster's majority,
    /// whose addresses may soon be handed to others.
    fn set_fenced(&self, fenced: bool) {
        let _ = fenced;
    }

    /// Asks for a full comparison with the host on the next apply. Between
    /// such checks a datapath may trust what it wrote itself and write
    /// only the differences to the last state it applied (the Linux
    /// datapath does so for remote endpoints' FDB, neighbour and route
    /// entries, and checks anyway every [`linux::REMOTE_RECHECK`] and after
    /// any failure); the check reads the host back and repairs drift,
    /// such as an entry someone deleted. The reconciler calls it on its
    /// periodic resync.
    fn resync(&self) {}

    /// The names a local endpoint's veth pair gets (for runtimes that move
    /// the workload end themselves).
    fn endpoint_ifnames(&self, endpoint_id: &str) -> EndpointIfnames;

    /// Removes everything this datapath created on the host.
    async fn teardown(&self) -> Result<()>;

    /// The underlay it is bound to.
    fn underlay(&self) -> Underlay;

    /// "linux" or "ovs".
    fn name(&self) -> &'static str;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn the_datapaths_never_own_each_others_veths() {
        let ovs = crate::ovs::VETHS.host("ep-1");
        let linux = crate::linux::names::VETHS.host("ep-1");
        assert_eq!(ovs.len(), 14);
        assert!(
            crate::ovs::VETHS.is_ours(&ovs)
                && crate::ovs::VETHS.is_ours(&crate::ovs::VETHS.peer("ep-1"))
        );
        assert!(
            !crate::linux::names::VETHS.is_ours(&ovs),
            "distinct from the Linux datapath's veths"
        );
        assert!(!crate::ovs::VETHS.is_ours(&linux));
        assert!(!crate::ovs::VETHS.is_ours(crate::ovs::TUNNEL_PORT));
    }
}
