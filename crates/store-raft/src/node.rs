//! One node of the embedded store: opening its data dir and starting Raft,
//! its public handle, and stopping it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socketplane_store::{Revision, StoreError};
use tokio::task::JoinHandle;

use crate::config::EmbeddedConfig;
use crate::elect;
use crate::error::Error;
use crate::leases::{self, Leases};
use crate::membership;
use crate::network::{NetCore, Network, ReplicationStats};
use crate::reads::Reads;
use crate::shared::{lock, Core};
use crate::sm::{SmShared, StateMachine};
use crate::storage::{self, LogStore, LogWriteStats, Writer};
use crate::types::Raft;

const DB_FILE: &str = "raft.redb";

/// Where a node's Raft stands ([`EmbeddedStore::progress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftProgress {
    pub term: u64,
    /// The leader's node id, if known.
    pub leader: Option<u64>,
    /// Log entries held but not applied yet.
    pub apply_lag: u64,
}

/// One node of the embedded store.
pub struct EmbeddedStore {
    pub(crate) core: Arc<Core>,
    pub(crate) reads: Arc<Reads>,
    pub(crate) leases: Arc<Leases>,
    writer: Writer,
    member_at_open: bool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl EmbeddedStore {
    /// Opens the node's data dir (creating it if new) and starts Raft. A
    /// node with state resumes its cluster; a new node waits for
    /// [`bootstrap`](Self::bootstrap) or [`join`](Self::join). Unreadable or
    /// foreign data is refused with [`StoreError::Corrupt`], never wiped;
    /// data written by earlier versions is read (and rewritten in the
    /// current format at the next snapshot).
    pub async fn open(cfg: EmbeddedConfig) -> Result<Arc<EmbeddedStore>, StoreError> {
        Ok(Self::open_inner(cfg).await?)
    }

    async fn open_inner(cfg: EmbeddedConfig) -> Result<Arc<EmbeddedStore>, Error> {
        let config = cfg.raft_config()?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| Error::CreateDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        let path = cfg.data_dir.join(DB_FILE);
        let (cluster, node_id) = (cfg.cluster.clone(), cfg.node_id);
        let opening = Instant::now();
        let (db, mut loaded) =
            tokio::task::spawn_blocking(move || storage::open_db(&path, &cluster, node_id))
                .await
                .map_err(Error::Task)??;
        let member_at_open = !loaded.entries.is_empty() || loaded.snapshot.is_some();
        let (entries, snapshot_bytes) = (
            loaded.entries.len(),
            loaded.snapshot.as_ref().map_or(0, |(_, data)| data.len()),
        );
        let read = opening.elapsed();
        let sm = SmShared::new(loaded.snapshot.take())?;
        let decoded = opening.elapsed();
        let writer = Writer::spawn(db, cfg.data_dir.clone());
        writer.note_loaded(loaded.log_bytes, snapshot_bytes as u64);
        let log = LogStore::new(&mut loaded, writer.clone());
        let state_machine = StateMachine {
            shared: sm.clone(),
            writer: writer.clone(),
        };
        let net = NetCore::new(cfg.tls.clone(), cfg.cluster.clone());
        let network = Network { core: net.clone() };
        let raft = match Raft::new(cfg.node_id, config, network, log.clone(), state_machine).await {
            Ok(r) => r,
            Err(e) => {
                writer.stop();
                return Err(Error::RaftStart(e));
            }
        };
        // Replay of the committed log since the snapshot happens in `Raft::new`.
        tracing::info!(
            entries,
            snapshot_bytes,
            read_ms = read.as_millis() as u64,
            snapshot_ms = (decoded - read).as_millis() as u64,
            replay_ms = (opening.elapsed() - decoded).as_millis() as u64,
            "Opened the store."
        );
        let core = Arc::new(Core::new(cfg, raft, sm, net, log));
        let store = Arc::new(EmbeddedStore {
            core,
            reads: Arc::new(Reads::default()),
            leases: Arc::new(Leases::default()),
            writer,
            member_at_open,
            tasks: Mutex::new(Vec::new()),
        });
        if member_at_open {
            // Let Raft report the membership it loaded before callers ask
            // `is_member`.
            let _ = store
                .core
                .raft
                .wait(Some(Duration::from_secs(2)))
                .metrics(
                    |m| m.membership_config.membership().nodes().next().is_some(),
                    "load membership",
                )
                .await;
        }
        let expiry = tokio::spawn(leases::expiry_loop(
            Arc::downgrade(&store.core),
            Arc::downgrade(&store.leases),
        ));
        let upkeep = tokio::spawn(membership::upkeep_loop(Arc::downgrade(&store.core)));
        let elections = tokio::spawn(elect::election_loop(Arc::downgrade(&store.core)));
        let snapshots = tokio::spawn(snapshot_upkeep(
            Arc::downgrade(&store.core),
            store.writer.clone(),
        ));
        lock(&store.tasks).extend([expiry, upkeep, elections, snapshots]);
        Ok(store)
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.core.id()
    }

    /// True when this node already has cluster state that includes it
    /// (restart case): then neither `bootstrap` nor `join` is needed.
    pub fn is_member(&self) -> bool {
        membership::is_member(&self.core, self.member_at_open)
    }

    /// Founds a one-voter cluster with this node; a no-op if it is already
    /// a member.
    pub async fn bootstrap(&self) -> Result<(), StoreError> {
        if self.is_member() {
            return Ok(());
        }
        membership::bootstrap(&self.core).await
    }

    /// Asks a member (any; it forwards to the leader) to add this node: as
    /// a replica first, promoted to voter while the cluster has fewer than
    /// `max_voters`. A no-op if already a member.
    pub async fn join(&self, seed: SocketAddr) -> Result<(), StoreError> {
        if self.is_member() {
            return Ok(());
        }
        membership::join(&self.core, seed).await
    }

    /// Removes this node from the cluster.
    pub async fn leave(&self) -> Result<(), StoreError> {
        if !self.is_member() {
            return Ok(());
        }
        membership::leave(&self.core).await
    }

    /// How many durable commits (fsyncs) this node's log writer took for
    /// how many entries so far (group commit makes the first smaller).
    pub fn log_write_stats(&self) -> LogWriteStats {
        self.writer.stats()
    }

    /// What this node sent its followers while it led (a new leader
    /// finds where each follower's log ends without re-sending it).
    pub fn replication_stats(&self) -> ReplicationStats {
        self.core.net.replication_stats()
    }

    /// Dial peers over TLS from now on (this node got its certificate).
    pub fn set_client_tls(&self, tls: rustls::ClientConfig) {
        self.core.net.set_tls(Some(tls));
    }

    /// Fault injection for tests: while set, this node sends nothing to its
    /// peers and answers none of their requests (they hang, as behind a
    /// partition that drops packets).
    #[doc(hidden)]
    pub fn set_isolated(&self, isolated: bool) {
        self.core
            .net
            .isolated
            .store(isolated, std::sync::atomic::Ordering::Relaxed);
    }

    /// Where this node's Raft stands, for monitoring.
    pub fn progress(&self) -> RaftProgress {
        let m = self.core.metrics();
        let last_log = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map_or(0, |l| l.index);
        RaftProgress {
            term: m.current_term,
            leader: m.current_leader,
            apply_lag: last_log.saturating_sub(applied),
        }
    }

    /// The last log index this node's latest snapshot covers, if it has one.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.core.metrics().snapshot.map(|l| l.index)
    }

