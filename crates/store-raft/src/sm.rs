//! The replicated key-value state machine, its watch history, and its
//! openraft adapter.
//!
//! The state lives in memory; it is made durable by snapshots (persisted in
//! redb before they are used) plus the Raft log, which openraft re-applies on
//! restart from the last snapshot up to the persisted commit index.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use socketplane_store::{
    Event, EventKind, KeyValue, LeaseId, Op, Revision, StoreError, Txn, TxnResult,
};
use tokio::sync::broadcast;

use crate::storage::Writer;
use crate::types::{
    storage_err, Entry, LogId, Request, Response, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};

/// How many events the watch history keeps per node.
pub(crate) const HISTORY_MAX: usize = 20_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseState {
    ttl_ms: u64,
    #[serde(skip)]
    keys: BTreeSet<String>,
}

/// The deterministic key-value state: applying the same commands in the same
/// order gives the same state on every node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KvState {
    kv: BTreeMap<String, KeyValue>,
    leases: BTreeMap<LeaseId, LeaseState>,
    revision: Revision,
    next_lease: LeaseId,
}

impl KvState {
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The key's mod revision, 0 if absent.
    pub fn mod_revision(&self, key: &str) -> Revision {
        self.kv.get(key).map_or(0, |kv| kv.mod_revision)
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.kv.get(key).cloned()
    }

    pub fn list(&self, prefix: &str) -> Vec<KeyValue> {
        self.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Lease ids and their TTLs in milliseconds.
    pub fn leases(&self) -> Vec<(LeaseId, u64)> {
        self.leases.iter().map(|(id, l)| (*id, l.ttl_ms)).collect()
    }

    pub fn lease_ttl_ms(&self, id: LeaseId) -> Option<u64> {
        self.leases.get(&id).map(|l| l.ttl_ms)
    }

    /// Rebuilds the lease key sets after deserializing.
    fn reindex(&mut self) {
        for l in self.leases.values_mut() {
            l.keys.clear();
        }
        for (k, v) in &self.kv {
            if let Some(id) = v.lease {
                if let Some(l) = self.leases.get_mut(&id) {
                    l.keys.insert(k.clone());
                }
            }
        }
    }

    /// Applies one command, returning its response and the events it wrote.
    pub fn apply(&mut self, req: &Request) -> (Response, Vec<Event>) {
        match req {
            Request::Txn(txn) => self.apply_txn(txn),
            Request::LeaseGrant { ttl_ms } => {
                self.next_lease = self.next_lease.max(0) + 1;
                let id = self.next_lease;
                self.leases.insert(
                    id,
                    LeaseState {
                        ttl_ms: *ttl_ms,
                        keys: BTreeSet::new(),
                    },
                );
                (Response::Lease(id), Vec::new())
            }
            Request::LeaseRevoke { id } => {
                let Some(lease) = self.leases.remove(id) else {
                    return (Response::None, Vec::new());
                };
                let rev = self.revision + 1;
                let mut events = Vec::new();
                for key in lease.keys {
                    if let Some(old) = self.kv.remove(&key) {
                        events.push(delete_event(old, rev));
                    }
                }
                if !events.is_empty() {
                    self.revision = rev;
                }
                (Response::None, events)
            }
        }
    }

    fn apply_txn(&mut self, txn: &Txn) -> (Response, Vec<Event>) {
        if let Err(e) = validate_txn(txn) {
            return (Response::Invalid(e), Vec::new());
        }
        let holds = txn.compares.iter().all(|c| {
            let cur = self.kv.get(&c.key).map(|kv| kv.mod_revision).unwrap_or(0);
            cur == c.mod_revision
        });
        if !holds {
            return (
                Response::Txn(TxnResult {
                    succeeded: false,
                    revision: self.revision,
                }),
                Vec::new(),
            );
        }
        for op in &txn.ops {
            if let Op::Put {
                lease: Some(id), ..
            } = op
            {
                if !self.leases.contains_key(id) {
                    return (Response::LeaseNotFound(*id), Vec::new());
                }
            }
        }
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for op in &txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    let old = self.kv.get(key);
                    let create_revision = old.map(|o| o.create_revision).unwrap_or(rev);
                    if let Some(old_lease) = old.and_then(|o| o.lease) {
                        if let Some(l) = self.leases.get_mut(&old_lease) {
                            l.keys.remove(key);
                        }
                    }
                    if let Some(id) = lease {
                        if let Some(l) = self.leases.get_mut(id) {
                            l.keys.insert(key.clone());
                        }
                    }
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: rev,
                        lease: *lease,
                    };
                    self.kv.insert(key.clone(), kv.clone());
                    events.push(Event {
                        kind: EventKind::Put,
                        kv,
                    });
                }
                Op::Delete { key } => {
                    if let Some(old) = self.kv.remove(key) {
                        if let Some(id) = old.lease {
                            if let Some(l) = self.leases.get_mut(&id) {
                                l.keys.remove(key);
                            }
                        }
                        events.push(delete_event(old, rev));
                    }
                }
            }
        }
        if !events.is_empty() {
            self.revision = rev;
        }
        (
            Response::Txn(TxnResult {
                succeeded: true,
                revision: self.revision,
            }),
            events,
        )
    }
}

/// Checks a transaction's shape: non-empty keys, each key at most once
/// among the ops (as etcd requires).
pub fn validate_txn(txn: &Txn) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for c in &txn.compares {
        if c.key.is_empty() {
            return Err("empty key in a compare".into());
        }
    }
    for op in &txn.ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key } => key,
        };
        if key.is_empty() {
            return Err("empty key".into());
        }
        if !seen.insert(key.as_str()) {
            return Err(format!("key {key:?} appears twice in one transaction"));
        }
    }
    Ok(())
}

