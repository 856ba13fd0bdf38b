//! This node's membership: founding or joining the cluster (a discovered
//! peer or a given address), registration, and what `cluster join`,
//! `leave`, `bind` and `status` do ([`Control`] for the local API).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use socketplane_api::rest::{AgentInfo, ClusterStatus};
use socketplane_api::{defaults, NodeRecord};
use socketplane_cluster::{Cluster, Error as ClusterError, Reconciler};
use socketplane_datapath::Datapath;
use socketplane_store_raft::EmbeddedStore;
use tokio::sync::{mpsc, Notify};

use crate::error::{Error, Result};
use crate::host::{self, Identity};
use crate::local_api::Control;

const JOIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most peers kept to try (discovered or given); the oldest go first.
const MAX_JOIN_PEERS: usize = 32;

/// Parses "IP" or "IP:PORT" (default port: the cluster port).
pub fn parse_peer(addr: &str) -> socketplane_cluster::Result<SocketAddr> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = addr.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::from((ip, defaults::CLUSTER_PORT)));
    }
    Err(ClusterError::Invalid(format!(
        "invalid cluster address {addr:?}: want IP or IP:PORT"
    )))
}

/// This node: who it is, where, and its way into the cluster.
pub struct Node {
    pub cluster: Arc<Cluster>,
    pub identity: Identity,
    pub iface: String,
    pub addr: Ipv4Addr,
    pub cluster_port: u16,
    pub datapath: Arc<dyn Datapath>,
    pub embedded: Option<Arc<EmbeddedStore>>,
    pub open_cluster: bool,
    /// This node's trust: enrollment, the token.
    pub standing: Arc<crate::enrollment::Standing>,
    pub data_dir: PathBuf,
    pub lease_ttl: Duration,
    pub join_tx: mpsc::UnboundedSender<SocketAddr>,
    /// Notified to stop the agent (`cluster leave`, a fatal start error).
    pub shutdown: Arc<Notify>,
    /// What `cluster status` and the HTTP server show.
    pub observer: Arc<crate::observe::Observer>,
}

impl Node {
    fn record(&self) -> NodeRecord {
        NodeRecord {
            id: self.identity.id.clone(),
            name: self.identity.name.clone(),
            addr: self.addr,
            cluster_port: self.cluster_port,
            datapath: self.datapath.name().to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Becomes a cluster member, then starts everything that needs the
    /// store. Runs until the node is a member with its services running.
    pub async fn become_member(
        self: Arc<Self>,
        bootstrap: bool,
        mut join_rx: mpsc::UnboundedReceiver<SocketAddr>,
    ) {
        if let Some(embedded) = self.embedded.clone() {
            if embedded.is_member() {
                tracing::info!("Resuming cluster membership from the data dir.");
            } else if bootstrap {
                if let Err(error) = embedded.bootstrap().await {
                    tracing::error!(%error, "Could not found the cluster.");
                    self.shutdown.notify_one();
                    return;
                }
                tracing::info!(cluster = %self.cluster.name(), "Founded the cluster.");
            } else {
                tracing::info!(cluster = %self.cluster.name(), "Looking for a cluster to join.");
                self.join_cluster(&embedded, &mut join_rx).await;
            }
        }
        if let Err(error) = self.start_services().await {
            tracing::error!(error = %crate::report(&error), "Could not start.");
            self.shutdown.notify_one();
        }
    }

    /// Tries every known peer (discovered or given) until one lets us in.
    async fn join_cluster(
        &self,
        embedded: &EmbeddedStore,
        join_rx: &mut mpsc::UnboundedReceiver<SocketAddr>,
    ) {
        let mut peers: Vec<SocketAddr> = Vec::new();
        let mut reported: std::collections::HashSet<SocketAddr> = Default::default();
        loop {
            while let Ok(p) = join_rx.try_recv() {
                add_peer(&mut peers, p);
            }
            for peer in peers.clone() {
                if peer.ip() == std::net::IpAddr::V4(self.addr) {
                    continue;
                }
                if self.standing.needs_enrollment() {
                    match self.standing.enroll(peer).await {
                        Ok(tls) => embedded.set_client_tls(tls),
                        Err(error) => {
                            if reported.insert(peer) {
                                tracing::warn!(%peer, %error, "Could not enroll with this peer; not joining through it (will retry).");
                            } else {
                                tracing::debug!(%peer, %error, "Enrollment failed.");
                            }
                            continue;
                        }
                    }
                }
                // Bounded: a peer that swallows the connection must not
                // stall the attempts on every other peer.
                match tokio::time::timeout(JOIN_ATTEMPT_TIMEOUT, embedded.join(peer)).await {
                    Ok(Ok(())) => {
                        tracing::info!(%peer, "Joined the cluster.");
                        return;
                    }
                    Ok(Err(error)) if reported.insert(peer) => {
                        tracing::info!(%peer, %error, "Could not join through this peer yet; will retry.")
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "Join attempt failed."),
                    Err(_) => tracing::info!(%peer, "A join attempt timed out; will retry."),
                }
            }
            tokio::select! {
                Some(p) = join_rx.recv() => add_peer(&mut peers, p),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Store migration, registration, the default network, the reconciler.
    async fn start_services(&self) -> Result<()> {
        let cluster = &self.cluster;
        retry_store("migrating the store layout", || cluster.migrate_store()).await?;
        let record = self.record();
        let lease = retry_store("registering this node", || {
            cluster.register(&record, self.lease_ttl)
        })
        .await?;
        tokio::spawn({
            let cluster = cluster.clone();
            let ttl = self.lease_ttl;
            async move { cluster.keep_alive(record, ttl, lease).await }
        });
        let routes: Vec<_> = host::ipv4_routes().into_iter().map(|(_, n)| n).collect();
        retry_store("ensuring the default network", || {
            cluster.ensure_default_network(&routes)
        })
        .await?;
        let (reconciler, handle) = Reconciler::new(cluster.clone(), self.datapath.clone());
        tokio::spawn(reconciler.run());
        cluster.set_ready(handle);
        tracing::info!("The agent is ready.");
        Ok(())
    }
}

/// Newest first: an explicit join or a fresh discovery is the most likely
/// to be a member. Bounded: the oldest peers drop out.
fn add_peer(peers: &mut Vec<SocketAddr>, p: SocketAddr) {
    peers.retain(|x| *x != p);
    peers.insert(0, p);
    peers.truncate(MAX_JOIN_PEERS);
}

/// Retries an operation while the store is unavailable (e.g. the cluster
/// is still electing a leader).
async fn retry_store<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = socketplane_cluster::Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    let mut last = None;
    for _ in 0..100 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "{what}: store not ready; retrying.");
                last = Some(e);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(source) => {
                return Err(Error::Cluster {
                    what: what.to_string(),
                    source,
                })
            }
        }
    }
    Err(Error::Cluster {
        what: format!("{what}: the store stayed unavailable"),
        source: last.unwrap_or_else(|| ClusterError::Unavailable("no answer".into())),
    })
}

#[async_trait]
impl Control for Node {
    fn info(&self) -> AgentInfo {
        AgentInfo {
            node_id: self.identity.id.clone(),
            node_name: self.identity.name.clone(),
            cluster: self.cluster.name().to_string(),
            addr: self.addr,
            iface: self.iface.clone(),
            datapath: self.datapath.name().to_string(),
            store: if self.embedded.is_some() {
                defaults::STORE.into()
            } else {
                "etcd".into()
            },
            version: env!("CARGO_PKG_VERSION").into(),
            ready: self.cluster.is_ready(),
            open_cluster: self.open_cluster,
        }
    }

