//! Network mirroring: keeps the local Docker daemon's networks in step with
//! the cluster. Every SocketPlane network exists in Docker under the same
//! name with driver and IPAM driver = this plugin, the same subnet and
//! gateway; Docker networks of this driver whose cluster network is gone
//! are removed. A Docker network of another driver with a SocketPlane
//! network's name is a conflict: reported in the log, never overwritten.
//!
//! Docker is found at `DOCKER_HOST` (`unix://PATH`) or
//! `/var/run/docker.sock`. The mirror polls both sides every second (ten
//! times a second while a network made from Docker waits for its Docker
//! name), so a
//! Docker daemon that is absent, starts later or restarts is picked up on
//! the next round; the agent works without Docker meanwhile.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::{Docker, API_DEFAULT_VERSION};
use socketplane_api::{DockerNetworkRecord, NetworkRecord};
use tokio::sync::Notify;

use crate::backend::Backend;
use crate::names::{docker_network_name, placeholder_name, NETWORK_LABEL};

const PERIOD: Duration = Duration::from_secs(1);
/// While a network made from Docker still has its placeholder name.
const ADOPT_PERIOD: Duration = Duration::from_millis(100);
const STALE_RESERVATION: Duration = Duration::from_secs(60);
const DEFAULT_DOCKER: &str = "unix:///var/run/docker.sock";

/// The mirror's settings.
#[derive(Debug, Clone)]
pub struct MirrorConfig {
    /// The driver name (the plugin socket's file stem).
    pub driver: String,
    /// The Docker API endpoint, `unix://PATH`.
    pub docker_host: String,
    /// A Docker endpoint no container has for this long is stale.
    pub stale_after: Duration,
}

/// The Docker API endpoint: `DOCKER_HOST` (`unix://PATH`) or the default.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER.into())
}

struct Mirror {
    backend: Arc<dyn Backend>,
    config: MirrorConfig,
    docker: Option<Docker>,
    /// Problems already logged (logged again only after they clear).
    reported: HashSet<String>,
    docker_up: Option<bool>,
    /// Docker endpoints no container has, since when.
    missing: HashMap<String, Instant>,
    /// Reservations of this node, since when.
    reserved: HashMap<(String, Ipv4Addr), Instant>,
    /// A network made from Docker still waits for its Docker name.
    adopting: bool,
}

/// Runs until aborted. `created` wakes it when the plugin made a network
/// under a placeholder name.
pub async fn run(backend: Arc<dyn Backend>, config: MirrorConfig, created: Arc<Notify>) {
    let host = config.docker_host.clone();
    if !host.starts_with("unix://") && !host.starts_with('/') {
        tracing::warn!(%host, "Network mirroring needs a unix:// DOCKER_HOST; not mirroring.");
        return;
    }
    let mut m = Mirror {
        backend,
        config,
        docker: None,
        reported: HashSet::new(),
        docker_up: None,
        missing: HashMap::new(),
        reserved: HashMap::new(),
        adopting: false,
    };
    loop {
        let up = m.round().await;
        if m.docker_up != Some(up) {
            if up {
                tracing::info!(docker = %host, "Mirroring SocketPlane networks into Docker.");
            } else {
                tracing::info!(docker = %host, "Docker is not reachable; will keep trying.");
            }
            m.docker_up = Some(up);
        }
        let period = if m.adopting { ADOPT_PERIOD } else { PERIOD };
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = created.notified() => {}
        }
    }
}

impl Mirror {
    async fn client(&mut self) -> Option<Docker> {
        if let Some(d) = &self.docker {
            return Some(d.clone());
        }
        let path = self
            .config
            .docker_host
            .trim_start_matches("unix://")
            .to_string();
        let d = Docker::connect_with_unix(&path, 30, API_DEFAULT_VERSION).ok()?;
        let d = d.negotiate_version().await.ok()?;
        self.docker = Some(d.clone());
        Some(d)
    }

    fn report(&mut self, seen: &mut HashSet<String>, msg: String) {
        if self.reported.insert(msg.clone()) {
            tracing::warn!("{msg}");
        }
        seen.insert(msg);
    }

