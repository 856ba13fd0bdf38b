//! The wrapper commands of the original SocketPlane: `socketplane run`,
//! `start`, `stop`, `rm`, `attach`. They run the `docker` CLI (honouring
//! `DOCKER_HOST`) with the terminal passed through, so `-it` stays
//! interactive; the network plumbing itself is done by the agent's Docker
//! plugin, so these are thin.

use std::process::Command;

use anyhow::Context as _;
use socketplane_api::rest::NetworkInfo;

use socketplane_client::segment;

use super::Context;

/// Label the agent puts on the Docker networks it mirrors.
const NETWORK_LABEL: &str = "io.socketplane.network";

/// The Docker network of a SocketPlane network: the one the agent mirrored
/// (found by label), else the same name (`DRIVER-default` for `default`,
/// which Docker reserves).
fn docker_network(network: &str) -> String {
    let filter = format!("label={NETWORK_LABEL}={network}");
    if let Ok(out) = Command::new("docker")
        .args(["network", "ls", "-q", "--filter", &filter])
        .output()
    {
        if out.status.success() {
            if let Some(id) = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
            {
                return id.to_string();
            }
        }
    }
    if network == "default" {
        "socketplane-default".into()
    } else {
        network.to_string()
    }
}

/// Runs `docker ARGS...` with inherited stdio; exits with its status if it
/// fails.
fn passthrough(args: &[String]) -> anyhow::Result<()> {
    let status = Command::new("docker")
        .args(args)
        .status()
        .context("running `docker` (is the Docker CLI installed?)")?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// `socketplane run [-n NET] <docker run args...>`: with the network's
/// gateway as the container's DNS server (unless the arguments name one),
/// so Docker's embedded resolver forwards the names it does not know (the
/// containers of other hosts) to the agent.
pub async fn run(ctx: &Context, network: &str, args: &[String]) -> anyhow::Result<()> {
    let mut argv = vec![
        "run".to_string(),
        "--network".to_string(),
        docker_network(network),
    ];
    let names_dns = args.iter().any(|a| a == "--dns" || a.starts_with("--dns="));
    if !names_dns {
        let path = format!("/v1/networks/{}", segment(network));
        match ctx.client().get::<NetworkInfo>(&path).await {
            Ok(net) => argv.extend(["--dns".to_string(), net.network.gateway.to_string()]),
            Err(e) => eprintln!(
                "socketplane: not setting the container's DNS server (the network's gateway): {e}"
            ),
        }
    }
    argv.extend(args.iter().cloned());
    passthrough(&argv)
}

/// `socketplane start|stop|rm|attach <args...>`.
pub fn docker(command: &str, args: &[String]) -> anyhow::Result<()> {
    let mut argv = vec![command.to_string()];
    argv.extend(args.iter().cloned());
    passthrough(&argv)
}
