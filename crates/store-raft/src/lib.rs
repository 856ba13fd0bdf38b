//! The embedded store backend: a Raft-replicated key-value store (openraft +
//! redb) inside the agent.
//!
//! Every node keeps the whole key space in memory, applied from the Raft log;
//! the log, the vote and snapshots of the state are persisted in redb with a
//! durable commit before anything is acknowledged. Writes (transactions,
//! lease operations) are forwarded to the leader; reads are linearizable
//! (confirmed by the leader, then served from the local state once it has
//! applied at least the leader's commit index). Watches are served from the
//! local state with a bounded history.
//!
//! Nodes talk HTTP under `/raft/v1/` on the cluster port: mount
//! [`EmbeddedStore::router`] there.
//!
//! # Use
//!
//! ```ignore
//! let store = EmbeddedStore::open(EmbeddedConfig::new(id, "default", data_dir.join("store"), advertise)).await?;
//! let app = store.router().merge(other_cluster_routes);     // serve on the cluster port
//! if !store.is_member() {
//!     if bootstrap { store.bootstrap().await? } else { store.join(seed).await? }
//! }
//! let store: Arc<dyn Store> = store;                         // the rest of the agent
//! // on exit: store.shutdown().await (closes the database)
//! ```
//!
//! # Guarantees
//!
//! - Writes are acknowledged only after a quorum persisted them (redb
//!   commit with fsync, one per batch of queued appends).
//! - A write whose outcome cannot be known (the leader died mid-request, no
//!   quorum within `request_timeout`) fails with `Unavailable`; it may still
//!   have been applied. Writes refused before being proposed are retried
//!   transparently against the new leader.
//! - Leases run on the leader's clock: the leader revokes a lease `ttl`
//!   after its last keep-alive; a new leader gives every lease a fresh TTL.
//! - Voters: the founder, then joiners while there are fewer than
//!   `max_voters`; later nodes are replicas. The leader promotes a caught-up
//!   live replica when a voter is missing or has been unreachable for
//!   `replace_after` (the dead voter stays as a replica).
//!
//! openraft logs unreachable peers at ERROR level every retry; filter the
//! `openraft` target (e.g. `openraft=off`) in the agent's log settings.

// openraft's error types (mandated by its storage traits) and axum's
// response are large; boxing them would only add noise.
#![allow(clippy::result_large_err)]

