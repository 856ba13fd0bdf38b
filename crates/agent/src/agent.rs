//! The agent: opens the store, becomes a cluster member (found, join a
//! discovered peer or a given address), registers this node with a lease,
//! serves the local API and the cluster port, and runs the reconciler.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use socketplane_api::rest::{
    AgentInfo, ClusterStatus, CreateNetwork, EndpointInfo, NodeStatus, StoreHealth,
};
use socketplane_api::{keys, EndpointRecord, NodeRecord};
use socketplane_datapath::Datapath;
use socketplane_store::{LeaseId, MemberRole, Op, Store, StoreError, Txn};
use socketplane_store_raft::{EmbeddedConfig, EmbeddedStore};
use tokio::sync::{mpsc, watch, Notify};

use crate::error::{OpError, OpResult};
use crate::host::{self, Identity};
use crate::ops::Ops;
use crate::reconciler::{Reconciler, ReconcilerHandle};

/// The agent's settings (the `socketplane agent` flags).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub bootstrap: bool,
    /// Underlay interface, or "auto" for the default route's.
    pub iface: String,
    pub join: Option<String>,
    pub cluster: String,
    pub token: Option<String>,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub listen: SocketAddr,
    /// "auto", "linux" or "ovs".
    pub datapath: String,
    /// "embedded" or "etcd://host:port[,host:port]".
    pub store: String,
    pub docker_plugin: Option<PathBuf>,
    pub mdns: bool,
    pub node_name: Option<String>,
    /// How long a silent node stays alive in the store.
    pub lease_ttl: Duration,
    pub max_voters: usize,
    pub ovs: crate::datapaths::OvsOptions,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            bootstrap: false,
            iface: "auto".into(),
            join: None,
            cluster: "socketplane".into(),
            token: None,
            data_dir: "/var/lib/socketplane".into(),
            socket: "/run/socketplane/socketplane.sock".into(),
            listen: SocketAddr::from(([0, 0, 0, 0], crate::CLUSTER_PORT)),
            datapath: "auto".into(),
            store: "embedded".into(),
            docker_plugin: None,
            mdns: true,
            node_name: None,
            lease_ttl: Duration::from_secs(15),
            max_voters: 3,
            ovs: Default::default(),
        }
    }
}

/// A running agent; shared by the API handlers.
pub struct Agent {
    pub(crate) cfg: AgentConfig,
    identity: Identity,
    iface: String,
    addr: Ipv4Addr,
    store: Arc<dyn Store>,
    embedded: Option<Arc<EmbeddedStore>>,
    datapath: Arc<dyn Datapath>,
    ops: Arc<Ops>,
    ready: watch::Sender<bool>,
    reconciler: OnceLock<ReconcilerHandle>,
    join_tx: mpsc::UnboundedSender<SocketAddr>,
    pub(crate) shutdown: Notify,
}

/// Parses "IP" or "IP:PORT" (default port: the cluster port).
pub fn parse_peer(addr: &str) -> OpResult<SocketAddr> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = addr.parse::<Ipv4Addr>() {
        return Ok(SocketAddr::from((ip, crate::CLUSTER_PORT)));
    }
    Err(OpError::Invalid(format!(
        "invalid cluster address {addr:?}: want IP or IP:PORT"
    )))
}

impl Agent {
    pub fn node_id(&self) -> &str {
        &self.identity.id
    }

    /// Store operations, once this node is a cluster member.
    pub fn ops(&self) -> OpResult<&Arc<Ops>> {
        if *self.ready.borrow() {
            Ok(&self.ops)
        } else {
            Err(OpError::Unavailable(format!(
                "this agent has not joined cluster {:?} yet (waiting for a peer over mDNS, --join, or `socketplane cluster join ADDR`)",
                self.cfg.cluster
            )))
        }
    }

    pub fn info(&self) -> AgentInfo {
        AgentInfo {
            node_id: self.identity.id.clone(),
            node_name: self.identity.name.clone(),
            cluster: self.cfg.cluster.clone(),
            addr: self.addr,
            iface: self.iface.clone(),
            datapath: self.datapath.name().to_string(),
            store: if self.embedded.is_some() {
                "embedded".into()
            } else {
                "etcd".into()
            },
            version: env!("CARGO_PKG_VERSION").into(),
            ready: *self.ready.borrow(),
            open_cluster: self.cfg.token.is_none(),
        }
    }

