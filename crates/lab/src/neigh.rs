//! Room in the kernel's neighbour table for a lab's underlay. The IPv4
//! neighbour table is one for the whole machine: every namespace's dynamic
//! (ARP-learned) entries count against `gc_thresh3` of the initial
//! namespace (1,024 by default). A lab of N hosts that all talk to each
//! other learns about N² entries: at 100 hosts, about 10,000. Past the
//! limit the kernel drops new entries ("neighbor table overflow"), and the
//! hosts' connections to each other fail at random, which a lab must not
//! pass off as the agents' failures.

use std::path::Path;

use crate::error::{io_err, Result};

const GC_THRESH: [&str; 3] = [
    "/proc/sys/net/ipv4/neigh/default/gc_thresh1",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
    "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
];

/// `gc_thresh1/2/3` for `hosts` hosts that all reach each other, never
/// below `current`: twice the entries they learn (each host's peers, the
/// outside host and the etcd host), rounded up to a power of two, at most
/// 65,536; `gc_thresh2` half of that, `gc_thresh1` an eighth.
pub(crate) fn thresholds(hosts: usize, current: [u64; 3]) -> [u64; 3] {
    let hosts = hosts as u64;
    let t3 = hosts
        .saturating_mul(hosts + 2)
        .saturating_mul(2)
        .next_power_of_two()
        .clamp(1024, 65_536);
    let want = [t3 / 8, t3 / 2, t3];
    [0, 1, 2].map(|i| want[i].max(current[i]))
}

/// Raises the machine's neighbour table limits to [`thresholds`]; never
/// lowers them (another lab may be up), so they stay raised after the
/// lab is gone. Returns whether it changed anything.
pub(crate) fn make_room(hosts: usize) -> Result<bool> {
    if !Path::new(GC_THRESH[2]).exists() {
        return Ok(false);
    }
    let mut current = [0u64; 3];
    for (i, path) in GC_THRESH.iter().enumerate() {
        let text = std::fs::read_to_string(path).map_err(io_err(format!("cannot read {path}")))?;
        current[i] = text.trim().parse().unwrap_or(0);
    }
    let want = thresholds(hosts, current);
    if want == current {
        return Ok(false);
    }
    // Highest first, so gc_thresh1 <= 2 <= 3 holds at every step.
    for i in (0..3).rev() {
        if want[i] != current[i] {
            std::fs::write(GC_THRESH[i], want[i].to_string())
                .map_err(io_err(format!("cannot write {}", GC_THRESH[i])))?;
        }
    }
    tracing::info!(gc_thresh = ?want, before = ?current, hosts, "Raised the machine's neighbour table limits for the lab's underlay.");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::thresholds;

    #[test]
    fn room_grows_with_the_hosts_and_never_shrinks() {
        let defaults = [128, 512, 1024];
        assert_eq!(thresholds(3, defaults), defaults);
        assert_eq!(thresholds(20, defaults), defaults);
        // 100 hosts learn about 10,200 entries.
        assert_eq!(thresholds(100, defaults), [4096, 16384, 32768]);
        assert_eq!(thresholds(1000, defaults), [8192, 32768, 65536]);
        assert_eq!(thresholds(3, [1024, 4096, 8192]), [1024, 4096, 8192]);
    }
}
