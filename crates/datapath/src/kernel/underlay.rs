//! The underlay: the interface tunnels leave through, its address and the
//! overlay MTU it allows.

use std::net::Ipv4Addr;

use rtnetlink::Handle;

use super::nl;
use crate::error::{DatapathError, Result};
use crate::{Underlay, VXLAN_OVERHEAD};

/// Looks up `iface`; returns its index and the underlay, whose address and
/// MTU default to the interface's first IPv4 address and its MTU −
/// [`VXLAN_OVERHEAD`].
pub(crate) async fn lookup(
    handle: &Handle,
    iface: &str,
    ip: Option<Ipv4Addr>,
    mtu: Option<u32>,
) -> Result<(u32, Underlay)> {
    let links = nl::links(handle).await?;
    let link = links
        .get(iface)
        .ok_or_else(|| DatapathError::invalid(format!("underlay interface {iface} not found")))?;
    let ip = match ip {
        Some(ip) => ip,
        None => nl::addrs_v4(handle)
            .await?
            .into_iter()
            .find(|a| a.index == link.index)
            .map(|a| a.ip)
            .ok_or_else(|| {
                DatapathError::invalid(format!("underlay interface {iface} has no IPv4 address"))
            })?,
    };
    let default_mtu = match mtu {
        Some(m) => m,
        None => link
            .mtu
            .checked_sub(VXLAN_OVERHEAD)
            .filter(|m| *m >= 576)
            .ok_or_else(|| {
                DatapathError::invalid(format!("underlay MTU {} too small for VXLAN", link.mtu))
            })?,
    };
    Ok((link.index, Underlay { ip, default_mtu }))
}

/// The subnet of `ip` on the interface `index` (the underlay segment: the
/// hosts in it are one hop away); `None` if `ip` is not on it.
pub(crate) async fn segment(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
) -> Result<Option<ipnet::Ipv4Net>> {
    Ok(nl::addrs_v4(handle)
        .await?
        .into_iter()
        .find(|a| a.index == index && a.ip == ip)
        .and_then(|a| ipnet::Ipv4Net::new(a.ip, a.prefix).ok())
        .map(|n| n.trunc()))
}
