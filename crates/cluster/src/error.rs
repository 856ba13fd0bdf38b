//! The cluster's errors. Each has a [`ErrorKind`], which front ends map to
//! their protocol (the local API to an HTTP status). Bad input is always a
//! sentence for a person.

use socketplane_ipam::IpamError;
use socketplane_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("record {key} does not parse")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding a record")]
    Encode(#[source] serde_json::Error),
    /// A network namespace path that may not be used, and why.
    #[error("network namespace {path:?} is not usable: {why}")]
    Netns { path: String, why: String },
    #[error("{0}")]
    Internal(String),
}

/// What kind of failure an [`Error`] is, for the caller's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong; retrying it unchanged fails again.
    Invalid,
    NotFound,
    /// The request conflicts with the cluster's state.
    Conflict,
    /// The cluster cannot answer now (no quorum, not joined yet); retry.
    Unavailable,
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) | Error::Netns { .. } => ErrorKind::Invalid,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Store(StoreError::Unavailable(_)) => ErrorKind::Unavailable,
            Error::Store(StoreError::InvalidArgument(_)) => ErrorKind::Invalid,
            Error::Ipam(IpamError::Exhausted(_)) => ErrorKind::Conflict,
            Error::Ipam(_) => ErrorKind::Invalid,
            Error::Store(_) | Error::Decode { .. } | Error::Encode(_) | Error::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// Worth retrying as is: the store is not ready or a record is being
    /// rewritten.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::Internal)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