    /// The index of the last entry in this node's Raft log.
    pub fn last_log_index(&self) -> u64 {
        self.core.metrics().last_log_index.unwrap_or(0)
    }

    /// The entries of this node's log from index `from` on, one line each
    /// (leader id and payload): for diagnostics when a test counts entries.
    pub fn describe_log_from(&self, from: u64) -> Vec<String> {
        self.core.log.describe_from(from)
    }

    /// Drops this node's watch history below `revision` (watches from
    /// older revisions then fail with `Compacted`). History is also bounded
    /// on its own (`socketplane_store::kv::DEFAULT_HISTORY` revisions); this
    /// is for tests and manual compaction.
    pub fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.core.sm.lock().state.compact(revision)
    }

    /// Why this node's Raft stopped for good (a storage error such as a full
    /// disk, say), if it did: it will never write again, so its agent must
    /// exit and let its supervisor restart it.
    pub fn fatal(&self) -> Option<String> {
        if self.core.is_stopped() {
            return None;
        }
        match self.core.metrics().running_state {
            Ok(()) => None,
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    /// Stops Raft and the background tasks, ends watches and closes the
    /// database (the data dir can be reopened afterwards).
    pub async fn shutdown(&self) {
        if self.core.stop() {
            return;
        }
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not shut down cleanly.");
        }
        self.core.sm.close();
        let writer = self.writer.clone();
        let _ = tokio::task::spawn_blocking(move || writer.stop()).await;
    }
}

