//! The cluster state store.
//!
//! Everything the cluster knows (nodes, networks, IPAM, endpoints) lives in
//! one key-value store with etcd semantics: every write gets a cluster-wide
//! revision, transactions compare-and-set on revisions, watches replay a
//! prefix from a revision without gaps, and leases expire keys (liveness).
//!
//! Backends implement [`Store`]; callers hold an `Arc<dyn Store>` and never
//! know which backend is behind it. Every backend passes the same
//! conformance suite (`conformance`, behind the feature of that name).
//!
//! Modules: [`kv`] (the pure, deterministic state machine with etcd
//! semantics, reusable by replicated backends), [`mem`] (`MemStore`, in
//! memory), [`layer`] (stores that wrap another and change a few calls),
//! `etcd` (`EtcdStore`, feature `etcd`, on by default),
//! `conformance` and `bench` (feature `conformance`).

#[cfg(feature = "conformance")]
pub mod bench;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod kv;
pub mod layer;
pub mod mem;
pub mod value_bytes;

#[cfg(feature = "etcd")]
pub use etcd::EtcdStore;

pub use layer::{Layer, Layered};
pub use mem::MemStore;

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

/// A cluster-wide, strictly increasing write counter (etcd's revision).
/// Revision 0 means "never written"; the first write gets revision 1 or more.
pub type Revision = i64;

/// A lease's identifier; keys put with a lease vanish when it expires.
pub type LeaseId = i64;

/// One stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(with = "crate::value_bytes")]
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since its last delete).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// A condition on one key; a transaction applies only if all hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    /// The key's current mod revision must equal this; 0 means "absent".
    pub mod_revision: Revision,
}

impl Compare {
    /// Holds if the key was last written at `revision`.
    pub fn mod_revision(key: impl Into<String>, revision: Revision) -> Self {
        Self {
            key: key.into(),
            mod_revision: revision,
        }
    }

    /// Holds if the key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self::mod_revision(key, 0)
    }
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        #[serde(with = "crate::value_bytes")]
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    /// Deleting a missing key is not an error (and writes no event).
    Delete { key: String },
}

impl Op {
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    pub fn put_with_lease(
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
        lease: LeaseId,
    ) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: impl Into<String>) -> Self {
        Op::Delete { key: key.into() }
    }
}

/// Compare-and-set: if every compare holds, apply every op atomically at one
/// new revision; otherwise apply nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

/// The outcome of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    /// Whether the compares held and the ops were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction (the new revision if it
    /// wrote anything).
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv.value` is empty and
/// `kv.mod_revision` is the revision of the delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// A stream of watch events in revision order, without gaps. It ends with
/// `Err(StoreError::Compacted)` if the watcher fell behind a compaction (the
/// caller re-lists and watches again), or another error if the store failed.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

/// A prefix listing and the store revision it was read at; watch from
/// `revision + 1` to see every later change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// A store member's role, as `cluster status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Leader,
    Voter,
    Replica,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMember {
    /// Backend-specific member id (node id for the embedded store).
    pub id: String,
    pub addr: String,
    pub role: MemberRole,
}

/// Health and membership of the store, as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// "embedded", "etcd" or "memory".
    pub backend: String,
    /// True when this node can currently serve linearizable reads and writes.
    pub healthy: bool,
    pub leader: Option<String>,
    pub members: Vec<StoreMember>,
    /// Revision of the last applied write seen by this node.
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or has no quorum; retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for a revision that compaction already removed.
    #[error("revision {requested} is compacted (oldest kept: {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("lease {0} not found or expired")]
    LeaseNotFound(LeaseId),
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// Persistent state is unreadable or belongs to something else; never
    /// silently replaced.
    #[error("corrupt or foreign store data: {0}")]
    Corrupt(String),
    #[error("store internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The cluster state store: etcd semantics, whatever the backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads one key (linearizable).
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Reads every key under `prefix`, sorted by key, with the revision read
    /// at (linearizable).
    async fn list(&self, prefix: &str) -> Result<Listing>;

    /// [`Store::get`] from this node's copy, which may lag behind the
    /// cluster (etcd's serializable read): for a guess that a
    /// transaction's compares then check, never for a decision on its own.
    /// Linearizable unless the backend has a cheaper local read.
    async fn get_local(&self, key: &str) -> Result<Option<KeyValue>> {
        self.get(key).await
    }

    /// [`Store::list`] from this node's copy; see [`Store::get_local`].
    async fn list_local(&self, prefix: &str) -> Result<Listing> {
        self.list(prefix).await
    }

    /// Applies a compare-and-set transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResult>;

    /// Streams every change under `prefix` with revision >= `from`, in
    /// revision order. `from = 0` means "from now on".
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;

    /// Grants a lease that expires `ttl` after its last keep-alive.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId>;

    /// Refreshes a lease; `LeaseNotFound` if it already expired.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()>;

    /// Revokes a lease now, deleting its keys. Revoking a missing lease is
    /// not an error.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<()>;

    /// Health and membership as seen from this node.
    async fn status(&self) -> Result<StoreStatus>;

    /// Unconditional put; returns the new revision.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision> {
        Ok(self
            .txn(Txn::new().then(Op::put(key, value)))
            .await?
            .revision)
    }

    /// Unconditional delete; returns the store revision afterwards.
    async fn delete(&self, key: &str) -> Result<Revision> {
        Ok(self.txn(Txn::new().then(Op::delete(key))).await?.revision)
    }
}
