use clap::Subcommand;
use socketplane_api::rest::{
    AgentInfo, BindRequest, ClusterStatus, ClusterToken, JoinRequest, RemovedNode,
};

use super::{Context, Unhealthy};
use crate::output::{json, table};

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Use IFACE as the underlay interface (from the agent's next start).
    Bind { iface: String },
    /// Join the cluster of the node at ADDR (IP or IP:PORT).
    Join { addr: String },
    /// Leave the cluster for good: this host's endpoints are removed and the agent stops.
    Leave,
    /// Remove a dead node (id or name) for good: its addresses are free at
    /// once, and it cannot rejoin under its old identity.
    Remove { node: String },
    /// Show every node, its liveness and store role, and the store's health.
    Status,
    /// Print the token other hosts join with (`SOCKETPLANE_TOKEN=… socketplane agent start`).
    Token {
        #[command(subcommand)]
        action: Option<TokenCmd>,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a new token and print it: the old one admits no more hosts;
    /// members stay members.
    Rotate,
}

impl ClusterCmd {
    pub async fn exec(self, ctx: &Context) -> anyhow::Result<()> {
        let client = ctx.client();
        match self {
            ClusterCmd::Bind { iface } => {
                let info: AgentInfo = client
                    .post(
                        "/v1/cluster/bind",
                        &BindRequest {
                            iface: iface.clone(),
                        },
                    )
                    .await?;
                if ctx.json() {
                    json(&info)?;
                } else {
                    println!("Underlay interface set to {iface}; restart the agent (`socketplane agent stop && socketplane agent start`) to use it.");
                }
            }
            ClusterCmd::Join { addr } => {
                let info: AgentInfo = client
                    .post("/v1/cluster/join", &JoinRequest { addr: addr.clone() })
                    .await?;
                if ctx.json() {
                    json(&info)?;
                } else {
                    println!("Joined cluster {} through {addr}.", info.cluster);
                }
            }
            ClusterCmd::Leave => {
                let info: AgentInfo = client
                    .post("/v1/cluster/leave", &serde_json::json!({}))
                    .await?;
                if ctx.json() {
                    json(&info)?;
                } else {
                    println!(
                        "Node {} left cluster {}; its agent is stopping.",
                        info.node_name, info.cluster
                    );
                }
            }
            ClusterCmd::Remove { node } => {
                let removed: RemovedNode = client
                    .delete_for(&format!(
                        "/v1/cluster/nodes/{}",
                        socketplane_client::segment(&node)
                    ))
                    .await?;
                if ctx.json() {
                    json(&removed)?;
                } else {
                    println!(
                        "Removed node {} ({}); {} endpoint(s) reclaimed.",
                        removed.name, removed.id, removed.endpoints
                    );
                }
            }
            ClusterCmd::Token { action } => {
                let token: ClusterToken = match action {
                    None => client.get("/v1/cluster/token").await?,
                    Some(TokenCmd::Rotate) => {
                        client
                            .post("/v1/cluster/token/rotate", &serde_json::json!({}))
                            .await?
                    }
                };
                if ctx.json() {
                    return json(&token);
                }
                println!("{}", token.token);
            }
            ClusterCmd::Status => {
                let status: ClusterStatus = client.get("/v1/cluster").await?;
                if ctx.json() {
                    // Scripts read `healthy` (and each node's `problems`).
                    return json(&status);
                }
                print_status(&status);
                if !status.is_healthy() {
                    let n = status.problems.len()
                        + status.nodes.iter().map(|n| n.problems.len()).sum::<usize>()
                        + status.endpoint_failures.len()
                        + usize::from(status.fenced);
                    return Err(Unhealthy(format!(
                        "cluster {} is unhealthy ({n} problem(s))",
                        status.cluster
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }
}

/// `cluster status` for people: the cluster, a row per node, then every
/// problem with its reason.
fn print_status(status: &ClusterStatus) {
    if status.open {
        println!("WARNING: OPEN CLUSTER (founded with --open): the cluster port is unauthenticated and unencrypted; any host on the network can join and control it.");
    }
    println!(
        "Cluster {} ({}): store {} is {} (revision {}, leader {}).",
        status.cluster,
        if status.open {
            "OPEN: no authentication"
        } else {
            "secured"
        },
        status.store.backend,
        if status.store.healthy {
            "healthy"
        } else {
            "UNHEALTHY"
        },
        status.store.revision,
        status.store.leader.as_deref().unwrap_or("none"),
    );
    let rows: Vec<Vec<String>> = status
        .nodes
        .iter()
        .map(|n| {
            vec![
                format!(
                    "{}{}",
                    n.name,
                    if n.id == status.this_node { " *" } else { "" }
                ),
                n.id.clone(),
                n.addr.to_string(),
                if n.alive { "alive" } else { "dead" }.into(),
                n.role.clone(),
                n.applied_lag.map_or_else(|| "-".into(), |l| l.to_string()),
                n.datapath.clone(),
                if n.problems.is_empty() {
                    "ok".into()
                } else {
                    format!("{} problem(s)", n.problems.len())
                },
            ]
        })
        .collect();
    table(
        &[
            "NODE",
            "ID",
            "ADDRESS",
            "STATE",
            "STORE ROLE",
            "LAG",
            "DATAPATH",
            "HEALTH",
        ],
        &rows,
    );
    let problems: Vec<String> = status
        .problems
        .iter()
        .cloned()
        .chain(
            status
                .nodes
                .iter()
                .flat_map(|n| n.problems.iter().map(move |p| format!("{}: {p}", n.name))),
        )
        .collect();
    if status.fenced {
        println!("This host is FENCED: cut off from the cluster's majority, its workloads are off the wire until it is back.");
    }
    for p in &status.endpoint_failures {
        println!(
            "Endpoint {} failed to converge ({} attempts, retrying): {}",
            p.id, p.attempts, p.reason
        );
    }
    if problems.is_empty() && status.is_healthy() {
        println!("Healthy.");
    } else if problems.is_empty() {
        println!("Unhealthy.");
    } else {
        println!("Problems:");
        for p in problems {
            println!("  - {p}");
        }
    }
}
