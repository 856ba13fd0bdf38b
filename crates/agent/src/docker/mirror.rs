//! Network mirroring: keeps the local Docker daemon's networks in step with
//! the cluster. Every SocketPlane network exists in Docker under the same
//! name with driver and IPAM driver = this plugin, the same subnet and
//! gateway; Docker networks of this driver whose cluster network is gone
//! are removed. A Docker network of another driver with a SocketPlane
//! network's name is a conflict: reported in the log, never overwritten.
//!
//! Docker is found at `DOCKER_HOST` (`unix://PATH`) or
//! `/var/run/docker.sock`. The mirror polls both sides every second, so a
//! Docker daemon that is absent, starts later or restarts is picked up on
//! the next round; the agent works without Docker meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::{Docker, API_DEFAULT_VERSION};
use socketplane_api::{keys, EndpointRecord};

use super::plugin::NetworkMapping;
use crate::agent::Agent;

/// Label on mirrored Docker networks: the cluster network's name.
pub const NETWORK_LABEL: &str = "io.socketplane.network";
const PERIOD: Duration = Duration::from_secs(1);
/// A Docker endpoint no container has for this long is stale (a container
/// start takes far less between CreateEndpoint and running). Tests shorten
/// it with `SOCKETPLANE_DOCKER_STALE_SECS`.
fn stale_after() -> Duration {
    std::env::var("SOCKETPLANE_DOCKER_STALE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(20))
}
const STALE_RESERVATION: Duration = Duration::from_secs(60);
const DEFAULT_DOCKER: &str = "unix:///var/run/docker.sock";

/// The name a cluster network has in Docker: its own, except `default`,
/// which Docker reserves; that one is `DRIVER-default`.
pub fn docker_network_name(driver: &str, network: &str) -> String {
    if network == "default" {
        format!("{driver}-default")
    } else {
        network.to_string()
    }
}

/// The Docker API endpoint the mirror talks to.
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_DOCKER.into())
}

struct Mirror {
    agent: Arc<Agent>,
    driver: String,
    host: String,
    docker: Option<Docker>,
    /// Problems already logged (logged again only after they clear).
    reported: HashSet<String>,
    docker_up: Option<bool>,
    /// Docker endpoints no container has, since when.
    missing: HashMap<String, Instant>,
    /// Address keys reserved by this node's plugin, since when.
    reserved: HashMap<String, Instant>,
}

/// Runs until aborted.
pub async fn run(agent: Arc<Agent>, driver: String) {
    let host = docker_host();
    if !host.starts_with("unix://") && !host.starts_with('/') {
        tracing::warn!(%host, "Network mirroring needs a unix:// DOCKER_HOST; not mirroring.");
        return;
    }
    let mut m = Mirror {
        agent,
        driver,
        host,
        docker: None,
        reported: HashSet::new(),
        docker_up: None,
        missing: HashMap::new(),
        reserved: HashMap::new(),
    };
    loop {
        let up = m.round().await;
        if m.docker_up != Some(up) {
            if up {
                tracing::info!(docker = %m.host, "Mirroring SocketPlane networks into Docker.");
            } else {
                tracing::info!(docker = %m.host, "Docker is not reachable; will keep trying.");
            }
            m.docker_up = Some(up);
        }
        tokio::time::sleep(PERIOD).await;
    }
}