    pub async fn wait_applied(&self, revision: i64, timeout: Duration) -> OpResult<()> {
        let handle = self
            .reconciler
            .get()
            .ok_or_else(|| OpError::Unavailable("the reconciler is not running yet".into()))?;
        handle
            .wait_applied(revision, timeout)
            .await
            .map_err(OpError::Internal)
    }

    pub async fn endpoint_info(&self, ep: EndpointRecord) -> OpResult<EndpointInfo> {
        let view = self.reconciler.get().map(|h| h.view.borrow().clone());
        let node = match view.as_ref().and_then(|v| v.nodes.get(&ep.node).cloned()) {
            Some(n) => Some(n),
            None => match self.store.get(&keys::node(&ep.node)).await? {
                Some(kv) => serde_json::from_slice::<NodeRecord>(&kv.value).ok(),
                None => None,
            },
        };
        let (network, _) = self.ops.get_network(&ep.network).await?;
        Ok(EndpointInfo {
            node_name: node
                .as_ref()
                .map(|n| n.name.clone())
                .unwrap_or_else(|| ep.node.clone()),
            host: node.map(|n| n.addr),
            gateway: network.gateway,
            prefix_len: network.subnet.prefix_len(),
            endpoint: ep,
        })
    }

    pub async fn cluster_status(&self) -> OpResult<ClusterStatus> {
        let status = self.store.status().await?;
        let ops = self.ops()?;
        let nodes = ops.store().list(&keys::nodes()).await?;
        let alive: BTreeSet<String> = ops
            .store()
            .list(&keys::alive_prefix())
            .await?
            .kvs
            .iter()
            .filter_map(|kv| kv.key.rsplit('/').next().map(str::to_string))
            .collect();
        let role_of = |node_hex: &str| -> String {
            let numeric = u64::from_str_radix(node_hex, 16).ok();
            let member = status.members.iter().find(|m| {
                m.id == node_hex || (numeric.is_some() && m.id.parse::<u64>().ok() == numeric)
            });
            match member.map(|m| m.role) {
                Some(MemberRole::Leader) => "leader".into(),
                Some(MemberRole::Voter) => "voter".into(),
                Some(MemberRole::Replica) => "replica".into(),
                None if self.embedded.is_none() => "client".into(),
                None => "none".into(),
            }
        };
        let mut out = Vec::new();
        for kv in &nodes.kvs {
            let Ok(node) = serde_json::from_slice::<NodeRecord>(&kv.value) else {
                continue;
            };
            out.push(NodeStatus {
                alive: alive.contains(&node.id),
                role: role_of(&node.id),
                id: node.id,
                name: node.name,
                addr: node.addr,
                datapath: node.datapath,
            });
        }
        Ok(ClusterStatus {
            cluster: self.cfg.cluster.clone(),
            this_node: self.identity.id.clone(),
            nodes: out,
            store: StoreHealth {
                backend: status.backend,
                healthy: status.healthy,
                // The store names members by number; show node ids.
                leader: status.leader.map(|l| match l.parse::<u64>() {
                    Ok(n) => format!("{n:016x}"),
                    Err(_) => l,
                }),
                revision: status.revision,
            },
        })
    }