mod http;
mod network;
mod sm;
mod storage;
mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use socketplane_store::{
    Event, KeyValue, LeaseId, Listing, MemberRole, Revision, Store, StoreError, StoreMember,
    StoreStatus, Txn, TxnResult, WatchStream,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use network::{
    CallError, ClientRequest, ForwardResult, JoinRequest, LeaveRequest, NetCore, WireError,
};
pub use sm::KvState;
use sm::{SmShared, StateMachine, WatchMsg};
use storage::{LogStore, Writer};
use types::Raft;
pub use types::{NodeId, Request, Response};

/// Raft timing and housekeeping knobs.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot (and purge the log before it) every this many entries.
    pub snapshot_every: u64,
    /// How long a client call waits for a leader before `Unavailable`.
    pub request_timeout: Duration,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            snapshot_every: 10_000,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl RaftTiming {
    /// Short timeouts for tests on loopback.
    pub fn fast() -> Self {
        Self {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            snapshot_every: 500,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Configuration of one embedded store node.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Stable per node; the agent persists it.
    pub node_id: u64,
    /// Cluster name; nodes of different clusters refuse each other.
    pub cluster: String,
    /// Where the store keeps its database (`<data-dir>/store`).
    pub data_dir: PathBuf,
    /// This node's cluster-port address that others dial.
    pub advertise: SocketAddr,
    /// When set, every request carries `x-socketplane-token` and requests
    /// without the right token are refused with 401.
    pub token: Option<String>,
    /// How many voters the cluster keeps (3 by default, 5 allowed); further
    /// nodes are non-voting replicas.
    pub max_voters: usize,
    /// A voter unreachable for this long is replaced by a live replica.
    pub replace_after: Duration,
    pub timing: RaftTiming,
}

impl EmbeddedConfig {
    /// A configuration with the defaults: no token, 3 voters, replacement
    /// after 10 s, production timing.
    pub fn new(
        node_id: u64,
        cluster: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        advertise: SocketAddr,
    ) -> Self {
        Self {
            node_id,
            cluster: cluster.into(),
            data_dir: data_dir.into(),
            advertise,
            token: None,
            max_voters: 3,
            replace_after: Duration::from_secs(10),
            timing: RaftTiming::default(),
        }
    }
}

const DB_FILE: &str = "raft.redb";

#[derive(Default)]
struct ReadBatch {
    running: bool,
    waiters: Vec<tokio::sync::oneshot::Sender<Result<u64, WireError>>>,
}

#[derive(Default)]
struct LeaseClock {
    term: u64,
    deadlines: HashMap<LeaseId, Instant>,
    revoking: HashSet<LeaseId>,
}

/// One node of the embedded store.
pub struct EmbeddedStore {
    cfg: EmbeddedConfig,
    raft: Raft,
    sm: Arc<SmShared>,
    net: Arc<NetCore>,
    writer: Writer,
    member_at_open: bool,
    leases: Mutex<LeaseClock>,
    /// Last time the leader sent us anything (follower-side health).
    leader_seen: Mutex<Option<Instant>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stopped: AtomicBool,
    reads: Mutex<ReadBatch>,
    me: Weak<EmbeddedStore>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EmbeddedStore {
    /// Opens the node's data dir (creating it if new) and starts Raft. A
    /// node with state resumes its cluster; a new node waits for
    /// [`bootstrap`](Self::bootstrap) or [`join`](Self::join). Unreadable or
    /// foreign data is refused with [`StoreError::Corrupt`], never wiped.
    pub async fn open(cfg: EmbeddedConfig) -> Result<Arc<EmbeddedStore>, StoreError> {
        if cfg.cluster.is_empty() {
            return Err(StoreError::InvalidArgument("cluster name is empty".into()));
        }
        if cfg.advertise.ip().is_unspecified() || cfg.advertise.port() == 0 {
            return Err(StoreError::InvalidArgument(format!(
                "advertise address {} is not dialable by other nodes",
                cfg.advertise
            )));
        }
        if cfg.max_voters == 0 {
            return Err(StoreError::InvalidArgument(
                "max_voters must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            StoreError::Internal(format!("cannot create {}: {e}", cfg.data_dir.display()))
        })?;
        let path = cfg.data_dir.join(DB_FILE);
        let (cluster, node_id) = (cfg.cluster.clone(), cfg.node_id);
        let (db, mut loaded) =
            tokio::task::spawn_blocking(move || storage::open_db(&path, &cluster, node_id))
                .await
                .map_err(|e| StoreError::Internal(format!("store open task failed: {e}")))??;
        let member_at_open = !loaded.entries.is_empty() || loaded.snapshot.is_some();
        let sm = SmShared::new(loaded.snapshot.take())?;
        let writer = Writer::spawn(db);
        let log = LogStore::new(&mut loaded, writer.clone());
        let state_machine = StateMachine {
            shared: sm.clone(),
            writer: writer.clone(),
        };
        let t = &cfg.timing;
        let config = openraft::Config {
            cluster_name: cfg.cluster.clone(),
            heartbeat_interval: t.heartbeat.as_millis() as u64,
            election_timeout_min: t.election_min.as_millis() as u64,
            election_timeout_max: t.election_max.as_millis() as u64,
            install_snapshot_timeout: 30_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every.max(10)),
            max_in_snapshot_log_to_keep: (t.snapshot_every / 4).max(10),
            purge_batch_size: 64,
            max_payload_entries: 500,
            ..Default::default()
        };
        let config = match config.validate() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                writer.stop();
                return Err(StoreError::InvalidArgument(format!("raft timing: {e}")));
            }
        };
        let net = NetCore::new(cfg.token.clone(), cfg.cluster.clone());
        let network = network::Network { core: net.clone() };
        let raft = match Raft::new(cfg.node_id, config, network, log, state_machine).await {
            Ok(r) => r,
            Err(e) => {
                writer.stop();
                return Err(StoreError::Corrupt(format!("cannot start raft: {e}")));
            }
        };
        let store = Arc::new_cyclic(|me| EmbeddedStore {
            cfg,
            raft,
            sm,
            net,
            writer,
            member_at_open,
            leases: Mutex::new(LeaseClock::default()),
            leader_seen: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            reads: Mutex::new(ReadBatch::default()),
            me: me.clone(),
        });
        if member_at_open {
            // Let Raft report the membership it loaded before callers ask
            // `is_member`.
            let _ = store
                .raft
                .wait(Some(Duration::from_secs(2)))
                .metrics(
                    |m| m.membership_config.membership().nodes().next().is_some(),
                    "load membership",
                )
                .await;
        }
        let weak = Arc::downgrade(&store);
        let lease_task = tokio::spawn(lease_loop(weak.clone()));
        let member_task = tokio::spawn(membership_loop(weak));
        lock(&store.tasks).extend([lease_task, member_task]);
        Ok(store)
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.cfg.node_id
    }

    fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    /// True when this node already has cluster state that includes it
    /// (restart case): then neither `bootstrap` nor `join` is needed.
    pub fn is_member(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        if membership.nodes().next().is_none() {
            // Raft has not reported the loaded state yet.
            return self.member_at_open;
        }
        membership.get_node(&self.cfg.node_id).is_some()
    }

    /// Founds a one-voter cluster with this node; a no-op if it is already
    /// a member.
    pub async fn bootstrap(&self) -> Result<(), StoreError> {
        if self.is_member() {
            return Ok(());
        }
        let mut nodes = BTreeMap::new();
        nodes.insert(self.cfg.node_id, BasicNode::new(self.cfg.advertise));
        match self.raft.initialize(nodes).await {
            Ok(()) => {}
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return Ok(()),
            Err(e) => return Err(StoreError::Internal(format!("bootstrap failed: {e}"))),
        }
        self.raft
            .wait(Some(self.cfg.timing.request_timeout))
            .current_leader(self.cfg.node_id, "bootstrap")
            .await
            .map_err(|e| StoreError::Unavailable(format!("bootstrap: no leader: {e}")))?;
        Ok(())
    }

    /// Asks a member (any; it forwards to the leader) to add this node: as
    /// a replica first, promoted to voter while the cluster has fewer than
    /// `max_voters`. A no-op if already a member.
    pub async fn join(&self, seed: SocketAddr) -> Result<(), StoreError> {
        if self.is_member() {
            return Ok(());
        }
        let req = JoinRequest {
            node_id: self.cfg.node_id,
            addr: self.cfg.advertise.to_string(),
            cluster: self.cfg.cluster.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut target = seed.to_string();
        let mut last_err;
        loop {
            let res: Result<Result<(), WireError>, CallError> = self
                .net
                .post(&target, "/raft/v1/join", &req, Duration::from_secs(40))
                .await;
            match res {
                Ok(Ok(())) => break,
                Ok(Err(WireError::ClusterMismatch { ours, theirs })) => {
                    return Err(StoreError::InvalidArgument(format!(
                        "cannot join: {target} belongs to cluster {ours:?}, this node to cluster {theirs:?}"
                    )))
                }
                Ok(Err(WireError::NotLeader { leader: Some(l) })) => {
                    last_err = format!("redirected to {l}");
                    target = l;
                }
                Ok(Err(WireError::InvalidArgument(e))) => {
                    return Err(StoreError::InvalidArgument(format!("cannot join: {e}")))
                }
                Ok(Err(e)) => last_err = format!("{e:?}"),
                Err(CallError::Status(code, msg)) if code == 401 || code == 409 => {
                    return Err(StoreError::InvalidArgument(format!("cannot join via {target}: {msg}")))
                }
                Err(e) => {
                    last_err = e.to_string();
                    target = seed.to_string();
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "cannot join via {seed}: {last_err}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let id = self.cfg.node_id;
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(
                |m| m.membership_config.membership().get_node(&id).is_some(),
                "join",
            )
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("joined but membership not replicated: {e}"))
            })?;
        Ok(())
    }

    /// Removes this node from the cluster.
    pub async fn leave(&self) -> Result<(), StoreError> {
        if !self.is_member() {
            return Ok(());
        }
        let req = LeaveRequest {
            node_id: self.cfg.node_id,
        };
        let deadline = Instant::now() + self.cfg.timing.request_timeout;
        loop {
            let res = match self.leader() {
                Some((id, _)) if id == self.cfg.node_id => self.handle_leave(req.clone()).await,
                Some((_, addr)) => {
                    match self
                        .net
                        .post::<_, Result<(), WireError>>(
                            &addr,
                            "/raft/v1/leave",
                            &req,
                            self.cfg.timing.request_timeout,
                        )
                        .await
                    {
                        Ok(r) => r,
                        Err(e) => Err(WireError::Unavailable(e.to_string())),
                    }
                }
                None => Err(WireError::NotLeader { leader: None }),
            };
            match res {
                Ok(()) => return Ok(()),
                Err(WireError::NotLeader { .. }) | Err(WireError::Unavailable(_)) => {}
                Err(e) => return Err(wire_to_store(e)),
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable("leave: no leader".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops Raft and the background tasks and closes the database (the data
    /// dir can be reopened afterwards).
    pub async fn shutdown(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not shut down cleanly.");
        }
        let writer = self.writer.clone();
        let _ = tokio::task::spawn_blocking(move || writer.stop()).await;
    }

    /// The current leader's id and address, if known.
    fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
        Some((id, addr))
    }

    fn not_leader(&self) -> WireError {
        WireError::NotLeader {
            leader: self.leader().map(|(_, a)| a),
        }
    }

    /// Executes a client request on this node, which must be the leader.
    async fn handle_local(&self, req: ClientRequest) -> ForwardResult {
        if self.stopped.load(Ordering::SeqCst) {
            // Nothing was proposed: the caller may retry elsewhere.
            return Err(WireError::NotLeader { leader: None });
        }
        match req {
            ClientRequest::Write(r) => {
                let grant_ttl = match &r {
                    Request::LeaseGrant { ttl_ms } => Some(*ttl_ms),
                    _ => None,
                };
                let term = self.metrics().current_term;
                match self.raft.client_write(r).await {
                    Ok(resp) => {
                        if let (Some(ttl), Response::Lease(id)) = (grant_ttl, &resp.data) {
                            let mut c = lock(&self.leases);
                            if c.term == term {
                                c.deadlines
                                    .insert(*id, Instant::now() + Duration::from_millis(ttl));
                            }
                        }
                        Ok((resp.data, resp.log_id.index))
                    }
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                        Err(self.not_leader())
                    }
                    Err(RaftError::APIError(e)) => Err(WireError::Internal(e.to_string())),
                    Err(RaftError::Fatal(e)) => Err(WireError::Unavailable(e.to_string())),
                }
            }
            ClientRequest::KeepAlive(id) => {
                let term = self.metrics().current_term;
                // Confirm leadership (one shared round for concurrent
                // keep-alives) and see every committed grant/revoke.
                let index = self.read_index().await?;
                self.raft
                    .wait(Some(self.cfg.timing.request_timeout))
                    .applied_index_at_least(Some(index), "keep-alive")
                    .await
                    .map_err(|e| WireError::Unavailable(e.to_string()))?;
                let m = self.metrics();
                if m.current_term != term || m.current_leader != Some(self.cfg.node_id) {
                    return Err(self.not_leader());
                }
                let ttl = self.sm.lock().state.lease_ttl_ms(id);
                let Some(ttl) = ttl else {
                    return Err(WireError::LeaseNotFound(id));
                };
                let mut c = lock(&self.leases);
                if c.term != term {
                    *c = LeaseClock {
                        term,
                        ..Default::default()
                    };
                }
                c.deadlines
                    .insert(id, Instant::now() + Duration::from_millis(ttl));
                Ok((Response::None, 0))
            }
        }
    }

    fn leader_err(&self, e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> WireError {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)) => self.not_leader(),
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
                WireError::Unavailable(format!("no quorum: {q}"))
            }
            RaftError::Fatal(f) => WireError::Unavailable(f.to_string()),
        }
    }

    /// Sends a client request to the leader (this node or a remote one),
    /// retrying while that is safe.
    async fn submit(&self, req: ClientRequest) -> Result<Response, StoreError> {
        let idempotent = matches!(req, ClientRequest::KeepAlive(_));
        let timeout = self.cfg.timing.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(5);
        let mut last = String::from("no leader");
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("store is shut down".into()));
            }
            match self.leader() {
                Some((id, _)) if id == self.cfg.node_id => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let res = match tokio::time::timeout(left, self.handle_local(req.clone())).await
                    {
                        Ok(r) => r,
                        Err(_) => {
                            return Err(StoreError::Unavailable(
                                "no quorum within the request timeout; outcome unknown".into(),
                            ))
                        }
                    };
                    match res {
                        Ok((r, _)) => return Ok(r),
                        Err(WireError::NotLeader { .. }) => last = "leader changed".into(),
                        Err(WireError::Unavailable(e)) if idempotent => last = e,
                        Err(e) => return Err(wire_to_store(e)),
                    }
                }
                Some((_, addr)) => {
                    let res: Result<ForwardResult, CallError> = self
                        .net
                        .post(&addr, "/raft/v1/forward", &req, timeout)
                        .await;
                    match res {
                        Ok(Ok((r, index))) => {
                            // Read your writes: wait until this node applied
                            // it too (the write succeeded either way).
                            if index > 0 {
                                let left = deadline.saturating_duration_since(Instant::now());
                                let _ = self
                                    .raft
                                    .wait(Some(left.max(Duration::from_secs(1))))
                                    .applied_index_at_least(Some(index), "forwarded write")
                                    .await;
                            }
                            return Ok(r);
                        }
                        Ok(Err(WireError::NotLeader { .. })) => {
                            last = format!("{addr} is not the leader")
                        }
                        Ok(Err(WireError::Unavailable(e))) if idempotent => last = e,
                        Ok(Err(e)) => return Err(wire_to_store(e)),
                        // Refused before anything was proposed: retry.
                        Err(e @ CallError::Connect(_)) | Err(e @ CallError::Status(503, _)) => {
                            last = e.to_string()
                        }
                        Err(e) if idempotent => last = e.to_string(),
                        Err(e) => {
                            return Err(StoreError::Unavailable(format!(
                                "leader failed during the request, outcome unknown: {e}"
                            )))
                        }
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(last));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Waits until this node may serve a linearizable read.
    async fn linearize(&self) -> Result<(), StoreError> {
        let timeout = self.cfg.timing.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(5);
        let mut last;
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return Err(StoreError::Unavailable("store is shut down".into()));
            }
            match self.read_index().await {
                Ok(index) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self
                        .raft
                        .wait(Some(left))
                        .applied_index_at_least(Some(index), "linearizable read")
                        .await
                    {
                        Ok(_) => return Ok(()),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = format!("{e:?}"),
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(last));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// The log index a linearizable read must wait for. Concurrent callers
    /// share one confirmation round with the leader (a round that started
    /// after each of them asked), so a burst of reads costs one heartbeat
    /// round instead of one each.
    async fn read_index(&self) -> Result<u64, WireError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let drive = {
            let mut g = lock(&self.reads);
            g.waiters.push(tx);
            !std::mem::replace(&mut g.running, true)
        };
        if drive {
            match self.me.upgrade() {
                Some(me) => {
                    tokio::spawn(async move {
                        loop {
                            let batch = {
                                let mut g = lock(&me.reads);
                                if g.waiters.is_empty() {
                                    g.running = false;
                                    break;
                                }
                                std::mem::take(&mut g.waiters)
                            };
                            let res = me.read_index_round().await;
                            for w in batch {
                                let _ = w.send(res.clone());
                            }
                        }
                    });
                }
                None => {
                    let mut g = lock(&self.reads);
                    g.running = false;
                    g.waiters.clear();
                }
            }
        }
        rx.await
            .unwrap_or_else(|_| Err(WireError::Unavailable("read aborted".into())))
    }

    async fn read_index_round(&self) -> Result<u64, WireError> {
        match self.leader() {
            Some((id, _)) if id == self.cfg.node_id => {
                let (read, _) = self
                    .raft
                    .get_read_log_id()
                    .await
                    .map_err(|e| self.leader_err(e))?;
                Ok(read.map(|l| l.index).unwrap_or(0))
            }
            Some((_, addr)) => {
                let res: Result<Result<u64, WireError>, CallError> = self
                    .net
                    .post(
                        &addr,
                        "/raft/v1/read_index",
                        &(),
                        self.cfg.timing.request_timeout,
                    )
                    .await;
                match res {
                    Ok(r) => r,
                    Err(e) => Err(WireError::Unavailable(e.to_string())),
                }
            }
            None => Err(WireError::NotLeader { leader: None }),
        }
    }

    /// Leader side of a read index request: confirms leadership and returns
    /// the index a follower must have applied to read.
    async fn handle_read_index(&self) -> Result<u64, WireError> {
        if !matches!(self.leader(), Some((id, _)) if id == self.cfg.node_id) {
            return Err(self.not_leader());
        }
        self.read_index().await
    }

    async fn handle_join(&self, req: JoinRequest) -> Result<(), WireError> {
        if req.cluster != self.cfg.cluster {
            return Err(WireError::ClusterMismatch {
                ours: self.cfg.cluster.clone(),
                theirs: req.cluster,
            });
        }
        if req.addr.parse::<SocketAddr>().is_err() {
            return Err(WireError::InvalidArgument(format!(
                "bad address {:?}",
                req.addr
            )));
        }
        match self.leader() {
            Some((id, _)) if id == self.cfg.node_id => {}
            Some((_, addr)) => {
                return match self
                    .net
                    .post::<_, Result<(), WireError>>(
                        &addr,
                        "/raft/v1/join",
                        &req,
                        Duration::from_secs(40),
                    )
                    .await
                {
                    Ok(r) => r,
                    Err(e) => Err(WireError::Unavailable(e.to_string())),
                }
            }
            None => return Err(WireError::Unavailable("no leader".into())),
        }
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let known = membership.get_node(&req.node_id).map(|n| n.addr.clone());
        if known.as_deref() != Some(req.addr.as_str()) {
            let add = self
                .raft
                .add_learner(req.node_id, BasicNode::new(&req.addr), true);
            match tokio::time::timeout(Duration::from_secs(30), add).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.write_err(e)),
                Err(_) => {
                    return Err(WireError::Unavailable(
                        "new node did not catch up in time".into(),
                    ))
                }
            }
        }
        if !voters.contains(&req.node_id) && voters.len() < self.cfg.max_voters {
            let mut ids = BTreeSet::new();
            ids.insert(req.node_id);
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(ids), false)
                .await
                .map_err(|e| self.write_err(e))?;
        }
        tracing::info!(node = req.node_id, addr = %req.addr, "Node joined the store cluster.");
        Ok(())
    }

    async fn handle_leave(&self, req: LeaveRequest) -> Result<(), WireError> {
        if !matches!(self.leader(), Some((id, _)) if id == self.cfg.node_id) {
            return Err(self.not_leader());
        }
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == req.node_id);
        if membership.get_node(&req.node_id).is_none() {
            return Ok(());
        }
        let mut ids = BTreeSet::new();
        ids.insert(req.node_id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.write_err(e))?;
        Ok(())
    }

    fn write_err(&self, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> WireError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => self.not_leader(),
            RaftError::APIError(e) => WireError::Unavailable(e.to_string()),
            RaftError::Fatal(e) => WireError::Unavailable(e.to_string()),
        }
    }

    /// Leader housekeeping: revoke expired leases.
    async fn lease_tick(&self) {
        let m = self.metrics();
        if m.state != ServerState::Leader {
            let mut c = lock(&self.leases);
            if !c.deadlines.is_empty() || c.term != 0 {
                *c = LeaseClock::default();
            }
            return;
        }
        let leases = self.sm.lock().state.leases();
        let now = Instant::now();
        let expired: Vec<LeaseId> = {
            let mut c = lock(&self.leases);
            if c.term != m.current_term {
                // A new leader gives every lease a fresh TTL (as etcd does).
                *c = LeaseClock {
                    term: m.current_term,
                    ..Default::default()
                };
            }
            let live: HashSet<LeaseId> = leases.iter().map(|(id, _)| *id).collect();
            c.deadlines.retain(|id, _| live.contains(id));
            c.revoking.retain(|id| live.contains(id));
            let mut expired = Vec::new();
            for (id, ttl) in leases {
                let d = *c
                    .deadlines
                    .entry(id)
                    .or_insert(now + Duration::from_millis(ttl));
                if d <= now && c.revoking.insert(id) {
                    expired.push(id);
                }
            }
            expired
        };
        for id in expired {
            tracing::debug!(lease = id, "Lease expired; revoking it.");
            if let Err(e) = self.raft.client_write(Request::LeaseRevoke { id }).await {
                tracing::debug!(lease = id, error = %e, "Could not revoke an expired lease.");
                lock(&self.leases).revoking.remove(&id);
            }
        }
    }

    /// Leader housekeeping: promote replicas while voters are missing, and
    /// replace voters that have been unreachable for `replace_after`.
    async fn membership_tick(&self, leader_since: Instant) {
        let m = self.metrics();
        if m.state != ServerState::Leader {
            return;
        }
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return;
        }
        let me = self.cfg.node_id;
        let now = Instant::now();
        let seen = |id: NodeId| -> Duration {
            if id == me {
                return Duration::ZERO;
            }
            let since = self
                .net
                .last_contact(id)
                .unwrap_or(leader_since)
                .max(leader_since);
            now.saturating_duration_since(since)
        };
        let alive_window = self.cfg.replace_after.min(Duration::from_secs(3));
        let last_index = m.last_log_index.unwrap_or(0);
        let caught_up = |id: NodeId| -> bool {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned())
                .flatten()
                .map(|l| l.index)
                .unwrap_or(0);
            matched + 100 >= last_index
        };
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut learners: Vec<NodeId> = membership
            .learner_ids()
            .filter(|id| seen(*id) < alive_window && caught_up(*id))
            .collect();
        learners.sort();
        let dead: Vec<NodeId> = voters
            .iter()
            .copied()
            .filter(|id| seen(*id) >= self.cfg.replace_after)
            .collect();
        if voters.len() < self.cfg.max_voters {
            if let Some(l) = learners.first() {
                let mut ids = BTreeSet::new();
                ids.insert(*l);
                tracing::info!(node = *l, "Promoting a replica to voter.");
                if let Err(e) = self
                    .raft
                    .change_membership(ChangeMembers::AddVoterIds(ids), false)
                    .await
                {
                    tracing::warn!(error = %e, "Could not promote a replica.");
                }
                return;
            }
        }
        if let (Some(d), Some(l)) = (dead.first(), learners.first()) {
            let mut new_voters = voters.clone();
            new_voters.remove(d);
            new_voters.insert(*l);
            tracing::warn!(
                dead = *d,
                replacement = *l,
                "Replacing an unreachable voter with a replica."
            );
            if let Err(e) = self
                .raft
                .change_membership(ChangeMembers::ReplaceAllVoters(new_voters), true)
                .await
            {
                tracing::warn!(error = %e, "Could not replace an unreachable voter.");
            }
        }
    }

    /// Drops this node's watch history below `revision` (watches from
    /// older revisions then fail with `Compacted`). History is also bounded
    /// on its own; this is for tests and manual compaction.
    pub fn compact(&self, revision: Revision) {
        let mut g = self.sm.lock();
        while g
            .history
            .front()
            .is_some_and(|e| e.kv.mod_revision < revision)
        {
            if let Some(e) = g.history.pop_front() {
                g.compacted = g.compacted.max(e.kv.mod_revision);
            }
        }
        g.compacted = g.compacted.max(revision - 1).min(g.state.revision());
    }

    fn note_leader_contact(&self) {
        *lock(&self.leader_seen) = Some(Instant::now());
    }
}

