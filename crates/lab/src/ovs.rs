//! One Open vSwitch per lab host, for `--datapath ovs` (the test kit's
//! [`Ovs`]): its own database, run directory and daemons inside the host's
//! namespace, and the underlay address on an OVS bridge (`br-phy`), which
//! the userspace (`netdev`) datapath needs for VXLAN. The daemons are left
//! running in the host namespace; the lab's teardown (which kills every
//! process in its namespaces) stops them.

use std::path::{Path, PathBuf};

use socketplane_testkit::underlay::{self, GATEWAY_IP, UNDERLAY_IFACE};
use socketplane_testkit::{cmd, Ovs};

use crate::error::Result;

pub use socketplane_testkit::ovs::UNDERLAY_BRIDGE;

/// The host's OVS directory (database, sockets, pids, logs).
pub fn dir(host_dir: &Path) -> PathBuf {
    host_dir.join("ovs")
}

/// The host's OVSDB socket (`--ovsdb` for its agent).
pub fn db_socket(host_dir: &Path) -> PathBuf {
    socketplane_testkit::ovs::db_socket(&dir(host_dir))
}

/// A handle to the Open vSwitch of the host whose directory is
/// `host_dir`, in namespace `ns` (for `ovs-vsctl`, `ovs-ofctl`).
pub fn attach(ns: &str, host_dir: &Path) -> Ovs {
    Ovs::attach(ns, &dir(host_dir))
}

/// Start ovsdb-server and ovs-vswitchd in `ns` and move the underlay
/// address from eth0 to [`UNDERLAY_BRIDGE`].
pub(crate) fn start(ns: &str, host_dir: &Path) -> Result<()> {
    let ovs = Ovs::start(ns, &dir(host_dir))?;
    let moved = ovs
        .move_underlay(UNDERLAY_IFACE, UNDERLAY_BRIDGE)
        .and_then(|_| {
            // The host's own traffic leaves through br-phy into the userspace
            // datapath: give it full checksums too.
            underlay::full_checksums(ns, UNDERLAY_BRIDGE)?;
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
            // ovs-vswitchd keeps its own copy of the routes (see there).
            ovs.sync_routes()
        });
    // Running from here on: the lab owns the daemons through its namespace
    // (on failure too, its rollback deletes the namespace).
    ovs.detach();
    moved?;
    Ok(())
}
