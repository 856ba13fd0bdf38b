//! Typed internal events: each says one fact once, in the log (key/value
//! `tracing`, a sentence, the error field is `error`) and in the metrics.
//! Call sites build an event and [`emit`] it; they never touch a metric.
//!
//! Hooks for other front ends:
//! - DNS: `emit(DnsQuery { result: DnsResult::Answered, name: &qname })`
//! - the cluster port: `emit(ClusterPortRefused { reason: RefusedReason::BadToken, peer })`

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use crate::metrics::{metrics, MethodLabel, ReasonLabel, ResultLabel, RouteLabel};

/// An event that logs and counts itself.
pub trait InternalEvent {
    fn emit(self);
}

/// Emits `event`: logs it and counts it.
pub fn emit(event: impl InternalEvent) {
    event.emit()
}

/// A local API attach reached the datapath.
pub struct AttachApplied<'a> {
    pub network: &'a str,
    pub endpoint: &'a str,
    pub elapsed: Duration,
}

impl InternalEvent for AttachApplied<'_> {
    fn emit(self) {
        tracing::debug!(
            network = self.network,
            endpoint = self.endpoint,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "Attached an endpoint and applied it to the datapath."
        );
        metrics().attach_seconds.observe(self.elapsed.as_secs_f64());
    }
}

/// One datapath apply succeeded.
pub struct DatapathApplied {
    pub changes: usize,
    pub elapsed: Duration,
}

impl InternalEvent for DatapathApplied {
    fn emit(self) {
        if self.changes > 0 {
            tracing::debug!(
                changes = self.changes,
                elapsed_ms = self.elapsed.as_millis() as u64,
                "Applied changes to the datapath."
            );
        }
        let m = metrics();
        m.reconcile_seconds.observe(self.elapsed.as_secs_f64());
        m.datapath_writes.inc_by(self.changes as u64);
    }
}

/// One datapath apply failed (wholly or for some records). The reconciler
/// logs the retry; this counts it by reason.
pub struct DatapathFailed<'a> {
    /// A short, stable reason (see `decorate::failure_reason`).
    pub reason: &'static str,
    pub error: &'a dyn Display,
    pub elapsed: Duration,
}

impl InternalEvent for DatapathFailed<'_> {
    fn emit(self) {
        tracing::debug!(reason = self.reason, error = %self.error, "A datapath apply failed.");
        let m = metrics();
        m.reconcile_seconds.observe(self.elapsed.as_secs_f64());
        m.datapath_errors.inc();
        m.reconcile_failures
            .get_or_create(&ReasonLabel {
                reason: self.reason.into(),
            })
            .inc();
    }
}

/// A store transaction finished.
pub struct StoreCommitted {
    pub elapsed: Duration,
    pub ok: bool,
}

impl InternalEvent for StoreCommitted {
    fn emit(self) {
        if self.ok {
            metrics()
                .store_commit_seconds
                .observe(self.elapsed.as_secs_f64());
        }
    }
}

/// The embedded store's Raft progress, as last polled.
pub struct StoreProgress {
    pub term: u64,
    /// Entries in the log not applied yet.
    pub apply_lag: u64,
}

impl InternalEvent for StoreProgress {
    fn emit(self) {
        let m = metrics();
        m.store_term.set(self.term as i64);
        m.store_apply_lag.set(self.apply_lag as i64);
    }
}

/// This node saw a new store leader.
pub struct StoreLeaderChanged<'a> {
    pub leader: Option<&'a str>,
    pub term: u64,
}

impl InternalEvent for StoreLeaderChanged<'_> {
    fn emit(self) {
        tracing::info!(
            leader = self.leader.unwrap_or("none"),
            term = self.term,
            "The store leader changed."
        );
        metrics().store_leader_changes.inc();
    }
}

/// Who called the local API, from its `User-Agent`.
pub fn origin_of(user_agent: Option<&str>) -> &'static str {
    match user_agent {
        Some(ua) if ua.starts_with("socketplane-cni") => "cni",
        Some(ua) if ua.starts_with("socketplane") => "cli",
        _ => "other",
    }
}

/// A local API request was answered.
pub struct ApiRequest<'a> {
    /// The matched route, e.g. `/v1/endpoints/{id}` (never the raw path).
    pub route: &'a str,
    pub method: &'a str,
    /// "cli", "cni" or "other" ([`origin_of`]).
    pub origin: &'static str,
    pub status: u16,
}

impl InternalEvent for ApiRequest<'_> {
    fn emit(self) {
        tracing::debug!(
            route = self.route,
            method = self.method,
            origin = self.origin,
            status = self.status,
            "Answered a local API request."
        );
        let label = RouteLabel {
            route: format!("{} {}", self.method, self.route),
            origin: self.origin.into(),
        };
        let m = metrics();
        m.api_requests.get_or_create(&label).inc();
        if self.status >= 400 {
            m.api_errors.get_or_create(&label).inc();
        }
    }
}

/// A Docker plugin request was answered.
pub struct DockerRequest<'a> {
    /// The plugin method, e.g. `NetworkDriver.CreateEndpoint`.
    pub method: &'a str,
    pub status: u16,
}

