//! The cluster port (TCP): what a peer may ask this node (`/cluster/v1/`,
//! token-checked) and the embedded store's Raft routes, which check the
//! token themselves.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use socketplane_api::rest::ApiError;
use socketplane_store_raft::TOKEN_HEADER;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// What a peer learns about this node on the cluster port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerInfo {
    pub cluster: String,
    pub node_id: String,
    pub node_name: String,
    pub member: bool,
}

/// What the cluster port needs: this node's description, whether it is a
/// member, the token, and the store's routes.
pub struct ClusterPort {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub cluster: String,
    pub node_id: String,
    pub node_name: String,
    pub ready: watch::Receiver<bool>,
    /// The embedded store's routes, if the store is embedded.
    pub store_routes: Option<Router>,
}

#[derive(Clone)]
struct PortState {
    info: PeerInfo,
    token: Option<String>,
    ready: watch::Receiver<bool>,
}

async fn peer_info(State(s): State<PortState>) -> Json<PeerInfo> {
    Json(PeerInfo {
        member: *s.ready.borrow(),
        ..s.info
    })
}

async fn check_token(State(s): State<PortState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
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

/// Binds the port and serves it until the task is aborted.
pub async fn serve(port: ClusterPort) -> Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(port.listen)
        .await
        .map_err(Error::io(format!(
            "binding the cluster port {}",
            port.listen
        )))?
        // Raft messages are small and latency-bound.
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    let state = PortState {
        info: PeerInfo {
            cluster: port.cluster,
            node_id: port.node_id,
            node_name: port.node_name,
            member: false,
        },
        token: port.token,
        ready: port.ready,
    };
    let mut app = Router::new()
        .route("/cluster/v1/info", get(peer_info))
        .layer(middleware::from_fn_with_state(state.clone(), check_token))
        .with_state(state);
    if let Some(routes) = port.store_routes {
        app = app.merge(routes);
    }
    tracing::info!(listen = %port.listen, "Serving the cluster port.");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The cluster port server stopped.");
        }
    }))
}
