//! openraft's state machine over the store's one state machine
//! ([`socketplane_store::kv::KvState`]): apply log entries to it, snapshot
//! and restore it, and wake watchers. No key-value logic lives here.
//!
//! The state lives in memory; it is made durable by snapshots (persisted in
//! redb before they are used) plus the Raft log, which openraft re-applies on
//! restart from the last snapshot up to the persisted commit index. The
//! watch history inside the state is this node's own (snapshots leave it
//! out): a node that installs a snapshot can replay watches only from the
//! snapshot's revision on.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use socketplane_store::kv::{self, KvState, DEFAULT_HISTORY};
use socketplane_store::{KeyValue, LeaseId, Revision};
use tokio::sync::watch;

use crate::error::Error;
use crate::storage::Writer;
use crate::types::{
    storage_err, Applied, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};

/// The snapshot format written now; snapshots without a `format` field are
/// the first format (see [`LegacySnapshot`]). Format 3 is format 2 with
/// values as strings (`socketplane_store::value_bytes`), which programs
/// that wrote format 2 cannot read: the number tells them so.
const SNAPSHOT_FORMAT: u32 = 3;
const SNAPSHOT_FORMAT_NUMBER_ARRAYS: u32 = 2;

/// Formats 2 and 3 (`format` is read by [`FormatProbe`]).
#[derive(Deserialize)]
struct SnapshotBody {
    kv: KvState,
}

/// The snapshot format of the first release, whose state machine had its
/// own key-value code: keys, lease TTLs, revision, last lease id.
#[derive(Deserialize)]
struct LegacySnapshot {
    state: LegacyState,
}

#[derive(Deserialize)]
struct LegacyState {
    kv: BTreeMap<String, KeyValue>,
    leases: BTreeMap<LeaseId, LegacyLease>,
    revision: Revision,
    next_lease: LeaseId,
}

#[derive(Deserialize)]
struct LegacyLease {
    ttl_ms: u64,
}

#[derive(Deserialize)]
struct FormatProbe {
    format: Option<u32>,
}

/// Serializes the state for a snapshot, without this node's watch history.
pub(crate) fn encode_snapshot(state: &KvState) -> Result<Vec<u8>, Error> {
    #[derive(Serialize)]
    struct Body<K> {
        format: u32,
        kv: K,
    }
    serde_json::to_vec(&Body {
        format: SNAPSHOT_FORMAT,
        kv: state.without_history(),
    })
    .map_err(|source| Error::Encode {
        what: "snapshot",
        source,
    })
}

/// Reads a snapshot of any format this crate ever wrote. A first-format
/// snapshot becomes a state whose lease deadlines are their TTLs from time
/// 0, the same on every node; the next leader's lease refresh rebases them
/// before any lease can expire.
pub(crate) fn decode_snapshot(data: &[u8]) -> Result<KvState, Error> {
    let decode = |source| Error::Decode {
        what: "snapshot",
        source,
    };
    let probe: FormatProbe = serde_json::from_slice(data).map_err(decode)?;
    let mut state = match probe.format {
        Some(SNAPSHOT_FORMAT | SNAPSHOT_FORMAT_NUMBER_ARRAYS) => {
            let body: SnapshotBody = serde_json::from_slice(data).map_err(decode)?;
            body.kv
        }
        Some(other) => {
            return Err(Error::Corrupt(format!(
                "snapshot format {other} is newer than this program"
            )))
        }
        None => {
            let legacy: LegacySnapshot = serde_json::from_slice(data).map_err(decode)?;
            let s = legacy.state;
            KvState::from_parts(
                s.revision,
                s.kv.into_values(),
                s.leases.into_iter().map(|(id, l)| (id, l.ttl_ms, l.ttl_ms)),
                s.next_lease.saturating_add(1),
                DEFAULT_HISTORY,
            )
            .map_err(|e| Error::Corrupt(format!("first-format snapshot: {e}")))?
        }
    };
    // The one history bound, whatever the snapshot says.
    state.set_history_limit(DEFAULT_HISTORY);
    state.clear_history();
    Ok(state)
}

pub(crate) struct SmInner {
    pub state: KvState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    snapshot_seq: u64,
}

/// The state machine shared between openraft and the store's readers.
pub(crate) struct SmShared {
    inner: Mutex<SmInner>,
    /// The state's revision, bumped after every change (watchers wait on
    /// it, see [`kv::history_watch`]); `None` once the node shut down,
    /// which ends every watch.
    revision: Mutex<Option<watch::Sender<Revision>>>,
}

impl SmShared {
    /// Builds the state machine from a persisted snapshot, if any.
    pub fn new(snapshot: Option<(SnapshotMeta, Vec<u8>)>) -> Result<Arc<Self>, Error> {
        let mut inner = SmInner {
            state: KvState::new(DEFAULT_HISTORY),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot_seq: 0,
        };
        if let Some((meta, data)) = snapshot {
            inner.state = decode_snapshot(&data)?;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
        }
        let (revision, _) = watch::channel(inner.state.revision());
        Ok(Arc::new(Self {
            inner: Mutex::new(inner),
            revision: Mutex::new(Some(revision)),
        }))
    }

