//! The agent's listeners: the local API on a unix socket (mode 0600), the
//! cluster port on TCP (Raft and agent-to-agent, token-checked), and mDNS.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use socketplane_api::rest::ApiError;
use socketplane_api::TOKEN_HEADER;
use socketplane_discovery::{Advertisement, Discovery};
use tokio::task::JoinHandle;

use crate::agent::Agent;

pub async fn serve_local_api(agent: Arc<Agent>) -> anyhow::Result<JoinHandle<()>> {
    let path = agent.cfg.socket.clone();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by a crashed agent would make bind fail.
    if path.exists() {
        std::fs::remove_file(&path)
            .with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .with_context(|| format!("binding the local API socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    tracing::info!(socket = %path.display(), "Serving the local API.");
    let app = crate::api::router(agent);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The local API server stopped.");
        }
    }))
}

/// What a peer learns about this node on the cluster port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub cluster: String,
    pub node_id: String,
    pub node_name: String,
    pub member: bool,
}

async fn peer_info(State(agent): State<Arc<Agent>>) -> Json<PeerInfo> {
    Json(PeerInfo {
        cluster: agent.cfg.cluster.clone(),
        node_id: agent.identity().id.clone(),
        node_name: agent.identity().name.clone(),
        member: agent.is_ready(),
    })
}

async fn check_token(State(agent): State<Arc<Agent>>, req: Request, next: Next) -> Response {
    if let Some(token) = &agent.cfg.token {
        let given = req
            .headers()
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok());
        if given != Some(token.as_str()) {
            return (
                StatusCode::UNAUTHORIZED,
                Json(ApiError {
                    error: "missing or wrong cluster token".into(),
                }),
            )
                .into_response();
        }
    }
    next.run(req).await
}

pub async fn serve_cluster_port(agent: Arc<Agent>) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(agent.cfg.listen)
        .await
        .with_context(|| format!("binding the cluster port {}", agent.cfg.listen))?
        // Raft messages are small and latency-bound.
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    let mut app = Router::new()
        .route("/cluster/v1/info", get(peer_info))
        .layer(middleware::from_fn_with_state(agent.clone(), check_token))
        .with_state(agent.clone());
    if let Some(embedded) = agent.embedded() {
        // The store checks the token on its own routes.
        app = app.merge(embedded.router());
    }
    tracing::info!(listen = %agent.cfg.listen, "Serving the cluster port.");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The cluster port server stopped.");
        }
    }))
}

/// Advertises this node on the underlay interface and feeds discovered
/// peers of the same cluster to the join loop.
pub fn start_discovery(agent: Arc<Agent>) -> anyhow::Result<Discovery> {
    let (iface, addr) = agent.underlay();
    let ad = Advertisement {
        node_name: agent.identity().name.clone(),
        node_id: agent.identity().id.clone(),
        cluster: agent.cfg.cluster.clone(),
        addr,
        port: agent.cfg.listen.port(),
        iface: iface.to_string(),
    };
    let (discovery, mut peers) = Discovery::start(ad).context("starting mDNS discovery")?;
    let join = agent.join_sender();
    tokio::spawn(async move {
        while let Some(peer) = peers.recv().await {
            tracing::debug!(peer = %peer.node_name, addr = %peer.addr, "Discovered a peer.");
            if join.send(peer.addr).is_err() {
                break;
            }
        }
    });
    Ok(discovery)
}
