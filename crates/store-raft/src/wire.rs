//! What nodes send each other besides openraft's own messages: forwarded
//! client requests, membership requests, errors, snapshot framing.

use serde::{Deserialize, Serialize};
use socketplane_store::{kv, LeaseId, Txn};

use crate::types::{LogId, NodeId, Rejected, SnapshotMeta, Vote};

/// Carries the caller's cluster name; a mismatch gets 409.
pub(crate) const CLUSTER_HEADER: &str = "x-socketplane-cluster";

/// A client request a follower forwards to the leader. Lease requests
/// carry no time: the leader stamps them with its lease clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum ClientRequest {
    Txn(Txn),
    LeaseGrant { ttl_ms: u64 },
    LeaseKeepAlive(LeaseId),
    LeaseRevoke(LeaseId),
}

impl ClientRequest {
    /// Whether running it twice is harmless, so a failure whose outcome is
    /// unknown may be retried.
    pub fn idempotent(&self) -> bool {
        matches!(self, Self::LeaseKeepAlive(_) | Self::LeaseRevoke(_))
    }
}

/// Errors carried between nodes in response bodies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    NotLeader { leader: Option<String> },
    Unavailable(String),
    InvalidArgument(String),
    LeaseNotFound(LeaseId),
    ClusterMismatch { ours: String, theirs: String },
    Internal(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotLeader { leader: Some(l) } => write!(f, "not the leader (leader: {l})"),
            Self::NotLeader { leader: None } => write!(f, "not the leader (no leader known)"),
            Self::Unavailable(m) => write!(f, "unavailable: {m}"),
            Self::InvalidArgument(m) => write!(f, "invalid request: {m}"),
            Self::LeaseNotFound(id) => write!(f, "lease {id} not found or expired"),
            Self::ClusterMismatch { ours, theirs } => {
                write!(f, "cluster name mismatch: {ours:?} vs {theirs:?}")
            }
            Self::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl From<Rejected> for WireError {
    fn from(r: Rejected) -> Self {
        match r {
            Rejected::InvalidArgument(m) => Self::InvalidArgument(m),
            Rejected::LeaseNotFound(id) => Self::LeaseNotFound(id),
            Rejected::Other(m) => Self::Internal(m),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JoinRequest {
    pub node_id: NodeId,
    pub addr: String,
    pub cluster: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LeaveRequest {
    pub node_id: NodeId,
}

/// "Would you vote for me?", asked before a node campaigns (see
/// `elect.rs`): its last log entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreVoteRequest {
    pub last_log: Option<LogId>,
}

/// The answer: granted unless the asked node hears from a leader or holds
/// a longer log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreVoteResponse {
    pub granted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotHeader {
    pub vote: Vote,
    pub meta: SnapshotMeta,
}

/// The leader's answer to a forwarded request: the response and the log
/// index it was applied at.
pub(crate) type ForwardResult = Result<(kv::Response, u64), WireError>;

/// Decodes the body of a snapshot request: header length, header, data.
pub(crate) fn decode_snapshot(body: &[u8]) -> Result<(SnapshotHeader, Vec<u8>), String> {
    if body.len() < 8 {
        return Err("short snapshot body".into());
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&body[..8]);
    let len = u64::from_be_bytes(len) as usize;
    let rest = &body[8..];
    if rest.len() < len {
        return Err("short snapshot header".into());
    }
    let header: SnapshotHeader =
        serde_json::from_slice(&rest[..len]).map_err(|e| format!("bad snapshot header: {e}"))?;
    Ok((header, rest[len..].to_vec()))
}