    pub async fn request_join(&self, addr: &str) -> OpResult<()> {
        let peer = parse_peer(addr)?;
        if self.embedded.is_none() {
            return Err(OpError::Invalid(
                "this agent uses an external etcd store: every node joins by using the same --store".into(),
            ));
        }
        if *self.ready.borrow() {
            return Err(OpError::Conflict(format!(
                "this node is already a member of cluster {:?}",
                self.cfg.cluster
            )));
        }
        self.join_tx
            .send(peer)
            .map_err(|_| OpError::Unavailable("the agent is shutting down".into()))?;
        // Wait briefly so the caller sees the outcome in most cases.
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r)).await;
        if *self.ready.borrow() {
            Ok(())
        } else {
            Err(OpError::Unavailable(format!(
                "could not join through {peer} yet; still trying (see `socketplane agent logs`)"
            )))
        }
    }

    /// Leaves the cluster for good: this node's endpoints are removed, its
    /// record deleted, it leaves the store, and the agent stops.
    pub async fn leave(&self) -> OpResult<()> {
        let ops = self.ops()?;
        let id = self.identity.id.clone();
        for ep in ops
            .list_endpoints()
            .await?
            .into_iter()
            .filter(|e| e.node == id)
        {
            ops.detach(&ep.id).await?;
        }
        ops.store()
            .txn(
                Txn::new()
                    .then(Op::delete(keys::alive(&id)))
                    .then(Op::delete(keys::node(&id))),
            )
            .await?;
        if let Some(embedded) = &self.embedded {
            embedded.leave().await?;
        }
        tracing::info!("Left the cluster; stopping.");
        self.shutdown.notify_one();
        Ok(())
    }

    /// Records a new underlay interface, used from the next start.
    pub fn bind(&self, iface: &str) -> OpResult<()> {
        host::iface_ipv4(iface).map_err(|e| OpError::Invalid(format!("{e:#}")))?;
        host::write_atomically(&self.cfg.data_dir.join("iface"), iface.as_bytes())
            .map_err(|e| OpError::Internal(format!("{e:#}")))?;
        Ok(())
    }
}

/// Opens the store backend named by `--store`.
async fn open_store(
    cfg: &AgentConfig,
    identity: &Identity,
    advertise: SocketAddr,
) -> anyhow::Result<(Arc<dyn Store>, Option<Arc<EmbeddedStore>>)> {
    if cfg.store == "embedded" {
        let mut config = EmbeddedConfig::new(
            identity.numeric_id(),
            cfg.cluster.clone(),
            cfg.data_dir.join("store"),
            advertise,
        );
        config.token = cfg.token.clone();
        config.max_voters = cfg.max_voters;
        let embedded = EmbeddedStore::open(config)
            .await
            .context("opening the embedded store")?;
        let store: Arc<dyn Store> = embedded.clone();
        return Ok((store, Some(embedded)));
    }
    if cfg.store.starts_with("etcd://") {
        let etcd = socketplane_store::etcd::EtcdStore::from_url(&cfg.store)
            .await
            .with_context(|| format!("connecting to {}", cfg.store))?;
        return Ok((Arc::new(etcd), None));
    }
    anyhow::bail!(
        "unknown --store {:?}: use `embedded` or `etcd://host:port[,host:port]`",
        cfg.store
    )
}