fn delete_event(old: KeyValue, rev: Revision) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: old.key,
            value: Vec::new(),
            create_revision: 0,
            mod_revision: rev,
            lease: None,
        },
    }
}

/// What watchers receive from the state machine.
#[derive(Debug, Clone)]
pub(crate) enum WatchMsg {
    Events(Arc<Vec<Event>>),
    /// The state was replaced by a snapshot: watchers must re-list.
    Reset(Revision),
}

/// The snapshot payload (the state machine's serialized form).
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: KvState,
}

pub(crate) struct SmInner {
    pub state: KvState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub history: VecDeque<Event>,
    /// Events with a revision <= this are no longer in `history`.
    pub compacted: Revision,
    pub snapshot: Option<(SnapshotMeta, Arc<Vec<u8>>)>,
    snapshot_seq: u64,
}

/// The state machine shared between openraft and the store's readers.
pub(crate) struct SmShared {
    inner: Mutex<SmInner>,
    pub events: broadcast::Sender<WatchMsg>,
}

impl SmShared {
    /// Builds the state machine from a persisted snapshot, if any.
    pub fn new(snapshot: Option<(SnapshotMeta, Vec<u8>)>) -> Result<Arc<Self>, StoreError> {
        let mut inner = SmInner {
            state: KvState::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            history: VecDeque::new(),
            compacted: 0,
            snapshot: None,
            snapshot_seq: 0,
        };
        if let Some((meta, data)) = snapshot {
            let body: SnapshotBody = serde_json::from_slice(&data)
                .map_err(|e| StoreError::Corrupt(format!("unreadable snapshot: {e}")))?;
            let mut state = body.state;
            state.reindex();
            inner.compacted = state.revision;
            inner.state = state;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta, Arc::new(data)));
        }
        let (events, _) = broadcast::channel(4096);
        Ok(Arc::new(Self {
            inner: Mutex::new(inner),
            events,
        }))
    }

    pub fn lock(&self) -> MutexGuard<'_, SmInner> {
        // A panic while holding the lock cannot leave the state half-applied
        // in a way we could repair; keep serving what is there.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
            let data = serde_json::to_vec(&SnapshotBody {
                state: g.state.clone(),
            })
            .map_err(storage_err)?;
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
        let data = Arc::new(data);
        self.shared.lock().snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let g = self.shared.lock();
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut g = self.shared.lock();
        let mut out = Vec::new();
        for entry in entries {
            g.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Response::None),
                EntryPayload::Membership(m) => {
                    g.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Response::None);
                }
                EntryPayload::Normal(req) => {
                    let (resp, events) = g.state.apply(&req);
                    out.push(resp);
                    if !events.is_empty() {
                        for ev in &events {
                            g.history.push_back(ev.clone());
                        }
                        while g.history.len() > HISTORY_MAX {
                            if let Some(ev) = g.history.pop_front() {
                                g.compacted = ev.kv.mod_revision;
                            }
                        }
                        // No receiver is not an error.
                        let _ = self.shared.events.send(WatchMsg::Events(Arc::new(events)));
                    }
                }
            }
        }
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
        let body: SnapshotBody = serde_json::from_slice(&data).map_err(storage_err)?;
        self.writer.save_snapshot(meta, &data).await?;
        let mut state = body.state;
        state.reindex();
        let mut g = self.shared.lock();
        g.compacted = state.revision;
        g.history.clear();
        let _ = self.shared.events.send(WatchMsg::Reset(state.revision));
        g.state = state;
        g.last_applied = meta.last_log_id;
        g.membership = meta.last_membership.clone();
        g.snapshot = Some((meta.clone(), Arc::new(data)));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let g = self.shared.lock();
        Ok(g.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketplane_store::Compare;

    #[test]
    fn txn_compare_and_lease() {
        let mut s = KvState::default();
        let (r, ev) = s.apply(&Request::Txn(Txn::new().then(Op::put("a", "1"))));
        assert_eq!(
            r,
            Response::Txn(TxnResult {
                succeeded: true,
                revision: 1
            })
        );
        assert_eq!(ev.len(), 1);
        let (r, _) = s.apply(&Request::Txn(
            Txn::new()
                .when(Compare::absent("a"))
                .then(Op::put("a", "2")),
        ));
        assert_eq!(
            r,
            Response::Txn(TxnResult {
                succeeded: false,
                revision: 1
            })
        );
        let (r, _) = s.apply(&Request::LeaseGrant { ttl_ms: 1000 });
        let Response::Lease(id) = r else { panic!() };
        s.apply(&Request::Txn(
            Txn::new().then(Op::put_with_lease("b", "x", id)),
        ));
        let (_, ev) = s.apply(&Request::LeaseRevoke { id });
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].kind, EventKind::Delete);
        assert!(s.get("b").is_none());
        assert_eq!(s.revision(), 3);
        let (r, _) = s.apply(&Request::Txn(
            Txn::new().then(Op::put_with_lease("c", "x", id)),
        ));
        assert_eq!(r, Response::LeaseNotFound(id));
        // Deleting a missing key writes nothing.
        let (_, ev) = s.apply(&Request::Txn(Txn::new().then(Op::delete("zz"))));
        assert!(ev.is_empty());
        assert_eq!(s.revision(), 3);
    }
}