/// Builds a snapshot once the log written since the last one outgrows half
/// of it (and `snapshot_min_log_bytes`): a restart then decodes at most
/// about one and a half times the state, and the file and the memory hold
/// about as much, however large the entries are (openraft's own policy
/// counts entries). The log is kept in memory, decoded: at 10,000
/// endpoints, growing up to the whole snapshot's size it held up to 5 MB
/// in every agent.
async fn snapshot_upkeep(core: std::sync::Weak<Core>, writer: Writer) {
    let Some(mut ticker) = crate::shared::Ticker::every(&core, |_| Duration::from_secs(1)) else {
        return;
    };
    // Every node sees the same log grow: a share of up to half as much
    // again, its own, keeps them from all building at the same moment
    // (on one machine, a hundred at once starved the leader).
    let spread = {
        use std::hash::BuildHasher;
        let id = core.upgrade().map_or(0, |c| c.id());
        std::collections::hash_map::RandomState::new().hash_one(id) % 500
    };
    // A node that opened with a log already due builds its snapshot a
    // little later, not while the whole cluster may be starting at once
    // (every node decoding its store, electing, listing).
    let (log, snapshot, _) = writer.log_and_snapshot_bytes();
    let min = core
        .upgrade()
        .map_or(u64::MAX, |c| c.cfg.timing.snapshot_min_log_bytes);
    if log > due_at(snapshot, min) {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    // When a snapshot was last asked for, and how many were saved then.
    let mut asked: Option<(Instant, u64)> = None;
    while let Some(core) = ticker.tick().await {
        let (log, snapshot, saved) = writer.log_and_snapshot_bytes();
        let due = due_at(snapshot, core.cfg.timing.snapshot_min_log_bytes);
        if log <= due + due / 1000 * spread {
            continue;
        }
        // One request at a time: a snapshot of a large state takes a
        // while to build and save; ask again once one was saved, or
        // after a while if none was.
        if asked.is_some_and(|(t, n)| n == saved && t.elapsed() < Duration::from_secs(30)) {
            continue;
        }
        tracing::info!(
            log_bytes = log,
            snapshot_bytes = snapshot,
            "Log outgrew its snapshot: building one."
        );
        asked = Some((Instant::now(), saved));
        if let Err(error) = core.raft.trigger().snapshot().await {
            tracing::warn!(%error, "Could not start a snapshot.");
        }
    }
}

/// The log size (bytes) past which a snapshot of `snapshot` bytes is
/// replaced (see [`snapshot_upkeep`]).
fn due_at(snapshot: u64, min: u64) -> u64 {
    (snapshot / 2).max(min)
}
