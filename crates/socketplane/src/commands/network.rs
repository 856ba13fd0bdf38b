use std::net::Ipv4Addr;

use clap::Subcommand;
use socketplane_api::rest::{CreateNetwork, NetworkInfo};

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
        n.network
            .mtu
            .map(|m| m.to_string())
            .unwrap_or_else(|| "auto".into()),
        n.endpoints.to_string(),
    ]
}

const HEADER: &[&str] = &["NAME", "SUBNET", "GATEWAY", "VNI", "MTU", "ENDPOINTS"];

impl NetworkCmd {
    pub async fn exec(self, ctx: &Context) -> anyhow::Result<()> {
        let client = ctx.client();
        match self {
            NetworkCmd::Create {
                name,
                cidr,
                gateway,
                mtu,
            } => {
                let req = CreateNetwork {
                    name,
                    subnet: cidr,
                    gateway,
                    mtu,
                };
                let net: NetworkInfo = client.post("/v1/networks", &req).await?;
                if ctx.json() {
                    json(&net)?;
                } else {
                    println!(
                        "Created network {} ({}, gateway {}, VNI {}).",
                        net.network.name, net.network.subnet, net.network.gateway, net.network.vni
                    );
                }
            }
            NetworkCmd::List => {
                let nets: Vec<NetworkInfo> = client.get("/v1/networks").await?;
                if ctx.json() {
                    json(&nets)?;
                } else {
                    table(HEADER, &nets.iter().map(row).collect::<Vec<_>>());
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
