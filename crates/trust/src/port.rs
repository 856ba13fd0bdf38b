//! The guarded cluster-port server: limits before authentication
//! (connections per peer address and in total, a TLS handshake timeout, a
//! header timeout, a bounded life for connections without a node
//! certificate), TLS with node certificates, and the rule that a request
//! without a valid, unrevoked node certificate reaches only the enrollment
//! routes, and only if the cluster issued it (the allowlist of
//! [`Issued`]: node id and key match a record). Handlers learn who called
//! from the [`Peer`] request extension.

use socketplane_observe::events::{ClusterPortRefused, RefusedReason};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::issued::{Admission, Issued};
use crate::proof::EKM_LABEL;
use crate::tls::{key_fingerprint, peer_node_id};

/// How the port answers at the moment.
#[derive(Clone)]
pub enum PortMode {
    /// Nothing: this node has no credentials yet (a joiner before it
    /// enrolled). Connections are closed at once.
    Closed,
    /// Plain HTTP, no authentication (`--open`).
    Open,
    /// TLS with node certificates of the cluster CA.
    Tls(Arc<rustls::ServerConfig>),
}

/// Who is calling, as a request extension.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The node id of a verified node certificate (admitted or not: see
    /// `authorized`).
    pub node_id: Option<String>,
    /// This TLS session's exported keying material (enrollment proofs).
    pub ekm: Option<[u8; 32]>,
    /// Whether the caller may use every route (a member, or an open port).
    pub authorized: bool,
}

/// Limits that hold before anyone is authenticated.
#[derive(Clone, Debug)]
pub struct PortLimits {
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    /// How long a connection without a node certificate may live.
    pub anonymous_lifetime: Duration,
    pub max_connections: usize,
    pub max_per_ip: usize,
}

impl Default for PortLimits {
    fn default() -> Self {
        PortLimits {
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            anonymous_lifetime: Duration::from_secs(30),
            max_connections: 1024,
            max_per_ip: 64,
        }
    }
}

/// Node ids that may no longer connect (`cluster remove`).
#[derive(Clone, Default, Debug)]
pub struct Revoked(Arc<RwLock<HashSet<String>>>);

impl Revoked {
    pub fn replace(&self, ids: HashSet<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = ids;
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }
}

/// Counts connections, in total and per peer address.
#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Slot {
    fn take(counts: &Arc<Mutex<Counts>>, ip: IpAddr, limits: &PortLimits) -> Option<Slot> {
        let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
        let here = c.per_ip.get(&ip).copied().unwrap_or(0);
        if c.total >= limits.max_connections || here >= limits.max_per_ip {
            return None;
        }
        c.total += 1;
        c.per_ip.insert(ip, here + 1);
        Some(Slot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// What [`serve`] needs.
pub struct PortServer {
    pub listener: TcpListener,
    pub router: Router,
    pub mode: watch::Receiver<PortMode>,
    pub limits: PortLimits,
    pub revoked: Revoked,
    /// The certificates the cluster issued.
    pub issued: Issued,
    /// Paths a caller without a node certificate may use.
    pub anonymous_paths: &'static [&'static str],
}

/// Serves the port until the task is dropped.
pub async fn serve(port: PortServer) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let shared = Arc::new(port);
    loop {
        let (tcp, addr) = match shared.listener.accept().await {
            Ok(x) => x,
            Err(error) => {
                // EMFILE and the like: wait instead of spinning.
                tracing::warn!(%error, "Could not accept a cluster-port connection.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&counts, addr.ip(), &shared.limits) else {
            refusal(RefusedReason::Limit, addr);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mode = shared.mode.borrow().clone();
            match mode {
                PortMode::Closed => {}
                PortMode::Open => {
                    let peer = Peer {
                        addr,
                        node_id: None,
                        ekm: None,
                        authorized: true,
                    };
                    serve_conn(tcp, peer, None, &shared).await;
                }
                PortMode::Tls(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let tls = match tokio::time::timeout(
                        shared.limits.handshake_timeout,
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(peer = %addr, %error, "TLS handshake failed.");
                            refusal(RefusedReason::Tls, addr);
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %addr, "TLS handshake timed out.");
                            refusal(RefusedReason::Limit, addr);
                            return;
                        }
                    };
                    let (_, conn) = tls.get_ref();
                    let cert = conn.peer_certificates().and_then(|c| c.first());
                    let identity =
                        cert.and_then(|c| Some((peer_node_id(c).ok()?, key_fingerprint(c).ok()?)));
                    let node_id = identity.as_ref().map(|(id, _)| id.clone());
                    let key = identity.map(|(_, key)| key);
                    let mut ekm = [0u8; 32];
                    let ekm = conn
                        .export_keying_material(&mut ekm, EKM_LABEL, None)
                        .ok()
                        .map(|e| *e);
                    // A certificate issued a moment ago may miss this
                    // node's view: one fresh look before the connection
                    // is given the short life of an anonymous one.
                    let authorized = match (&node_id, &key) {
                        (Some(id), Some(key)) => {
                            !shared.revoked.contains(id)
                                && shared.issued.admits(id, key).await == Admission::Admitted
                        }
                        _ => false,
                    };
                    let peer = Peer {
                        addr,
                        node_id,
                        ekm,
                        authorized,
                    };
                    if authorized {
                        serve_conn(tls, peer, key, &shared).await;
                    } else {
                        let life = shared.limits.anonymous_lifetime;
                        let _ =
                            tokio::time::timeout(life, serve_conn(tls, peer, key, &shared)).await;
                    }
                }
            }
        });
    }
}

