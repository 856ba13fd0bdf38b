use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use socketplane_api::rest::{AttachEndpoint, EndpointInfo};

use super::Context;
use crate::output::{json, table};
use socketplane_client::segment;

#[derive(Subcommand)]
pub enum EndpointCmd {
    /// Put a network namespace on a network.
    Attach {
        #[arg(long)]
        netns: PathBuf,
        #[arg(short = 'n', long)]
        network: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Ask for this address instead of the next free one.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
    },
    /// Take a network namespace off a network.
    Detach {
        #[arg(long)]
        netns: PathBuf,
        #[arg(short = 'n', long)]
        network: String,
    },
    /// List the cluster's endpoints with their host.
    #[command(alias = "ls")]
    List {
        /// Only this host's endpoints.
        #[arg(long)]
        local: bool,
    },
}

pub fn print_endpoints(eps: &[EndpointInfo]) {
    let rows: Vec<Vec<String>> = eps
        .iter()
        .map(|e| {
            vec![
                e.endpoint.id.clone(),
                display_name(&e.endpoint),
                container(&e.endpoint),
                e.endpoint.network.clone(),
                format!("{}/{}", e.endpoint.ip, e.prefix_len),
                e.endpoint.mac.to_string(),
                e.gateway.to_string(),
                e.node_name.clone(),
                match (&e.status, &e.reason) {
                    (Some(s), Some(r)) => format!("{s}: {r}"),
                    (Some(s), None) => s.clone(),
                    (None, _) => "-".into(),
                },
            ]
        })
        .collect();
    table(
        &[
            "ENDPOINT",
            "NAME",
            "CONTAINER",
            "NETWORK",
            "ADDRESS",
            "MAC",
            "GATEWAY",
            "HOST",
            "STATUS",
        ],
        &rows,
    );
}

/// The endpoint's name; a Kubernetes pod as `NAMESPACE/POD`.
fn display_name(ep: &socketplane_api::EndpointRecord) -> String {
    match (&ep.pod_namespace, &ep.pod_name) {
        (Some(ns), Some(pod)) => format!("{ns}/{pod}"),
        _ => ep.name.clone().unwrap_or_default(),
    }
}

/// The runtime's container id (shortened as runtimes show it) and, for
/// attachments made through CNI, its interface: `1a2b3c4d5e6f (cni eth0)`.
fn container(ep: &socketplane_api::EndpointRecord) -> String {
    let Some(id) = &ep.container_id else {
        return String::new();
    };
    let short: String = id.chars().take(12).collect();
    match &ep.origin {
        Some(origin) => format!("{short} ({origin} {})", ep.ifname),
        None => short,
    }
}

/// The namespace path made absolute, its directory resolved but not the
/// file itself: `/proc/PID/ns/net` is a link that names no real path.
fn canonical_netns(path: &PathBuf) -> anyhow::Result<String> {
    let context = || format!("network namespace {}", path.display());
    let abs = std::path::absolute(path).with_context(context)?;
    let p = match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(file)) => std::fs::canonicalize(dir).with_context(context)?.join(file),
        _ => abs,
    };
    Ok(p.to_string_lossy().into_owned())
}

impl EndpointCmd {
    pub async fn exec(self, ctx: &Context) -> anyhow::Result<()> {
        let client = ctx.client();
        match self {
            EndpointCmd::Attach {
                netns,
                network,
                name,
                ifname,
                ip,
            } => {
                let req = AttachEndpoint {
                    network,
                    netns: Some(canonical_netns(&netns)?),
                    name,
                    ifname: Some(ifname),
                    ip,
                    container_id: None,
                    ..Default::default()
                };
                // A request id: if the answer is lost on the way (the
                // connection dropped), the retry finds the endpoint the first
                // try made instead of making a second one.
                let request_id = format!(
                    "cli-{}-{}",
                    std::process::id(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos())
                );
                let path = format!("/v1/endpoints?request_id={request_id}");
                let ep: EndpointInfo = match client.post(&path, &req).await {
                    Err(socketplane_client::Error::Http(_)) => client.post(&path, &req).await?,
                    r => r?,
                };
                if ctx.json() {
                    json(&ep)?;
                } else {
                    println!(
                        "Attached {} to {}: {}/{} ({}), gateway {}, endpoint {}.",
                        netns.display(),
                        ep.endpoint.network,
                        ep.endpoint.ip,
                        ep.prefix_len,
                        ep.endpoint.mac,
                        ep.gateway,
                        ep.endpoint.id
                    );
                }
            }
            EndpointCmd::Detach { netns, network } => {
                let path = canonical_netns(&netns)
                    .unwrap_or_else(|_| netns.to_string_lossy().into_owned());
                let eps: Vec<EndpointInfo> = client
                    .get(&format!(
                        "/v1/endpoints?local=true&network={}",
                        segment(&network)
                    ))
                    .await?;
                let ep = eps
                    .iter()
                    .find(|e| e.endpoint.netns.as_deref() == Some(path.as_str()))
                    .with_context(|| {
                        format!(
                            "{} is not attached to network {network} on this host",
                            netns.display()
                        )
                    })?;
                client
                    .delete(&format!("/v1/endpoints/{}", segment(&ep.endpoint.id)))
                    .await?;
                if ctx.json() {
                    json(&serde_json::json!({ "detached": ep.endpoint.id }))?;
                } else {
                    println!(
                        "Detached {} from {network} (released {}).",
                        netns.display(),
                        ep.endpoint.ip
                    );
                }
            }
            EndpointCmd::List { local } => {
                let q = if local { "?local=true" } else { "" };
                let eps: Vec<EndpointInfo> = client.get(&format!("/v1/endpoints{q}")).await?;
                if ctx.json() {
                    json(&eps)?;
                } else {
                    print_endpoints(&eps);
                }
            }
        }
        Ok(())
    }
}
