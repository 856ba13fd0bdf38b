//! A look into a container's network namespace for CHECK: its interfaces
//! (MAC, IPv4 addresses) and IPv4 routes. `setns` is per thread, so the
//! look happens on a thread of its own that ends with it.

use std::fs::File;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nix::sched::CloneFlags;

use crate::error::{codes, CniError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub addresses: Vec<Ipv4Net>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetnsView {
    pub interfaces: Vec<Interface>,
    /// (destination, gateway) of the main table.
    pub routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
}

impl NetnsView {
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// What the namespace at `netns` holds.
pub fn inspect(netns: &str) -> Result<NetnsView, CniError> {
    let file = File::open(netns).map_err(|e| {
        CniError::new(
            codes::UNKNOWN_CONTAINER,
            format!("cannot open the container's network namespace {netns}"),
        )
        .with_details(e.to_string())
    })?;
    let path = netns.to_string();
    std::thread::spawn(move || {
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
            CniError::new(
                codes::IO,
                format!("cannot enter the network namespace {path}"),
            )
            .with_details(e.to_string())
        })?;
        Ok(NetnsView {
            interfaces: interfaces()?,
            routes: routes()?,
        })
    })
    .join()
    .map_err(|_| CniError::new(codes::IO, "inspecting the network namespace failed"))?
}

fn interfaces() -> Result<Vec<Interface>, CniError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| {
        CniError::new(codes::IO, "cannot list the container's interfaces")
            .with_details(e.to_string())
    })?;
    let mut out: Vec<Interface> = Vec::new();
    for a in addrs {
        let pos = match out.iter().position(|i| i.name == a.interface_name) {
            Some(p) => p,
            None => {
                out.push(Interface {
                    name: a.interface_name.clone(),
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        let iface = &mut out[pos];
        let Some(addr) = a.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            if let Some(mac) = link.addr() {
                iface.mac = Some(
                    mac.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
        } else if let Some(v4) = addr.as_sockaddr_in() {
            let prefix = a
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| u32::from(m.ip()).count_ones() as u8)
                .unwrap_or(32);
            if let Ok(net) = Ipv4Net::new(v4.ip(), prefix) {
                iface.addresses.push(net);
            }
        }
    }
    Ok(out)
}

/// The main table from `/proc/thread-self/net/route` (this thread's namespace).
fn routes() -> Result<Vec<(Ipv4Net, Option<Ipv4Addr>)>, CniError> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route").map_err(|e| {
        CniError::new(codes::IO, "cannot read the container's routes").with_details(e.to_string())
    })?;
    Ok(parse_routes(&text))
}

fn parse_routes(text: &str) -> Vec<(Ipv4Net, Option<Ipv4Addr>)> {
    // The kernel prints the raw (network-order) word as a host-order number.
    let addr = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dst, gw, mask) = (addr(f.get(1)?)?, addr(f.get(2)?)?, addr(f.get(7)?)?);
            let prefix = u32::from(mask).count_ones() as u8;
            let net = Ipv4Net::new(dst, prefix).ok()?;
            Some((net, (!gw.is_unspecified()).then_some(gw)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_routes_parse() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0100010A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0000010A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_routes(text);
        assert_eq!(
            r,
            vec![
                (
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.1.0.1".parse().unwrap())
                ),
                ("10.1.0.0/16".parse().unwrap(), None),
            ]
        );
    }
}
