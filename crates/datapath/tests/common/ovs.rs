//! One Open vSwitch per test host (the test kit's [`socketplane_testkit::Ovs`],
//! userspace tunnelling set up: the underlay address on `br-phy`), with what
//! the datapath tests read from it and a way to start an `OvsDatapath` on it.
//! Test helpers panic on failure.

use std::path::PathBuf;

use socketplane_datapath::ovs::{OvsConfig, OvsDatapath, DEFAULT_BRIDGE};
use socketplane_datapath::Datapath;
use socketplane_testkit::ovs::UNDERLAY_BRIDGE;

use super::DpHost;

/// A host's Open vSwitch; its daemons stop and its directory goes on drop.
pub struct Ovs {
    pub ns: String,
    kit: socketplane_testkit::Ovs,
}

impl Ovs {
    /// Starts OVS in `ns` and moves the underlay address of eth0 to br-phy.
    pub fn start(ns: &str) -> Ovs {
        let kit = socketplane_testkit::Ovs::start_temp(ns)
            .unwrap_or_else(|e| panic!("cannot start Open vSwitch in {ns}: {e}"));
        kit.move_underlay("eth0", UNDERLAY_BRIDGE)
            .unwrap_or_else(|e| panic!("cannot move the underlay to {UNDERLAY_BRIDGE}: {e}"));
        Ovs {
            ns: ns.to_string(),
            kit,
        }
    }

    pub fn sock(&self) -> PathBuf {
        self.kit.db_socket()
    }

    pub fn start_db(&self) {
        self.kit.start_db().unwrap();
    }

    pub fn start_vswitchd(&self) {
        self.kit.start_vswitchd().unwrap();
    }

    pub fn stop_vswitchd(&self) {
        self.kit.stop_vswitchd();
    }

    pub fn stop_db(&self) {
        self.kit.stop_db();
    }

    pub fn vsctl(&self, args: &[&str]) -> String {
        self.kit.vsctl(args).unwrap()
    }

    pub fn ofctl(&self, args: &[&str]) -> String {
        self.kit.ofctl(args).unwrap()
    }

    pub fn appctl(&self, args: &[&str]) -> String {
        self.kit.appctl(args).unwrap()
    }

    /// The integration bridge's OpenFlow target.
    pub fn target(&self) -> String {
        self.kit.mgmt_target(DEFAULT_BRIDGE)
    }

    /// The integration bridge's flows without counters, sorted.
    pub fn flows(&self) -> Vec<String> {
        self.kit.flows(DEFAULT_BRIDGE).unwrap()
    }

    pub fn config(&self) -> OvsConfig {
        OvsConfig {
            ovsdb: self.sock(),
            bridge: DEFAULT_BRIDGE.into(),
            underlay_iface: UNDERLAY_BRIDGE.into(),
            underlay_ip: None,
            mtu: None,
        }
    }

    /// Starts an OvsDatapath for this OVS inside its namespace.
    pub fn datapath(&self) -> DpHost {
        let cfg = self.config();
        DpHost::start_with(&self.ns, move || async move {
            let dp = OvsDatapath::new(cfg).await.map_err(|e| e.to_string())?;
            let (ip, mtu) = (dp.underlay().ip, dp.underlay().default_mtu);
            Ok((Box::new(dp) as Box<dyn Datapath>, ip, mtu))
        })
    }
}
