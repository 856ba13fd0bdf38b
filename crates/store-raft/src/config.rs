//! How one embedded store node is configured, and the openraft settings
//! derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::SnapshotPolicy;

use crate::error::Error;

/// Raft timing and housekeeping knobs.
#[derive(Debug, Clone)]
pub struct RaftTiming {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot (and purge the log before it) every this many entries.
    pub snapshot_every: u64,
    /// Also build one once the log written since the last snapshot is
    /// larger than half that snapshot and than this: entries are batches of
    /// any size, so a count alone can leave a restart decoding and
    /// replaying the whole history.
    pub snapshot_min_log_bytes: u64,
    /// How long a client call waits for a leader before `Unavailable`.
    pub request_timeout: Duration,
    /// A node that has heard from no leader (or, leading, from no majority)
    /// for this long answers requests with "no quorum" at once instead of
    /// waiting out `request_timeout`: a cut-off host says so within seconds.
    pub no_quorum_after: Duration,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            // openraft also times every append out after one heartbeat
            // interval: at 250 ms, a leader could not reach peers busy
            // starting up (100 hosts restarted at once on 2 cores: each
            // timed-out attempt dropped its connection, so the next one
            // paid for a TLS handshake again) and lost its leadership.
            heartbeat: Duration::from_millis(500),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            // Entries are batches: the size rule below is what keeps the
            // log a restart decodes short (a full restart of 100 hosts with
            // 10,000 endpoints: 15.6 s with this count alone, bench/README.md).
            snapshot_every: 10_000,
            snapshot_min_log_bytes: 2 << 20,
            request_timeout: Duration::from_secs(10),
            // A majority with a leader heartbeats every 500 ms; an election
            // after the leader is cut off takes up to about 3 s here
            // (followers refuse votes while the old leader's lease lasts).
            no_quorum_after: Duration::from_secs(4),
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
            snapshot_min_log_bytes: 2 << 20,
            request_timeout: Duration::from_secs(10),
            no_quorum_after: Duration::from_secs(4),
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
    /// TLS for dialling peers (node certificate, cluster CA); `None`: plain
    /// HTTP (an `--open` cluster). Can also be set later, once the node
    /// has its certificate ([`EmbeddedStore::set_client_tls`]).
    ///
    /// [`EmbeddedStore::set_client_tls`]: crate::EmbeddedStore::set_client_tls
    pub tls: Option<rustls::ClientConfig>,
    /// How many voters the cluster keeps (3 by default, 5 allowed); further
    /// nodes are non-voting replicas.
    pub max_voters: usize,
    /// A voter unreachable for this long is replaced by a live replica.
    pub replace_after: Duration,
    pub timing: RaftTiming,
}

impl EmbeddedConfig {
    /// A configuration with the defaults: plain HTTP, 3 voters, replacement
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
            tls: None,
            max_voters: 3,
            replace_after: Duration::from_secs(10),
            timing: RaftTiming::default(),
        }
    }

    /// Checks the configuration and derives openraft's from it.
    pub(crate) fn raft_config(&self) -> Result<Arc<openraft::Config>, Error> {
        if self.cluster.is_empty() {
            return Err(Error::Config("cluster name is empty".into()));
        }
        if self.advertise.ip().is_unspecified() || self.advertise.port() == 0 {
            return Err(Error::Config(format!(
                "advertise address {} is not dialable by other nodes",
                self.advertise
            )));
        }
        if self.max_voters == 0 {
            return Err(Error::Config("max_voters must be at least 1".into()));
        }
        let t = &self.timing;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: self.cluster.clone(),
            heartbeat_interval: ms(t.heartbeat),
            election_timeout_min: ms(t.election_min),
            election_timeout_max: ms(t.election_max),
            install_snapshot_timeout: 30_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every.max(10)),
            // A follower further behind gets the snapshot; every entry kept
            // is decoded again at each restart.
            max_in_snapshot_log_to_keep: (t.snapshot_every / 4).clamp(10, 500),
            purge_batch_size: 64,
            max_payload_entries: 500,
            // Elections are started by `elect.rs`, after a pre-vote.
            enable_elect: false,
            ..Default::default()
        };
        config
            .validate()
            .map(Arc::new)
            .map_err(|e| Error::Config(format!("raft timing: {e}")))
    }
}
