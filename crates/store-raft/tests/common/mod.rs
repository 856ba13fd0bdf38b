//! Test harness: in-process embedded store nodes over real loopback TCP.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socketplane_store::{MemberRole, Store};
use socketplane_store_raft::{EmbeddedConfig, EmbeddedStore, RaftTiming};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn init_tracing() {
    // reqwest is built with rustls and no provider of its own (the
    // workspace uses ring): plain `reqwest::Client::new()` needs this.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,openraft=off".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Node {
    pub id: u64,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub cfg: EmbeddedConfig,
    pub store: Arc<EmbeddedStore>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

pub fn config(id: u64, cluster: &str, dir: PathBuf, addr: SocketAddr) -> EmbeddedConfig {
    let mut cfg = EmbeddedConfig::new(id, cluster, dir, addr);
    cfg.timing = RaftTiming::fast();
    cfg.replace_after = Duration::from_secs(2);
    cfg
}

/// Binds a free loopback port.
pub async fn listener(addr: Option<SocketAddr>) -> TcpListener {
    let addr = addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    // The port may linger briefly after a node stopped.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

impl Node {
    /// Starts a node on a fresh port (or `addr`) with `cfg_fn` applied to
    /// its config.
    pub async fn start(
        id: u64,
        cluster: &str,
        dir: PathBuf,
        addr: Option<SocketAddr>,
        cfg_fn: impl FnOnce(&mut EmbeddedConfig),
    ) -> Node {
        let l = listener(addr).await;
        let addr = l.local_addr().unwrap();
        let mut cfg = config(id, cluster, dir.clone(), addr);
        cfg_fn(&mut cfg);
        Self::start_with(cfg, l).await
    }

    pub async fn start_with(cfg: EmbeddedConfig, l: TcpListener) -> Node {
        let store = EmbeddedStore::open(cfg.clone()).await.expect("open store");
        let server = serve(&store, l);
        Node {
            id: cfg.node_id,
            addr: cfg.advertise,
            dir: cfg.data_dir.clone(),
            cfg,
            store,
            server: Some(server),
        }
    }

    pub fn dyn_store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Stops the node (as if its process stopped) and frees its port.
    pub async fn stop(&mut self) {
        self.store.shutdown().await;
        if let Some((tx, h)) = self.server.take() {
            let _ = tx.send(());
            h.abort();
            let _ = h.await;
        }
    }

    /// Stops only the node's listener: peers can no longer reach it.
    pub async fn stop_listener(&mut self) {
        if let Some((tx, h)) = self.server.take() {
            let _ = tx.send(());
            h.abort();
            let _ = h.await;
        }
    }

    /// Serves the running store again on its address (after
    /// [`stop_listener`](Self::stop_listener)).
    pub async fn start_listener(&mut self) {
        assert!(self.server.is_none(), "listener still running");
        let l = listener(Some(self.addr)).await;
        self.server = Some(serve(&self.store, l));
    }

    /// Restarts a stopped node from its data dir on the same address.
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "node still running");
        let l = listener(Some(self.addr)).await;
        let n = Self::start_with(self.cfg.clone(), l).await;
        *self = n;
    }
}

/// Serves a store's routes on `l` until the sender fires.
fn serve(store: &Arc<EmbeddedStore>, l: TcpListener) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let router = store.router();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        use axum::serve::ListenerExt;
        let l = l.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(l, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    (tx, server)
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((tx, h)) = self.server.take() {
            let _ = tx.send(());
            h.abort();
        }
    }
}

/// Starts an n-node cluster: node 1 bootstraps, the others join it.
pub async fn cluster(
    n: usize,
    cluster_name: &str,
    root: &std::path::Path,
    cfg_fn: impl Fn(&mut EmbeddedConfig),
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let id = i as u64 + 1;
        let node = Node::start(id, cluster_name, root.join(format!("n{id}")), None, &cfg_fn).await;
        if i == 0 {
            node.store.bootstrap().await.expect("bootstrap");
        } else {
            node.store.join(nodes_addr(&nodes)).await.expect("join");
        }
        nodes.push(node);
    }
    nodes
}

fn nodes_addr(nodes: &[Node]) -> SocketAddr {
    nodes[0].addr
}

/// Waits until `f` holds, or panics after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader's node id as seen by `node`.
pub async fn leader_of(node: &Node) -> Option<u64> {
    node.store.status().await.ok()?.leader?.parse().ok()
}

pub async fn voters(node: &Node) -> Vec<u64> {
    let s = node.store.status().await.unwrap();
    let mut v: Vec<u64> = s
        .members
        .iter()
        .filter(|m| m.role != MemberRole::Replica)
        .map(|m| m.id.parse().unwrap())
        .collect();
    v.sort();
    v
}
