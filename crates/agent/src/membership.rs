//! This node's membership: founding or joining the cluster (a discovered
//! peer or a given address), registration, and what `cluster join`,
//! `leave`, `bind` and `status` do ([`Control`] for the local API).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use socketplane_api::rest::{AgentInfo, ClusterStatus};
use socketplane_api::{defaults, NodeRecord};
use socketplane_cluster::{Cluster, Error as ClusterError, Reconciler};
use socketplane_datapath::Datapath;
use socketplane_store_raft::EmbeddedStore;
use tokio::sync::{mpsc, Notify};

use crate::error::{Error, Result};
use crate::host::{self, Identity};
use crate::local_api::Control;

/// One join attempt through one peer, catching up included (a peer that is
/// no member answers at once).
const JOIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Join attempts in flight at once.
const PARALLEL_JOINS: usize = 4;
/// Pause between rounds over the known peers, unless a new one shows up.
const JOIN_ROUND_PAUSE: Duration = Duration::from_millis(250);
/// Most peers kept to try (discovered or given); the oldest drop out.
const MAX_JOIN_PEERS: usize = 64;

/// A peer to join through: discovered (mDNS says whether it is a member)
/// or given (`--join`, `cluster join`: taken as a member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinHint {
    pub addr: SocketAddr,
    pub member: bool,
}

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
    pub join_tx: mpsc::UnboundedSender<JoinHint>,
    /// Notified to stop the agent (`cluster leave`, a fatal start error).
    pub shutdown: Arc<Notify>,
    /// What `cluster status` and the HTTP server show.
    pub observer: Arc<crate::observe::Observer>,
    /// True once this node is in the store's membership (mDNS says so).
    pub store_member: tokio::sync::watch::Sender<bool>,
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
        mut join_rx: mpsc::UnboundedReceiver<JoinHint>,
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
        // A store member can pass joins on at once (its services may still
        // be starting): mDNS says `member=1` from here.
        self.store_member.send_replace(true);
        self.standing.set_member();
        if let Err(error) = self.start_services().await {
            tracing::error!(error = %crate::report(&error), "Could not start.");
            self.shutdown.notify_one();
        }
    }

    /// Tries the known peers (discovered or given) until one lets us in:
    /// those that say they are members first, several at a time. A peer
    /// that is no member itself answers at once, so on a cold start (many
    /// hosts at once, most of them joiners) the attempts move on quickly.
    async fn join_cluster(
        &self,
        embedded: &EmbeddedStore,
        join_rx: &mut mpsc::UnboundedReceiver<JoinHint>,
    ) {
        let mut peers = JoinPeers::default();
        let mut reported: std::collections::HashSet<SocketAddr> = Default::default();
        let own = std::net::IpAddr::V4(self.addr);
        let mut join_key: Option<socketplane_trust::NodeKey> = None;
        loop {
            while let Ok(p) = join_rx.try_recv() {
                peers.add(p);
            }
            let candidates: Vec<SocketAddr> = peers
                .due(Instant::now())
                .into_iter()
                .filter(|p| p.ip() != own)
                .collect();
            if self.standing.needs_enrollment() {
                // Several peers at a time (members first), so a peer that
                // is slow or unreachable does not hold up the rest; all
                // with one key, and the first certificate wins.
                let key = match &join_key {
                    Some(k) => k.clone(),
                    None => match socketplane_trust::NodeKey::generate() {
                        Ok(k) => join_key.insert(k).clone(),
                        Err(error) => {
                            tracing::warn!(%error, "Could not generate this node's key; retrying.");
                            tokio::time::sleep(JOIN_ROUND_PAUSE).await;
                            continue;
                        }
                    },
                };
                let standing = &self.standing;
                let key = &key;
                let mut attempts = futures::stream::iter(candidates.iter().copied())
                    .map(|peer| async move { (peer, standing.enroll(peer, key).await) })
                    .buffer_unordered(PARALLEL_JOINS);
                while let Some((peer, res)) = attempts.next().await {
                    match res {
                        Ok(tls) => {
                            embedded.set_client_tls(tls);
                            break;
                        }
                        Err(error) => {
                            peers.failed(peer, Instant::now());
                            if reported.insert(peer) {
                                tracing::warn!(%peer, %error, "Could not enroll with this peer; not joining through it (will retry).")
                            } else {
                                tracing::debug!(%peer, %error, "Enrollment failed.")
                            }
                        }
                    }
                }
            }
            if !self.standing.needs_enrollment() {
                let mut attempts = futures::stream::iter(candidates.iter().copied())
                    .map(|peer| async move {
                        // Bounded: a peer that swallows the connection must
                        // not hold a slot for long.
                        let res =
                            tokio::time::timeout(JOIN_ATTEMPT_TIMEOUT, embedded.join(peer)).await;
                        (peer, res)
                    })
                    .buffer_unordered(PARALLEL_JOINS);
                while let Some((peer, res)) = attempts.next().await {
                    match res {
                        Ok(Ok(())) => {
                            tracing::info!(%peer, "Joined the cluster.");
                            return;
                        }
                        Ok(Err(error)) => {
                            peers.failed(peer, Instant::now());
                            if reported.insert(peer) {
                                tracing::info!(%peer, %error, "Could not join through this peer yet; will retry.")
                            } else {
                                tracing::debug!(%peer, %error, "Join attempt failed.")
                            }
                        }
                        Err(_) => {
                            peers.failed(peer, Instant::now());
                            tracing::info!(%peer, "A join attempt timed out; will retry.")
                        }
                    }
                }
            }
            tokio::select! {
                Some(p) = join_rx.recv() => peers.add(p),
                _ = tokio::time::sleep(JOIN_ROUND_PAUSE) => {}
            }
        }
    }

    /// Store migration, registration, the default network, the reconciler.
    async fn start_services(&self) -> Result<()> {
        let cluster = &self.cluster;
        retry_store("migrating the store layout", || cluster.migrate_store()).await?;
        // The founder's certificate, and a member's from before the
        // cluster recorded certificates, go into the allowlist.
        tokio::spawn({
            let standing = self.standing.clone();
            async move {
                let mut delay = Duration::from_millis(200);
                while let Err(error) = standing.record_self().await {
                    tracing::debug!(%error, "Recording this node's certificate: store not ready; retrying.");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        });
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

/// The peers a joiner knows, and when each may be tried again. Members
/// (as mDNS or the operator says) go first and are retried soon; a peer
/// that says it is no member is tried with a growing pause, so a cold
/// start of many hosts is not a storm of handshakes between joiners.
#[derive(Default)]
struct JoinPeers {
    /// Newest first: an explicit join or a fresh discovery is the most
    /// likely to be a member. Bounded: the oldest drop out.
    known: Vec<KnownPeer>,
}

struct KnownPeer {
    hint: JoinHint,
    next_try: Instant,
    failures: u32,
}

impl JoinPeers {
    /// A new or changed hint: tried at once.
    fn add(&mut self, hint: JoinHint) {
        self.known.retain(|k| k.hint.addr != hint.addr);
        self.known.insert(
            0,
            KnownPeer {
                hint,
                next_try: Instant::now(),
                failures: 0,
            },
        );
        self.known.truncate(MAX_JOIN_PEERS);
    }

    /// The peers to try now: members first.
    fn due(&self, now: Instant) -> Vec<SocketAddr> {
        let due = |member: bool| {
            self.known
                .iter()
                .filter(move |k| k.hint.member == member && k.next_try <= now)
                .map(|k| k.hint.addr)
        };
        due(true).chain(due(false)).collect()
    }

    fn failed(&mut self, addr: SocketAddr, now: Instant) {
        let Some(k) = self.known.iter_mut().find(|k| k.hint.addr == addr) else {
            return;
        };
        k.failures = k.failures.saturating_add(1);
        let (first, most) = if k.hint.member {
            (Duration::from_millis(250), Duration::from_secs(2))
        } else {
            (Duration::from_secs(1), Duration::from_secs(8))
        };
        let pause = first.saturating_mul(1 << k.failures.min(6)) / 2;
        k.next_try = now + pause.min(most);
    }
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
            .send(JoinHint {
                addr: peer,
                member: true,
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(last: u8, member: bool) -> JoinHint {
        JoinHint {
            addr: SocketAddr::from(([198, 18, 0, last], 6675)),
            member,
        }
    }

    #[test]
    fn members_go_first_and_non_members_wait_longer() {
        let mut peers = JoinPeers::default();
        peers.add(hint(12, false));
        peers.add(hint(13, true));
        peers.add(hint(14, false));
        let now = Instant::now();
        let due = peers.due(now);
        assert_eq!(due[0], hint(13, true).addr, "the member first");
        assert_eq!(due.len(), 3);

        peers.failed(hint(12, false).addr, now);
        peers.failed(hint(13, true).addr, now);
        let soon = now + Duration::from_millis(300);
        assert_eq!(
            peers.due(soon),
            vec![hint(13, true).addr, hint(14, false).addr]
        );
        assert!(peers
            .due(now + Duration::from_secs(1))
            .contains(&hint(12, false).addr));

        // mDNS says it became a member: tried at once.
        peers.add(hint(12, true));
        assert_eq!(peers.due(Instant::now())[0], hint(12, true).addr);
    }
}
