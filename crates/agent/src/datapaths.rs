//! Chooses the datapath named by `--datapath`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context;
use socketplane_datapath::linux::{LinuxConfig, LinuxDatapath};
use socketplane_datapath::Datapath;

pub async fn select(name: &str, iface: &str, addr: Ipv4Addr) -> anyhow::Result<Arc<dyn Datapath>> {
    match name {
        "linux" | "auto" => {
            if name == "auto" {
                tracing::info!("--datapath auto: using the Linux kernel datapath (Open vSwitch support is not built in yet).");
            }
            let dp = LinuxDatapath::new(LinuxConfig {
                underlay_iface: iface.to_string(),
                underlay_ip: Some(addr),
                mtu: None,
            })
            .await
            .context("starting the Linux datapath")?;
            Ok(Arc::new(dp))
        }
        "ovs" => anyhow::bail!(
            "--datapath ovs: the Open vSwitch datapath is not available in this build; use --datapath linux"
        ),
        other => anyhow::bail!("unknown --datapath {other:?}: use auto, linux or ovs"),
    }
}
