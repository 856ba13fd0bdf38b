//! Docker integration: the agent is a libnetwork remote network driver and
//! a remote IPAM driver, served on a unix socket in Docker's plugin
//! directory (legacy discovery: `/run/docker/plugins/NAME.sock` makes the
//! drivers `NAME`).
//!
//! How Docker's objects map to the cluster's:
//! - A Docker network id maps to a cluster network's id, kept per node
//!   under `keys::docker_network` (Docker network ids are per daemon).
//!   Docker does not pass the network's name to drivers, so
//!   `CreateNetwork` binds to the cluster network with exactly the
//!   network's subnet if there is one; otherwise it creates a cluster
//!   network named by the driver option `-o name=NAME`, or `docker-ID12`
//!   (the first 12 digits of Docker's id), which the [`mirror`] renames to
//!   the Docker network's name as soon as Docker lists it (within a
//!   fraction of a second; endpoints refer to the network by id, so
//!   containers started meanwhile do not hold the placeholder).
//! - IPAM pool ids are the subnets themselves (stateless: an agent restart
//!   loses nothing). `RequestAddress` reserves the address in the cluster
//!   IPAM (a reservation record, which allocation treats as taken), so no
//!   other host can take it; `CreateEndpoint` then turns the reservation
//!   into an endpoint whose id is Docker's endpoint id, and
//!   `DeleteEndpoint` frees both.
//! - [`mirror`] keeps every cluster network present in the local Docker.
//! - The endpoint's veth is created with the workload end left in the host
//!   namespace; `Join` names it and Docker moves it into the container.

//!
//! Modules: [`backend`] (the narrow handle on the cluster), [`plugin`] and
//! [`protocol`] (the drivers), [`mirror`], [`names`], [`server`] (starts
//! the plugin and the mirror).

pub mod backend;
pub mod error;
pub mod mirror;
pub mod names;
pub mod plugin;
pub mod protocol;
pub mod server;

pub use backend::{Backend, ClusterBackend};
pub use error::{Error, Result};
pub use server::{serve, PluginConfig, PluginServer};
