//! The SocketPlane agent: one per host. It keeps cluster membership, serves
//! the local API, and converges this host's datapath to the cluster state.
//!
//! - [`agent`]: startup, membership, registration, the `Agent` handle
//! - [`ops`]: networks, IPAM and endpoints as store transactions
//! - [`view`]: the typed cluster view and the desired datapath state
//! - [`reconciler`]: watch → view → datapath
//! - [`api`]: the local REST API; [`server`]: listeners and mDNS

pub mod agent;
pub mod api;
pub mod datapaths;
pub mod docker;
pub mod error;
pub mod host;
pub mod ops;
pub mod reconciler;
pub mod server;
pub mod view;

pub use agent::{run, Agent, AgentConfig};

/// TCP port for agent-to-agent and Raft traffic.
pub const CLUSTER_PORT: u16 = 6675;
