//! Applies a `DesiredState` (JSON) with the Open vSwitch datapath in the
//! current network namespace and prints the `ApplyReport` as JSON.
//!
//! Usage: `ovs-apply [--ovsdb SOCK] [--bridge NAME] [--iface IF] [--ip ADDR]
//! [--mtu N] [--table NAME] [--teardown] [FILE|-]` (run e.g. under
//! `ip netns exec HOST`). `--teardown` removes everything.

mod common;

use socketplane_datapath::ovs::{OvsConfig, OvsDatapath};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let usage = "[--ovsdb SOCK] [--bridge NAME] [--iface IF] [--ip ADDR] [--mtu N] \
                 [--table NAME] [--teardown] [FILE|-]";
    let mut cfg = OvsConfig::new("br-phy");
    let f = common::Flags::parse("ovs-apply", usage, |flag, val| {
        match flag {
            "--ovsdb" => cfg.ovsdb = val().into(),
            "--bridge" => cfg.bridge = val(),
            _ => return false,
        }
        true
    });
    if let Some(i) = &f.iface {
        cfg.underlay_iface = i.clone();
    }
    (cfg.underlay_ip, cfg.mtu) = (f.ip, f.mtu);
    let mut dp = OvsDatapath::new(cfg).await.unwrap_or_else(|e| f.fail(e));
    if let Some(t) = &f.table {
        dp = dp.with_firewall_table(t);
    }
    f.run(&dp).await;
}
