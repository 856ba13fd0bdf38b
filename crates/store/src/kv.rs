//! A pure, deterministic key-value state machine with etcd semantics.
//!
//! [`KvState`] holds the keys, the global revision counter, the leases and a
//! bounded history of events. It does no I/O and reads no clock: time enters
//! only as an explicit `now` argument (milliseconds on a clock the caller
//! chooses, see below), so the same sequence of calls on two copies always
//! yields the same state. That makes it usable both directly (the in-memory
//! backend, [`crate::mem::MemStore`]) and as the state machine of a
//! replicated log: encode each write as a [`Command`], replicate it, and
//! [`KvState::apply`] it on every replica.
//!
//! # Semantics
//!
//! - Every successful transaction that changes something gets exactly one new
//!   revision (`revision() + 1`); all its ops carry that revision. A
//!   transaction whose compares fail, or whose ops change nothing (no ops, or
//!   only deletes of missing keys), does not bump the revision.
//! - A [`crate::Compare`] holds when the key's `mod_revision` equals the given
//!   one; `0` means "the key is absent".
//! - A transaction is checked in etcd's order. First its shape
//!   ([`validate_txn`]): every compare and op names a non-empty key and the
//!   ops touch distinct keys ([`StoreError::InvalidArgument`] otherwise,
//!   whatever the compares say). Then the compares. Only when they hold are
//!   the ops checked against the data: a put with a lease that does not
//!   exist is [`StoreError::LeaseNotFound`]; when the compares fail the ops
//!   are not looked at, so the same transaction is just `succeeded = false`.
//! - A put keeps the key's `create_revision` (or sets it if the key is new)
//!   and attaches the key to the put's lease, detaching it from any previous
//!   one (a put without lease detaches it).
//! - A delete event carries the key, an empty value, `create_revision = 0`,
//!   `mod_revision` = the delete's revision and no lease (as etcd does).
//! - Leases expire `ttl` after their grant or last keep-alive. Expiry happens
//!   only when the caller says so, through [`KvState::expire_leases`] (or
//!   [`Command::ExpireLeases`]): each expired lease that still has keys
//!   deletes them at one new revision (leases in ascending id order).
//!
//! # History and compaction
//!
//! The events of the last `history_limit` revisions are kept, so watchers can
//! replay from any retained revision ([`KvState::events_since`]). Asking for
//! an older revision fails with [`StoreError::Compacted`], whose `compacted`
//! field is the oldest revision still replayable (etcd's compact revision).
//! [`KvState::compact`] drops history explicitly.
//!
//! # Time
//!
//! `now` values are milliseconds on any clock the caller likes (a monotonic
//! clock for a single process, the proposer's wall clock in a replicated log)
//! as long as every replica sees the same value for a given command, which is
//! the case when `now` is part of the replicated command. After a leader
//! change a replicated store should apply [`Command::RefreshLeases`] so leases
//! are not expired early because of clock differences (etcd does the same).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod keyed;

use keyed::Keyed;

use crate::{
    Event, EventKind, KeyValue, LeaseId, Listing, Op, Result, Revision, StoreError, Txn, TxnResult,
};

/// How many revisions of events every history-keeping backend retains for
/// watch replay (the one bound; etcd itself keeps history until compacted).
pub const DEFAULT_HISTORY: usize = 10_000;

/// One lease: its TTL, its deadline and the keys attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    /// Time to live in milliseconds.
    pub ttl_ms: u64,
    /// The lease expires when `now >= deadline_ms`.
    pub deadline_ms: u64,
    pub keys: BTreeSet<String>,
}

