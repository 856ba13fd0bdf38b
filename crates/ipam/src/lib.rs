//! Address management, as pure logic.
//!
//! A [`Pool`] is one network's subnet and gateway. It knows which addresses
//! may be handed out (never the network, broadcast or gateway address), how
//! the subnet splits into blocks that hosts claim for locality, and which
//! address to try next. It does no I/O: the agent reads what is taken from
//! the store and claims an address with compare-and-set, so two hosts can
//! never hold the same address even if they pick the same candidate.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Hosts claim blocks of this size (64 addresses) for locality.
pub const BLOCK_PREFIX: u8 = 26;
/// Smallest network we accept: a /30 has two host addresses, one of which is
/// the gateway.
pub const MAX_PREFIX: u8 = 30;
/// Largest network we accept (a /8 has 16M addresses: plenty).
pub const MIN_PREFIX: u8 = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid CIDR {0:?}: {1}")]
    InvalidCidr(String, String),
    #[error("gateway {gateway} is not a host address of {subnet}")]
    InvalidGateway { gateway: Ipv4Addr, subnet: Ipv4Net },
    #[error("{ip} is not an assignable address of {subnet} (network, broadcast and gateway {gateway} are reserved)")]
    NotAssignable {
        ip: Ipv4Addr,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
    },
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
}

/// Parses and checks a network's CIDR: canonical (no host bits set), a
/// prefix between /8 and /30, and not in a range that cannot carry unicast
/// workloads (loopback, link-local, multicast, reserved, 0/8).
pub fn parse_subnet(cidr: &str) -> Result<Ipv4Net, IpamError> {
    let bad = |why: &str| IpamError::InvalidCidr(cidr.to_string(), why.to_string());
    let net: Ipv4Net = cidr
        .trim()
        .parse()
        .map_err(|_| bad("want an IPv4 network such as 10.2.0.0/16"))?;
    if net.addr() != net.network() {
        return Err(bad(&format!(
            "host bits are set; did you mean {}?",
            net.trunc()
        )));
    }
    if net.prefix_len() < MIN_PREFIX || net.prefix_len() > MAX_PREFIX {
        return Err(bad(&format!(
            "prefix must be between /{MIN_PREFIX} and /{MAX_PREFIX}"
        )));
    }
    let a = net.addr();
    if a.is_loopback()
        || a.is_link_local()
        || a.is_multicast()
        || a.is_broadcast()
        || a.octets()[0] == 0
        || a.octets()[0] >= 240
    {
        return Err(bad("not a unicast range usable for workloads"));
    }
    Ok(net)
}

/// True if the two networks share any address.
pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// One network's address pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
}

