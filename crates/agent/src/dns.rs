//! The DNS front end (`socketplane-dns`): started once this node is a
//! member, on the cluster view the reconciler publishes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use socketplane_cluster::Cluster;
use socketplane_dns::{DnsConfig, Upstreams};
use tokio::task::JoinHandle;

/// The `--dns*` flags.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// `--dns off` turns the service off.
    pub enabled: bool,
    /// `--dns-upstream`: resolvers to forward to instead of resolv.conf's.
    pub upstreams: Vec<SocketAddr>,
    /// `--dns-resolv-conf`: where the host's resolvers are read from.
    pub resolv_conf: PathBuf,
    /// `--dns-timeout`: budget of one forwarded query.
    pub timeout: Duration,
    /// `--dns-rate-limit`: queries per second per source (0: unlimited).
    pub rate_limit: u32,
}

impl Default for DnsOptions {
    fn default() -> Self {
        DnsOptions {
            enabled: true,
            upstreams: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
            timeout: Duration::from_secs(2),
            rate_limit: 10_000,
        }
    }
}

impl DnsOptions {
    fn upstreams(&self) -> Upstreams {
        if !self.upstreams.is_empty() {
            return Upstreams {
                servers: self.upstreams.clone(),
                attempts: 2,
                budget: self.timeout,
            };
        }
        match Upstreams::from_resolv_conf(&self.resolv_conf, self.timeout) {
            Ok(u) => u,
            Err(error) => {
                tracing::warn!(%error, "No upstream resolvers: names outside the cluster get SERVFAIL.");
                Upstreams {
                    servers: Vec::new(),
                    attempts: 1,
                    budget: self.timeout,
                }
            }
        }
    }
}

/// Starts the DNS service once `cluster` is ready; it stops when the
/// returned task is aborted.
pub fn start(opts: &DnsOptions, cluster: Arc<Cluster>) -> Option<JoinHandle<()>> {
    if !opts.enabled {
        return None;
    }
    let opts = opts.clone();
    Some(tokio::spawn(async move {
        let mut ready = cluster.subscribe_ready();
        if ready.wait_for(|r| *r).await.is_err() {
            return;
        }
        let Some(views) = cluster.watch_view() else {
            return;
        };
        let mut config = DnsConfig::new(opts.upstreams());
        config.rate_limit = opts.rate_limit;
        config.burst = opts.rate_limit.saturating_mul(2);
        let _service = match socketplane_dns::spawn(config, views) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%error, "Cannot start the DNS service.");
                return;
            }
        };
        std::future::pending::<()>().await;
    }))
}
