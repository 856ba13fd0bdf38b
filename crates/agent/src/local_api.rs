//! The local REST API on the agent's unix socket (`/v1/...`), documented in
//! `docs/openapi.yaml`. It works through two narrow handles: the
//! [`Cluster`] for networks and endpoints, and [`Control`] for this node's
//! membership. Bodies are parsed by hand so malformed JSON gets the same
//! JSON error shape as every other failure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use socketplane_api::rest::{
    AgentInfo, ApiError, AttachEndpoint, BindRequest, ClusterStatus, CreateNetwork, EndpointInfo,
    JoinRequest, NetworkInfo,
};
use socketplane_cluster::{Cluster, ErrorKind};
use tokio::task::JoinHandle;

use crate::error::Result;

/// Requests larger than this are refused: nothing we take is bigger.
pub const MAX_BODY: usize = 64 * 1024;
/// How long an attach or detach waits for the local datapath.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Every request is answered within this (a 503 past it): longer than the
/// store's own deadline plus [`CONVERGE_TIMEOUT`], shorter than the
/// client's (`socketplane_client::DEFAULT_TIMEOUT`).
const REQUEST_DEADLINE: Duration = Duration::from_secs(35);

/// This node's membership, as the API drives it.
#[async_trait]
pub trait Control: Send + Sync + 'static {
    fn info(&self) -> AgentInfo;
    async fn status(&self) -> socketplane_cluster::Result<ClusterStatus>;
    async fn join(&self, addr: &str) -> socketplane_cluster::Result<()>;
    async fn leave(&self) -> socketplane_cluster::Result<()>;
    fn bind(&self, iface: &str) -> socketplane_cluster::Result<()>;
    /// The host end of a local endpoint's veth (the datapath names it).
    fn host_ifname(&self, _endpoint_id: &str) -> Option<String> {
        None
    }
    /// The join token other hosts need (`cluster token`).
    async fn token(&self) -> socketplane_cluster::Result<String>;
    /// A new join token; the old one stops admitting hosts (`cluster token rotate`).
    async fn rotate_token(&self) -> socketplane_cluster::Result<String>;
}

#[derive(Clone)]
struct Api {
    cluster: Arc<Cluster>,
    control: Arc<dyn Control>,
}

impl Api {
    fn cluster(&self) -> ApiResult<&Cluster> {
        Ok(self.cluster.member()?)
    }

    /// An endpoint as answered: with its host-side interface when it is
    /// one of this host's and lives in a namespace of its own.
    async fn endpoint_info(
        &self,
        cluster: &Cluster,
        ep: socketplane_api::EndpointRecord,
    ) -> ApiResult<EndpointInfo> {
        let local = ep.node == cluster.node_id() && ep.netns.is_some();
        let id = ep.id.clone();
        let mut info = cluster.endpoint_info(ep).await?;
        if local {
            info.host_ifname = self.control.host_ifname(&id);
        }
        Ok(info)
    }
}

/// An error as the API answers it: a status and a sentence.
struct ApiFailure(socketplane_cluster::Error);

impl From<socketplane_cluster::Error> for ApiFailure {
    fn from(e: socketplane_cluster::Error) -> Self {
        ApiFailure(e)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status = match self.0.kind() {
            ErrorKind::Invalid => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let error = crate::report(&self.0);
        (status, Json(ApiError { error })).into_response()
    }
}

type ApiResult<T> = std::result::Result<T, ApiFailure>;

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        ApiFailure(socketplane_cluster::Error::Invalid(format!(
            "malformed request body: {e}"
        )))
    })
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/cluster/join", post(cluster_join))
        .route("/v1/cluster/leave", post(cluster_leave))
        .route("/v1/cluster/bind", post(cluster_bind))
        .route("/v1/cluster/token", get(cluster_token))
        .route("/v1/cluster/token/rotate", post(rotate_token))
        .route("/v1/cluster/nodes/{node}", delete(cluster_remove))
        .route("/v1/networks", get(list_networks).post(create_network))
        .route(
            "/v1/networks/{name}",
            get(network_info).delete(delete_network),
        )
        .route("/v1/endpoints", get(list_endpoints).post(attach))
        .route("/v1/endpoints/{id}", get(endpoint_info).delete(detach))
        .route("/v1/debug/store", get(store_dump))
        .fallback(|| async {
            ApiFailure(socketplane_cluster::Error::NotFound(
                "no such API path".into(),
            ))
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(deadline))
        .layer(axum::middleware::from_fn(
            socketplane_observe::layers::count_api,
        ))
        .with_state(api)
}

