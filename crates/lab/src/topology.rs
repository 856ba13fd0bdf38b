//! The lab's namespaces and wiring (nothing is created in the root
//! namespace), built with the test kit:
//!
//! - `sp-NAME-sw`: the "switch", holding bridge `lan0`; one veth per host
//!   (`h1`, `h2`, ...) and one to the outside (`out`) are its ports.
//! - `sp-NAME-h1`, ...: hosts; `eth0` has 198.18.0.(10+i)/24, `lo` is up,
//!   the default route goes via [`GATEWAY_IP`]. With `--datapath ovs` the
//!   address sits on `br-phy` instead (see [`crate::ovs`]).
//! - `sp-NAME-out`: the outside world at [`GATEWAY_IP`] (and
//!   [`OUTSIDE_REMOTE_IP`] on its `lo`); it does not forward, except with
//!   a second subnet (`LabConfig::second_subnet_from`): then bridge `lan1`
//!   holds the later hosts (198.18.1.(10+i)/24) and the outside routes
//!   between the subnets (198.18.1.254 on its `eth1`).
//! - `sp-NAME-WL`: workload namespaces.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub(crate) use socketplane_testkit::underlay::BRIDGE;
use socketplane_testkit::underlay::{self, UNDERLAY_IFACE, UNDERLAY_PREFIX_LEN};
use socketplane_testkit::{cmd, netns};

use crate::error::Result;
use crate::ovs;

pub use socketplane_testkit::underlay::GATEWAY_IP;

/// An address on the outside namespace's loopback, reached via the gateway:
/// a stand-in for "the internet" in masquerade tests.
pub const OUTSIDE_REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

/// Names of a lab's namespaces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names<'a>(pub &'a str);

impl Names<'_> {
    /// The prefix of every namespace of the lab.
    pub fn prefix(&self) -> String {
        format!("sp-{}-", self.0)
    }

    /// `sp-NAME-SUFFIX`.
    pub fn ns(&self, suffix: &str) -> String {
        format!("sp-{}-{suffix}", self.0)
    }

    pub fn switch(&self) -> String {
        self.ns("sw")
    }

    pub fn outside(&self) -> String {
        self.ns("out")
    }

    /// The namespace of the host at `index` (0-based).
    pub fn host(&self, index: usize) -> String {
        self.ns(&format!("h{}", index + 1))
    }
}

/// Whether `name` is one of the lab's own suffixes (not a workload's).
pub(crate) fn reserved_suffix(name: &str) -> bool {
    name == "sw"
        || name == "out"
        || name == "etcd"
        || (name.starts_with('h') && name[1..].bytes().all(|b| b.is_ascii_digit()))
}

/// One host of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// 0-based index into [`crate::Lab::hosts`] (`host1` has index 0).
    pub index: usize,
    /// `host1`, `host2`, ...
    pub name: String,
    /// Network namespace name (`sp-NAME-h1`).
    pub netns: String,
    /// Address of `eth0`.
    pub underlay_ip: Ipv4Addr,
    /// The agent's API socket.
    pub socket: PathBuf,
    /// The agent's `--data-dir`.
    pub data_dir: PathBuf,
    /// The agent's log (stdout and stderr).
    pub log: PathBuf,
    /// The agent's process id while it runs.
    pub agent_pid: Option<u32>,
    /// Start time of `agent_pid` (clock ticks since boot), to detect pid reuse.
    pub(crate) agent_start_time: Option<u64>,
}

impl HostInfo {
    /// The host's directory (holding data dir, socket and log).
    pub fn dir(&self) -> &Path {
        self.log.parent().unwrap_or_else(|| Path::new("/"))
    }

    /// Path of the host's namespace (`/run/netns/...`).
    pub fn netns_path(&self) -> PathBuf {
        netns::path(&self.netns)
    }
}

/// The switch: namespace `ns` with bridge `lan0`. The namespace must
/// already exist (the caller records it first, for teardown).
pub(crate) fn build_switch(ns: &str) -> Result<()> {
    underlay::add_bridge(ns, BRIDGE)?;
    Ok(())
}

/// Plug namespace `ns` into the switch as port `port` with `eth0` at `ip`.
pub(crate) fn plug(switch: &str, port: &str, ns: &str, ip: Ipv4Addr) -> Result<()> {
    underlay::plug(
        switch,
        BRIDGE,
        port,
        ns,
        UNDERLAY_IFACE,
        ip,
        UNDERLAY_PREFIX_LEN,
    )?;
    Ok(())
}

/// The outside world in namespace `ns` (already created): the gateway
/// address on the switch, [`OUTSIDE_REMOTE_IP`] on its loopback.
pub(crate) fn build_outside(switch: &str, ns: &str, with_ovs: bool) -> Result<()> {
    plug(switch, "out", ns, GATEWAY_IP)?;
    cmd::ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{OUTSIDE_REMOTE_IP}/32"),
        "dev",
        "lo",
    ])?;
    if with_ovs {
        // OVS hosts read it with the userspace datapath: full checksums.
        underlay::full_checksums(ns, UNDERLAY_IFACE)?;
    }
    Ok(())
}

/// The second underlay subnet: bridge [`crate::config::SECOND_BRIDGE`] on
/// the switch, and the outside namespace `out` as its router (`eth1` at
/// [`crate::config::SECOND_GATEWAY_IP`], forwarding on).
pub(crate) fn build_second_subnet(switch: &str, out: &str) -> Result<()> {
    use crate::config::{SECOND_BRIDGE, SECOND_GATEWAY_IP};
    underlay::add_bridge(switch, SECOND_BRIDGE)?;
    underlay::plug(
        switch,
        SECOND_BRIDGE,
        "out1",
        out,
        "eth1",
        SECOND_GATEWAY_IP,
        UNDERLAY_PREFIX_LEN,
    )?;
    netns::exec(out, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    Ok(())
}

/// The etcd host in namespace `ns` (already created): `eth0` at
/// [`crate::config::ETCD_IP`] on the switch.
pub(crate) fn build_etcd_host(switch: &str, ns: &str, with_ovs: bool) -> Result<()> {
    plug(switch, "etcd", ns, crate::config::ETCD_IP)?;
    if with_ovs {
        underlay::full_checksums(ns, UNDERLAY_IFACE)?;
    }
    Ok(())
}

/// Host `number` (1-based) in namespace `ns` (already created): `eth0` at
/// `ip` on bridge `lan.0` of the switch, default route via `lan.1` (the
/// outside's address on that subnet); with OVS, its own Open vSwitch
/// with files under `dir`.
pub(crate) fn build_host_on(
    (switch, lan): (&str, (&str, Ipv4Addr)),
    number: usize,
    ns: &str,
    ip: Ipv4Addr,
    dir: &Path,
    with_ovs: bool,
) -> Result<()> {
    underlay::plug(
        switch,
        lan.0,
        &format!("h{number}"),
        ns,
        UNDERLAY_IFACE,
        ip,
        UNDERLAY_PREFIX_LEN,
    )?;
    underlay::default_route(ns, lan.1)?;
    if with_ovs {
        ovs::start(ns, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = Names("ab");
        assert_eq!(n.switch(), "sp-ab-sw");
        assert_eq!(n.outside(), "sp-ab-out");
        assert_eq!(n.host(0), "sp-ab-h1");
        assert_eq!(n.prefix(), "sp-ab-");
        assert!(reserved_suffix("h12") && reserved_suffix("sw") && reserved_suffix("out"));
        assert!(!reserved_suffix("web") && !reserved_suffix("hx"));
    }
}
