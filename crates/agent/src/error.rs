//! Errors of agent operations, each with the HTTP status the local API
//! answers with. Bad input is always a 4xx with a sentence, never a 500.

use socketplane_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl OpError {
    pub fn status(&self) -> u16 {
        match self {
            OpError::Invalid(_) => 400,
            OpError::NotFound(_) => 404,
            OpError::Conflict(_) => 409,
            OpError::Unavailable(_) => 503,
            OpError::Internal(_) => 500,
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => OpError::Unavailable(e.to_string()),
            StoreError::InvalidArgument(_) => OpError::Invalid(e.to_string()),
            _ => OpError::Internal(e.to_string()),
        }
    }
}

impl From<socketplane_ipam::IpamError> for OpError {
    fn from(e: socketplane_ipam::IpamError) -> Self {
        use socketplane_ipam::IpamError::*;
        match e {
            Exhausted(_) => OpError::Conflict(e.to_string()),
            _ => OpError::Invalid(e.to_string()),
        }
    }
}

pub type OpResult<T> = Result<T, OpError>;