impl Mirror {
    async fn client(&mut self) -> Option<Docker> {
        if let Some(d) = &self.docker {
            return Some(d.clone());
        }
        let path = self.host.trim_start_matches("unix://").to_string();
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
        let Ok(ops) = self.agent.ops().cloned() else {
            return true; // not a cluster member yet: nothing to mirror
        };
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
        let (Ok(nets), Ok(listing)) = (
            ops.list_networks().await,
            ops.store()
                .list(&super::network_key(self.agent.node_id(), ""))
                .await,
        ) else {
            return true; // the store is unavailable: try next round
        };
        let mappings: HashMap<String, NetworkMapping> = listing
            .kvs
            .iter()
            .filter_map(|kv| {
                let id = kv.key.rsplit('/').next()?.to_string();
                Some((id, serde_json::from_slice(&kv.value).ok()?))
            })
            .collect();
        let cluster: HashSet<&str> = nets.iter().map(|n| n.name.as_str()).collect();
        let mut seen = HashSet::new();

        // Docker networks of ours whose cluster network is gone.
        let mut represented: HashSet<String> = HashSet::new();
        for dn in &docker_nets {
            if dn.driver.as_deref() != Some(self.driver.as_str()) {
                continue;
            }
            let (Some(id), Some(name)) = (dn.id.as_deref(), dn.name.as_deref()) else {
                continue;
            };
            // Docker does not tell drivers a network's name: a network made
            // with `docker network create` without `-o name=` starts as
            // docker-ID12 and takes Docker's name here, while unused.
            if let Some(m) = mappings.get(id) {
                let placeholder = super::plugin::placeholder_name(id);
                if m.created && m.network == placeholder && name != placeholder {
                    if let Some(renamed) = self.adopt_name(&ops, id, &placeholder, name).await {
                        represented.insert(renamed);
                        continue;
                    }
                }
            }
            let target = match mappings.get(id) {
                Some(m) => m.network.clone(),
                None if name == docker_network_name(&self.driver, "default") => "default".into(),
                None => name.to_string(),
            };
            if cluster.contains(target.as_str()) {
                represented.insert(target);
                continue;
            }
            match docker.remove_network(id).await {
                Ok(()) => {
                    tracing::info!(network = %name, "Removed the Docker network of a deleted SocketPlane network.")
                }
                Err(e) => self.report(
                    &mut seen,
                    format!("Docker network {name:?} belongs to a deleted SocketPlane network but cannot be removed: {e}"),
                ),
            }
        }

        for n in &nets {
            if represented.contains(&n.name) {
                continue;
            }
            let name = docker_network_name(&self.driver, &n.name);
            if let Some(other) = docker_nets
                .iter()
                .find(|dn| dn.name.as_deref() == Some(name.as_str()))
            {
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
                driver: Some(self.driver.clone()),
                ipam: Some(Ipam {
                    driver: Some(self.driver.clone()),
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
        // Problems that cleared may be reported again if they come back.
        self.reported.retain(|m| seen.contains(m));
        self.containers_round(&docker, &ops).await;
        true
    }

    /// Renames the placeholder cluster network to Docker's name; returns
    /// the name the Docker network now maps to.
    async fn adopt_name(
        &mut self,
        ops: &crate::ops::Ops,
        docker_id: &str,
        placeholder: &str,
        name: &str,
    ) -> Option<String> {
        match ops.rename_unused_network(placeholder, name).await {
            Ok(_) => {
                let mapping = NetworkMapping {
                    network: name.to_string(),
                    created: true,
                };
                let value = serde_json::to_vec(&mapping).ok()?;
                let key = super::network_key(self.agent.node_id(), docker_id);
                if let Err(error) = ops.store().put(&key, value).await {
                    tracing::warn!(%error, "Could not record the renamed Docker network.");
                }
                Some(name.to_string())
            }
            Err(e) => {
                let msg = format!(
                    "Docker network {name:?} stays SocketPlane network {placeholder:?}: {e}"
                );
                if self.reported.insert(msg.clone()) {
                    tracing::info!("{msg}");
                }
                None
            }
        }
    }

    /// Records the container name and id of this node's Docker endpoints
    /// (`socketplane info NAME`; the plugin calls do not carry them), and
    /// collects what a crash of Docker or of the agent left behind: Docker
    /// endpoints no container has any more, and address reservations no
    /// endpoint took up.
    async fn containers_round(&mut self, docker: &Docker, ops: &crate::ops::Ops) {
        let Ok(eps) = ops.list_endpoints().await else {
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
        let node = self.agent.node_id().to_string();
        let ours: Vec<&EndpointRecord> = eps
            .iter()
            .filter(|e| e.node == node && e.netns.is_none() && is_docker_id(&e.id))
            .collect();
        let now = Instant::now();
        let mut still_missing = HashMap::new();
        for ep in ours {
            match known.get(&ep.id) {
                Some((name, id)) => {
                    if ep.container_id.is_none() {
                        if let Err(error) = ops
                            .set_endpoint_owner(&ep.id, name.clone(), id.clone())
                            .await
                        {
                            tracing::debug!(endpoint = %ep.id, %error, "Could not record the endpoint's container.");
                        }
                    }
                }
                None => {
                    let since = self.missing.get(&ep.id).copied().unwrap_or(now);
                    if now.duration_since(since) >= stale_after() {
                        tracing::info!(endpoint = %ep.id, ip = %ep.ip, "No Docker container has this endpoint any more; detaching it.");
                        let _ = ops.detach(&ep.id).await;
                    } else {
                        still_missing.insert(ep.id.clone(), since);
                    }
                }
            }
        }
        self.missing = still_missing;

        // Reservations: an address is reserved only between Docker's
        // RequestAddress and CreateEndpoint, a fraction of a second.
        let holder = ops.reservation_holder();
        let mut still_reserved = HashMap::new();
        let Ok(nets) = ops.list_networks().await else {
            return;
        };
        for n in nets {
            let Ok(addrs) = ops.store().list(&keys::addresses(&n.name)).await else {
                continue;
            };
            for kv in addrs.kvs.iter().filter(|kv| kv.value == holder.as_bytes()) {
                let since = self.reserved.get(&kv.key).copied().unwrap_or(now);
                let ip = kv.key.rsplit('/').next().and_then(|s| s.parse().ok());
                match ip {
                    Some(ip) if now.duration_since(since) >= STALE_RESERVATION => {
                        tracing::info!(network = %n.name, %ip, "Releasing an address reservation no endpoint took up.");
                        let _ = ops.release_reservation(&n.name, ip).await;
                    }
                    _ => {
                        still_reserved.insert(kv.key.clone(), since);
                    }
                }
            }
        }
        self.reserved = still_reserved;
    }
}

/// Docker endpoint ids are 64 hex digits (ours are 16).
fn is_docker_id(id: &str) -> bool {
    id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())
}
