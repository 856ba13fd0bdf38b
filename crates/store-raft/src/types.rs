//! Raft type configuration: what travels through the log and what applying
//! it answers.

use std::io::Cursor;
use std::sync::Arc;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use socketplane_store::kv;
use socketplane_store::LeaseId;

openraft::declare_raft_types!(
    /// The openraft type configuration of the embedded store: the log
    /// carries `socketplane_store::kv` commands.
    pub TypeConfig:
        D = SharedCommand,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A log entry's command, shared. openraft clones the entries it sends
/// for every follower it sends them to: after a full restart of 100 hosts
/// with 10,000 endpoints that was up to 450 MB on the leader for a few
/// seconds (heaptrack); the clone of an `Arc` is a pointer. Encoded
/// exactly as the command itself, so logs and peers see no difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCommand(pub Arc<kv::Command>);

impl From<kv::Command> for SharedCommand {
    fn from(cmd: kv::Command) -> Self {
        SharedCommand(Arc::new(cmd))
    }
}

impl std::ops::Deref for SharedCommand {
    type Target = kv::Command;
    fn deref(&self) -> &kv::Command {
        &self.0
    }
}

impl Serialize for SharedCommand {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedCommand {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        kv::Command::deserialize(d).map(Self::from)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs written before commands were shared, and peers that do not
    /// share them, read and write the same bytes.
    #[test]
    fn a_shared_command_is_encoded_as_the_command() {
        let cmd = kv::Command::Batch(vec![
            kv::Command::LeaseRevoke { id: 7 },
            kv::Command::ExpireLeases { now_ms: 9 },
        ]);
        let plain = serde_json::to_vec(&cmd).unwrap();
        let shared = SharedCommand::from(cmd.clone());
        assert_eq!(serde_json::to_vec(&shared).unwrap(), plain);
        let back: SharedCommand = serde_json::from_slice(&plain).unwrap();
        assert_eq!(*back, cmd);
        // A clone is the same command, not a copy of it.
        assert!(Arc::ptr_eq(&shared.clone().0, &shared.0));
    }
}