impl Pool {
    /// A pool for `subnet` with `gateway` (default: the first host address).
    pub fn new(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Self, IpamError> {
        let first = first_host(subnet);
        let gateway = gateway.unwrap_or(first);
        let pool = Pool { subnet, gateway };
        if !pool.is_host(gateway) {
            return Err(IpamError::InvalidGateway { gateway, subnet });
        }
        Ok(pool)
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Inside the subnet and neither its network nor broadcast address.
    fn is_host(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip) && ip != self.subnet.network() && ip != self.subnet.broadcast()
    }

    /// May this address be given to an endpoint?
    pub fn is_assignable(&self, ip: Ipv4Addr) -> bool {
        self.is_host(ip) && ip != self.gateway
    }

    /// Checks a requested static address.
    pub fn check_assignable(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        if self.is_assignable(ip) {
            Ok(())
        } else {
            Err(IpamError::NotAssignable {
                ip,
                subnet: self.subnet,
                gateway: self.gateway,
            })
        }
    }

    /// How many addresses endpoints can get in total.
    pub fn capacity(&self) -> u64 {
        let hosts = (1u64 << (32 - self.subnet.prefix_len())) - 2;
        hosts - 1
    }

    /// The blocks hosts claim: /26s, or the whole subnet if it is smaller.
    pub fn blocks(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        (0..self.block_count()).filter_map(move |i| self.block(i))
    }

    /// How many blocks the subnet has.
    pub fn block_count(&self) -> u64 {
        1u64 << (self.block_prefix() - self.subnet.prefix_len())
    }

    /// Block number `index` (of [`Pool::block_count`]), in address order.
    pub fn block(&self, index: u64) -> Option<Ipv4Net> {
        let prefix = self.block_prefix();
        let start = u64::from(u32::from(self.subnet.network()));
        let addr = u32::try_from(start + index.checked_mul(1u64 << (32 - prefix))?).ok()?;
        Ipv4Net::new(Ipv4Addr::from(addr), prefix)
            .ok()
            .filter(|b| self.subnet.contains(b))
    }

    fn block_prefix(&self) -> u8 {
        BLOCK_PREFIX.max(self.subnet.prefix_len())
    }

    /// The lowest assignable address in `within` (a block of this pool, or
    /// the subnet itself) for which `taken` is false.
    pub fn first_free(
        &self,
        within: Ipv4Net,
        taken: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        within
            .hosts()
            .find(|ip| self.is_assignable(*ip) && !taken(*ip))
            .or_else(|| {
                // `hosts()` skips a block's own first/last address, which are
                // ordinary hosts when the block is inside a larger subnet.
                [within.network(), within.broadcast()]
                    .into_iter()
                    .find(|ip| self.is_assignable(*ip) && !taken(*ip))
            })
    }

    /// The lowest free address anywhere in the pool.
    pub fn first_free_anywhere(
        &self,
        taken: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, IpamError> {
        self.first_free(self.subnet, taken)
            .ok_or(IpamError::Exhausted(self.subnet))
    }
}

/// The first host address of a subnet (the default gateway).
pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_rejects_cidrs() {
        assert_eq!(parse_subnet("10.2.0.0/16").unwrap(), net("10.2.0.0/16"));
        for bad in [
            "10.2.0.1/16",
            "10.2.0.0",
            "10.2.0.0/31",
            "10.0.0.0/7",
            "127.0.0.0/8",
            "224.0.0.0/8",
            "169.254.0.0/16",
            "nonsense",
            "10.2.0.0/33",
            "::1/128",
        ] {
            assert!(parse_subnet(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn overlap_is_symmetric() {
        assert!(overlaps(net("10.0.0.0/8"), net("10.2.0.0/16")));
        assert!(overlaps(net("10.2.0.0/16"), net("10.0.0.0/8")));
        assert!(!overlaps(net("10.2.0.0/16"), net("10.3.0.0/16")));
    }

    #[test]
    fn never_hands_out_reserved_addresses_and_detects_exhaustion() {
        let pool = Pool::new(net("10.9.0.0/29"), None).unwrap();
        assert_eq!(pool.gateway(), Ipv4Addr::new(10, 9, 0, 1));
        let mut taken = HashSet::new();
        while let Ok(ip) = pool.first_free_anywhere(|ip| taken.contains(&ip)) {
            assert!(taken.insert(ip));
        }
        assert_eq!(taken.len() as u64, pool.capacity());
        assert_eq!(taken.len(), 5); // 8 - network - broadcast - gateway
        for reserved in ["10.9.0.0", "10.9.0.7", "10.9.0.1"] {
            assert!(!taken.contains(&reserved.parse().unwrap()));
        }
        assert_eq!(
            pool.first_free_anywhere(|ip| taken.contains(&ip)),
            Err(IpamError::Exhausted(net("10.9.0.0/29")))
        );
    }

    #[test]
    fn blocks_tile_the_subnet_and_use_their_edges() {
        let pool = Pool::new(net("10.1.0.0/24"), None).unwrap();
        let blocks: Vec<_> = pool.blocks().collect();
        assert_eq!(blocks.len(), 4);
        assert_eq!(blocks[1], net("10.1.0.64/26"));
        // A block's first address is an ordinary host of the /24.
        assert_eq!(
            pool.first_free(blocks[1], |_| false),
            Some("10.1.0.65".parse().unwrap())
        );
        let all_but_edge = |ip: Ipv4Addr| ip != Ipv4Addr::new(10, 1, 0, 64);
        assert_eq!(
            pool.first_free(blocks[1], all_but_edge),
            Some("10.1.0.64".parse().unwrap())
        );
        // The first block never yields the gateway or network address.
        assert_eq!(
            pool.first_free(blocks[0], |_| false),
            Some("10.1.0.2".parse().unwrap())
        );
        // Small subnets are one block.
        let small = Pool::new(net("10.1.0.0/28"), None).unwrap();
        assert_eq!(small.blocks().collect::<Vec<_>>(), vec![net("10.1.0.0/28")]);
    }

    #[test]
    fn gateway_must_be_a_host_address() {
        assert!(Pool::new(net("10.1.0.0/24"), Some("10.1.0.0".parse().unwrap())).is_err());
        assert!(Pool::new(net("10.1.0.0/24"), Some("10.1.1.1".parse().unwrap())).is_err());
        let pool = Pool::new(net("10.1.0.0/24"), Some("10.1.0.254".parse().unwrap())).unwrap();
        assert!(pool.is_assignable("10.1.0.1".parse().unwrap()));
        assert!(!pool.is_assignable("10.1.0.254".parse().unwrap()));
        assert!(pool
            .check_assignable("10.1.0.255".parse().unwrap())
            .is_err());
    }
}