/// A write to the state machine, as it would travel through a replicated log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Txn(Txn),
    /// Grants a lease. `id: None` lets the state machine pick the next free
    /// id (deterministically).
    LeaseGrant {
        // Defaults: grants written before ids and times were replicated
        // (the embedded store's early log format) decode as "pick an id,
        // at time 0"; the next leader's `RefreshLeases` rebases them.
        #[serde(default)]
        id: Option<LeaseId>,
        ttl_ms: u64,
        #[serde(default)]
        now_ms: u64,
    },
    LeaseKeepAlive {
        id: LeaseId,
        now_ms: u64,
    },
    LeaseRevoke {
        id: LeaseId,
    },
    /// Expires every lease whose deadline is `<= now_ms`.
    ExpireLeases {
        now_ms: u64,
    },
    /// Restarts every lease's TTL from `now_ms` (use after a leader change).
    RefreshLeases {
        now_ms: u64,
    },
    /// Drops the event history older than `revision`.
    Compact {
        revision: Revision,
    },
    /// Moves each listed lease's deadline to the given time if that is
    /// later (the leader's renewals, replicated once a deadline is reached
    /// instead of at every keep-alive). Unknown leases are skipped.
    ExtendLeases {
        deadlines: Vec<(LeaseId, u64)>,
    },
    /// Several commands in one log entry (the embedded store's group
    /// commit), applied in order, each as if it were its own entry: a
    /// failing one leaves the state unchanged and the next still runs.
    Batch(Vec<Command>),
}

/// The result of [`KvState::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Txn(TxnResult),
    LeaseGranted(LeaseId),
    /// Lease ids that expired (for [`Command::ExpireLeases`]).
    LeasesExpired(Vec<LeaseId>),
    Done,
}

/// The key-value state machine. See the [module docs](self).
///
/// Every method either succeeds or leaves the state unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    revision: Revision,
    /// Shared with `history`: a put's value is held once, not once live and
    /// once more for replay (at 10,000 endpoints that copy was most of the
    /// data a second time in every agent).
    data: Keyed,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease_id: LeaseId,
    /// Events per revision, oldest first; revisions are consecutive.
    history: VecDeque<(Revision, Vec<HistoryEvent>)>,
    history_limit: usize,
    /// Every event with revision >= this is in `history`.
    first_retained: Revision,
}

/// An [`Event`] as the history keeps it: its key-value shared with the live
/// data. It serializes as an [`Event`] does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct HistoryEvent {
    kind: EventKind,
    kv: Arc<KeyValue>,
}

impl HistoryEvent {
    fn to_event(&self) -> Event {
        Event {
            kind: self.kind,
            kv: KeyValue::clone(&self.kv),
        }
    }
}

impl Default for KvState {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY)
    }
}

impl KvState {
    /// An empty state (revision 0) keeping the events of the last
    /// `history_limit` revisions.
    pub fn new(history_limit: usize) -> Self {
        Self {
            revision: 0,
            data: Keyed::default(),
            leases: BTreeMap::new(),
            next_lease_id: 1,
            history: VecDeque::new(),
            history_limit,
            first_retained: 1,
        }
    }

    /// A state at `revision` holding `kvs` and `leases` (id, TTL, deadline,
    /// all in milliseconds), with no history: watches can start at
    /// `revision + 1`. For importing state kept in another format. Fails if
    /// a key is newer than `revision`, or names a lease that is not given.
    pub fn from_parts(
        revision: Revision,
        kvs: impl IntoIterator<Item = KeyValue>,
        leases: impl IntoIterator<Item = (LeaseId, u64, u64)>,
        next_lease_id: LeaseId,
        history_limit: usize,
    ) -> Result<Self> {
        let mut s = Self::new(history_limit);
        s.revision = revision;
        s.first_retained = revision + 1;
        for (id, ttl_ms, deadline_ms) in leases {
            s.leases.insert(
                id,
                Lease {
                    id,
                    ttl_ms,
                    deadline_ms,
                    keys: BTreeSet::new(),
                },
            );
            s.next_lease_id = s.next_lease_id.max(id.saturating_add(1));
        }
        s.next_lease_id = s.next_lease_id.max(next_lease_id);
        for kv in kvs {
            if kv.mod_revision > revision || kv.create_revision > kv.mod_revision {
                return Err(StoreError::Corrupt(format!(
                    "key {:?} has revisions {}/{} beyond the state's {revision}",
                    kv.key, kv.create_revision, kv.mod_revision
                )));
            }
            if let Some(id) = kv.lease {
                let Some(l) = s.leases.get_mut(&id) else {
                    return Err(StoreError::Corrupt(format!(
                        "key {:?} is attached to missing lease {id}",
                        kv.key
                    )));
                };
                l.keys.insert(kv.key.clone());
            }
            s.data.insert(Arc::new(kv));
        }
        Ok(s)
    }

