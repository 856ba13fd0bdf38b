//! The client side of node-to-node RPC over HTTP: the openraft network
//! (append, vote, snapshot) and a client for the store's own calls (join,
//! leave, forward, read index).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::types::{NodeId, Snapshot, TypeConfig, Vote};
use crate::wire::{self, SnapshotHeader};
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest response body read from a peer (a forwarded range or a
/// join answer; snapshots travel the other way).
const MAX_RESPONSE: usize = 64 << 20;

/// The HTTP client and the scheme it speaks.
#[derive(Clone)]
struct Dialer {
    client: reqwest::Client,
    scheme: &'static str,
}

impl Dialer {
    fn new(tls: Option<rustls::ClientConfig>) -> Dialer {
        // reqwest builds its own TLS settings even for plain HTTP; ring is
        // the provider this workspace uses (a no-op once installed).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(2))
            // Peers are dialled by address: never follow a redirect.
            .redirect(reqwest::redirect::Policy::none());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let builder = match tls {
            Some(tls) => builder.tls_backend_preconfigured(tls),
            // Plain HTTP: no roots needed. Without this reqwest loads the
            // system's CA directory on every build, a tenth of an agent's
            // start-up CPU.
            None => builder.tls_certs_only(std::iter::empty::<reqwest::Certificate>()),
        };
        let client = builder.build().unwrap_or_else(|error| {
            tracing::error!(%error, "Could not build the peer client; no peer will answer.");
            reqwest::Client::new()
        });
        Dialer { client, scheme }
    }
}

/// Shared HTTP client and peer bookkeeping.
pub(crate) struct NetCore {
    dialer: RwLock<Dialer>,
    pub cluster: String,
    /// Last successful Raft RPC to each peer (leader side liveness).
    pub contacts: Mutex<HashMap<NodeId, Instant>>,
    /// Fault injection for tests: refuse every outgoing request.
    pub isolated: AtomicBool,
    /// Log entries in appends that were answered, and entries a probe
    /// showed the follower already held (so they were not sent).
    entries_sent: AtomicU64,
    entries_skipped: AtomicU64,
}

/// What this node's replication sent to its followers so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicationStats {
    /// Log entries carried by appends that were answered.
    pub entries_sent: u64,
    /// Log entries not sent because the follower was shown to hold them.
    pub entries_skipped: u64,
}

impl NetCore {
    pub fn new(tls: Option<rustls::ClientConfig>, cluster: String) -> Arc<Self> {
        Arc::new(Self {
            dialer: RwLock::new(Dialer::new(tls)),
            cluster,
            contacts: Mutex::new(HashMap::new()),
            isolated: AtomicBool::new(false),
            entries_sent: AtomicU64::new(0),
            entries_skipped: AtomicU64::new(0),
        })
    }

    pub fn replication_stats(&self) -> ReplicationStats {
        ReplicationStats {
            entries_sent: self.entries_sent.load(Ordering::Relaxed),
            entries_skipped: self.entries_skipped.load(Ordering::Relaxed),
        }
    }

    /// Dial with this TLS configuration from now on.
    pub fn set_tls(&self, tls: Option<rustls::ClientConfig>) {
        *self.dialer.write().unwrap_or_else(|e| e.into_inner()) = Dialer::new(tls);
    }