    /// One reconciliation; false when Docker could not be reached.
    async fn round(&mut self) -> bool {
        if self.backend.member().is_err() {
            return true; // not a cluster member yet: nothing to mirror
        }
        let Some(docker) = self.client().await else {
            return false;
        };
        let docker_nets = match docker.list_networks(None).await {
            Ok(n) => n,
            Err(error) => {
                tracing::debug!(%error, "Listing Docker networks failed.");
                self.docker = None;
                return false;
            }
        };
        let (Ok(nets), Ok(mappings)) =
            (self.backend.networks().await, self.backend.mappings().await)
        else {
            return true; // the store is unavailable: try next round
        };
        let by_id: HashMap<&str, &NetworkRecord> =
            nets.iter().map(|n| (n.id.as_str(), n)).collect();
        let by_name: HashMap<&str, &NetworkRecord> =
            nets.iter().map(|n| (n.name.as_str(), n)).collect();
        let driver = self.config.driver.clone();
        let mut seen = HashSet::new();
        self.adopting = false;

        // Which cluster networks the Docker networks of ours stand for;
        // the others (their cluster network is gone, or a mirrored copy
        // under a name the network no longer has) are removed.
        let mut represented: HashSet<String> = HashSet::new();
        for dn in &docker_nets {
            if dn.driver.as_deref() != Some(driver.as_str()) {
                continue;
            }
            let (Some(id), Some(name)) = (dn.id.as_deref(), dn.name.as_deref()) else {
                continue;
            };
            let mirrored = dn
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(NETWORK_LABEL));
            let target = match mappings.get(id) {
                Some(m) => by_id.get(m.network.as_str()).copied(),
                None if name
                    == docker_network_name(&driver, socketplane_api::defaults::NETWORK) =>
                {
                    by_name.get(socketplane_api::defaults::NETWORK).copied()
                }
                None => by_name.get(name).copied(),
            };
            if let Some(n) = target {
                // Docker does not tell drivers a network's name: a network
                // made with `docker network create` without `-o name=`
                // starts as docker-ID12 and takes Docker's name here.
                if let Some(m) = mappings.get(id) {
                    if m.created && n.name == placeholder_name(id) && name != n.name {
                        self.adopt_name(m, &n.name, name).await;
                        represented.insert(n.id.clone());
                        continue;
                    }
                }
                if !mirrored || name == docker_network_name(&driver, &n.name) {
                    represented.insert(n.id.clone());
                    continue;
                }
            }
            match docker.remove_network(id).await {
                Ok(()) => {
                    tracing::info!(network = %name, "Removed a Docker network whose SocketPlane network is gone or renamed.")
                }
                Err(e) => self.report(
                    &mut seen,
                    format!("Docker network {name:?} stands for a deleted or renamed SocketPlane network but cannot be removed: {e}"),
                ),
            }
        }