    /// The revision of the last write (0 if nothing was ever written).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The oldest revision a watch can still replay from.
    pub fn oldest_retained(&self) -> Revision {
        self.first_retained
    }

    /// How many revisions of history are kept.
    pub fn history_limit(&self) -> usize {
        self.history_limit
    }

    /// Changes the history bound, trimming at once if it shrank.
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit;
        self.trim_history();
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.data.get(key).map(|kv| KeyValue::clone(kv))
    }

    /// Every key under `prefix`, sorted by key, at the current revision.
    pub fn list(&self, prefix: &str) -> Listing {
        let kvs = self
            .data
            .with_prefix(prefix)
            .map(|kv| KeyValue::clone(kv))
            .collect();
        Listing {
            kvs,
            revision: self.revision,
        }
    }

    /// Applies one replicated command.
    pub fn apply(&mut self, cmd: &Command) -> Result<Response> {
        match cmd {
            Command::Txn(txn) => self.txn(txn).map(Response::Txn),
            Command::LeaseGrant { id, ttl_ms, now_ms } => self
                .lease_grant(*id, Duration::from_millis(*ttl_ms), *now_ms)
                .map(Response::LeaseGranted),
            Command::LeaseKeepAlive { id, now_ms } => {
                self.lease_keep_alive(*id, *now_ms).map(|()| Response::Done)
            }
            Command::LeaseRevoke { id } => {
                self.lease_revoke(*id);
                Ok(Response::Done)
            }
            Command::ExpireLeases { now_ms } => {
                Ok(Response::LeasesExpired(self.expire_leases(*now_ms)))
            }
            Command::RefreshLeases { now_ms } => {
                self.refresh_leases(*now_ms);
                Ok(Response::Done)
            }
            Command::Compact { revision } => self.compact(*revision).map(|()| Response::Done),
            Command::ExtendLeases { deadlines } => {
                for (id, deadline_ms) in deadlines {
                    if let Some(l) = self.leases.get_mut(id) {
                        l.deadline_ms = l.deadline_ms.max(*deadline_ms);
                    }
                }
                Ok(Response::Done)
            }
            Command::Batch(cmds) => {
                // Per-command outcomes are for the proposer to collect
                // (apply each itself); here a batch is only its effects.
                for c in cmds {
                    let _ = self.apply(c);
                }
                Ok(Response::Done)
            }
        }
    }

    /// Applies a compare-and-set transaction (see the module docs).
    pub fn txn(&mut self, txn: &Txn) -> Result<TxnResult> {
        // Shape first (as etcd's API layer does), so a malformed transaction
        // is rejected whatever its compares say.
        validate_txn(txn)?;
        let holds = txn.compares.iter().all(|c| {
            let current = self.data.get(&c.key).map_or(0, |kv| kv.mod_revision);
            current == c.mod_revision
        });
        if !holds {
            // Ops that are not taken are not checked (etcd checks only the
            // branch it applies): an unknown lease in them is no error.
            return Ok(TxnResult {
                succeeded: false,
                revision: self.revision,
            });
        }
        for op in &txn.ops {
            if let Op::Put {
                lease: Some(id), ..
            } = op
            {
                if !self.leases.contains_key(id) {
                    return Err(StoreError::LeaseNotFound(*id));
                }
            }
        }

        let changes = txn.ops.iter().any(|op| match op {
            Op::Put { .. } => true,
            Op::Delete { key } => self.data.contains_key(key),
        });
        if !changes {
            return Ok(TxnResult {
                succeeded: true,
                revision: self.revision,
            });
        }

        let rev = self.revision + 1;
        let mut events = Vec::with_capacity(txn.ops.len());
        for op in &txn.ops {
            match op {
                Op::Put { key, value, lease } => {
                    events.push(self.put_at(rev, key, value.clone(), *lease));
                }
                Op::Delete { key } => {
                    if let Some(ev) = self.delete_at(rev, key) {
                        events.push(ev);
                    }
                }
            }
        }
        self.commit(rev, events);
        Ok(TxnResult {
            succeeded: true,
            revision: rev,
        })
    }

    fn put_at(
        &mut self,
        rev: Revision,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> HistoryEvent {
        let old = self.data.get(key).map(|o| (o.create_revision, o.lease));
        let create_revision = match old {
            Some((create_revision, old_lease)) => {
                if old_lease != lease {
                    self.detach(key, old_lease);
                }
                create_revision
            }
            None => rev,
        };
        if let Some(id) = lease {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.insert(key.to_string());
            }
        }
        let kv = Arc::new(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
            lease,
        });
        self.data.insert(Arc::clone(&kv));
        HistoryEvent {
            kind: EventKind::Put,
            kv,
        }
    }

    fn delete_at(&mut self, rev: Revision, key: &str) -> Option<HistoryEvent> {
        let old = self.data.remove(key)?;
        self.detach(key, old.lease);
        Some(HistoryEvent {
            kind: EventKind::Delete,
            kv: Arc::new(KeyValue {
                key: key.to_string(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: rev,
                lease: None,
            }),
        })
    }

    fn detach(&mut self, key: &str, lease: Option<LeaseId>) {
        if let Some(id) = lease {
            if let Some(l) = self.leases.get_mut(&id) {
                l.keys.remove(key);
            }
        }
    }

    fn commit(&mut self, rev: Revision, events: Vec<HistoryEvent>) {
        self.revision = rev;
        self.history.push_back((rev, events));
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some((rev, _)) = self.history.pop_front() {
                self.first_retained = rev + 1;
            }
        }
        if self.history.is_empty() {
            // Nothing retained: only "from now on" can be replayed.
            self.first_retained = self.first_retained.max(self.revision + 1);
        }
    }

    /// Grants a lease expiring `ttl` after `now_ms`. With `id: None` the next
    /// free id is used; a given id must be positive and unused.
    pub fn lease_grant(
        &mut self,
        id: Option<LeaseId>,
        ttl: Duration,
        now_ms: u64,
    ) -> Result<LeaseId> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            return Err(StoreError::InvalidArgument(
                "lease TTL must be positive".into(),
            ));
        }
        let id = match id {
            Some(id) if id <= 0 => {
                return Err(StoreError::InvalidArgument(format!(
                    "invalid lease id {id}"
                )))
            }
            Some(id) if self.leases.contains_key(&id) => {
                return Err(StoreError::InvalidArgument(format!(
                    "lease {id} already exists"
                )))
            }
            Some(id) => id,
            None => {
                let mut id = self.next_lease_id.max(1);
                while self.leases.contains_key(&id) {
                    id += 1;
                }
                id
            }
        };
        self.next_lease_id = self.next_lease_id.max(id.saturating_add(1));
        self.leases.insert(
            id,
            Lease {
                id,
                ttl_ms,
                deadline_ms: now_ms.saturating_add(ttl_ms),
                keys: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    /// Restarts a lease's TTL from `now_ms`. A lease past its deadline is
    /// `LeaseNotFound` even if [`expire_leases`](Self::expire_leases) has not
    /// removed it yet.
    pub fn lease_keep_alive(&mut self, id: LeaseId, now_ms: u64) -> Result<()> {
        match self.leases.get_mut(&id) {
            Some(l) if l.deadline_ms > now_ms => {
                l.deadline_ms = now_ms.saturating_add(l.ttl_ms);
                Ok(())
            }
            _ => Err(StoreError::LeaseNotFound(id)),
        }
    }

    /// Removes a lease and deletes its keys at one new revision (no revision
    /// if it had no keys). Returns whether the lease existed.
    pub fn lease_revoke(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        if !lease.keys.is_empty() {
            let rev = self.revision + 1;
            let events: Vec<HistoryEvent> = lease
                .keys
                .iter()
                .filter_map(|k| self.delete_at(rev, k))
                .collect();
            if !events.is_empty() {
                self.commit(rev, events);
            }
        }
        true
    }

    /// Expires every lease whose deadline is `<= now_ms` (ascending id),
    /// each deleting its keys at one new revision. Returns the expired ids.
    pub fn expire_leases(&mut self, now_ms: u64) -> Vec<LeaseId> {
        let expired: Vec<LeaseId> = self
            .leases
            .values()
            .filter(|l| l.deadline_ms <= now_ms)
            .map(|l| l.id)
            .collect();
        for id in &expired {
            self.lease_revoke(*id);
        }
        expired
    }

    /// Restarts every lease's TTL from `now_ms`.
    pub fn refresh_leases(&mut self, now_ms: u64) {
        for l in self.leases.values_mut() {
            l.deadline_ms = now_ms.saturating_add(l.ttl_ms);
        }
    }

    /// The earliest lease deadline, to schedule the next
    /// [`expire_leases`](Self::expire_leases).
    pub fn next_lease_deadline(&self) -> Option<u64> {
        self.leases.values().map(|l| l.deadline_ms).min()
    }

    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// Drops the history of revisions older than `revision`; watches from
    /// below it then fail with [`StoreError::Compacted`]. Compacting to a
    /// revision already compacted is a no-op; beyond the current revision + 1
    /// it is an error.
    pub fn compact(&mut self, revision: Revision) -> Result<()> {
        if revision > self.revision + 1 {
            return Err(StoreError::InvalidArgument(format!(
                "cannot compact to {revision}: current revision is {}",
                self.revision
            )));
        }
        while self.history.front().is_some_and(|(r, _)| *r < revision) {
            self.history.pop_front();
        }
        self.first_retained = self.first_retained.max(revision);
        Ok(())
    }

    /// The state as it serializes without its history (what a snapshot
    /// holds), borrowed: no copy of every key to drop the history from.
    pub fn without_history(&self) -> impl Serialize + '_ {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            revision: Revision,
            data: &'a Keyed,
            leases: &'a BTreeMap<LeaseId, Lease>,
            next_lease_id: LeaseId,
            history: [(Revision, Vec<Event>); 0],
            history_limit: usize,
            first_retained: Revision,
        }
        Borrowed {
            revision: self.revision,
            data: &self.data,
            leases: &self.leases,
            next_lease_id: self.next_lease_id,
            history: [],
            history_limit: self.history_limit,
            first_retained: self.revision + 1,
        }
    }

    /// Forgets the whole history (e.g. after installing a snapshot): only
    /// watches from `revision() + 1` on remain possible.
    pub fn clear_history(&mut self) {
        self.history.clear();
        self.first_retained = self.revision + 1;
    }

    /// Every retained event under `prefix` with revision `>= from`, in
    /// order. Fails with [`StoreError::Compacted`] if `from` is older than
    /// the retained history.
    pub fn events_since(&self, prefix: &str, from: Revision) -> Result<Vec<Event>> {
        if from < self.first_retained {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: self.first_retained,
            });
        }
        let Some((first, _)) = self.history.front() else {
            return Ok(Vec::new());
        };
        // Revisions in `history` are consecutive, so index directly.
        let skip = usize::try_from((from - *first).max(0)).unwrap_or(usize::MAX);
        Ok(self
            .history
            .iter()
            .skip(skip)
            .flat_map(|(_, evs)| evs.iter())
            .filter(|e| e.kv.key.starts_with(prefix))
            .map(HistoryEvent::to_event)
            .collect())
    }
}

