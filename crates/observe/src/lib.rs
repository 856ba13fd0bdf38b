//! What a SocketPlane agent shows, to people and to monitoring.
//!
//! - [`events`]: typed internal events. Each one says one fact once: it
//!   logs it (key/value `tracing`) and counts it in [`metrics`]. Front ends
//!   call [`emit`] with one of them; nothing else touches the metrics.
//! - [`metrics`]: the Prometheus families (all `socketplane_…`), one
//!   process-wide registry, rendered as Prometheus/OpenMetrics text.
//! - [`topology`]: the cluster as the page and the gauges see it (hosts,
//!   networks, endpoints, tunnels, problems), built by the agent behind the
//!   narrow [`Source`] trait, so this crate never sees the agent.
//! - [`decorate`]: a datapath and a store wrapped so every apply and commit
//!   is an event.
//! - [`layers`]: middleware that counts the local API's and the Docker
//!   plugin's requests.
//! - [`server`]: `--http ADDR:PORT`: `/metrics`, `/healthz`, `/readyz`,
//!   `/` (the topology page, assets embedded in the binary) and `/events`
//!   (server-sent events for live updates).
//! - [`logging`]: `--log-format text|json`.

pub mod decorate;
pub mod error;
pub mod events;
pub mod layers;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod topology;

pub use error::{Error, Result};
pub use events::{emit, InternalEvent};
pub use server::{serve, HttpAddr, Source};
pub use topology::Topology;
