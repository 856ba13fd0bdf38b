//! Raft type configuration and the replicated commands.

use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use socketplane_store::{LeaseId, Txn, TxnResult};

openraft::declare_raft_types!(
    /// The openraft type configuration of the embedded store.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;

/// A command replicated through the Raft log and applied by every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Txn(Txn),
    LeaseGrant { ttl_ms: u64 },
    LeaseRevoke { id: LeaseId },
}

/// The result of applying a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    None,
    Txn(TxnResult),
    Lease(LeaseId),
    LeaseNotFound(LeaseId),
    /// The command was malformed (checked deterministically on apply).
    Invalid(String),
}

/// Builds an openraft storage error from any message.
pub(crate) fn storage_err(msg: impl ToString) -> StorageError {
    openraft::StorageIOError::write(openraft::AnyError::error(msg)).into()
}
