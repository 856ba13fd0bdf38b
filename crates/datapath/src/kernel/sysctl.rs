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

/// The kernel's IPv4 neighbour table limits: one table for the whole
/// machine (every namespace's dynamic entries count together; permanent
/// ones, which this datapath writes for remote endpoints, do not), whose
/// sysctls exist only in the initial network namespace.
const GC_THRESH: [&str; 3] = [
    "/proc/sys/net/ipv4/neigh/default/gc_thresh1",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
];

/// Largest `gc_thresh3` this datapath asks for.
const GC_THRESH3_MAX: u64 = 65_536;

/// The `gc_thresh1/2/3` to hold when workloads on this host may learn
/// `peers` dynamic neighbour entries (the endpoints of the networks they
/// are on): `gc_thresh3` at least four times that, rounded up to a power
/// of two, between 1,024 and [`GC_THRESH3_MAX`]; `gc_thresh2` half of it,
/// `gc_thresh1` an eighth (the ratios of the usual large-cluster settings,
/// 4096/16384/32768). Never below `current`.
pub(crate) fn neigh_thresholds(peers: usize, current: [u64; 3]) -> [u64; 3] {
    let t3 = (peers as u64)
        .saturating_mul(4)
        .next_power_of_two()
        .clamp(1024, GC_THRESH3_MAX);
    let want = [t3 / 8, t3 / 2, t3];
    [0, 1, 2].map(|i| want[i].max(current[i]))
}

/// Raises the machine's neighbour table limits to [`neigh_thresholds`]
/// for `peers`; returns writes. Only where they can be set, i.e. when the
/// datapath runs in the initial network namespace (the host the agent
/// owns); inside any other namespace (a test lab, a bench) it does
/// nothing, since the limits are machine-wide. Never lowers a limit.
pub(crate) fn ensure_neigh_room(peers: usize) -> Result<usize> {
    if !Path::new(GC_THRESH[2]).exists() {
        return Ok(0);
    }
    let err = |path: &str| {
        let path = Path::new(path).to_owned();
        move |source| DatapathError::Sysctl { path, source }
    };
    let mut current = [0u64; 3];
    for (i, path) in GC_THRESH.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(err(path))?;
        current[i] = text.trim().parse().unwrap_or(0);
    }
    let want = neigh_thresholds(peers, current);
    if want == current {
        return Ok(0);
    }
    // Highest first, so gc_thresh1 <= 2 <= 3 holds at every step.
    let mut writes = 0;
    for i in (0..3).rev() {
        if want[i] != current[i] {
            std::fs::write(GC_THRESH[i], want[i].to_string()).map_err(err(GC_THRESH[i]))?;
            writes += 1;
        }
    }
    tracing::info!(
        gc_thresh = ?want, before = ?current,
        "Raised the neighbour table limits for the endpoints workloads may reach."
    );
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::neigh_thresholds;

    #[test]
    fn neighbour_limits_grow_with_the_peers_and_never_shrink() {
        let defaults = [128, 512, 1024];
        assert_eq!(neigh_thresholds(0, defaults), defaults);
        assert_eq!(neigh_thresholds(200, defaults), defaults);
        assert_eq!(neigh_thresholds(2000, defaults), [1024, 4096, 8192]);
        assert_eq!(neigh_thresholds(10_000, defaults), [8192, 32768, 65536]);
        assert_eq!(neigh_thresholds(1_000_000, defaults), [8192, 32768, 65536]);
        // Larger settings of the administrator stay.
        let big = [4096, 16384, 131072];
        assert_eq!(neigh_thresholds(2000, big), [4096, 16384, 131072]);
    }
}