/// Runs the agent until SIGTERM/SIGINT or `cluster leave`.
pub async fn run(mut cfg: AgentConfig) -> anyhow::Result<()> {
    if cfg.max_voters != 3 && cfg.max_voters != 5 {
        anyhow::bail!("--voters must be 3 or 5");
    }
    let identity = Identity::load_or_create(&cfg.data_dir, cfg.node_name.as_deref())?;
    if cfg.iface == "auto" {
        if let Ok(bound) = std::fs::read_to_string(cfg.data_dir.join("iface")) {
            cfg.iface = bound.trim().to_string();
        }
    }
    let (iface, addr) = host::resolve_underlay(&cfg.iface)?;
    tracing::info!(node = %identity.name, id = %identity.id, %iface, %addr, cluster = %cfg.cluster, "Starting the agent.");
    if cfg.token.is_none() {
        tracing::warn!("No cluster token set: any host on this network can join the cluster.");
    }
    let advertise = SocketAddr::from((addr, cfg.listen.port()));
    let datapath = crate::datapaths::select(&cfg.datapath, &iface, addr, &cfg.ovs).await?;
    let (store, embedded) = open_store(&cfg, &identity, advertise).await?;
    let (join_tx, join_rx) = mpsc::unbounded_channel();
    let ops = Arc::new(Ops::new(store.clone(), identity.id.clone()));
    let agent = Arc::new(Agent {
        cfg: cfg.clone(),
        identity,
        iface,
        addr,
        store,
        embedded,
        datapath,
        ops,
        ready: watch::channel(false).0,
        reconciler: OnceLock::new(),
        join_tx,
        shutdown: Notify::new(),
    });

    let cluster_server = crate::server::serve_cluster_port(agent.clone()).await?;
    let api_server = crate::server::serve_local_api(agent.clone()).await?;
    // Stops and removes its socket when dropped, at the end of run().
    let _docker_plugin = match &cfg.docker_plugin {
        Some(path) => Some(crate::docker::serve(agent.clone(), path.clone()).await?),
        None => None,
    };
    let discovery = if cfg.mdns {
        Some(crate::server::start_discovery(agent.clone())?)
    } else {
        None
    };
    if let Some(addr) = &cfg.join {
        let peer = parse_peer(addr).map_err(|e| anyhow::anyhow!("--join: {e}"))?;
        let _ = agent.join_tx.send(peer);
    }
    let member = tokio::spawn(become_member(agent.clone(), join_rx));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping; the datapath keeps forwarding."),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping; the datapath keeps forwarding."),
        _ = agent.shutdown.notified() => {}
    }
    member.abort();
    if let Some(d) = discovery {
        // Sends goodbye packets; may block for a few seconds.
        let _ = tokio::task::spawn_blocking(move || d.shutdown()).await;
    }
    api_server.abort();
    cluster_server.abort();
    let _ = std::fs::remove_file(&cfg.socket);
    if let Some(embedded) = &agent.embedded {
        embedded.shutdown().await;
    }
    Ok(())
}

/// Becomes a cluster member, then starts everything that needs the store.
async fn become_member(agent: Arc<Agent>, mut join_rx: mpsc::UnboundedReceiver<SocketAddr>) {
    if let Some(embedded) = agent.embedded.clone() {
        if embedded.is_member() {
            tracing::info!("Resuming cluster membership from the data dir.");
        } else if agent.cfg.bootstrap {
            if let Err(error) = embedded.bootstrap().await {
                tracing::error!(%error, "Could not found the cluster.");
                agent.shutdown.notify_one();
                return;
            }
            tracing::info!(cluster = %agent.cfg.cluster, "Founded the cluster.");
        } else {
            tracing::info!(cluster = %agent.cfg.cluster, "Looking for a cluster to join.");
            join_cluster(&agent, &embedded, &mut join_rx).await;
        }
    }
    if let Err(error) = start_services(&agent).await {
        tracing::error!(error = %format!("{error:#}"), "Could not start.");
        agent.shutdown.notify_one();
    }
}

const JOIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tries every known peer (discovered or given) until one lets us in.
async fn join_cluster(
    agent: &Agent,
    embedded: &EmbeddedStore,
    join_rx: &mut mpsc::UnboundedReceiver<SocketAddr>,
) {
    let mut peers: Vec<SocketAddr> = Vec::new();
    let mut reported: std::collections::HashSet<SocketAddr> = Default::default();
    loop {
        // Newest first: an explicit join or a fresh discovery is the most
        // likely to be a member.
        while let Ok(p) = join_rx.try_recv() {
            peers.retain(|x| *x != p);
            peers.insert(0, p);
        }
        for peer in peers.clone() {
            if peer.ip() == std::net::IpAddr::V4(agent.addr) {
                continue;
            }
            // Bounded: a peer that swallows the connection must not stall
            // the attempts on every other peer.
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
            Some(p) = join_rx.recv() => { peers.retain(|x| *x != p); peers.insert(0, p); }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Registration, the default network and the reconciler.
async fn start_services(agent: &Arc<Agent>) -> anyhow::Result<()> {
    let lease = retry_store("registering this node", || register(agent)).await?;
    tokio::spawn(keep_alive(agent.clone(), lease));
    retry_store("ensuring the default network", || {
        ensure_default_network(agent)
    })
    .await?;
    let (reconciler, handle) = Reconciler::new(
        agent.store.clone(),
        agent.datapath.clone(),
        agent.ops.clone(),
        agent.identity.id.clone(),
    );
    let _ = agent.reconciler.set(handle);
    tokio::spawn(reconciler.run());
    agent.ready.send_replace(true);
    tracing::info!("The agent is ready.");
    Ok(())
}

/// Retries an operation while the store is unavailable (e.g. the cluster
/// is still electing a leader).
async fn retry_store<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, OpError>>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..100 {
        match f().await {
            Ok(v) => return Ok(v),
            Err(OpError::Unavailable(e)) | Err(OpError::Internal(e)) => {
                tracing::debug!(error = %e, "{what}: store not ready; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(anyhow::anyhow!("{what}: {e}")),
        }
    }
    anyhow::bail!("{what}: the store stayed unavailable")
}

async fn register(agent: &Agent) -> OpResult<LeaseId> {
    let record = NodeRecord {
        id: agent.identity.id.clone(),
        name: agent.identity.name.clone(),
        addr: agent.addr,
        cluster_port: agent.cfg.listen.port(),
        datapath: agent.datapath.name().to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let lease = agent.store.lease_grant(agent.cfg.lease_ttl).await?;
    let value = serde_json::to_vec(&record).map_err(|e| OpError::Internal(e.to_string()))?;
    agent
        .store
        .txn(
            Txn::new()
                .then(Op::put(keys::node(&record.id), value))
                .then(Op::put_with_lease(
                    keys::alive(&record.id),
                    agent.cfg.lease_ttl.as_secs().to_string(),
                    lease,
                )),
        )
        .await?;
    Ok(lease)
}

/// Keeps the liveness lease alive; re-registers if it expired meanwhile
/// (e.g. after a long partition).
async fn keep_alive(agent: Arc<Agent>, mut lease: LeaseId) {
    let period = agent.cfg.lease_ttl / 3;
    loop {
        tokio::time::sleep(period).await;
        match agent.store.lease_keep_alive(lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => {
                tracing::warn!("Our liveness lease expired; registering again.");
                match register(&agent).await {
                    Ok(l) => lease = l,
                    Err(error) => tracing::warn!(%error, "Re-registering failed."),
                }
            }
            Err(error) => tracing::warn!(%error, "Could not renew the liveness lease."),
        }
    }
}

/// The `default` network exists as soon as a cluster does: 10.1.0.0/16
/// unless that overlaps a route of this host.
async fn ensure_default_network(agent: &Agent) -> OpResult<()> {
    if agent.store.get(&keys::network("default")).await?.is_some() {
        return Ok(());
    }
    let routes: Vec<_> = host::ipv4_routes()
        .into_iter()
        .map(|(_, net)| net)
        .filter(|net| net.prefix_len() > 0)
        .collect();
    let candidates = std::iter::once(1u8).chain(100..=250);
    for second in candidates {
        let subnet = ipnet::Ipv4Net::new(Ipv4Addr::new(10, second, 0, 0), 16)
            .map_err(|e| OpError::Internal(e.to_string()))?;
        if routes
            .iter()
            .any(|r| socketplane_ipam::overlaps(*r, subnet))
        {
            continue;
        }
        let req = CreateNetwork {
            name: "default".into(),
            subnet: subnet.to_string(),
            gateway: None,
            mtu: None,
        };
        match agent.ops.create_network(&req).await {
            Ok(_) => return Ok(()),
            // Another node created it first, or the subnet is used by
            // another network: check again / try the next one.
            Err(OpError::Conflict(_)) => {
                if agent.store.get(&keys::network("default")).await?.is_some() {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(OpError::Conflict(
        "no free 10.x.0.0/16 for the default network".into(),
    ))
}

// Used by the cluster-port handlers.
impl Agent {
    /// This host's datapath (the Docker plugin asks it for interface names).
    pub fn datapath(&self) -> &Arc<dyn Datapath> {
        &self.datapath
    }
    pub(crate) fn embedded(&self) -> Option<&Arc<EmbeddedStore>> {
        self.embedded.as_ref()
    }
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }
    pub(crate) fn underlay(&self) -> (&str, Ipv4Addr) {
        (&self.iface, self.addr)
    }
    pub(crate) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
    pub(crate) fn join_sender(&self) -> mpsc::UnboundedSender<SocketAddr> {
        self.join_tx.clone()
    }
}
