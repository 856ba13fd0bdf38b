//! Device names both datapaths derive from the desired state. Every name
//! fits the kernel's 15-character limit and carries a prefix that marks it
//! as ours.

/// A network's gateway device, `spbr<vni>` (at most 12 characters): the
/// bridge of the Linux datapath, the gateway port of the OVS one. The
/// firewall matches on it, so both datapaths share it.
pub const BRIDGE_PREFIX: &str = "spbr";
/// VXLAN device of a network (Linux datapath): `spvx<vni>`.
pub const VXLAN_PREFIX: &str = "spvx";

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

/// The names of a datapath's veth pairs: `<host><11 hex digits>` for the
/// host end, `<peer><11 hex digits>` for the workload end before it is
/// moved. Each datapath has its own prefixes, so neither removes the
/// other's veths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VethNames {
    pub host: &'static str,
    pub peer: &'static str,
}

impl VethNames {
    fn hash(id: &str) -> String {
        // 44 bits of hash: collisions need ~4 million endpoints on one host.
        format!("{:011x}", fnv1a(id.as_bytes()) >> 20)
    }

    pub fn host(&self, endpoint_id: &str) -> String {
        format!("{}{}", self.host, Self::hash(endpoint_id))
    }

    pub fn peer(&self, endpoint_id: &str) -> String {
        format!("{}{}", self.peer, Self::hash(endpoint_id))
    }

    /// Both names of an endpoint's pair.
    pub fn ifnames(&self, endpoint_id: &str) -> crate::EndpointIfnames {
        crate::EndpointIfnames {
            host: self.host(endpoint_id),
            peer: self.peer(endpoint_id),
        }
    }

    /// Whether `name` is one of these veth ends (host or unmoved peer).
    pub fn is_ours(&self, name: &str) -> bool {
        [self.host, self.peer].iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|r| r.len() == 11 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    }

    /// The other end's name, for a name [`is_ours`](Self::is_ours) accepts.
    pub fn other_end(&self, name: &str) -> Option<String> {
        if let Some(h) = name.strip_prefix(self.host) {
            return Some(format!("{}{h}", self.peer));
        }
        name.strip_prefix(self.peer)
            .map(|h| format!("{}{h}", self.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: VethNames = VethNames {
        host: "spv",
        peer: "spp",
    };

    #[test]
    fn names_fit_and_parse() {
        assert_eq!(bridge(16_777_215), "spbr16777215");
        assert!(bridge(16_777_215).len() <= 15);
        let h = V.host("some-endpoint-id");
        assert_eq!(h.len(), 14);
        assert!(V.is_ours(&h));
        assert!(V.is_ours(&V.peer("x")));
        assert_eq!(V.other_end(&h), Some(V.peer("some-endpoint-id")));
        assert_eq!(V.host("a"), V.host("a"));
        assert_ne!(V.host("a"), V.host("b"));
        assert_eq!(parse_net_device("spbr42"), Some((BRIDGE_PREFIX, 42)));
        assert_eq!(parse_net_device("spvx7"), Some((VXLAN_PREFIX, 7)));
        assert_eq!(parse_net_device("spvxa"), None);
        assert!(!V.is_ours("spvx12"));
    }
}
