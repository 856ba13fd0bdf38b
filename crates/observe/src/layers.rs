//! Middleware that makes each request of the local API and of the Docker
//! plugin an event. Add with `.layer(axum::middleware::from_fn(…))`.

use axum::extract::{MatchedPath, Request};
use axum::http::header::USER_AGENT;
use axum::middleware::Next;
use axum::response::Response;

use crate::events::{emit, origin_of, ApiRequest, DockerRequest};

/// Counts a local API request by its matched route and its origin
/// (`User-Agent`: `socketplane-cni…` is the CNI plugin, `socketplane…` the
/// CLI).
pub async fn count_api(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let origin = origin_of(req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()));
    let response = next.run(req).await;
    emit(ApiRequest {
        route: &route,
        method: &method,
        origin,
        status: response.status().as_u16(),
    });
    response
}

/// Plugin methods Docker calls; anything else is counted as "other", so a
/// caller cannot grow the label set.
const DOCKER_METHODS: &[&str] = &[
    "Plugin.Activate",
    "NetworkDriver.GetCapabilities",
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.EndpointOperInfo",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "NetworkDriver.DiscoverNew",
    "NetworkDriver.DiscoverDelete",
    "NetworkDriver.ProgramExternalConnectivity",
    "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.AllocateNetwork",
    "NetworkDriver.FreeNetwork",
    "IpamDriver.GetCapabilities",
    "IpamDriver.GetDefaultAddressSpaces",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
];

/// Counts a Docker plugin request by its method (the path).
pub async fn count_docker(req: Request, next: Next) -> Response {
    let path = req.uri().path().trim_start_matches('/');
    let method = DOCKER_METHODS
        .iter()
        .find(|m| **m == path)
        .copied()
        .unwrap_or("other");
    let response = next.run(req).await;
    emit(DockerRequest {
        method,
        status: response.status().as_u16(),
    });
    response
}
