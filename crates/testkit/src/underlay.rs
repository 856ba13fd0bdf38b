//! Test hosts on a shared underlay: a "switch" namespace holding one or
//! more bridges, and host namespaces whose interfaces are veth ports of
//! them, with addresses in 198.18.0.0/15 (the benchmarking range, never
//! routed). Nothing is created in the root namespace.

use std::net::Ipv4Addr;

use crate::cmd;
use crate::error::Result;
use crate::names::unique_name;
use crate::netns::{self, Netns};

/// The default bridge of a switch.
pub const BRIDGE: &str = "lan0";
/// The underlay interface in every host.
pub const UNDERLAY_IFACE: &str = "eth0";
/// Prefix length of host addresses on a bridge (198.18.0.0/24, ...).
pub const UNDERLAY_PREFIX_LEN: u8 = 24;
/// The conventional gateway (and "outside world") on the underlay.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// Where multicast goes (a namespace needs a route for it, e.g. mDNS).
pub const MULTICAST_NET: &str = "224.0.0.0/4";

/// Whether frames bridged in namespace `ns` pass its iptables, ip6tables
/// and arptables (`net.bridge.bridge-nf-call-*`, br_netfilter, per
/// namespace; the kernel's default is on). Set explicitly, so a test never
/// depends on what the machine left there (dockerd turns it on).
pub fn bridge_netfilter(ns: &str, on: bool) -> Result<()> {
    let value = if on { "1" } else { "0" };
    for table in ["iptables", "ip6tables", "arptables"] {
        let key = format!("/proc/sys/net/bridge/bridge-nf-call-{table}");
        // /proc/sys/net is the reading process's namespace: write from inside.
        let script = format!(
            "[ -e {key} ] || {{ echo 'br_netfilter is not loaded (modprobe br_netfilter)' >&2; exit 1; }}; echo {value} > {key}"
        );
        netns::exec(ns, &["sh", "-c", &script])?;
    }
    Ok(())
}

/// Add bridge `bridge` (up, multicast snooping off, so multicast floods as
/// on a dumb switch, and no br_netfilter: a switch does not filter) in
/// namespace `switch`.
pub fn add_bridge(switch: &str, bridge: &str) -> Result<()> {
    bridge_netfilter(switch, false)?;
    cmd::ip(&[
        "-n",
        switch,
        "link",
        "add",
        bridge,
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])?;
    cmd::ip(&["-n", switch, "link", "set", bridge, "up"]).map(|_| ())
}

/// Connect namespace `ns` to `bridge` in namespace `switch`: port `port` on
/// the bridge, its peer `ifname` in `ns` with `ip`/`prefix_len`, both up.
pub fn plug(
    switch: &str,
    bridge: &str,
    port: &str,
    ns: &str,
    ifname: &str,
    ip: Ipv4Addr,
    prefix_len: u8,
) -> Result<()> {
    cmd::ip(&[
        "-n", switch, "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns,
    ])?;
    cmd::ip(&["-n", switch, "link", "set", port, "master", bridge, "up"])?;
    cmd::ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{ip}/{prefix_len}"),
        "dev",
        ifname,
    ])?;
    cmd::ip(&["-n", ns, "link", "set", ifname, "up"]).map(|_| ())
}

/// A default route via `gateway` in namespace `ns`.
pub fn default_route(ns: &str, gateway: Ipv4Addr) -> Result<()> {
    cmd::ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &gateway.to_string(),
    ])
    .map(|_| ())
}

/// Turn off TX checksum offload on `iface` in `ns`, so frames carry full
/// checksums as a real NIC's do (the OVS userspace datapath drops partial
/// ones, and TCP through it stalls otherwise).
pub fn full_checksums(ns: &str, iface: &str) -> Result<()> {
    netns::exec(ns, &["ethtool", "-K", iface, "tx", "off"]).map(|_| ())
}

/// An underlay of the test's own: switch `PREFIX-sw` with bridge
/// [`BRIDGE`], and namespaces `PREFIX-SUFFIX`. Every namespace is deleted
/// (with what runs in it) when this drops, the switch last.
#[derive(Debug)]
pub struct Underlay {
    prefix: String,
    namespaces: Vec<Netns>,
    ports: usize,
}

impl Underlay {
    /// A new underlay with a unique prefix `sp<tag>xxxxx-`.
    pub fn new(tag: char) -> Result<Underlay> {
        Underlay::with_prefix(&format!("sp{}", unique_name(tag)))
    }

    /// A new underlay whose namespaces are named `PREFIX-...`.
    pub fn with_prefix(prefix: &str) -> Result<Underlay> {
        let mut u = Underlay {
            prefix: prefix.to_string(),
            namespaces: Vec::new(),
            ports: 0,
        };
        let sw = u.netns("sw")?;
        add_bridge(&sw, BRIDGE)?;
        Ok(u)
    }

    /// The prefix of every namespace name.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The switch namespace.
    pub fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    /// Another bridge on the switch (a second LAN).
    pub fn add_bridge(&self, bridge: &str) -> Result<()> {
        add_bridge(&self.switch(), bridge)
    }

    /// A new empty namespace `PREFIX-SUFFIX` (`lo` up), owned by the
    /// underlay; returns its name.
    pub fn netns(&mut self, suffix: &str) -> Result<String> {
        let ns = Netns::create(&format!("{}-{suffix}", self.prefix))?;
        let name = ns.name().to_string();
        self.namespaces.push(ns);
        Ok(name)
    }

    /// Plug `ifname` of namespace `ns` into `bridge` with `ip`/24; the
    /// switch port gets a fresh name.
    pub fn plug(&mut self, ns: &str, ifname: &str, bridge: &str, ip: Ipv4Addr) -> Result<()> {
        self.ports += 1;
        let port = format!("p{}", self.ports);
        plug(
            &self.switch(),
            bridge,
            &port,
            ns,
            ifname,
            ip,
            UNDERLAY_PREFIX_LEN,
        )
    }

    /// A host: namespace `PREFIX-SUFFIX` with [`UNDERLAY_IFACE`] at `ip`/24
    /// on [`BRIDGE`]; returns its name.
    pub fn host(&mut self, suffix: &str, ip: Ipv4Addr) -> Result<String> {
        let ns = self.netns(suffix)?;
        self.plug(&ns, UNDERLAY_IFACE, BRIDGE, ip)?;
        Ok(ns)
    }

    /// A route for multicast via `dev` in `ns` (mDNS sends fail without one).
    pub fn multicast_route(&self, ns: &str, dev: &str) -> Result<()> {
        cmd::ip(&["-n", ns, "route", "add", MULTICAST_NET, "dev", dev]).map(|_| ())
    }

    /// A default route via `gateway` in `ns`.
    pub fn default_route(&self, ns: &str, gateway: Ipv4Addr) -> Result<()> {
        default_route(ns, gateway)
    }

    /// Names of all namespaces, the switch first.
    pub fn namespaces(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .map(|n| n.name().to_string())
            .collect()
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        // Workloads and hosts first, the switch last.
        while let Some(ns) = self.namespaces.pop() {
            drop(ns);
        }
    }
}