/// Checks a transaction's shape the way etcd does before looking at any
/// data: every compare and op names a non-empty key, and no key is written
/// twice. Backends call it to reject a malformed transaction early (the
/// state machine checks it again on apply).
pub fn validate_txn(txn: &Txn) -> Result<()> {
    if txn.compares.iter().any(|c| c.key.is_empty()) {
        return Err(StoreError::InvalidArgument("empty key in a compare".into()));
    }
    let mut seen = HashSet::new();
    for op in &txn.ops {
        let key = match op {
            Op::Put { key, .. } | Op::Delete { key } => key,
        };
        if key.is_empty() {
            return Err(StoreError::InvalidArgument("empty key".into()));
        }
        if !seen.insert(key.as_str()) {
            return Err(StoreError::InvalidArgument(format!(
                "key {key:?} appears twice in one transaction"
            )));
        }
    }
    Ok(())
}

/// Turns a history-backed store into a [`WatchStream`](crate::WatchStream): no gaps, no
/// duplicates, bounded memory per watcher.
///
/// `fetch(prefix, next)` must return every event under `prefix` with
/// revision `>= next` (e.g. [`KvState::events_since`]) together with the
/// store revision it read at. `notify` must be updated (`send`) after every
/// revision bump; when its sender is dropped the stream fetches once more
/// and then ends with [`StoreError::Unavailable`]. A fetch error (e.g.
/// [`StoreError::Compacted`] when the watcher fell behind the retained
/// history) is yielded once and ends the stream.
pub fn history_watch<F>(
    prefix: String,
    from: Revision,
    notify: tokio::sync::watch::Receiver<Revision>,
    fetch: F,
) -> crate::WatchStream
where
    F: FnMut(&str, Revision) -> Result<(Vec<Event>, Revision)> + Send + 'static,
{
    struct St<F> {
        prefix: String,
        next: Revision,
        notify: tokio::sync::watch::Receiver<Revision>,
        fetch: F,
        buf: VecDeque<Event>,
        closed: bool,
        done: bool,
    }
    let st = St {
        prefix,
        next: from,
        notify,
        fetch,
        buf: VecDeque::new(),
        closed: false,
        done: false,
    };
    Box::pin(futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.buf.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            // Mark the current revision seen before reading, so a write that
            // lands after the read still wakes us.
            st.notify.borrow_and_update();
            match (st.fetch)(&st.prefix, st.next) {
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                Ok((events, rev)) => {
                    if let Some(last) = events.last() {
                        st.next = st.next.max(last.kv.mod_revision + 1);
                    }
                    st.next = st.next.max(rev + 1);
                    if !events.is_empty() {
                        st.buf.extend(events);
                        continue;
                    }
                }
            }
            if st.closed {
                st.done = true;
                return Some((Err(StoreError::Unavailable("store closed".into())), st));
            }
            if st.notify.changed().await.is_err() {
                st.closed = true;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_history_serializes_as_the_state_with_its_history_cleared() {
        let mut s = KvState::new(DEFAULT_HISTORY);
        s.txn(&crate::Txn::new().then(crate::Op::put("/k", "v")))
            .unwrap();
        let id = s.lease_grant(None, Duration::from_secs(5), 0).unwrap();
        s.txn(&crate::Txn::new().then(crate::Op::put_with_lease("/l", "w", id)))
            .unwrap();
        let mut cleared = s.clone();
        cleared.clear_history();
        let borrowed = serde_json::to_value(s.without_history()).unwrap();
        assert_eq!(borrowed, serde_json::to_value(&cleared).unwrap());
        let back: KvState = serde_json::from_value(borrowed).unwrap();
        assert_eq!(back, cleared);
    }

    use super::*;
    use crate::Compare;

    fn put(s: &mut KvState, k: &str, v: &str) -> Revision {
        s.txn(&Txn::new().then(Op::put(k, v))).unwrap().revision
    }

    #[test]
    fn extend_leases_only_moves_deadlines_later() {
        let mut s = KvState::new(100);
        let a = s.lease_grant(None, Duration::from_millis(100), 0).unwrap();
        s.apply(&Command::ExtendLeases {
            deadlines: vec![(a, 500), (9999, 700)],
        })
        .unwrap();
        assert_eq!(s.lease(a).unwrap().deadline_ms, 500);
        s.apply(&Command::ExtendLeases {
            deadlines: vec![(a, 200)],
        })
        .unwrap();
        assert_eq!(s.lease(a).unwrap().deadline_ms, 500);
        assert!(s.lease(9999).is_none());
        assert!(s.expire_leases(499).is_empty());
        assert_eq!(s.expire_leases(500), vec![a]);
    }

    #[test]
    fn batch_applies_each_command_as_its_own_entry() {
        let mut one = KvState::new(100);
        let cmds = vec![
            Command::Txn(Txn::new().then(Op::put("a", "1"))),
            // Fails (no such lease): leaves the state unchanged.
            Command::LeaseKeepAlive { id: 42, now_ms: 0 },
            Command::Txn(
                Txn::new()
                    .when(Compare::mod_revision("a", 1))
                    .then(Op::put("a", "2")),
            ),
            Command::Txn(
                Txn::new()
                    .when(Compare::absent("a"))
                    .then(Op::put("b", "x")),
            ),
        ];
        for c in &cmds {
            let _ = one.apply(c);
        }
        let mut batched = KvState::new(100);
        assert_eq!(
            batched.apply(&Command::Batch(cmds)).unwrap(),
            Response::Done
        );
        assert_eq!(batched, one);
        assert_eq!(batched.get("a").unwrap().value, b"2");
        assert!(batched.get("b").is_none());
    }

    #[test]
    fn revisions_and_create_mod() {
        let mut s = KvState::new(100);
        assert_eq!(put(&mut s, "a", "1"), 1);
        assert_eq!(put(&mut s, "a", "2"), 2);
        let kv = s.get("a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision), (1, 2));
        assert_eq!(kv.value, b"2");
    }

    #[test]
    fn failed_and_empty_txn_do_not_bump() {
        let mut s = KvState::new(100);
        put(&mut s, "a", "1");
        let r = s
            .txn(
                &Txn::new()
                    .when(Compare::absent("a"))
                    .then(Op::put("b", "x")),
            )
            .unwrap();
        assert!(!r.succeeded);
        assert_eq!(r.revision, 1);
        assert!(s.get("b").is_none());
        let r = s.txn(&Txn::new().then(Op::delete("zz"))).unwrap();
        assert!(r.succeeded);
        assert_eq!(r.revision, 1);
        assert_eq!(s.revision(), 1);
    }

    #[test]
    fn duplicate_keys_and_missing_lease_rejected_without_change() {
        let mut s = KvState::new(100);
        let t = Txn::new().then(Op::put("a", "1")).then(Op::delete("a"));
        assert!(matches!(s.txn(&t), Err(StoreError::InvalidArgument(_))));
        let t = Txn::new()
            .then(Op::put("b", "1"))
            .then(Op::put_with_lease("a", "1", 9));
        assert!(matches!(s.txn(&t), Err(StoreError::LeaseNotFound(9))));
        assert_eq!(s.revision(), 0);
        assert!(s.is_empty());
    }

    #[test]
    fn unknown_lease_matters_only_when_compares_hold() {
        let mut s = KvState::new(100);
        put(&mut s, "a", "1");
        let t = |rev| {
            Txn::new()
                .when(Compare::mod_revision("a", rev))
                .then(Op::put_with_lease("b", "x", 42))
        };
        let r = s.txn(&t(7)).unwrap();
        assert_eq!((r.succeeded, r.revision), (false, 1));
        assert!(matches!(s.txn(&t(1)), Err(StoreError::LeaseNotFound(42))));
        assert_eq!(s.revision(), 1);
        assert!(s.get("b").is_none());
    }

    #[test]
    fn empty_compare_key_rejected_whatever_the_compare() {
        let mut s = KvState::new(100);
        let t = Txn::new().when(Compare::absent("")).then(Op::put("a", "1"));
        assert!(matches!(s.txn(&t), Err(StoreError::InvalidArgument(_))));
        let t = Txn::new()
            .when(Compare::mod_revision("", 5))
            .then(Op::put("a", "1"));
        assert!(matches!(s.txn(&t), Err(StoreError::InvalidArgument(_))));
        assert!(s.is_empty());
    }

    #[test]
    fn legacy_lease_grant_decodes() {
        let c: Command = serde_json::from_str(r#"{"LeaseGrant":{"ttl_ms":1000}}"#).unwrap();
        assert_eq!(
            c,
            Command::LeaseGrant {
                id: None,
                ttl_ms: 1000,
                now_ms: 0
            }
        );
    }

    #[test]
    fn from_parts_rebuilds_lease_keys() {
        let kv = |k: &str, rev, lease| KeyValue {
            key: k.into(),
            value: b"v".to_vec(),
            create_revision: rev,
            mod_revision: rev,
            lease,
        };
        let mut s = KvState::from_parts(
            3,
            [kv("a", 1, Some(5)), kv("b", 3, None)],
            [(5, 100, 100)],
            5,
            10,
        )
        .unwrap();
        assert_eq!(s.oldest_retained(), 4);
        assert_eq!(s.lease_grant(None, Duration::from_secs(1), 0).unwrap(), 6);
        assert_eq!(s.expire_leases(100), vec![5]);
        assert!(s.get("a").is_none());
        assert_eq!(s.revision(), 4);
        assert!(KvState::from_parts(1, [kv("a", 2, None)], [], 1, 10).is_err());
        assert!(KvState::from_parts(1, [kv("a", 1, Some(9))], [], 1, 10).is_err());
    }

    #[test]
    fn history_and_compaction() {
        let mut s = KvState::new(3);
        for i in 0..5 {
            put(&mut s, &format!("k{i}"), "v");
        }
        assert_eq!(s.oldest_retained(), 3);
        assert!(matches!(
            s.events_since("", 2),
            Err(StoreError::Compacted {
                requested: 2,
                compacted: 3
            })
        ));
        let evs = s.events_since("k", 3).unwrap();
        assert_eq!(
            evs.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        s.compact(5).unwrap();
        assert!(s.events_since("", 4).is_err());
        assert_eq!(s.events_since("", 5).unwrap().len(), 1);
        assert!(s.compact(7).is_err());
        assert!(s.events_since("", 6).unwrap().is_empty());
    }

    #[test]
    fn leases_expire_deterministically() {
        let mut s = KvState::new(100);
        let l = s
            .lease_grant(None, Duration::from_millis(100), 1_000)
            .unwrap();
        s.txn(
            &Txn::new()
                .then(Op::put_with_lease("a", "1", l))
                .then(Op::put_with_lease("b", "1", l)),
        )
        .unwrap();
        put(&mut s, "c", "1");
        assert!(s.expire_leases(1_050).is_empty());
        s.lease_keep_alive(l, 1_050).unwrap();
        assert!(s.expire_leases(1_100).is_empty());
        assert_eq!(s.expire_leases(1_150), vec![l]);
        assert_eq!(s.revision(), 3);
        let evs = s.events_since("", 3).unwrap();
        assert_eq!(evs.len(), 2);
        assert!(evs
            .iter()
            .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == 3));
        assert!(s.get("c").is_some());
        assert!(matches!(
            s.lease_keep_alive(l, 1_200),
            Err(StoreError::LeaseNotFound(_))
        ));
    }

    #[test]
    fn snapshot_roundtrip_keeps_leases_and_history() {
        let mut s = KvState::new(5);
        let l = s.lease_grant(None, Duration::from_secs(5), 10).unwrap();
        s.txn(&Txn::new().then(Op::put_with_lease("/a", "1", l)))
            .unwrap();
        put(&mut s, "/b", "2");
        let json = serde_json::to_vec(&s).unwrap();
        let mut back: KvState = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.events_since("/", 1).unwrap().len(), 2);
        // The restored lease still governs its key.
        assert_eq!(back.expire_leases(5_010), vec![l]);
        assert!(back.get("/a").is_none());
        back.clear_history();
        assert!(back.events_since("/", 3).is_err());
        assert!(back.events_since("/", 4).unwrap().is_empty());
    }

    #[test]
    fn put_without_lease_detaches() {
        let mut s = KvState::new(100);
        let l = s.lease_grant(None, Duration::from_secs(1), 0).unwrap();
        s.txn(&Txn::new().then(Op::put_with_lease("a", "1", l)))
            .unwrap();
        put(&mut s, "a", "2");
        assert!(s.lease_revoke(l));
        assert_eq!(s.get("a").unwrap().value, b"2");
        assert_eq!(s.revision(), 2);
    }

    #[test]
    fn apply_is_deterministic_and_serializable() {
        let cmds = vec![
            Command::LeaseGrant {
                id: None,
                ttl_ms: 50,
                now_ms: 0,
            },
            Command::Txn(Txn::new().then(Op::put_with_lease("x", "1", 1))),
            Command::Txn(Txn::new().then(Op::put("y", "1"))),
            Command::ExpireLeases { now_ms: 60 },
        ];
        let mut a = KvState::new(10);
        let mut b = KvState::new(10);
        for c in &cmds {
            assert_eq!(a.apply(c).unwrap(), b.apply(c).unwrap());
        }
        let json = serde_json::to_string(&a).unwrap();
        let c: KvState = serde_json::from_str(&json).unwrap();
        assert_eq!(a, c);
        assert_eq!(a, b);
        assert!(a.get("x").is_none());
    }
}