/// Answers every request within [`REQUEST_DEADLINE`]. Handlers that
/// write run their work in a task of its own, so a request cut short here
/// (or by a client that gave up) never leaves a write half done.
async fn deadline(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let what = format!("{} {}", req.method(), req.uri().path());
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiFailure(socketplane_cluster::Error::Unavailable(format!(
            "{what} did not complete within {} s (the store or the datapath is stuck; see the agent's log)",
            REQUEST_DEADLINE.as_secs()
        )))
        .into_response(),
    }
}

/// Serves the API on `path` (mode 0600) until the task is aborted.
pub async fn serve(
    path: &Path,
    cluster: Arc<Cluster>,
    control: Arc<dyn Control>,
) -> Result<JoinHandle<()>> {
    let listener = crate::private_socket::bind(path)?;
    tracing::info!(socket = %path.display(), "Serving the local API.");
    let app = router(Api { cluster, control });
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The local API server stopped.");
        }
    }))
}

async fn info(State(api): State<Api>) -> impl IntoResponse {
    Json(api.control.info())
}

async fn cluster_status(State(api): State<Api>) -> ApiResult<impl IntoResponse> {
    Ok(Json(api.control.status().await?))
}

async fn cluster_join(State(api): State<Api>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let req: JoinRequest = parse_body(&body)?;
    api.control.join(&req.addr).await?;
    Ok(Json(api.control.info()))
}

async fn cluster_leave(State(api): State<Api>) -> ApiResult<impl IntoResponse> {
    api.control.leave().await?;
    Ok(Json(api.control.info()))
}

/// Every key of the cluster store with its value, for diagnosis and for
/// tests that check a failed request wrote nothing. Only root reaches this
/// socket; the store holds no secrets.
async fn store_dump(State(api): State<Api>) -> ApiResult<impl IntoResponse> {
    let listing = api
        .cluster()?
        .store()
        .list("")
        .await
        .map_err(socketplane_cluster::Error::from)?;
    let keys: std::collections::BTreeMap<String, String> = listing
        .kvs
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
        .collect();
    Ok(Json(keys))
}

/// `cluster remove NODE`: reclaims a dead node's addresses at once.
async fn cluster_remove(
    State(api): State<Api>,
    UrlPath(node): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(api.cluster()?.remove_node(&node).await?))
}

async fn cluster_bind(State(api): State<Api>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let req: BindRequest = parse_body(&body)?;
    api.control.bind(&req.iface)?;
    Ok(Json(api.control.info()))
}

async fn cluster_token(State(api): State<Api>) -> ApiResult<impl IntoResponse> {
    Ok(Json(socketplane_api::rest::ClusterToken {
        token: api.control.token().await?,
    }))
}

async fn rotate_token(State(api): State<Api>) -> ApiResult<impl IntoResponse> {
    Ok(Json(socketplane_api::rest::ClusterToken {
        token: api.control.rotate_token().await?,
    }))
}

async fn list_networks(State(api): State<Api>) -> ApiResult<impl IntoResponse> {
    let cluster = api.cluster()?;
    let endpoints = cluster.list_endpoints().await?;
    let networks = cluster.list_networks().await?;
    Ok(Json(
        networks
            .into_iter()
            .map(|n| NetworkInfo {
                endpoints: endpoints.iter().filter(|e| e.network == n.id).count(),
                notes: crate::network_notes::notes(&n, cluster.view().as_deref()),
                network: n,
            })
            .collect::<Vec<_>>(),
    ))
}

async fn create_network(State(api): State<Api>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let req: CreateNetwork = parse_body(&body)?;
    let net = api.cluster()?.create_network(&req).await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkInfo {
            notes: crate::network_notes::notes(&net, api.cluster()?.view().as_deref()),
            network: net,
            endpoints: 0,
        }),
    ))
}

