//! Applies a `DesiredState` (JSON) with the Linux datapath in the current
//! network namespace and prints the `ApplyReport` as JSON.
//!
//! Usage: `dp-apply [--iface IF] [--ip ADDR] [--mtu N] [--table NAME] [--teardown] [FILE|-]`
//! (run e.g. under `ip netns exec HOST`). `--teardown` removes everything.

mod common;

use socketplane_datapath::linux::{LinuxConfig, LinuxDatapath};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let usage = "[--iface IF] [--ip ADDR] [--mtu N] [--table NAME] [--teardown] [FILE|-]";
    let f = common::Flags::parse("dp-apply", usage, |_, _| false);
    let cfg = LinuxConfig {
        underlay_iface: f.iface.clone().unwrap_or_else(|| "eth0".into()),
        underlay_ip: f.ip,
        mtu: f.mtu,
    };
    let mut dp = LinuxDatapath::new(cfg).await.unwrap_or_else(|e| f.fail(e));
    if let Some(t) = &f.table {
        dp = dp.with_firewall_table(t);
    }
    f.run(&dp).await;
}