    async fn status(&self) -> socketplane_cluster::Result<ClusterStatus> {
        self.cluster.member()?;
        let mut status = self.cluster.status(self.embedded.is_none()).await?;
        status.open = self.open_cluster;
        Ok(self.observer.enrich_status(status))
    }

    async fn join(&self, addr: &str) -> socketplane_cluster::Result<()> {
        let peer = parse_peer(addr)?;
        if self.embedded.is_none() {
            return Err(ClusterError::Invalid(
                "this agent uses an external etcd store: every node joins by using the same --store".into(),
            ));
        }
        if self.cluster.is_ready() {
            return Err(ClusterError::Conflict(format!(
                "this node is already a member of cluster {:?}",
                self.cluster.name()
            )));
        }
        self.join_tx
            .send(peer)
            .map_err(|_| ClusterError::Unavailable("the agent is shutting down".into()))?;
        // Wait briefly so the caller sees the outcome in most cases.
        let mut ready = self.cluster.subscribe_ready();
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r)).await;
        if self.cluster.is_ready() {
            Ok(())
        } else {
            Err(ClusterError::Unavailable(format!(
                "could not join through {peer} yet; still trying (see `socketplane agent logs`)"
            )))
        }
    }

    /// Leaves the cluster for good: this node's endpoints are removed, its
    /// record deleted, it leaves the store, and the agent stops.
    async fn leave(&self) -> socketplane_cluster::Result<()> {
        self.cluster.member()?.deregister().await?;
        if let Some(embedded) = &self.embedded {
            embedded.leave().await?;
        }
        tracing::info!("Left the cluster; stopping.");
        self.shutdown.notify_one();
        Ok(())
    }

    async fn rotate_token(&self) -> socketplane_cluster::Result<String> {
        self.standing.rotate().await
    }

    async fn token(&self) -> socketplane_cluster::Result<String> {
        let token = self
            .standing
            .token()
            .await
            .map_err(ClusterError::Unavailable)?;
        token.ok_or_else(|| {
            if self.open_cluster {
                ClusterError::Conflict(
                    "this cluster was founded with --open: it has no token, and any host may join"
                        .into(),
                )
            } else {
                ClusterError::Unavailable(
                    "this node has not enrolled yet: it has no token to give".into(),
                )
            }
        })
    }

    /// Records a new underlay interface, used from the next start.
    fn bind(&self, iface: &str) -> socketplane_cluster::Result<()> {
        host::iface_ipv4(iface).map_err(|e| ClusterError::Invalid(crate::report(&e)))?;
        host::write_atomically(&self.data_dir.join("iface"), iface.as_bytes())
            .map_err(|e| ClusterError::Internal(crate::report(&e)))?;
        Ok(())
    }

    fn host_ifname(&self, endpoint_id: &str) -> Option<String> {
        Some(self.datapath.endpoint_ifnames(endpoint_id).host)
    }
}
