//! Types shared across SocketPlane: the records kept in the store, the local
//! REST API's bodies, and small value types (MAC addresses).

pub mod mac;

pub use mac::MacAddr;