    pub fn lock(&self) -> MutexGuard<'_, SmInner> {
        // KvState validates before it mutates, so a panic while holding the
        // lock cannot leave it half-applied: keep serving what is there.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells watchers the revision moved (no receiver is not an error).
    fn notify(&self, revision: Revision) {
        if let Some(tx) = self.sender().as_ref() {
            tx.send_if_modified(|r| {
                let changed = *r != revision;
                *r = revision;
                changed
            });
        }
    }

    fn sender(&self) -> MutexGuard<'_, Option<watch::Sender<Revision>>> {
        self.revision.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of revision changes, for a watch; `None` after
    /// [`close`](Self::close).
    pub fn subscribe(&self) -> Option<watch::Receiver<Revision>> {
        self.sender().as_ref().map(|tx| tx.subscribe())
    }

    /// Ends every watch (they report the store unavailable).
    pub fn close(&self) {
        self.sender().take();
    }
}

/// The openraft state machine adapter (also its snapshot builder).
#[derive(Clone)]
pub(crate) struct StateMachine {
    pub shared: Arc<SmShared>,
    pub writer: Writer,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, data) = {
            let mut g = self.shared.lock();
            let data = encode_snapshot(&g.state).map_err(|e| storage_err(&e))?;
            g.snapshot_seq += 1;
            let snapshot_id = match &g.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, g.snapshot_seq),
                None => format!("empty-{}", g.snapshot_seq),
            };
            let meta = SnapshotMeta {
                last_log_id: g.last_applied,
                last_membership: g.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        self.writer.save_snapshot(&meta, &data).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let g = self.shared.lock();
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut g = self.shared.lock();
        let mut out = Vec::new();
        for entry in entries {
            g.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Applied(vec![Ok(kv::Response::Done)])),
                EntryPayload::Membership(m) => {
                    g.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Applied(vec![Ok(kv::Response::Done)]));
                }
                EntryPayload::Normal(cmd) => match &*cmd {
                    kv::Command::Batch(cmds) => out.push(Applied(
                        cmds.iter()
                            .map(|c| g.state.apply(c).map_err(Into::into))
                            .collect(),
                    )),
                    cmd => out.push(Applied(vec![g.state.apply(cmd).map_err(Into::into)])),
                },
            }
        }
        let revision = g.state.revision();
        drop(g);
        self.shared.notify(revision);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = decode_snapshot(&data).map_err(|e| storage_err(&e))?;
        self.writer.save_snapshot(meta, &data).await?;
        let revision = state.revision();
        {
            let mut g = self.shared.lock();
            // Its history is empty: watchers behind it get `Compacted`.
            g.state = state;
            g.last_applied = meta.last_log_id;
            g.membership = meta.last_membership.clone();
        }
        self.shared.notify(revision);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self.writer.load_snapshot().await?;
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A snapshot as the first release wrote it (its state machine's own
    /// serde form): key "/a" on lease 1, key "/b" without lease.
    const LEGACY: &str = r#"{"state":{"kv":{
        "/a":{"key":"/a","value":[49],"create_revision":1,"mod_revision":2,"lease":1},
        "/b":{"key":"/b","value":[50],"create_revision":3,"mod_revision":3,"lease":null}},
        "leases":{"1":{"ttl_ms":5000}},"revision":3,"next_lease":1}}"#;

    #[test]
    fn first_format_snapshot_migrates() {
        let mut s = decode_snapshot(LEGACY.as_bytes()).unwrap();
        assert_eq!(s.revision(), 3);
        assert_eq!(s.get("/a").unwrap().lease, Some(1));
        assert_eq!(s.oldest_retained(), 4);
        // Deadlines are rebased by a refresh; the lease still owns "/a".
        s.refresh_leases(1_000_000);
        assert!(s.expire_leases(1_000_000 + 4_999).is_empty());
        assert_eq!(s.expire_leases(1_000_000 + 5_000), vec![1]);
        assert!(s.get("/a").is_none());
        assert!(s.get("/b").is_some());
        // Ids continue after the last one granted.
        assert_eq!(s.lease_grant(None, Duration::from_secs(1), 0).unwrap(), 2);
    }

    #[test]
    fn snapshot_roundtrip_leaves_history_out() {
        let mut s = KvState::new(DEFAULT_HISTORY);
        s.txn(&socketplane_store::Txn::new().then(socketplane_store::Op::put("/k", "v")))
            .unwrap();
        let back = decode_snapshot(&encode_snapshot(&s).unwrap()).unwrap();
        assert_eq!(back.get("/k"), s.get("/k"));
        assert_eq!(back.revision(), 1);
        assert_eq!(back.oldest_retained(), 2);
        assert!(decode_snapshot(br#"{"format":99,"kv":{}}"#).is_err());
    }
}
