//! The one test kit of SocketPlane: hosts as network namespaces on a shared
//! bridge, one Open vSwitch per host, waits, unique names, needed programs,
//! and the gate that privileged tests call first.
//!
//! Everything that needs root returns [`Result`], so the lab (a product
//! feature: `socketplane lab up`) builds on the same code as the tests.
//! Owned resources ([`Netns`], [`Underlay`], [`Ovs`]) are removed when they
//! drop, also when a test panics.
//!
//! A privileged test starts with [`require_privileged!`]:
//!
//! ```no_run
//! #[test]
//! fn two_hosts_ping() {
//!     socketplane_testkit::require_privileged!();
//!     let mut net = socketplane_testkit::Underlay::new('x').unwrap();
//!     let h1 = net.host("h1", std::net::Ipv4Addr::new(198, 18, 0, 1)).unwrap();
//!     // ...
//! #   let _ = h1;
//! }
//! ```

pub mod cmd;
mod error;
pub mod gate;
mod names;
pub mod netns;
pub mod ovs;
pub mod process;
pub mod underlay;
mod wait;
pub mod zeroconf;

pub use error::{KitError, Result};
pub use gate::{require, skip_unless_privileged, REQUIRE_PRIVILEGED_ENV};
pub use names::unique_name;
pub use netns::Netns;
pub use ovs::Ovs;
pub use underlay::Underlay;
pub use wait::{wait_until, wait_until_every, DEFAULT_POLL};
