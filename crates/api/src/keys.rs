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

/// When the survivors first saw a node's liveness key gone (unix seconds),
/// written once by the first reclaimer to notice, so a leader change
/// neither resets nor shortens the grace; deleted when the node registers.
pub fn dead_since(id: &str) -> String {
    format!("{PREFIX}dead-since/{id}")
}

/// The join secret after `cluster token rotate`, sealed under a key of the
/// cluster CA (only members can open it); absent until the first rotation.
pub fn join_secret() -> String {
    format!("{PREFIX}trust/join-secret")
}

/// The certificate the cluster issued to a node (value: JSON
/// `{"key_sha256": <hex SHA-256 of its SubjectPublicKeyInfo>}`), written
/// by the member that enrolled it before handing it out (and by each
/// member for itself when it starts): the cluster port admits a node
/// certificate only if its id and key match this record.
pub fn issued(id: &str) -> String {
    format!("{PREFIX}trust/issued/{id}")
}

/// A node removed by `cluster remove` (value: unix seconds): it may not
/// register again under this id.
pub fn removed(id: &str) -> String {
    format!("{PREFIX}removed/{id}")
}

/// A network record ([`crate::NetworkRecord`]), by the network's immutable
/// id. (Before ids, this key held the network by name; the agent migrates
/// such records on start.)
pub fn network(id: &str) -> String {
    format!("{PREFIX}networks/{id}")
}
pub fn networks() -> String {
    format!("{PREFIX}networks/")
}

/// A network's name: value is the id of the network holding it. Written in
/// the same transaction as the network, so names are unique cluster-wide.
pub fn network_name(name: &str) -> String {
    format!("{PREFIX}network-names/{name}")
}
pub fn network_names() -> String {
    format!("{PREFIX}network-names/")
}

/// Written by every network create and delete; creates compare on it so two
/// concurrent creates cannot both pass the overlap and VNI checks.
pub fn networks_lock() -> String {
    format!("{PREFIX}locks/networks")
}

/// An endpoint id given up on: its attach failed with an unknown outcome
/// (the write may still be in flight) and the endpoint was not there.
/// Every attach compares it absent, so once this exists such a write can
/// no longer land. Put with a lease that lets it expire.
pub fn abandoned(id: &str) -> String {
    format!("{PREFIX}abandoned/{id}")
}

pub fn endpoint(id: &str) -> String {
    format!("{PREFIX}endpoints/{id}")
}
pub fn endpoints() -> String {
    format!("{PREFIX}endpoints/")
}

/// An allocated address of a network (by id): value is the endpoint id
/// holding it. An address is free when neither this key nor its
/// [`reservation`] exists; every allocation compares on both.
pub fn address(network: &str, ip: Ipv4Addr) -> String {
    format!("{PREFIX}ipam/{network}/addrs/{ip}")
}
pub fn addresses(network: &str) -> String {
    format!("{PREFIX}ipam/{network}/addrs/")
}

/// An address reserved without an endpoint yet
/// ([`crate::ReservationRecord`]): Docker's IPAM driver hands an address
/// out before Docker creates the endpoint that takes it up.
pub fn reservation(network: &str, ip: Ipv4Addr) -> String {
    format!("{PREFIX}ipam/{network}/reserved/{ip}")
}
pub fn reservations(network: &str) -> String {
    format!("{PREFIX}ipam/{network}/reserved/")
}

/// The address an [`address`] or [`reservation`] key is about.
pub fn parse_ip(key: &str) -> Option<Ipv4Addr> {
    key.rsplit('/').next()?.parse().ok()
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

/// What a Docker network id on `node` maps to
/// ([`crate::DockerNetworkRecord`]); Docker network ids are per daemon.
pub fn docker_network(node: &str, docker_id: &str) -> String {
    format!("{PREFIX}docker/{node}/networks/{docker_id}")
}
pub fn docker_networks(node: &str) -> String {
    format!("{PREFIX}docker/{node}/networks/")
}
pub fn docker_prefix() -> String {
    format!("{PREFIX}docker/")
}

/// Parses a block key's last segment back into a subnet.
pub fn parse_block(key: &str) -> Option<Ipv4Net> {
    let last = key.rsplit('/').next()?;
    let (addr, len) = last.split_once('_')?;
    Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()
}

/// Hosts' health reports ([`crate::HealthRecord`]), by node id. Kept under a
/// prefix of their own, beside [`PREFIX`]: the reconcilers watch `PREFIX`,
/// and a host's report must not wake every datapath in the cluster.
pub const HEALTH_PREFIX: &str = "/socketplane/health/v1/";

pub fn health(id: &str) -> String {
    format!("{HEALTH_PREFIX}{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_keys_round_trip() {
        let b: Ipv4Net = "10.1.0.64/26".parse().unwrap();
        assert_eq!(parse_block(&block("web", b)), Some(b));
    }

    #[test]
    fn address_keys_carry_their_ip() {
        let ip: Ipv4Addr = "10.1.0.7".parse().unwrap();
        assert_eq!(parse_ip(&address("n1", ip)), Some(ip));
        assert_eq!(parse_ip(&reservation("n1", ip)), Some(ip));
        assert_ne!(address("n1", ip), reservation("n1", ip));
    }
}
