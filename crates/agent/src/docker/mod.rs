//! Docker integration: the agent is a libnetwork remote network driver and
//! a remote IPAM driver, served on a unix socket in Docker's plugin
//! directory (legacy discovery: `/run/docker/plugins/NAME.sock` makes the
//! drivers `NAME`).
//!
//! How Docker's objects map to the cluster's:
//! - A Docker network id maps to a cluster network by name, kept per node
//!   under `/socketplane/v1/docker/NODE/networks/ID` (Docker network ids
//!   are per daemon). Docker does not pass the network's name to drivers,
//!   so `CreateNetwork` binds to the cluster network with exactly the
//!   network's subnet if there is one; otherwise it creates a cluster
//!   network named by the driver option `-o name=NAME`, or `docker-ID12`
//!   (the first 12 digits of Docker's id), which the [`mirror`] renames to
//!   the Docker network's name as soon as Docker lists it (while nothing
//!   uses it yet).
//! - IPAM pool ids are the subnets themselves (stateless: an agent restart
//!   loses nothing). `RequestAddress` reserves the address in the cluster
//!   IPAM under the same keys endpoints use, so no other host can take it;
//!   `CreateEndpoint` then turns the reservation into an endpoint whose id
//!   is Docker's endpoint id, and `DeleteEndpoint` frees both.
//! - [`mirror`] keeps every cluster network present in the local Docker.
//! - The endpoint's veth is created with the workload end left in the host
//!   namespace; `Join` names it and Docker moves it into the container.

pub mod mirror;
pub mod plugin;
pub mod protocol;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use socketplane_api::keys;
use tokio::task::JoinHandle;

use crate::agent::Agent;

/// The driver name Docker knows the plugin by: the socket's file stem.
pub fn driver_name(socket: &Path) -> String {
    socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "socketplane".into())
}

/// Store key mapping a Docker network id on `node` to a cluster network.
pub fn network_key(node: &str, docker_id: &str) -> String {
    format!("{}docker/{node}/networks/{docker_id}", keys::PREFIX)
}

/// The running plugin server: stops and removes its socket when dropped.
pub struct PluginServer {
    path: PathBuf,
    task: JoinHandle<()>,
    mirror: JoinHandle<()>,
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        self.task.abort();
        self.mirror.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves the network and IPAM drivers on `path`.
pub async fn serve(agent: Arc<Agent>, path: PathBuf) -> anyhow::Result<PluginServer> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by a crashed agent would make bind fail.
    if path.exists() {
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the Docker plugin socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    let name = driver_name(&path);
    tracing::info!(socket = %path.display(), driver = %name, "Serving the Docker network and IPAM drivers.");
    let app = plugin::router(agent.clone());
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The Docker plugin server stopped.");
        }
    });
    let mirror = tokio::spawn(mirror::run(agent, name));
    Ok(PluginServer { path, task, mirror })
}
