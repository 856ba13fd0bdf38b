//! The agent's settings (the `socketplane agent` flags), with the defaults
//! of `socketplane_api::defaults`.

pub use socketplane_store::etcd::EtcdAuth;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use socketplane_api::defaults;

use crate::datapaths::OvsOptions;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub bootstrap: bool,
    /// Underlay interface, or "auto" for the default route's.
    pub iface: String,
    pub join: Option<String>,
    pub cluster: String,
    pub token: Option<String>,
    /// Found (or join) an unauthenticated cluster.
    pub open: bool,
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub listen: SocketAddr,
    /// "auto", "linux" or "ovs".
    pub datapath: String,
    /// "embedded", "etcd://host:port[,host:port]" or "etcds://…" (TLS).
    pub store: String,
    /// TLS files for an etcd store (`--etcd-ca/--etcd-cert/--etcd-key`).
    pub etcd_tls: EtcdTlsFiles,
    /// etcd user and password (`--etcd-user`, the password from
    /// `--etcd-password-file` or `SOCKETPLANE_ETCD_PASSWORD`).
    pub etcd_auth: Option<EtcdAuth>,
    pub docker_plugin: Option<PathBuf>,
    /// A Docker endpoint no container has for this long is detached.
    pub docker_stale_after: Duration,
    pub mdns: bool,
    pub node_name: Option<String>,
    /// How long a silent node stays alive in the store.
    pub lease_ttl: Duration,
    /// How long a node must have been dead before its endpoints and
    /// reservations are reclaimed; `None`: only by `cluster remove`.
    pub reclaim_after: Option<Duration>,
    pub max_voters: usize,
    pub ovs: OvsOptions,
    /// `--http`: metrics, health and the topology page, or off.
    pub http: socketplane_observe::HttpAddr,
    pub dns: crate::dns::DnsOptions,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            bootstrap: false,
            iface: defaults::IFACE.into(),
            join: None,
            cluster: defaults::CLUSTER.into(),
            token: None,
            open: false,
            data_dir: defaults::DATA_DIR.into(),
            socket: defaults::SOCKET.into(),
            listen: SocketAddr::from(([0, 0, 0, 0], defaults::CLUSTER_PORT)),
            datapath: defaults::DATAPATH.into(),
            store: defaults::STORE.into(),
            etcd_tls: Default::default(),
            etcd_auth: None,
            docker_plugin: None,
            docker_stale_after: Duration::from_secs(defaults::DOCKER_STALE_SECS),
            mdns: true,
            node_name: None,
            lease_ttl: Duration::from_secs(defaults::LEASE_TTL_SECS),
            reclaim_after: Some(Duration::from_secs(defaults::RECLAIM_AFTER_SECS)),
            max_voters: defaults::VOTERS,
            ovs: Default::default(),
            http: Default::default(),
            dns: Default::default(),
        }
    }
}

/// PEM files for TLS to etcd: the CA that signed the members' certificates
/// and, when etcd wants client certificates, this agent's certificate and
/// key.
#[derive(Debug, Clone, Default)]
pub struct EtcdTlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}