async fn lease_loop(store: Weak<EmbeddedStore>) {
    let period = match store.upgrade() {
        Some(s) => s.cfg.timing.heartbeat.min(Duration::from_millis(100)),
        None => return,
    };
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        let Some(s) = store.upgrade() else { return };
        if s.stopped.load(Ordering::SeqCst) {
            return;
        }
        s.lease_tick().await;
    }
}

async fn membership_loop(store: Weak<EmbeddedStore>) {
    let period = match store.upgrade() {
        Some(s) => (s.cfg.timing.heartbeat * 4).max(Duration::from_millis(200)),
        None => return,
    };
    let mut iv = tokio::time::interval(period);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut term = 0;
    let mut since = Instant::now();
    loop {
        iv.tick().await;
        let Some(s) = store.upgrade() else { return };
        if s.stopped.load(Ordering::SeqCst) {
            return;
        }
        let m = s.metrics();
        if m.state != ServerState::Leader {
            term = 0;
            continue;
        }
        if m.current_term != term {
            term = m.current_term;
            since = Instant::now();
        }
        s.membership_tick(since).await;
    }
}

fn wire_to_store(e: WireError) -> StoreError {
    match e {
        WireError::NotLeader { leader } => {
            StoreError::Unavailable(format!("not the leader (leader: {leader:?})"))
        }
        WireError::Unavailable(e) => StoreError::Unavailable(e),
        WireError::InvalidArgument(e) => StoreError::InvalidArgument(e),
        WireError::LeaseNotFound(id) => StoreError::LeaseNotFound(id),
        WireError::ClusterMismatch { ours, theirs } => {
            StoreError::InvalidArgument(format!("cluster name mismatch: {ours:?} vs {theirs:?}"))
        }
        WireError::Internal(e) => StoreError::Internal(e),
    }
}

