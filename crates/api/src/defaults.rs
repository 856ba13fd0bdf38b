//! Every default of the product, defined once: the agent's configuration,
//! the CLI's flags and the API client take them from here.

/// The local API's unix socket.
pub const SOCKET: &str = "/run/socketplane/socketplane.sock";
/// TCP port for agent-to-agent and Raft traffic.
pub const CLUSTER_PORT: u16 = 6675;
/// The agent's state.
pub const DATA_DIR: &str = "/var/lib/socketplane";
/// The Docker plugin socket (legacy plugin discovery: the driver is named
/// after the file).
pub const DOCKER_PLUGIN: &str = "/run/docker/plugins/socketplane.sock";
/// The cluster name nodes join by default.
pub const CLUSTER: &str = "socketplane";
/// `--iface`: the default route's interface.
pub const IFACE: &str = "auto";
/// `--datapath`: Open vSwitch if it answers, else Linux.
pub const DATAPATH: &str = "auto";
/// `--store`: the embedded Raft store.
pub const STORE: &str = "embedded";
/// Seconds a silent node stays alive in the store.
pub const LEASE_TTL_SECS: u64 = 15;
/// Seconds a node must have been dead before its endpoints and
/// reservations are reclaimed (`--reclaim-after`; 0: only `cluster remove`).
pub const RECLAIM_AFTER_SECS: u64 = 300;
/// Store voters (3 or 5).
pub const VOTERS: usize = 3;
/// Seconds a Docker endpoint no container has is kept before it is detached
/// (a container start takes far less between CreateEndpoint and running).
pub const DOCKER_STALE_SECS: u64 = 20;
/// The network every cluster has.
pub const NETWORK: &str = "default";
/// The interface name inside a workload.
pub const IFNAME: &str = "eth0";
/// Where CNI runtimes look for the plugin (`"type": "socketplane"`).
pub const CNI_PLUGIN: &str = "/opt/cni/bin/socketplane";
/// The CNI spec version `socketplane cni config` writes: 1.0.0, the newest
/// that runtimes of today's distributions parse (podman 4, containerd 1.7,
/// CRI-O); the plugin itself speaks 0.3.0 to 1.1.0.
pub const CNI_CONF_VERSION: &str = "1.0.0";
