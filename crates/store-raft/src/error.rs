//! The crate's error type, with its sources, and how it maps onto
//! [`StoreError`] (what callers of the [`socketplane_store::Store`] trait
//! and of [`crate::EmbeddedStore`]'s methods see).

use std::path::PathBuf;

use socketplane_store::StoreError;

use crate::wire::WireError;

/// Everything that can go wrong inside the embedded store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store database: {what}")]
    Database {
        what: &'static str,
        #[source]
        source: redb::Error,
    },
    #[error("snapshot file {}", path.display())]
    SnapshotFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process (most likely another agent with the same data
    /// directory) has the database open.
    #[error("{} is in use by another process; is another agent running with this data directory?", path.display())]
    InUse { path: PathBuf },
    /// Data on disk that is not ours or not readable; never wiped.
    #[error("corrupt or foreign store data: {0}")]
    Corrupt(String),
    #[error("cannot decode {what}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store's writer thread stopped")]
    WriterStopped,
    #[error("cannot start raft")]
    RaftStart(#[source] openraft::error::Fatal<crate::types::NodeId>),
    #[error("a background task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The request never reached the peer (connection refused etc.): it
    /// had no effect there.
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The request may or may not have been processed by the peer.
    #[error("request to {addr} failed")]
    Request {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: String,
        status: u16,
        body: String,
    },
    #[error("undecodable answer from {addr}")]
    Answer {
        addr: String,
        #[source]
        source: serde_json::Error,
    },
}

/// `e` and its sources, e.g. "request to 1.2.3.4:6675 failed: operation
/// timed out" (the text that crosses into [`StoreError`], which holds text).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        let text = chain(&e);
        match e {
            Error::Config(m) => StoreError::InvalidArgument(m),
            Error::Corrupt(_) | Error::Decode { .. } | Error::RaftStart(_) => {
                StoreError::Corrupt(text)
            }
            Error::Database { .. } | Error::CreateDir { .. } | Error::SnapshotFile { .. } => {
                StoreError::Corrupt(text)
            }
            Error::Connect { .. }
            | Error::Request { .. }
            | Error::Status { .. }
            | Error::Answer { .. }
            | Error::WriterStopped
            | Error::InUse { .. } => StoreError::Unavailable(text),
            Error::Encode { .. } | Error::Task(_) => StoreError::Internal(text),
        }
    }
}

impl From<WireError> for StoreError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotLeader { leader } => {
                StoreError::Unavailable(format!("not the leader (leader: {leader:?})"))
            }
            WireError::Unavailable(e) => StoreError::Unavailable(e),
            WireError::InvalidArgument(e) => StoreError::InvalidArgument(e),
            WireError::LeaseNotFound(id) => StoreError::LeaseNotFound(id),
            WireError::ClusterMismatch { ours, theirs } => StoreError::InvalidArgument(format!(
                "cluster name mismatch: {ours:?} vs {theirs:?}"
            )),
            WireError::Internal(e) => StoreError::Internal(e),
        }
    }
}
