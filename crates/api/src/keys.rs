//! The store's key layout. Everything lives under one versioned prefix so a
//! future layout can live beside this one during an upgrade.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub const PREFIX: &str = "/socketplane/v1/";

/// Persistent node record (`NodeRecord`), kept after the node dies so
/// `cluster status` can show it as dead.
pub fn node(id: &str) -> String {
    format!("{PREFIX}nodes/{id}")
}
pub fn nodes() -> String {
    format!("{PREFIX}nodes/")
}

/// Liveness key, attached to the node's lease: present while it is alive.
pub fn alive(id: &str) -> String {
    format!("{PREFIX}alive/{id}")
}
pub fn alive_prefix() -> String {
    format!("{PREFIX}alive/")
}

pub fn network(name: &str) -> String {
    format!("{PREFIX}networks/{name}")
}
pub fn networks() -> String {
    format!("{PREFIX}networks/")
}

/// Written by every network create and delete; creates compare on it so two
/// concurrent creates cannot both pass the overlap and VNI checks.
pub fn networks_lock() -> String {
    format!("{PREFIX}locks/networks")
}

pub fn endpoint(id: &str) -> String {
    format!("{PREFIX}endpoints/{id}")
}
pub fn endpoints() -> String {
    format!("{PREFIX}endpoints/")
}

/// An allocated address: value is the endpoint id holding it. Uniqueness of
/// addresses comes from compare-and-set on these keys alone.
pub fn address(network: &str, ip: Ipv4Addr) -> String {
    format!("{PREFIX}ipam/{network}/addrs/{ip}")
}
pub fn addresses(network: &str) -> String {
    format!("{PREFIX}ipam/{network}/addrs/")
}

/// A block claimed by a node (affinity only: a hint, never a guarantee).
pub fn block(network: &str, block: Ipv4Net) -> String {
    // '/' would split the key; blocks are written as a.b.c.d_len.
    format!(
        "{PREFIX}ipam/{network}/blocks/{}_{}",
        block.addr(),
        block.prefix_len()
    )
}
pub fn blocks(network: &str) -> String {
    format!("{PREFIX}ipam/{network}/blocks/")
}
pub fn ipam(network: &str) -> String {
    format!("{PREFIX}ipam/{network}/")
}

/// Parses a block key's last segment back into a subnet.
pub fn parse_block(key: &str) -> Option<Ipv4Net> {
    let last = key.rsplit('/').next()?;
    let (addr, len) = last.split_once('_')?;
    Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_keys_round_trip() {
        let b: Ipv4Net = "10.1.0.64/26".parse().unwrap();
        assert_eq!(parse_block(&block("web", b)), Some(b));
    }
}
