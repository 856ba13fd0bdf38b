//! The server side of node-to-node RPC: the `/raft/v1/...` routes, behind
//! the cluster-name check. Who may call them at all is the cluster port's
//! business (node certificates); the body limits here apply after that.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request as HttpRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use axum::Router;
use openraft::error::Fatal;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::Snapshot;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::elect;
use crate::forward;
use crate::membership;
use crate::node::EmbeddedStore;
use crate::types::{NodeId, TypeConfig};
use crate::wire::{
    decode_snapshot, ClientRequest, JoinRequest, LeaveRequest, PreVoteRequest, WireError,
    CLUSTER_HEADER,
};

/// The largest body of any route but the snapshot (append batches are at
/// most `max_payload_entries`).
pub const MAX_BODY: usize = 16 << 20;
/// The largest snapshot a follower accepts.
pub const MAX_SNAPSHOT_BODY: usize = 1 << 30;
/// Join, leave, vote, read index: small messages.
const SMALL_BODY: usize = 64 << 10;

type S = State<Arc<EmbeddedStore>>;

fn json<T: Serialize>(v: &T) -> HttpResponse {
    match serde_json::to_vec(v) {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, HttpResponse> {
    serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad request body: {e}")).into_response())
}

async fn auth(State(s): S, headers: HeaderMap, req: HttpRequest, next: Next) -> HttpResponse {
    if s.core.is_stopped() {
        return (StatusCode::SERVICE_UNAVAILABLE, "store node is shut down").into_response();
    }
    if s.core
        .net
        .isolated
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        // Test fault: like a host behind a partition that drops packets,
        // the caller hears nothing until it gives up.
        return std::future::pending().await;
    }
    if let Some(c) = headers.get(CLUSTER_HEADER) {
        if c.as_bytes() != s.core.cfg.cluster.as_bytes() {
            return (
                StatusCode::CONFLICT,
                format!(
                    "cluster name mismatch: this node belongs to cluster {:?}, the caller to {:?}",
                    s.core.cfg.cluster,
                    String::from_utf8_lossy(c.as_bytes())
                ),
            )
                .into_response();
        }
    }
    next.run(req).await
}

async fn append(State(s): S, body: Bytes) -> HttpResponse {
    let req: AppendEntriesRequest<TypeConfig> = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    s.core.note_leader_contact();
    json(&s.core.raft.append_entries(req).await)
}

async fn vote(State(s): S, body: Bytes) -> HttpResponse {
    let req: VoteRequest<NodeId> = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    json(&s.core.raft.vote(req).await)
}

async fn pre_vote(State(s): S, body: Bytes) -> HttpResponse {
    let req: PreVoteRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    json(&elect::answer_pre_vote(&s.core, &req))
}

async fn snapshot(State(s): S, body: Bytes) -> HttpResponse {
    let (header, data) = match decode_snapshot(&body) {
        Ok(x) => x,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    s.core.note_leader_contact();
    let snap = Snapshot::<TypeConfig> {
        meta: header.meta,
        snapshot: Box::new(std::io::Cursor::new(data)),
    };
    let res: Result<_, Fatal<NodeId>> = s.core.raft.install_full_snapshot(header.vote, snap).await;
    json(&res)
}

async fn join(State(s): S, body: Bytes) -> HttpResponse {
    let req: JoinRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    json(&membership::serve_join(&s.core, req).await)
}

async fn leave(State(s): S, body: Bytes) -> HttpResponse {
    let req: LeaveRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    json(&membership::serve_leave(&s.core, req).await)
}

async fn forward(State(s): S, body: Bytes) -> HttpResponse {
    let req: ClientRequest = match decode(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let res = if s.core.is_leader() {
        forward::execute(&s.core, &s.leases, req).await
    } else {
        Err(s.core.not_leader())
    };
    json(&res)
}

async fn read_index(State(s): S) -> HttpResponse {
    let res: Result<u64, WireError> = s.reads.serve_read_index(&s.core).await;
    json(&res)
}

fn limit(bytes: usize) -> DefaultBodyLimit {
    DefaultBodyLimit::max(bytes)
}

impl EmbeddedStore {
    /// The node-to-node HTTP routes (`/raft/v1/...`), to mount on the
    /// cluster port.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/raft/v1/append", post(append).layer(limit(MAX_BODY)))
            .route("/raft/v1/vote", post(vote).layer(limit(SMALL_BODY)))
            .route("/raft/v1/prevote", post(pre_vote).layer(limit(SMALL_BODY)))
            .route(
                "/raft/v1/snapshot",
                post(snapshot).layer(limit(MAX_SNAPSHOT_BODY)),
            )
            .route("/raft/v1/join", post(join).layer(limit(SMALL_BODY)))
            .route("/raft/v1/leave", post(leave).layer(limit(SMALL_BODY)))
            .route("/raft/v1/forward", post(forward).layer(limit(MAX_BODY)))
            .route(
                "/raft/v1/read_index",
                post(read_index).layer(limit(SMALL_BODY)),
            )
            .route_layer(middleware::from_fn_with_state(self.clone(), auth))
            .with_state(self.clone())
    }
}
