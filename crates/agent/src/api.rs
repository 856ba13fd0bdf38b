//! The local REST API on the agent's unix socket (`/v1/...`). Documented in
//! `docs/openapi.yaml`. Bodies are parsed by hand so malformed JSON gets the
//! same JSON error shape as every other failure.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use socketplane_api::rest::{
    ApiError, AttachEndpoint, BindRequest, CreateNetwork, EndpointInfo, JoinRequest, NetworkInfo,
};
use socketplane_api::EndpointRecord;

use crate::agent::Agent;
use crate::error::OpError;

/// Requests larger than this are refused: nothing we take is bigger.
pub const MAX_BODY: usize = 64 * 1024;
/// How long an attach or detach waits for the local datapath.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(ApiError {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, OpError>;

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| OpError::Invalid(format!("malformed request body: {e}")))
}

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/cluster/join", post(cluster_join))
        .route("/v1/cluster/leave", post(cluster_leave))
        .route("/v1/cluster/bind", post(cluster_bind))
        .route("/v1/networks", get(list_networks).post(create_network))
        .route(
            "/v1/networks/{name}",
            get(network_info).delete(delete_network),
        )
        .route("/v1/endpoints", get(list_endpoints).post(attach))
        .route("/v1/endpoints/{id}", get(endpoint_info).delete(detach))
        .fallback(|| async { OpError::NotFound("no such API path".into()) })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(agent)
}

async fn info(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    Json(agent.info())
}

async fn cluster_status(State(agent): State<Arc<Agent>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(agent.cluster_status().await?))
}

async fn cluster_join(
    State(agent): State<Arc<Agent>>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let req: JoinRequest = parse_body(&body)?;
    agent.request_join(&req.addr).await?;
    Ok(Json(agent.info()))
}

async fn cluster_leave(State(agent): State<Arc<Agent>>) -> ApiResult<impl IntoResponse> {
    agent.leave().await?;
    Ok(Json(agent.info()))
}

async fn cluster_bind(
    State(agent): State<Arc<Agent>>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let req: BindRequest = parse_body(&body)?;
    agent.bind(&req.iface)?;
    Ok(Json(agent.info()))
}

async fn list_networks(State(agent): State<Arc<Agent>>) -> ApiResult<impl IntoResponse> {
    let ops = agent.ops()?;
    let endpoints = ops.list_endpoints().await?;
    let networks = ops.list_networks().await?;
    Ok(Json(
        networks
            .into_iter()
            .map(|n| NetworkInfo {
                endpoints: endpoints.iter().filter(|e| e.network == n.name).count(),
                network: n,
            })
            .collect::<Vec<_>>(),
    ))
}

async fn create_network(
    State(agent): State<Arc<Agent>>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let req: CreateNetwork = parse_body(&body)?;
    let net = agent.ops()?.create_network(&req).await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkInfo {
            network: net,
            endpoints: 0,
        }),
    ))
}

async fn network_info(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let ops = agent.ops()?;
    let (network, _) = ops.get_network(&name).await?;
    let endpoints = ops
        .list_endpoints()
        .await?
        .iter()
        .filter(|e| e.network == name)
        .count();
    Ok(Json(NetworkInfo { network, endpoints }))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_network(
    State(agent): State<Arc<Agent>>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    let rev = agent.ops()?.delete_network(&name, q.force).await?;
    agent.wait_applied(rev, CONVERGE_TIMEOUT).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    local: bool,
    network: Option<String>,
}

async fn list_endpoints(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let endpoints = agent.ops()?.list_endpoints().await?;
    let mut out = Vec::new();
    for ep in endpoints {
        if q.local && ep.node != agent.node_id() {
            continue;
        }
        if q.network.as_ref().is_some_and(|n| n != &ep.network) {
            continue;
        }
        out.push(agent.endpoint_info(ep).await?);
    }
    Ok(Json(out))
}

async fn attach(State(agent): State<Arc<Agent>>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let req: AttachEndpoint = parse_body(&body)?;
    let ops = agent.ops()?;
    let (ep, rev) = ops.attach(&req, None).await?;
    if let Err(error) = agent.wait_applied(rev, CONVERGE_TIMEOUT).await {
        // Do not leave a half-made endpoint holding an address.
        if let Err(undo) = ops.detach(&ep.id).await {
            tracing::warn!(endpoint = %ep.id, error = %undo, "Could not roll back a failed attach.");
        }
        return Err(error);
    }
    Ok((StatusCode::CREATED, Json(agent.endpoint_info(ep).await?)))
}

async fn endpoint_info(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointInfo>> {
    let (ep, _): (EndpointRecord, _) = agent.ops()?.get_endpoint(&id).await?;
    Ok(Json(agent.endpoint_info(ep).await?))
}

async fn detach(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let rev = agent.ops()?.detach(&id).await?;
    agent.wait_applied(rev, CONVERGE_TIMEOUT).await?;
    Ok(StatusCode::NO_CONTENT)
}
