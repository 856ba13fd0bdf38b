//! The sysctls a datapath needs (of the calling thread's network namespace).

use std::path::Path;

use crate::error::{DatapathError, Result};

/// Sets the sysctl at `path` to `value` unless it already is; returns writes.
fn ensure(path: &str, value: &str) -> Result<usize> {
    let err = |source| DatapathError::Sysctl {
        path: Path::new(path).to_owned(),
        source,
    };
    let cur = std::fs::read_to_string(path).map_err(err)?;
    if cur.trim() == value {
        return Ok(0);
    }
    std::fs::write(path, value).map_err(err)?;
    Ok(1)
}

/// Turns IPv4 forwarding on (the gateway routes); returns writes.
pub(crate) fn ensure_ip_forward() -> Result<usize> {
    ensure("/proc/sys/net/ipv4/ip_forward", "1")
}

/// Keeps the host from answering ARP on `ifname` for any of its addresses
/// (`arp_ignore=8`); returns writes.
pub(crate) fn ensure_no_arp_replies(ifname: &str) -> Result<usize> {
    ensure(&format!("/proc/sys/net/ipv4/conf/{ifname}/arp_ignore"), "8")
}

/// Makes the host answer ARP on `ifname` for addresses it routes out of
/// another interface (`proxy_arp=1`), at once (`proxy_delay=0`: the
/// default delays each answer by up to 0.8 s); returns writes.
pub(crate) fn ensure_proxy_arp(ifname: &str) -> Result<usize> {
    Ok(
        ensure(&format!("/proc/sys/net/ipv4/conf/{ifname}/proxy_arp"), "1")?
            + ensure(
                &format!("/proc/sys/net/ipv4/neigh/{ifname}/proxy_delay"),
                "0",
            )?,
    )
}
