//! The HTTP server for people and monitoring (`--http ADDR:PORT`, default
//! `127.0.0.1:9675`, `off`): read-only, no secrets.
//!
//! - `/metrics`: Prometheus (OpenMetrics) text
//! - `/healthz`: 200 while the agent runs (a supervisor's liveness probe)
//! - `/readyz`: 200 once this node is a member with a working datapath and
//!   a healthy store, else 503 with the reason (a readiness probe)
//! - `/`: the topology page; `/assets/…` its script and style, embedded in
//!   the binary; `/api/topology` the same data as JSON; `/events` a stream
//!   of it (server-sent events) as it changes

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::events::{emit, HttpRequest};
use crate::topology::Topology;

/// The contract's default: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9675";

/// How often an open page gets a fresh topology even without a change
/// signal (liveness seen only through time, e.g. a lease running out).
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Changes arriving this close together are sent as one update.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// `--http`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpAddr {
    Off,
    On(SocketAddr),
}

impl FromStr for HttpAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "off" {
            return Ok(HttpAddr::Off);
        }
        s.parse().map(HttpAddr::On).map_err(|_| Error::InvalidAddr {
            given: s.to_string(),
        })
    }
}

impl Default for HttpAddr {
    fn default() -> Self {
        // A constant that parses.
        HttpAddr::On(SocketAddr::from(([127, 0, 0, 1], 9675)))
    }
}

/// What the server shows, as the agent provides it.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// The cluster now; `None` until this node is a member.
    async fn topology(&self) -> Option<Topology>;
    /// Why this node is not ready; `None` when it is.
    async fn not_ready(&self) -> Option<String>;
    /// Changes whenever the topology may have changed.
    fn changes(&self) -> watch::Receiver<u64>;
}

type Shared = Arc<dyn Source>;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

pub fn router(source: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/api/topology", get(topology))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(source)
}

/// Binds `addr` and serves until the task is aborted.
pub async fn serve(addr: SocketAddr, source: Shared) -> Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    if !addr.ip().is_loopback() {
        tracing::info!(%addr, "Serving metrics and the topology page beyond this host (read-only, no secrets).");
    } else {
        tracing::info!(%addr, "Serving metrics and the topology page.");
    }
    let app = router(source);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "The HTTP server stopped.");
        }
    }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    emit(HttpRequest { route: "/" });
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn topology(State(source): State<Shared>) -> Response {
    emit(HttpRequest {
        route: "/api/topology",
    });
    match source.topology().await {
        Some(t) => Json(t).into_response(),
        None => not_member(),
    }
}

fn not_member() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "this agent is not a cluster member yet\n",
    )
        .into_response()
}

async fn metrics(State(source): State<Shared>) -> Response {
    emit(HttpRequest { route: "/metrics" });
    let topology = source.topology().await;
    let body = crate::metrics::scrape(topology.as_ref());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(source): State<Shared>) -> Response {
    match source.not_ready().await {
        None => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// One `topology` event now, then one whenever it changes.
async fn events(
    State(source): State<Shared>,
) -> Sse<impl Stream<Item = std::result::Result<Event, std::convert::Infallible>>> {
    emit(HttpRequest { route: "/events" });
    struct Follow {
        source: Shared,
        changes: watch::Receiver<u64>,
        last: Option<String>,
    }
    let changes = source.changes();
    let state = Follow {
        source,
        changes,
        last: None,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if s.last.is_some() {
                tokio::select! {
                    changed = s.changes.changed() => {
                        if changed.is_err() {
                            // The agent is stopping; keep refreshing by time.
                            tokio::time::sleep(REFRESH_EVERY).await;
                        } else {
                            tokio::time::sleep(DEBOUNCE).await;
                            s.changes.borrow_and_update();
                        }
                    }
                    _ = tokio::time::sleep(REFRESH_EVERY) => {}
                }
            }
            let json = match s.source.topology().await {
                Some(t) => serde_json::to_string(&t).unwrap_or_default(),
                None => "null".to_string(),
            };
            if s.last.as_deref() != Some(json.as_str()) {
                let event = Event::default().event("topology").data(json.clone());
                s.last = Some(json);
                return Some((Ok(event), s));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addr_parses_off_and_addresses() {
        assert_eq!("off".parse::<HttpAddr>().unwrap(), HttpAddr::Off);
        assert_eq!(
            DEFAULT_ADDR.parse::<HttpAddr>().unwrap(),
            HttpAddr::default()
        );
        assert!("nope".parse::<HttpAddr>().is_err());
    }
}
