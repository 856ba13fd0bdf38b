use std::net::Ipv4Addr;

use clap::Subcommand;
use socketplane_api::rest::{CreateNetwork, NetworkInfo};
use socketplane_api::NetworkMode;

use super::Context;
use crate::output::{json, table};
use socketplane_client::segment;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a network across the cluster.
    Create {
        name: String,
        /// The network's subnet, e.g. 10.2.0.0/16.
        cidr: String,
        /// Gateway address (default: the first host address).
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// MTU inside the network (default: underlay MTU − 50).
        #[arg(long)]
        mtu: Option<u32>,
        /// `overlay`: VXLAN between all hosts (one L2 segment, broadcast
        /// and multicast included). `routed`: plain IP between hosts on the
        /// same underlay subnet, VXLAN to the others; unicast only. Fixed
        /// for the network's life.
        #[arg(long, default_value = "overlay")]
        mode: NetworkMode,
    },
    /// List the cluster's networks.
    #[command(alias = "ls")]
    List,
    /// Show one network.
    Info { name: String },
    /// Delete a network on every host.
    #[command(alias = "rm")]
    Delete {
        name: String,
        /// Detach its endpoints first.
        #[arg(long)]
        force: bool,
    },
}

fn row(n: &NetworkInfo) -> Vec<String> {
    vec![
        n.network.name.clone(),
        n.network.subnet.to_string(),
        n.network.gateway.to_string(),
        n.network.vni.to_string(),
        n.network.mode.to_string(),
        n.network
            .mtu
            .map(|m| m.to_string())
            .unwrap_or_else(|| "auto".into()),
        n.endpoints.to_string(),
    ]
}

const HEADER: &[&str] = &[
    "NAME",
    "SUBNET",
    "GATEWAY",
    "VNI",
    "MODE",
    "MTU",
    "ENDPOINTS",
];

/// The notes of one network (how it is carried), after its table.
fn print_notes(net: &NetworkInfo) {
    for note in &net.notes {
        println!("Note: {note}");
    }
}

/// One line under `network list` when any network is routed.
fn print_routed_footer(nets: &[NetworkInfo]) {
    let routed: Vec<&str> = nets
        .iter()
        .filter(|n| n.network.mode == NetworkMode::Routed)
        .map(|n| n.network.name.as_str())
        .collect();
    if !routed.is_empty() {
        println!(
            "Note: routed networks ({}) carry no broadcast or multicast between hosts; \
             see `network info`.",
            routed.join(", ")
        );
    }
}

impl NetworkCmd {
    pub async fn exec(self, ctx: &Context) -> anyhow::Result<()> {
        let client = ctx.client();
        match self {
            NetworkCmd::Create {
                name,
                cidr,
                gateway,
                mtu,
                mode,
            } => {
                let req = CreateNetwork {
                    name,
                    subnet: cidr,
                    gateway,
                    mtu,
                    mode,
                };
                let net: NetworkInfo = client.post("/v1/networks", &req).await?;
                if ctx.json() {
                    json(&net)?;
                } else {
                    println!(
                        "Created network {} ({}, gateway {}, VNI {}, {} mode).",
                        net.network.name,
                        net.network.subnet,
                        net.network.gateway,
                        net.network.vni,
                        net.network.mode
                    );
                    print_notes(&net);
                }
            }
            NetworkCmd::List => {
                let nets: Vec<NetworkInfo> = client.get("/v1/networks").await?;
                if ctx.json() {
                    json(&nets)?;
                } else {
                    table(HEADER, &nets.iter().map(row).collect::<Vec<_>>());
                    print_routed_footer(&nets);
                }
            }
            NetworkCmd::Info { name } => {
                let net: NetworkInfo = client
                    .get(&format!("/v1/networks/{}", segment(&name)))
                    .await?;
                if ctx.json() {
                    json(&net)?;
                } else {
                    table(HEADER, &[row(&net)]);
                    print_notes(&net);
                }
            }
            NetworkCmd::Delete { name, force } => {
                let q = if force { "?force=true" } else { "" };
                client
                    .delete(&format!("/v1/networks/{}{q}", segment(&name)))
                    .await?;
                if ctx.json() {
                    json(&serde_json::json!({ "deleted": name }))?;
                } else {
                    println!("Deleted network {name}.");
                }
            }
        }
        Ok(())
    }
}
