//! Kernel device names this datapath owns. Every name fits the 15-character
//! limit and carries a prefix that marks it as ours.

/// Bridge of a network: `spbr<vni>` (at most 12 characters).
pub const BRIDGE_PREFIX: &str = "spbr";
/// VXLAN device of a network: `spvx<vni>`.
pub const VXLAN_PREFIX: &str = "spvx";
/// Host end of a local endpoint's veth pair: `spv<11 hex digits>`.
pub const VETH_PREFIX: &str = "spv";
/// Workload end before it is moved or renamed: `spp<11 hex digits>`.
pub const PEER_PREFIX: &str = "spp";

pub fn bridge(vni: u32) -> String {
    format!("{BRIDGE_PREFIX}{vni}")
}

pub fn vxlan(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// 64-bit FNV-1a; stable across runs and versions (names must be too).
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn endpoint_hash(id: &str) -> String {
    // 44 bits of hash: collisions need ~4 million endpoints on one host.
    format!("{:011x}", fnv1a(id.as_bytes()) >> 20)
}

pub fn veth_host(endpoint_id: &str) -> String {
    format!("{VETH_PREFIX}{}", endpoint_hash(endpoint_id))
}

pub fn veth_peer(endpoint_id: &str) -> String {
    format!("{PEER_PREFIX}{}", endpoint_hash(endpoint_id))
}

/// Whether `name` is a network device name of ours (bridge or VXLAN), and the VNI.
pub fn parse_net_device(name: &str) -> Option<(&'static str, u32)> {
    for p in [BRIDGE_PREFIX, VXLAN_PREFIX] {
        if let Some(rest) = name.strip_prefix(p) {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                return rest.parse().ok().map(|v| (p, v));
            }
        }
    }
    None
}

/// Whether `name` looks like one of our veth ends (host or unmoved peer).
pub fn is_veth_name(name: &str) -> bool {
    for p in [VETH_PREFIX, PEER_PREFIX] {
        if let Some(rest) = name.strip_prefix(p) {
            if rest.len() == 11 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_parse() {
        assert_eq!(bridge(16_777_215), "spbr16777215");
        assert!(bridge(16_777_215).len() <= 15);
        let h = veth_host("some-endpoint-id");
        assert_eq!(h.len(), 14);
        assert!(is_veth_name(&h));
        assert!(is_veth_name(&veth_peer("x")));
        assert_eq!(veth_host("a"), veth_host("a"));
        assert_ne!(veth_host("a"), veth_host("b"));
        assert_eq!(parse_net_device("spbr42"), Some((BRIDGE_PREFIX, 42)));
        assert_eq!(parse_net_device("spvx7"), Some((VXLAN_PREFIX, 7)));
        assert_eq!(parse_net_device("spvxa"), None);
        assert!(!is_veth_name("spvx12"));
    }
}