impl InternalEvent for DockerRequest<'_> {
    fn emit(self) {
        tracing::debug!(
            method = self.method,
            status = self.status,
            "Answered a Docker plugin request."
        );
        let label = MethodLabel {
            method: self.method.into(),
        };
        let m = metrics();
        m.docker_requests.get_or_create(&label).inc();
        if self.status >= 400 {
            m.docker_errors.get_or_create(&label).inc();
        }
    }
}

/// A request to this crate's HTTP server.
pub struct HttpRequest<'a> {
    pub route: &'a str,
}

impl InternalEvent for HttpRequest<'_> {
    fn emit(self) {
        metrics()
            .http_requests
            .get_or_create(&RouteLabel {
                route: self.route.into(),
                origin: "http".into(),
            })
            .inc();
    }
}

/// How a DNS query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsResult {
    /// Answered from the cluster's endpoints.
    Answered,
    /// A cluster name that does not exist.
    NxDomain,
    /// Passed on to the host's resolvers.
    Forwarded,
    /// Refused (e.g. from outside the network).
    Refused,
    /// Failed (malformed, upstream error).
    Failed,
}

impl DnsResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsResult::Answered => "answered",
            DnsResult::NxDomain => "nxdomain",
            DnsResult::Forwarded => "forwarded",
            DnsResult::Refused => "refused",
            DnsResult::Failed => "failed",
        }
    }
}

/// A DNS query the agent handled (hook for the DNS front end).
pub struct DnsQuery<'a> {
    pub result: DnsResult,
    pub name: &'a str,
}

impl InternalEvent for DnsQuery<'_> {
    fn emit(self) {
        tracing::trace!(
            name = self.name,
            result = self.result.as_str(),
            "Handled a DNS query."
        );
        metrics()
            .dns_queries
            .get_or_create(&ResultLabel {
                result: self.result.as_str().into(),
            })
            .inc();
    }
}

/// Why the cluster port refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// No or a wrong join token.
    BadToken,
    /// The TLS handshake failed (no or an untrusted certificate).
    Tls,
    /// A peer of another cluster.
    WrongCluster,
    /// Too many connections or requests.
    Limit,
    /// A node removed with `cluster remove`.
    Removed,
    /// A certificate of the cluster CA that the cluster never issued to
    /// that node id (minted with a kept CA key).
    NotIssued,
    /// Too many failed enrollments (from one source address or in all).
    EnrollAttempts,
    Other,
}

impl RefusedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedReason::BadToken => "bad_token",
            RefusedReason::Tls => "tls",
            RefusedReason::WrongCluster => "wrong_cluster",
            RefusedReason::Limit => "limit",
            RefusedReason::Removed => "removed",
            RefusedReason::NotIssued => "not_issued",
            RefusedReason::EnrollAttempts => "enroll_attempts",
            RefusedReason::Other => "other",
        }
    }
}

/// The cluster port refused a connection or request (hook for the
/// cluster port).
pub struct ClusterPortRefused {
    pub reason: RefusedReason,
    pub peer: Option<SocketAddr>,
}

impl InternalEvent for ClusterPortRefused {
    fn emit(self) {
        match self.peer {
            Some(peer) => {
                tracing::debug!(%peer, reason = self.reason.as_str(), "Refused a connection on the cluster port.")
            }
            // Debug, not info: an outsider must not be able to flood the log.
            None => tracing::debug!(
                reason = self.reason.as_str(),
                "Refused a connection on the cluster port."
            ),
        }
        metrics()
            .cluster_port_refused
            .get_or_create(&ReasonLabel {
                reason: self.reason.as_str().into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_show_in_the_rendered_metrics() {
        emit(DnsQuery {
            result: DnsResult::NxDomain,
            name: "nope.web",
        });
        emit(ClusterPortRefused {
            reason: RefusedReason::BadToken,
            peer: None,
        });
        emit(AttachApplied {
            network: "web",
            endpoint: "e1",
            elapsed: Duration::from_millis(30),
        });
        let text = crate::metrics::scrape(None);
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let scrape = prometheus_parse::Scrape::parse(lines.into_iter().map(Ok)).unwrap();
        let value = |name: &str, label: (&str, &str)| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && s.labels.get(label.0) == Some(label.1))
                .map(|s| match s.value {
                    // OpenMetrics names a counter's samples `_total`.
                    prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => -1.0,
                })
        };
        assert_eq!(
            value("socketplane_dns_queries_total", ("result", "nxdomain")),
            Some(1.0)
        );
        assert_eq!(
            value(
                "socketplane_cluster_port_refused_total",
                ("reason", "bad_token")
            ),
            Some(1.0)
        );
        assert!(
            text.contains("socketplane_attach_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn origins_come_from_the_user_agent() {
        assert_eq!(origin_of(Some("socketplane-cni/0.1.0")), "cni");
        assert_eq!(origin_of(Some("socketplane/0.1.0")), "cli");
        assert_eq!(origin_of(Some("curl/8")), "other");
        assert_eq!(origin_of(None), "other");
    }
}