fn unexpected(r: Response) -> StoreError {
    StoreError::Internal(format!("unexpected response {r:?}"))
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.linearize().await?;
        Ok(self.sm.lock().state.get(key))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        self.linearize().await?;
        let g = self.sm.lock();
        Ok(Listing {
            kvs: g.state.list(prefix),
            revision: g.state.revision(),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        sm::validate_txn(&txn).map_err(StoreError::InvalidArgument)?;
        {
            // A key's mod revision only grows (or drops to 0 on delete), so
            // a compare on an older non-zero revision can never hold again:
            // fail at once instead of spending a log entry.
            let g = self.sm.lock();
            let stale = txn
                .compares
                .iter()
                .any(|c| c.mod_revision > 0 && g.state.mod_revision(&c.key) > c.mod_revision);
            if stale {
                return Ok(TxnResult {
                    succeeded: false,
                    revision: g.state.revision(),
                });
            }
        }
        match self.submit(ClientRequest::Write(Request::Txn(txn))).await? {
            Response::Txn(r) => Ok(r),
            Response::LeaseNotFound(id) => Err(StoreError::LeaseNotFound(id)),
            Response::Invalid(e) => Err(StoreError::InvalidArgument(e)),
            r => Err(unexpected(r)),
        }
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        if from < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "negative revision {from}"
            )));
        }
        let (backlog, rx, start) = {
            let g = self.sm.lock();
            let rx = self.sm.events.subscribe();
            if from == 0 {
                (Vec::new(), rx, g.state.revision() + 1)
            } else {
                if from <= g.compacted {
                    return Err(StoreError::Compacted {
                        requested: from,
                        compacted: g.compacted + 1,
                    });
                }
                let backlog: Vec<Event> = g
                    .history
                    .iter()
                    .filter(|e| e.kv.mod_revision >= from && e.kv.key.starts_with(prefix))
                    .cloned()
                    .collect();
                (backlog, rx, from)
            }
        };
        let prefix = prefix.to_string();
        let live = futures::stream::unfold((rx, false, start), move |(mut rx, done, mut next)| {
            let prefix = prefix.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    match rx.recv().await {
                        Ok(WatchMsg::Events(evs)) => {
                            let out: Vec<Result<Event, StoreError>> = evs
                                .iter()
                                .filter(|e| {
                                    e.kv.mod_revision >= next && e.kv.key.starts_with(&prefix)
                                })
                                .cloned()
                                .map(Ok)
                                .collect();
                            if let Some(last) = evs.last() {
                                next = next.max(last.kv.mod_revision);
                            }
                            if !out.is_empty() {
                                return Some((futures::stream::iter(out), (rx, false, next)));
                            }
                        }
                        Ok(WatchMsg::Reset(rev)) => {
                            let err = StoreError::Compacted {
                                requested: next,
                                compacted: rev + 1,
                            };
                            return Some((futures::stream::iter(vec![Err(err)]), (rx, true, next)));
                        }
                        Err(RecvError::Lagged(_)) => {
                            let err = StoreError::Compacted {
                                requested: next,
                                compacted: next,
                            };
                            return Some((futures::stream::iter(vec![Err(err)]), (rx, true, next)));
                        }
                        Err(RecvError::Closed) => {
                            let err = StoreError::Unavailable("store shut down".into());
                            return Some((futures::stream::iter(vec![Err(err)]), (rx, true, next)));
                        }
                    }
                }
            }
        })
        .flatten();
        let stream = futures::stream::iter(backlog.into_iter().map(Ok)).chain(live);
        Ok(Box::pin(stream))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl_ms = ttl.as_millis() as u64;
        if ttl_ms == 0 {
            return Err(StoreError::InvalidArgument(
                "lease TTL must be positive".into(),
            ));
        }
        match self
            .submit(ClientRequest::Write(Request::LeaseGrant { ttl_ms }))
            .await?
        {
            Response::Lease(id) => Ok(id),
            r => Err(unexpected(r)),
        }
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.submit(ClientRequest::KeepAlive(lease))
            .await
            .map(|_| ())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.submit(ClientRequest::Write(Request::LeaseRevoke { id: lease }))
            .await
            .map(|_| ())
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| StoreMember {
                id: id.to_string(),
                addr: node.addr.clone(),
                role: if Some(*id) == m.current_leader {
                    MemberRole::Leader
                } else if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Replica
                },
            })
            .collect();
        let window = self.cfg.timing.election_max * 2;
        let healthy = !self.stopped.load(Ordering::SeqCst)
            && match m.current_leader {
                None => false,
                Some(l) if l == self.cfg.node_id => {
                    voters.len() <= 1
                        || m.millis_since_quorum_ack
                            .is_some_and(|ms| Duration::from_millis(ms) < window)
                }
                Some(_) => lock(&self.leader_seen).is_some_and(|t| t.elapsed() < window),
            };
        let revision = self.sm.lock().state.revision();
        Ok(StoreStatus {
            backend: "embedded".into(),
            healthy,
            leader: m.current_leader.map(|l| l.to_string()),
            members,
            revision,
        })
    }
}
