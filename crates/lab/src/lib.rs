//! A multi-host lab in network namespaces: hosts on a shared bridge, each
//! running its own agent. Built on `socketplane-testkit` (namespaces,
//! veths, per-host Open vSwitch, processes).
//!
//! Hosts are addressed by their 0-based index into [`Lab::hosts`]: index 0
//! is `host1` (198.18.0.11, namespace `sp-NAME-h1`), index 1 is `host2`,
//! and so on. The layout is in [`topology`], the agents' command line in
//! `agent`. The lab's state is saved in `STATE_DIR/lab.json` after every
//! change, so `up`, `exec` and `down` can be separate processes.
//!
//! Modules, one concern each (none imports [`Lab`] but `guard`):
//! `config` (configuration, limits, addressing), `state` (the saved
//! state), [`topology`] (namespaces and wiring), [`ovs`] (per-host Open
//! vSwitch), `agent` (agent processes), `workload` (workload namespaces),
//! `neigh` (room in the machine's neighbour table), `teardown` (removal), `lab` ([`Lab`] itself), `guard` ([`LabGuard`]),
//! [`ping`] (reachability checks).

mod agent;
mod config;
mod error;
mod etcd;
mod guard;
mod lab;
mod neigh;
pub mod ovs;
pub mod ping;
mod state;
mod teardown;
pub mod topology;
mod workload;

pub use config::{
    default_state_dir, host_underlay_ip, underlay_ip, Discovery, LabConfig, StoreKind, Timeouts,
    ETCD_CLIENT_PORT, ETCD_IP, MAX_HOSTS, MAX_NAME_LEN,
};
pub use error::{LabError, Result};
pub use etcd::log_path as etcd_log_path;
pub use guard::LabGuard;
pub use lab::Lab;
pub use nix::sys::signal::Signal;
pub use socketplane_testkit::underlay::{UNDERLAY_IFACE, UNDERLAY_PREFIX_LEN};
pub use topology::{HostInfo, GATEWAY_IP, OUTSIDE_REMOTE_IP};
pub use workload::Workload;
