//! The DNS service: on its own thread and runtime (so a flood of queries
//! never takes time from the agent's other work), one hickory server per
//! network, bound to that network's gateway address, port 53, UDP and TCP.
//! It follows the cluster view: zones follow the endpoints that changed
//! (rebuilt when networks change), servers start and stop as networks
//! come and go.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use socket2::{Domain, Protocol, Socket, Type};
use socketplane_cluster::ClusterView;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::forward::{Forwarder, Upstreams};
use crate::handler::Handler;
use crate::limit::RateLimiter;
use crate::zone::Zones;

/// How long an idle TCP connection stays open.
const TCP_IDLE: Duration = Duration::from_secs(5);
/// Answers queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// How often binding a gateway that failed is tried again.
const RETRY_BIND: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub upstreams: Upstreams,
    /// Port on each gateway (53).
    pub port: u16,
    /// TTL of the answers for endpoint names, seconds.
    pub ttl: u32,
    /// Queries per second per source address (0: unlimited) and burst.
    pub rate_limit: u32,
    pub burst: u32,
}

impl DnsConfig {
    pub fn new(upstreams: Upstreams) -> Self {
        DnsConfig {
            upstreams,
            port: 53,
            ttl: 2,
            rate_limit: 10_000,
            burst: 20_000,
        }
    }
}

/// The running service; stops when dropped.
pub struct DnsService {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DnsService {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the service on its own thread, following `views`.
pub fn spawn(config: DnsConfig, views: watch::Receiver<Arc<ClusterView>>) -> Result<DnsService> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            what: "starting the DNS runtime".into(),
            source,
        })?;
    let (stop, stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || runtime.block_on(follow(config, views, stopped)))
        .map_err(|source| Error::Io {
            what: "starting the DNS thread".into(),
            source,
        })?;
    Ok(DnsService {
        stop,
        thread: Some(thread),
    })
}

struct Running {
    gateway: Ipv4Addr,
    _server: Server<Handler>,
}

async fn follow(
    config: DnsConfig,
    mut views: watch::Receiver<Arc<ClusterView>>,
    mut stopped: watch::Receiver<bool>,
) {
    tracing::info!(upstreams = ?config.upstreams.servers, port = config.port, "Serving DNS on every network's gateway.");
    let forwarder = Arc::new(Forwarder::new(config.upstreams.clone()));
    let limiter = Arc::new(RateLimiter::new(config.rate_limit, config.burst));
    let (zones_tx, zones_rx) = watch::channel(Arc::new(Zones::default()));
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    // The view the zones were last brought to: the next one is compared
    // with it, so a change costs its endpoints, not the cluster's.
    let mut last: Option<Arc<ClusterView>> = None;
    loop {
        let view = views.borrow_and_update().clone();
        zones_tx.send_if_modified(|zones| match &last {
            Some(before) => match Arc::make_mut(zones).update(before, &view) {
                Some(changed) => changed,
                None => replace(zones, Zones::from_view(&view)),
            },
            None => replace(zones, Zones::from_view(&view)),
        });
        last = Some(view);
        let zones = zones_tx.borrow().clone();
        running.retain(|id, r| {
            let keep = zones.get(id).is_some_and(|z| z.gateway == r.gateway);
            if !keep {
                tracing::info!(network = %id, gateway = %r.gateway, "No longer serving DNS on this gateway.");
            }
            keep
        });
        let mut failed = false;
        for zone in zones.by_network.values() {
            if running.contains_key(&zone.network) {
                continue;
            }
            let handler = Handler {
                network: zone.network.clone(),
                zones: zones_rx.clone(),
                forwarder: forwarder.clone(),
                limiter: limiter.clone(),
                ttl: config.ttl,
            };
            match bind(handler, SocketAddr::from((zone.gateway, config.port))) {
                Ok(server) => {
                    tracing::info!(network = %zone.suffix, gateway = %zone.gateway, "Serving DNS on the network's gateway.");
                    running.insert(
                        zone.network.clone(),
                        Running {
                            gateway: zone.gateway,
                            _server: server,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(network = %zone.suffix, gateway = %zone.gateway, %error, "Cannot serve DNS on the gateway; retrying.");
                    failed = true;
                }
            }
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(RETRY_BIND), if failed => {}
            _ = stopped.changed() => break,
        }
    }
}

/// Puts `fresh` in place of `zones`: whether they differ.
fn replace(zones: &mut Arc<Zones>, fresh: Zones) -> bool {
    if **zones == fresh {
        return false;
    }
    *zones = Arc::new(fresh);
    true
}

/// A server for one gateway. The sockets bind with IP_FREEBIND, so they
/// may come up before the datapath has put the address on its device.
fn bind(handler: Handler, addr: SocketAddr) -> Result<Server<Handler>> {
    let io = |what: &'static str| {
        move |source| Error::Io {
            what: format!("{what} {addr}"),
            source,
        }
    };
    let udp =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(io("opening UDP"))?;
    udp.set_freebind_v4(true).map_err(io("IP_FREEBIND for"))?;
    udp.set_reuse_address(true)
        .map_err(io("SO_REUSEADDR for"))?;
    // Room for bursts; the kernel caps it at net.core.rmem_max.
    let _ = udp.set_recv_buffer_size(1 << 21);
    udp.set_nonblocking(true).map_err(io("non-blocking"))?;
    udp.bind(&addr.into()).map_err(io("binding UDP"))?;
    let udp = tokio::net::UdpSocket::from_std(udp.into()).map_err(io("registering UDP"))?;

    let tcp =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(io("opening TCP"))?;
    tcp.set_freebind_v4(true).map_err(io("IP_FREEBIND for"))?;
    tcp.set_reuse_address(true)
        .map_err(io("SO_REUSEADDR for"))?;
    tcp.set_nonblocking(true).map_err(io("non-blocking"))?;
    tcp.bind(&addr.into()).map_err(io("binding TCP"))?;
    tcp.listen(1024).map_err(io("listening on"))?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into()).map_err(io("registering TCP"))?;

    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
    Ok(server)
}
