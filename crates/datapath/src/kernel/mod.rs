//! Kernel helpers both datapaths use: netlink ([`nl`]), work inside network
//! namespaces ([`netns`]), endpoints' veth pairs ([`veth`]), the firewall,
//! the underlay, sysctls and interface offloads.

pub(crate) mod ethtool;
pub(crate) mod firewall;
pub(crate) mod netns;
pub(crate) mod nl;
pub(crate) mod sysctl;
pub(crate) mod underlay;
pub(crate) mod veth;
