//! Kernel device names the Linux datapath owns: the shared network device
//! names ([`crate::names`]) and its own veth prefixes.

pub use crate::names::{
    bridge, fnv1a, parse_net_device, vxlan, VethNames, BRIDGE_PREFIX, VXLAN_PREFIX,
};

/// Host end of a local endpoint's veth pair: `spv<11 hex digits>`.
pub const VETH_PREFIX: &str = "spv";
/// Workload end before it is moved or renamed: `spp<11 hex digits>`.
pub const PEER_PREFIX: &str = "spp";
/// Both prefixes together.
pub const VETHS: VethNames = VethNames {
    host: VETH_PREFIX,
    peer: PEER_PREFIX,
};
