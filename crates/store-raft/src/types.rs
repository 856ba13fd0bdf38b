//! Raft type configuration: what travels through the log and what applying
//! it answers.

use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use socketplane_store::kv;
use socketplane_store::LeaseId;

openraft::declare_raft_types!(
    /// The openraft type configuration of the embedded store: the log
    /// carries `socketplane_store::kv` commands.
    pub TypeConfig:
        D = kv::Command,
        R = Applied,
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

/// The outcome of applying one command.
pub type Outcome = Result<kv::Response, Rejected>;

/// The outcome of applying one log entry, returned to its proposer: one
/// outcome per command it carried (several for a `kv::Command::Batch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Vec<Outcome>);

impl Applied {
    /// The outcome of an entry that carried one command.
    pub fn single(self) -> Outcome {
        self.0.into_iter().next().unwrap_or(Ok(kv::Response::Done))
    }
}

/// Why the state machine refused a command (deterministically, on every
/// node alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejected {
    InvalidArgument(String),
    LeaseNotFound(LeaseId),
    Other(String),
}

impl From<socketplane_store::StoreError> for Rejected {
    fn from(e: socketplane_store::StoreError) -> Self {
        use socketplane_store::StoreError as E;
        match e {
            E::InvalidArgument(m) => Rejected::InvalidArgument(m),
            E::LeaseNotFound(id) => Rejected::LeaseNotFound(id),
            other => Rejected::Other(other.to_string()),
        }
    }
}

/// Builds an openraft storage error that keeps `e`'s sources as text.
pub(crate) fn storage_err(e: &(dyn std::error::Error + 'static)) -> StorageError {
    openraft::StorageIOError::write(openraft::AnyError::from_dyn(e, None)).into()
}