async fn network_info(
    State(api): State<Api>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    let cluster = api.cluster()?;
    let (network, _) = cluster.find_network(&name).await?;
    let endpoints = cluster
        .list_endpoints()
        .await?
        .iter()
        .filter(|e| e.network == network.id)
        .count();
    let notes = crate::network_notes::notes(&network, cluster.view().as_deref());
    Ok(Json(NetworkInfo {
        network,
        endpoints,
        notes,
    }))
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_network(
    State(api): State<Api>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<impl IntoResponse> {
    let cluster = api.cluster()?;
    let rev = cluster.delete_network(&name, q.force).await?;
    cluster.wait_applied(rev, CONVERGE_TIMEOUT).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    local: bool,
    /// A network's name or id.
    network: Option<String>,
    /// Only endpoints of this container (runtime id), interface or origin
    /// (`cni`): how the CNI plugin finds its attachments.
    container_id: Option<String>,
    ifname: Option<String>,
    origin: Option<String>,
}

async fn list_endpoints(
    State(api): State<Api>,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let cluster = api.cluster()?;
    let network = match &q.network {
        Some(n) => match cluster.find_network(n).await {
            Ok((network, _)) => Some(network.id),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Json(Vec::new())),
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let mut out: Vec<EndpointInfo> = Vec::new();
    for ep in cluster.list_endpoints().await? {
        if q.local && ep.node != cluster.node_id() {
            continue;
        }
        if network.as_ref().is_some_and(|n| n != &ep.network) {
            continue;
        }
        let differs = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_some_and(|w| have.as_ref() != Some(w))
        };
        if differs(&q.container_id, &ep.container_id)
            || differs(&q.ifname, &Some(ep.ifname.clone()))
            || differs(&q.origin, &ep.origin)
        {
            continue;
        }
        out.push(api.endpoint_info(cluster, ep).await?);
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
struct AttachQuery {
    /// The caller's id for this request: a retry with the same id returns
    /// the endpoint the first try made instead of making another.
    request_id: Option<String>,
}

async fn attach(
    State(api): State<Api>,
    Query(q): Query<AttachQuery>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let started = std::time::Instant::now();
    let req: AttachEndpoint = parse_body(&body)?;
    api.cluster()?;
    // In a task of its own: the write and its rollback run to the end even
    // if the request is dropped (the deadline, or a client that gave up).
    // An attach that succeeds after its caller went away is undone, unless
    // a retry with the same key finds it.
    let cluster = api.cluster.clone();
    let keyed = socketplane_cluster::attach_is_keyed(&req, q.request_id.as_deref());
    let undo = api.cluster.clone();
    let answer = answered_or_undone(
        async move { attach_and_wait(&cluster, &req, q.request_id.as_deref(), started).await },
        move |(_, Json(info)): (StatusCode, Json<EndpointInfo>)| async move {
            if keyed {
                return;
            }
            tracing::info!(endpoint = %info.endpoint.id, "An attach completed after its caller went away; undoing it.");
            if undo.detach(&info.endpoint.id).await.is_err() {
                undo.detach_later(info.endpoint.id.clone());
            }
        },
    );
    // The endpoint is this host's: with its host-side interface.
    answer.await.map(|(status, Json(mut info))| {
        if info.endpoint.netns.is_some() {
            info.host_ifname = api.control.host_ifname(&info.endpoint.id);
        }
        (status, Json(info))
    })
}

/// Runs `work` in a task of its own, so it runs to the end even if the
/// request is dropped, and returns its answer. A success that finds its
/// caller gone (dropped before the answer arrived) is handed to `undo`:
/// the caller was told it failed, so it must not stay done.
async fn answered_or_undone<T, W, U, F>(work: W, undo: U) -> ApiResult<T>
where
    T: Send + 'static,
    W: std::future::Future<Output = ApiResult<T>> + Send + 'static,
    U: FnOnce(T) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if let Err(Ok(done)) = tx.send(work.await) {
            undo(done).await;
        }
    });
    rx.await.unwrap_or_else(|_| {
        Err(ApiFailure(socketplane_cluster::Error::Internal(
            "the attach task failed".into(),
        )))
    })
}

async fn attach_and_wait(
    cluster: &Arc<Cluster>,
    req: &AttachEndpoint,
    request_id: Option<&str>,
    started: std::time::Instant,
) -> ApiResult<(StatusCode, Json<EndpointInfo>)> {
    let (ep, rev) = cluster.attach_request(req, request_id).await?;
    if let Err(error) = cluster.wait_endpoint(&ep.id, rev, CONVERGE_TIMEOUT).await {
        // Do not leave a half-made endpoint holding an address.
        if let Err(undo) = cluster.detach(&ep.id).await {
            tracing::warn!(endpoint = %ep.id, error = %undo, "Could not roll back a failed attach; retrying in the background.");
            cluster.detach_later(ep.id.clone());
        }
        return Err(error.into());
    }
    socketplane_observe::emit(socketplane_observe::events::AttachApplied {
        network: &ep.network,
        endpoint: &ep.id,
        elapsed: started.elapsed(),
    });
    Ok((StatusCode::CREATED, Json(cluster.endpoint_info(ep).await?)))
}

async fn endpoint_info(
    State(api): State<Api>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<EndpointInfo>> {
    let cluster = api.cluster()?;
    let (ep, _) = cluster.get_endpoint(&id).await?;
    Ok(Json(api.endpoint_info(cluster, ep).await?))
}

async fn detach(
    State(api): State<Api>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<impl IntoResponse> {
    let cluster = api.cluster()?;
    let rev = cluster.detach(&id).await?;
    cluster.wait_applied(rev, CONVERGE_TIMEOUT).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use proptest::prelude::*;
    use socketplane_store::MemStore;
    use tower::ServiceExt;

    use super::*;

    /// A node that refuses every membership change.
    struct Refuses;

    #[async_trait]
    impl Control for Refuses {
        fn info(&self) -> AgentInfo {
            unreachable!("answered only after a join or bind, which this node refuses")
        }
        async fn status(&self) -> socketplane_cluster::Result<ClusterStatus> {
            Err(socketplane_cluster::Error::Unavailable("test".into()))
        }
        async fn join(&self, _: &str) -> socketplane_cluster::Result<()> {
            Err(socketplane_cluster::Error::Invalid(
                "test refuses to join".into(),
            ))
        }
        async fn leave(&self) -> socketplane_cluster::Result<()> {
            Err(socketplane_cluster::Error::Invalid(
                "test refuses to leave".into(),
            ))
        }
        fn bind(&self, _: &str) -> socketplane_cluster::Result<()> {
            Err(socketplane_cluster::Error::Invalid(
                "test refuses to bind".into(),
            ))
        }
        async fn token(&self) -> socketplane_cluster::Result<String> {
            Err(socketplane_cluster::Error::Unavailable("test".into()))
        }
        async fn rotate_token(&self) -> socketplane_cluster::Result<String> {
            Err(socketplane_cluster::Error::Unavailable("test".into()))
        }
    }

    /// The routes that take a body, each with a valid one.
    const ROUTES: [(&str, &str); 4] = [
        (
            "/v1/networks",
            r#"{"name":"web","subnet":"10.2.0.0/16","mtu":1400}"#,
        ),
        (
            "/v1/endpoints",
            r#"{"network":"web","netns":"/var/run/netns/x","ifname":"eth0","ip":"10.2.0.9"}"#,
        ),
        ("/v1/cluster/join", r#"{"addr":"198.18.0.1:6675"}"#),
        ("/v1/cluster/bind", r#"{"iface":"eth0"}"#),
    ];

    /// Posts `body`; the answer must be a JSON error of a known status
    /// (the cluster is not formed, so nothing valid can succeed either).
    fn post(rt: &tokio::runtime::Runtime, path: &str, body: Vec<u8>) {
        let cluster = Arc::new(Cluster::new(
            Arc::new(MemStore::new()),
            "node1".into(),
            "test".into(),
        ));
        let app = router(Api {
            cluster,
            control: Arc::new(Refuses),
        });
        rt.block_on(async {
            let req = Request::post(path).body(Body::from(body)).unwrap();
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            let v: ApiError = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: not an API error ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert!(
                [400, 503].contains(&status),
                "{path}: {status}: {}",
                v.error
            );
        });
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_succeeds_after_its_caller_left_is_undone() {
        let (undone_tx, undone) = tokio::sync::oneshot::channel();
        let slow = async {
            tokio::time::sleep(REQUEST_DEADLINE * 2).await;
            Ok("made")
        };
        let cut = tokio::time::timeout(
            REQUEST_DEADLINE,
            answered_or_undone(slow, move |made| async move {
                let _ = undone_tx.send(made);
            }),
        )
        .await;
        assert!(cut.is_err(), "the caller was cut off");
        assert_eq!(
            undone.await.ok(),
            Some("made"),
            "the late success was undone"
        );

        // An answered success is not undone; an answered failure neither.
        for answer in [
            Ok("kept"),
            Err(ApiFailure(socketplane_cluster::Error::Conflict(
                "no".into(),
            ))),
        ] {
            let (undone_tx, mut undone) = tokio::sync::oneshot::channel::<&str>();
            let got = answered_or_undone(async move { answer }, move |made| async move {
                let _ = undone_tx.send(made);
            })
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(undone.try_recv().is_err(), "{:?} was undone", got.is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_bodies_get_json_errors(
            which in 0..ROUTES.len(),
            body in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            post(&runtime(), ROUTES[which].0, body);
        }

        #[test]
        fn mutated_bodies_get_json_errors(
            which in 0..ROUTES.len(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let (path, body) = ROUTES[which];
            let mut bytes = body.as_bytes().to_vec();
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            let rt = runtime();
            post(&rt, path, bytes.clone());
            post(&rt, path, bytes[..cut.index(bytes.len())].to_vec());
        }
    }
}
