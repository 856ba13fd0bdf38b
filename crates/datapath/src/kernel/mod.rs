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

/// [`crate::plan::plan`] of `desired`, with this host's check that each
/// local endpoint's namespace is a network namespace other than the host's.
pub(crate) fn plan(
    desired: &crate::DesiredState,
    default_mtu: u32,
) -> crate::Result<crate::plan::Plan> {
    crate::plan::plan(desired, default_mtu, netns::unfit_workload_ns)
}
