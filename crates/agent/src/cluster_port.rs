//! The cluster port (TCP): what a peer may ask this node (`/cluster/v1/`),
//! the enrollment routes and the embedded store's Raft routes, behind the
//! guarded server of `socketplane-trust`: TLS with node certificates (or
//! plain HTTP for an `--open` cluster), limits before authentication, and
//! only the enrollment routes for a caller without a node certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use socketplane_trust::{PortLimits, PortServer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::enrollment::{Standing, ANONYMOUS_PATHS};
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
/// member, its standing (trust), and the store's routes.
pub struct ClusterPort {
    pub listen: SocketAddr,
    pub standing: Arc<Standing>,
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
    ready: watch::Receiver<bool>,
}

async fn peer_info(State(s): State<PortState>) -> Json<PeerInfo> {
    Json(PeerInfo {
        member: *s.ready.borrow(),
        ..s.info
    })
}

/// Binds the port and serves it until the task is aborted.
pub async fn serve(port: ClusterPort) -> Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(port.listen)
        .await
        .map_err(Error::io(format!(
            "binding the cluster port {}",
            port.listen
        )))?;
    let state = PortState {
        info: PeerInfo {
            cluster: port.cluster,
            node_id: port.node_id,
            node_name: port.node_name,
            member: false,
        },
        ready: port.ready,
    };
    let mut app = Router::new()
        .route("/cluster/v1/info", get(peer_info))
        .with_state(state)
        .merge(port.standing.routes());
    if let Some(routes) = port.store_routes {
        app = app.merge(routes);
    }
    if port.standing.open {
        tracing::warn!(listen = %port.listen, "Serving the cluster port WITHOUT authentication or encryption (--open): any host that reaches it controls the cluster.");
    } else {
        tracing::info!(listen = %port.listen, "Serving the cluster port (TLS, node certificates).");
    }
    let server = PortServer {
        listener,
        router: app,
        mode: port.standing.mode(),
        limits: PortLimits::default(),
        revoked: port.standing.revoked.clone(),
        issued: port.standing.issued.clone(),
        anonymous_paths: ANONYMOUS_PATHS,
    };
    Ok(tokio::spawn(socketplane_trust::serve(server)))
}
