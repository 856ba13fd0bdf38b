//! What a SocketPlane agent decides, with no HTTP in it: networks,
//! endpoints, the one address-allocation routine, Docker reservations,
//! reclaim of dead nodes, the cluster view and the reconciler that
//! converges this host's datapath to it. Front ends (the local API, the
//! Docker plugin, the cluster port) take a [`Cluster`] handle or a narrower
//! one of their own; they never see the agent.
//!
//! - [`cluster`]: the [`Cluster`] handle, readiness, waiting for the datapath
//! - [`networks`], [`endpoints`], [`reservations`], [`reclaim`], [`nodes`]:
//!   its operations, one concern each, all through [`alloc`] for addresses
//! - [`migrate`]: the store layout upgrade run at start
//! - [`view`], [`reconciler`], [`convergence`]: watch → view → datapath,
//!   and what the loop publishes; `fence`: when a cut-off node takes its
//!   workloads off the wire
//! - [`error`]: [`Error`] and its [`ErrorKind`]
//! - `testing` (feature `test-support`): nodes for tests

pub mod alloc;
pub mod cluster;
pub mod convergence;
pub mod endpoints;
pub mod error;
mod fence;
pub mod migrate;
pub mod names;
pub mod networks;
pub mod nodes;
pub mod reclaim;
pub mod reconciler;
mod records;
pub mod reservations;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod view;

pub use cluster::Cluster;
pub use convergence::{EndpointFailures, ReconcilerHandle};
pub use endpoints::attach_is_keyed;
pub use error::{Error, ErrorKind, Result};
pub use reconciler::Reconciler;
pub use view::{ClusterView, ROUTING_DATAPATH};
