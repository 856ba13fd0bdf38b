//! DNS for SocketPlane networks: each host's agent answers on every
//! network's gateway address, port 53, UDP and TCP (the gateway is on
//! every host, so a query never leaves it).
//!
//! - [`zone`]: the names of each network, from the cluster view, and what
//!   a query name gets: `NAME` and `NAME.NETWORK` answered, unknown names
//!   in the zone NXDOMAIN, everything else forwarded
//! - [`handler`]: one query (hickory-server's `RequestHandler`)
//! - [`forward`]: the host's resolvers (resolv.conf), with a time budget
//! - [`limit`]: a token bucket per source
//! - [`server`]: the service on its own thread, one server per gateway
//! - [`error`]: the crate's [`Error`]

pub mod error;
pub mod forward;
pub mod handler;
pub mod limit;
pub mod server;
pub mod zone;

pub use error::{Error, Result};
pub use forward::{parse_upstream, Upstreams};
pub use server::{spawn, DnsConfig, DnsService};