        for n in &nets {
            if represented.contains(&n.id) {
                continue;
            }
            let name = docker_network_name(&driver, &n.name);
            if let Some(other) = docker_nets
                .iter()
                .find(|dn| dn.name.as_deref() == Some(name.as_str()))
            {
                if other.driver.as_deref() == Some(driver.as_str()) {
                    continue; // being replaced this round
                }
                self.report(
                    &mut seen,
                    format!(
                        "Docker already has a network named {name:?} with driver {:?}: not mirroring the SocketPlane network {:?} (remove the Docker network to resolve)",
                        other.driver.as_deref().unwrap_or("?"),
                        n.name
                    ),
                );
                continue;
            }
            let req = NetworkCreateRequest {
                name: name.clone(),
                driver: Some(driver.clone()),
                ipam: Some(Ipam {
                    driver: Some(driver.clone()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(n.subnet.to_string()),
                        gateway: Some(n.gateway.to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                labels: Some(HashMap::from([(NETWORK_LABEL.to_string(), n.name.clone())])),
                ..Default::default()
            };
            match docker.create_network(req).await {
                Ok(_) => {
                    tracing::info!(network = %n.name, subnet = %n.subnet, "Mirrored a SocketPlane network into Docker.")
                }
                Err(e) => self.report(
                    &mut seen,
                    format!(
                        "Could not create SocketPlane network {:?} in Docker: {e}",
                        n.name
                    ),
                ),
            }
        }
        // Networks made from Docker whose Docker name is not known yet
        // (Docker lists a network only after the driver created it).
        self.adopting = mappings.iter().any(|(id, m)| {
            m.created
                && by_id
                    .get(m.network.as_str())
                    .is_some_and(|n| n.name == placeholder_name(id))
                && !docker_nets
                    .iter()
                    .any(|dn| dn.id.as_deref() == Some(id.as_str()))
        });
        // Problems that cleared may be reported again if they come back.
        self.reported.retain(|m| seen.contains(m));
        self.containers_round(&docker).await;
        true
    }

    /// Gives the cluster network made from a Docker network that Docker
    /// network's name. Endpoints refer to networks by id, so this holds
    /// while containers already use it.
    async fn adopt_name(&mut self, mapping: &DockerNetworkRecord, placeholder: &str, name: &str) {
        match self.backend.rename_network(&mapping.network, name).await {
            Ok(_) => {}
            Err(e) => {
                let msg = format!(
                    "Docker network {name:?} stays SocketPlane network {placeholder:?}: {e}"
                );
                if self.reported.insert(msg.clone()) {
                    tracing::info!("{msg}");
                }
            }
        }
    }

    /// Records the container name and id of this node's Docker endpoints
    /// (`socketplane info NAME`; the plugin calls do not carry them), and
    /// collects what a crash of Docker or of the agent left behind: Docker
    /// endpoints no container has any more, and address reservations no
    /// endpoint took up.
    async fn containers_round(&mut self, docker: &Docker) {
        let Ok(eps) = self.backend.own_endpoints().await else {
            return;
        };
        let opts = ListContainersOptionsBuilder::new().all(true).build();
        let Ok(containers) = docker.list_containers(Some(opts)).await else {
            return;
        };
        let mut known: HashMap<String, (Option<String>, Option<String>)> = HashMap::new();
        for c in containers {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string());
            let networks = c
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default();
            for settings in networks.into_values() {
                if let Some(eid) = settings.endpoint_id.filter(|e| !e.is_empty()) {
                    known.insert(eid, (name.clone(), c.id.clone()));
                }
            }
        }
        let now = Instant::now();
        let mut still_missing = HashMap::new();
        for ep in eps
            .iter()
            .filter(|e| e.netns.is_none() && is_docker_id(&e.id))
        {
            match known.get(&ep.id) {
                Some((name, id)) => {
                    if ep.container_id.is_none() {
                        let aliases = match id {
                            Some(id) => aliases(docker, id, &ep.id, name.as_deref()).await,
                            None => Vec::new(),
                        };
                        if let Err(error) = self
                            .backend
                            .set_endpoint_owner(&ep.id, name.clone(), id.clone(), aliases)
                            .await
                        {
                            tracing::debug!(endpoint = %ep.id, %error, "Could not record the endpoint's container.");
                        }
                    }
                }
                None => {
                    let since = self.missing.get(&ep.id).copied().unwrap_or(now);
                    if now.duration_since(since) >= self.config.stale_after {
                        tracing::info!(endpoint = %ep.id, ip = %ep.ip, "No Docker container has this endpoint any more; detaching it.");
                        let _ = self.backend.detach(&ep.id).await;
                    } else {
                        still_missing.insert(ep.id.clone(), since);
                    }
                }
            }
        }
        self.missing = still_missing;

        // Reservations: an address is reserved only between Docker's
        // RequestAddress and CreateEndpoint, a fraction of a second.
        let Ok(reservations) = self.backend.own_reservations().await else {
            return;
        };
        let mut still_reserved = HashMap::new();
        for r in reservations {
            let key = (r.network.clone(), r.ip);
            let since = self.reserved.get(&key).copied().unwrap_or(now);
            if now.duration_since(since) >= STALE_RESERVATION {
                tracing::info!(network = %r.network, ip = %r.ip, "Releasing an address reservation no endpoint took up.");
                let _ = self.backend.release_reservation(&r.network, r.ip).await;
            } else {
                still_reserved.insert(key, since);
            }
        }
        self.reserved = still_reserved;
    }
}

/// A container's `--network-alias` names on one endpoint (also answered in
/// DNS). Only inspecting the container shows them, not the listing.
async fn aliases(
    docker: &Docker,
    container: &str,
    endpoint: &str,
    name: Option<&str>,
) -> Vec<String> {
    let Ok(c) = docker.inspect_container(container, None).await else {
        return Vec::new();
    };
    let mut aliases: Vec<String> = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_values()
        .filter(|s| s.endpoint_id.as_deref() == Some(endpoint))
        .flat_map(|s| s.aliases.unwrap_or_default())
        // Docker adds the name and the short id itself.
        .filter(|a| Some(a.as_str()) != name && !container.starts_with(a.as_str()))
        .collect();
    aliases.sort();
    aliases.dedup();
    aliases
}

/// Docker endpoint ids are 64 hex digits (ours are 16).
fn is_docker_id(id: &str) -> bool {
    id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())
}
