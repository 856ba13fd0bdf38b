//! One Open vSwitch per lab host, for `--datapath ovs`: its own database,
//! run directory and daemons inside the host's namespace, and the underlay
//! address on an OVS bridge (`br-phy`), which the userspace (`netdev`)
//! datapath needs for VXLAN. The daemons run in the host namespace, so the
//! lab's teardown (which kills every process in its namespaces) stops them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::cmd;
use crate::error::{LabError, Result};
use crate::{GATEWAY_IP, UNDERLAY_IFACE, UNDERLAY_PREFIX_LEN};

/// The bridge that carries the underlay address on an OVS host.
pub const UNDERLAY_BRIDGE: &str = "br-phy";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// The host's OVS directory (database, sockets, pids, logs).
pub fn dir(host_dir: &Path) -> PathBuf {
    host_dir.join("ovs")
}

/// The host's OVSDB socket (`--ovsdb` for its agent).
pub fn db_socket(host_dir: &Path) -> PathBuf {
    dir(host_dir).join("db.sock")
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Starts ovsdb-server and ovs-vswitchd in `ns` and moves the underlay
/// address `ip` from eth0 to an OVS bridge.
pub(crate) fn start(ns: &str, host_dir: &Path, ip: Ipv4Addr) -> Result<()> {
    if !Path::new(SCHEMA).exists() {
        return Err(LabError::InvalidConfig(format!(
            "--datapath ovs needs Open vSwitch ({SCHEMA} is missing): apt-get install openvswitch-switch"
        )));
    }
    let d = dir(host_dir);
    std::fs::create_dir_all(&d)
        .map_err(|e| LabError::InvalidConfig(format!("cannot create {}: {e}", d.display())))?;
    let db = s(&d.join("conf.db"));
    let sock = format!("unix:{}", s(&db_socket(host_dir)));
    let env = [
        format!("OVS_RUNDIR={}", s(&d)),
        format!("OVS_DBDIR={}", s(&d)),
        format!("OVS_LOGDIR={}", s(&d)),
    ];
    let in_ns = |args: &[&str]| -> Result<()> {
        let mut full: Vec<&str> = vec!["netns", "exec", ns, "env"];
        full.extend(env.iter().map(String::as_str));
        full.extend_from_slice(args);
        cmd::run("ip", &full).map(|_| ())
    };
    cmd::run("ovsdb-tool", &["create", &db, SCHEMA])?;
    in_ns(&[
        "ovsdb-server",
        &db,
        &format!("--remote=punix:{}", s(&db_socket(host_dir))),
        &format!("--pidfile={}", s(&d.join("ovsdb-server.pid"))),
        &format!("--unixctl={}", s(&d.join("ovsdb-server.ctl"))),
        &format!("--log-file={}", s(&d.join("ovsdb-server.log"))),
        "--detach",
    ])?;
    in_ns(&["ovs-vsctl", &format!("--db={sock}"), "--no-wait", "init"])?;
    in_ns(&[
        "ovs-vswitchd",
        &sock,
        &format!("--pidfile={}", s(&d.join("ovs-vswitchd.pid"))),
        &format!("--unixctl={}", s(&d.join("ovs-vswitchd.ctl"))),
        &format!("--log-file={}", s(&d.join("ovs-vswitchd.log"))),
        "--detach",
    ])?;
    in_ns(&[
        "ovs-vsctl",
        &format!("--db={sock}"),
        "--timeout=10",
        "add-br",
        UNDERLAY_BRIDGE,
        "--",
        "set",
        "bridge",
        UNDERLAY_BRIDGE,
        "datapath_type=netdev",
        "--",
        "add-port",
        UNDERLAY_BRIDGE,
        UNDERLAY_IFACE,
    ])?;
    let cidr = format!("{ip}/{UNDERLAY_PREFIX_LEN}");
    cmd::ip(&["-n", ns, "addr", "flush", "dev", UNDERLAY_IFACE])?;
    cmd::ip(&["-n", ns, "addr", "add", &cidr, "dev", UNDERLAY_BRIDGE])?;
    cmd::ip(&["-n", ns, "link", "set", UNDERLAY_BRIDGE, "up"])?;
    // The host's own traffic leaves through br-phy into the userspace
    // datapath: give it full checksums too.
    cmd::run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ethtool",
            "-K",
            UNDERLAY_BRIDGE,
            "tx",
            "off",
        ],
    )?;
    cmd::ip(&[
        "-n",
        ns,
        "route",
        "replace",
        "default",
        "via",
        &GATEWAY_IP.to_string(),
        "dev",
        UNDERLAY_BRIDGE,
    ])?;
    Ok(())
}

/// Frames that reach an OVS host from a veth must carry full checksums
/// (as a real NIC's do): the userspace datapath drops partial ones.
pub(crate) fn full_checksums(ns: &str) -> Result<()> {
    cmd::run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ethtool",
            "-K",
            UNDERLAY_IFACE,
            "tx",
            "off",
        ],
    )
    .map(|_| ())
}
