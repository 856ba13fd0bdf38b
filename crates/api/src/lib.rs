//! Types shared across SocketPlane: the records kept in the store
//! ([`records`], [`keys`]), the local REST API's bodies ([`rest`]) and small
//! value types ([`MacAddr`]).

pub mod defaults;
pub mod keys;
pub mod mac;
pub mod records;
pub mod rest;

pub use mac::MacAddr;
pub use records::{
    DockerNetworkRecord, EndpointRecord, Fault, HealthRecord, NetnsId, NetworkMode, NetworkRecord,
    NodeRecord, ReservationRecord, ORIGIN_CNI,
};

// The agent-to-agent protocol version (mDNS TXT `v=`) is defined once, in
// `socketplane_discovery::PROTOCOL_VERSION`, which advertises it.

// The cluster port's token header is defined once, in
// `socketplane_store_raft::TOKEN_HEADER`, whose routes check it.