/// Counted in `socketplane_cluster_port_refused_total{reason}`.
fn refusal(reason: RefusedReason, peer: std::net::SocketAddr) {
    socketplane_observe::emit(ClusterPortRefused {
        reason,
        peer: Some(peer),
    });
}

fn refused(status: StatusCode, why: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(why));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// Whether the node certificate `id` with key fingerprint `key` may use
/// every route now: not removed, and issued by the cluster.
/// Only `fresh` checks wait for a fresh view on a miss (the enrollment
/// routes need no certificate, so they take the view as it is).
async fn admitted(
    shared: &PortServer,
    id: &str,
    key: &[u8; 32],
    fresh: bool,
) -> Result<(), RefusedReason> {
    if shared.revoked.contains(id) {
        return Err(RefusedReason::Removed);
    }
    let admission = match fresh {
        true => shared.issued.admits(id, key).await,
        false => shared.issued.check(id, key),
    };
    match admission {
        Admission::Admitted if !shared.revoked.contains(id) => Ok(()),
        Admission::Admitted => Err(RefusedReason::Removed),
        Admission::Unknown | Admission::WrongKey if !fresh => Err(RefusedReason::NotIssued),
        Admission::Unknown | Admission::WrongKey => {
            tracing::warn!(node = %id, "Refused a certificate of the cluster CA that the cluster did not issue to this node id (minted with a kept CA key?).");
            Err(RefusedReason::NotIssued)
        }
    }
}

async fn serve_conn<IO>(io: IO, peer: Peer, key: Option<[u8; 32]>, shared: &Arc<PortServer>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let shared = svc_shared.clone();
        let mut peer = peer.clone();
        async move {
            // Checked per request: a node removed while connected is cut off.
            let anonymous = shared.anonymous_paths.contains(&req.uri().path());
            let mut reason = RefusedReason::Tls;
            if let (Some(id), Some(key)) = (&peer.node_id, &key) {
                peer.authorized = match admitted(&shared, id, key, !anonymous).await {
                    Ok(()) => true,
                    Err(why) => {
                        reason = why;
                        false
                    }
                };
            }
            if !peer.authorized && !anonymous {
                refusal(reason, peer.addr);
                return Ok::<_, std::convert::Infallible>(refused(
                    StatusCode::FORBIDDEN,
                    "this route needs a node certificate of this cluster",
                ));
            }
            req.extensions_mut().insert(peer);
            shared.router.clone().oneshot(req.map(Body::new)).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        .serve_connection(TokioIo::new(io), svc);
    if let Err(error) = conn.await {
        tracing::debug!(%error, "A cluster-port connection ended with an error.");
    }
}