    pub fn touch(&self, id: NodeId) {
        self.contacts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Instant::now());
    }

    pub fn last_contact(&self, id: NodeId) -> Option<Instant> {
        self.contacts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    /// POSTs raw bytes and returns the raw response body.
    pub async fn post_raw(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, Error> {
        if self.isolated.load(Ordering::Relaxed) {
            return Err(Error::Status {
                addr: addr.to_string(),
                status: 503,
                body: "isolated (test fault)".into(),
            });
        }
        let dialer = self
            .dialer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let url = format!("{}://{addr}{path}", dialer.scheme);
        let req = dialer
            .client
            .post(&url)
            .timeout(timeout)
            .header(wire::CLUSTER_HEADER, &self.cluster)
            .body(body);
        let mut resp = req.send().await.map_err(|source| {
            let addr = addr.to_string();
            if source.is_connect() {
                Error::Connect { addr, source }
            } else {
                Error::Request { addr, source }
            }
        })?;
        let status = resp.status();
        // Bounded: a peer must not make this node buffer without end.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|source| Error::Request {
            addr: addr.to_string(),
            source,
        })? {
            if bytes.len() + chunk.len() > MAX_RESPONSE {
                return Err(Error::Status {
                    addr: addr.to_string(),
                    status: status.as_u16(),
                    body: format!("response larger than {MAX_RESPONSE} bytes; dropped"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(Error::Status {
                addr: addr.to_string(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(bytes)
    }

    pub async fn post<Q: Serialize, R: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: &Q,
        timeout: Duration,
    ) -> Result<R, Error> {
        let body = serde_json::to_vec(body).map_err(|source| Error::Encode {
            what: "request",
            source,
        })?;
        let bytes = self.post_raw(addr, path, body, timeout).await?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Answer {
            addr: addr.to_string(),
            source,
        })
    }
}

/// The openraft network factory.
#[derive(Clone)]
pub(crate) struct Network {
    pub core: Arc<NetCore>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            core: self.core.clone(),
            target,
            addr: node.addr.clone(),
            matched_once: false,
        }
    }
}

pub(crate) struct PeerClient {
    core: Arc<NetCore>,
    target: NodeId,
    addr: String,
    /// Whether an append has succeeded on this replication stream; until
    /// then the leader does not know where the follower's log ends.
    matched_once: bool,
}

/// Only a prefix of more than this many entries is worth a probe (see
/// [`PeerClient::append_entries`]).
const PROBE_ABOVE: usize = 32;

type RpcErr<E = RaftError<NodeId>> = RPCError<NodeId, BasicNode, E>;

impl PeerClient {
    async fn rpc<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<R, RpcErr> {
        let res: Result<Result<R, RaftError<NodeId>>, Error> =
            self.core.post(&self.addr, path, req, timeout).await;
        match res {
            Ok(Ok(r)) => {
                self.core.touch(self.target);
                Ok(r)
            }
            Ok(Err(e)) => {
                self.core.touch(self.target);
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Err(e @ Error::Connect { .. }) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }

    /// Asks whether the follower already holds a long prefix of the batch
    /// (see [`RaftNetwork::append_entries`]), longest first: the whole
    /// batch, its committed entries (a majority holds them), its entries of
    /// earlier terms (a new leader's own entries are new to everyone). The
    /// answer for the whole request when it does (`Success`, or
    /// `PartialSuccess` up to the probed entry) or when a higher vote
    /// turned up; `None` when the batch must be sent.
    async fn probe(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<Option<AppendEntriesResponse<NodeId>>, RpcErr> {
        let term = rpc.vote.leader_id().term;
        let committed = rpc.leader_commit.map(|c| c.index);
        let last = rpc.entries.len().checked_sub(1);
        let committed = rpc
            .entries
            .iter()
            .rposition(|entry| Some(entry.log_id.index) <= committed);
        let earlier = rpc
            .entries
            .iter()
            .rposition(|entry| entry.log_id.leader_id.term < term);
        // Positions of each prefix's last entry, longest first.
        let mut ends: Vec<usize> = [last, committed, earlier]
            .into_iter()
            .flatten()
            .filter(|&end| end >= PROBE_ABOVE)
            .collect();
        ends.sort_unstable_by(|a, b| b.cmp(a));
        ends.dedup();
        for held in ends {
            let upto = rpc.entries[held].log_id;
            let probe = AppendEntriesRequest::<TypeConfig> {
                vote: rpc.vote,
                prev_log_id: Some(upto),
                entries: Vec::new(),
                leader_commit: rpc.leader_commit,
            };
            let answer: AppendEntriesResponse<NodeId> = self
                .rpc("/raft/v1/append", &probe, option.hard_ttl())
                .await?;
            match answer {
                AppendEntriesResponse::Success => {
                    self.matched_once = true;
                    self.core
                        .entries_skipped
                        .fetch_add(held as u64 + 1, Ordering::Relaxed);
                    return Ok(Some(if Some(held) == last {
                        AppendEntriesResponse::Success
                    } else {
                        AppendEntriesResponse::PartialSuccess(Some(upto))
                    }));
                }
                AppendEntriesResponse::HigherVote(vote) => {
                    return Ok(Some(AppendEntriesResponse::HigherVote(vote)))
                }
                // The follower lacks the probed entry: try a shorter prefix.
                AppendEntriesResponse::Conflict | AppendEntriesResponse::PartialSuccess(_) => {}
            }
        }
        Ok(None)
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    /// After a connection failure, retry a dead peer less and less often;
    /// reset by the next successful RPC. For the first 6.5 s at most every
    /// 500 ms: after a restart of many hosts at once, peers come up over
    /// seconds, and each one the leader retries late waits that long for
    /// the log (and for its linearizable reads). Then every 1 s, and from
    /// 11.5 s on every 2 s.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new((0u64..).map(|i| {
            Duration::from_millis(match i {
                0..=4 => 100 * (i + 1),
                5..=14 => 500,
                15..=19 => 1000,
                _ => 2000,
            })
        }))
    }

    /// A new leader starts each follower's replication from the middle of
    /// its own log and sends up to a full batch per step of its search for
    /// the follower's end. After a restart of the whole cluster every
    /// follower already holds nearly all of it, so the leader would re-send
    /// half its log to each. Until the stream's first success, a batch is
    /// preceded by empty appends whose `prev_log_id` is the end of a long
    /// prefix of it ([`PeerClient::probe`]): if the follower has that entry
    /// it has all before it (Raft's log matching property), and only the
    /// rest of the batch need travel.
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        if !self.matched_once {
            if let Some(answer) = self.probe(&rpc, &option).await? {
                return Ok(answer);
            }
        }
        let answer: AppendEntriesResponse<NodeId> =
            self.rpc("/raft/v1/append", &rpc, option.hard_ttl()).await?;
        self.core
            .entries_sent
            .fetch_add(rpc.entries.len() as u64, Ordering::Relaxed);
        if matches!(answer, AppendEntriesResponse::Success) {
            self.matched_once = true;
        }
        Ok(answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.rpc("/raft/v1/vote", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        _rpc: openraft::raft::InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        openraft::raft::InstallSnapshotResponse<NodeId>,
        RpcErr<RaftError<NodeId, openraft::error::InstallSnapshotError>>,
    > {
        // Snapshots travel whole through `full_snapshot`.
        Err(RPCError::Network(NetworkError::new(&Error::Status {
            addr: self.addr.clone(),
            status: 400,
            body: "chunked snapshots are not supported".into(),
        })))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let header = SnapshotHeader {
            vote,
            meta: snapshot.meta.clone(),
        };
        let header = serde_json::to_vec(&header)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let data = snapshot.snapshot.into_inner();
        let mut body = Vec::with_capacity(8 + header.len() + data.len());
        body.extend_from_slice(&(header.len() as u64).to_be_bytes());
        body.extend_from_slice(&header);
        body.extend_from_slice(&data);
        let call = self
            .core
            .post_raw(&self.addr, "/raft/v1/snapshot", body, option.hard_ttl());
        let res = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            res = call => res,
        };
        let bytes = match res {
            Ok(b) => b,
            Err(e @ Error::Connect { .. }) => {
                return Err(StreamingError::Unreachable(Unreachable::new(&e)))
            }
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        };
        let resp: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = serde_json::from_slice(&bytes)
            .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        self.core.touch(self.target);
        resp.map_err(|e| StreamingError::Network(NetworkError::new(&e)))
    }
}
