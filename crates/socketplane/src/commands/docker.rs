//! The wrapper commands of the original SocketPlane: `socketplane run`,
//! `start`, `stop`, `rm`, `attach`. They run the `docker` CLI (honouring
//! `DOCKER_HOST`) with the terminal passed through, so `-it` stays
//! interactive; the network plumbing itself is done by the agent's Docker
//! plugin, so these are thin.

use std::process::Command;

use anyhow::Context as _;

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

/// `socketplane run [-n NET] <docker run args...>`.
pub fn run(network: &str, args: &[String]) -> anyhow::Result<()> {
    let mut argv = vec![
        "run".to_string(),
        "--network".to_string(),
        docker_network(network),
    ];
    argv.extend(args.iter().cloned());
    passthrough(&argv)
}

/// `socketplane start|stop|rm|attach <args...>`.
pub fn docker(command: &str, args: &[String]) -> anyhow::Result<()> {
    let mut argv = vec![command.to_string()];
    argv.extend(args.iter().cloned());
    passthrough(&argv)
}
