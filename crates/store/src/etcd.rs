//! `EtcdStore`: the [`Store`] backed by an existing etcd v3 cluster.
//!
//! Mapping of the contract onto etcd:
//!
//! - `get`/`list`: range reads (linearizable), `list` sorted by key, with the
//!   response header's revision.
//! - `txn`: `Compare::mod_revision(key, 0)` ("absent") becomes
//!   `create_revision == 0`, any other revision `mod_revision == rev`.
//! - `watch`: an etcd watch with `start_revision` (`from = 0` = from now, the
//!   start revision taken from the watch's creation header). When the
//!   connection drops, the watch is re-created from the last delivered
//!   revision + 1, so the stream has no gaps and no duplicates; a compacted
//!   start revision ends the stream with [`StoreError::Compacted`]. If etcd
//!   stays unreachable longer than [`EtcdOptions::watch_retry`] the stream
//!   ends with [`StoreError::Unavailable`].
//! - Leases: TTLs are rounded up to whole seconds (etcd's unit, and etcd
//!   enforces its own minimum TTL); keep-alive is one round trip.
//! - Every call is bounded by [`EtcdOptions::request_timeout`]; an
//!   unreachable cluster yields [`StoreError::Unavailable`] naming the
//!   endpoints.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as ec;
use tracing::{debug, warn};

use crate::{
    Event, EventKind, KeyValue, LeaseId, Listing, MemberRole, Op, Result, Revision, Store,
    StoreError, StoreMember, StoreStatus, Txn, TxnResult, WatchStream,
};

/// Timeouts of an [`EtcdStore`].
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// TCP connect timeout, and the bound on the reachability probe done by
    /// [`EtcdStore::connect_with`].
    pub connect_timeout: Duration,
    /// Upper bound on one request.
    pub request_timeout: Duration,
    /// How long a watch keeps trying to re-establish itself before it ends
    /// with [`StoreError::Unavailable`].
    pub watch_retry: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            watch_retry: Duration::from_secs(60),
        }
    }
}

/// A handle on an etcd cluster. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: ec::Client,
    endpoints: Vec<String>,
    opts: EtcdOptions,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

// gRPC status codes (see grpc's `code.proto`).
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const NOT_FOUND: i32 = 5;
const RESOURCE_EXHAUSTED: i32 = 8;
const FAILED_PRECONDITION: i32 = 9;
const ABORTED: i32 = 10;
const UNAVAILABLE: i32 = 14;

/// Parses `etcd://h1:2379,h2:2379` (or a bare `h1:2379,h2:2379`) into
/// endpoints.
pub fn parse_url(url: &str) -> Result<Vec<String>> {
    let rest = url.strip_prefix("etcd://").unwrap_or(url);
    let endpoints: Vec<String> = rest
        .split(',')
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(StoreError::InvalidArgument(format!(
            "no etcd endpoint in {url:?} (expected etcd://host:port[,host:port...])"
        )));
    }
    for e in &endpoints {
        let hostport = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .unwrap_or(e);
        let valid = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !valid {
            return Err(StoreError::InvalidArgument(format!(
                "bad etcd endpoint {e:?} in {url:?} (expected host:port)"
            )));
        }
    }
    Ok(endpoints)
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` ("127.0.0.1:2379" or
    /// "http://127.0.0.1:2379") with default timeouts and checks that the
    /// cluster answers; `Unavailable` (naming the endpoints) within about
    /// 3 s otherwise.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        Self::connect_with(endpoints, EtcdOptions::default()).await
    }

    /// [`connect`](Self::connect) from a URL `etcd://h1:2379,h2:2379`.
    pub async fn from_url(url: &str) -> Result<EtcdStore> {
        Self::connect(&parse_url(url)?).await
    }

    /// [`connect`](Self::connect) with explicit timeouts.
    pub async fn connect_with(endpoints: &[String], opts: EtcdOptions) -> Result<EtcdStore> {
        let store = Self::connect_lazy(endpoints, opts).await?;
        let mut c = store.client.clone();
        match tokio::time::timeout(store.opts.connect_timeout, c.status()).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "etcd at {} is unreachable: {e}",
                store.endpoints_str()
            ))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {} did not answer within {:?}",
                store.endpoints_str(),
                store.opts.connect_timeout
            ))),
        }
    }

    /// Builds a handle without contacting etcd (connections are made on
    /// first use).
    pub async fn connect_lazy(endpoints: &[String], opts: EtcdOptions) -> Result<EtcdStore> {
        if endpoints.is_empty() {
            return Err(StoreError::InvalidArgument(
                "no etcd endpoints given".into(),
            ));
        }
        let copts = ec::ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member cut off from its leader refuses (instead of serving
            // stale data or silently stalled watches), so calls fail over.
            .with_require_leader(true);
        // `Client::connect` is lazy: it only builds the balanced channel;
        // connections are made on first use.
        let client = ec::Client::connect(endpoints, Some(copts))
            .await
            .map_err(|e| {
                StoreError::InvalidArgument(format!("etcd endpoints {}: {e}", endpoints.join(",")))
            })?;
        Ok(EtcdStore {
            client,
            endpoints: endpoints.to_vec(),
            opts,
        })
    }

    /// The endpoints this handle talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The underlying etcd client (e.g. for maintenance in tests).
    pub fn client(&self) -> ec::Client {
        self.client.clone()
    }

    /// Compacts etcd's history up to `revision` (physical: waits until
    /// done). Watches from below `revision` then fail with `Compacted`.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        let mut c = self.client.clone();
        self.bounded(c.compact(revision, Some(ec::CompactionOptions::new().with_physical())))
            .await?;
        Ok(())
    }

    fn endpoints_str(&self) -> String {
        self.endpoints.join(",")
    }

    /// Runs one request under the request timeout, mapping errors.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = std::result::Result<T, ec::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.opts.request_timeout, fut).await {
            Ok(r) => r.map_err(|e| self.map_err(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {} did not answer within {:?}",
                self.endpoints_str(),
                self.opts.request_timeout
            ))),
        }
    }

    fn map_err(&self, e: ec::Error) -> StoreError {
        map_err(&self.endpoints_str(), e)
    }
}

fn map_err(endpoints: &str, e: ec::Error) -> StoreError {
    match e {
        ec::Error::GRpcStatus(status) => {
            let msg = status.message().to_string();
            match status.code() as i32 {
                CANCELLED | UNKNOWN | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED
                | UNAVAILABLE => StoreError::Unavailable(format!("etcd at {endpoints}: {msg}")),
                INVALID_ARGUMENT | FAILED_PRECONDITION => StoreError::InvalidArgument(msg),
                NOT_FOUND => StoreError::InvalidArgument(msg),
                _ => StoreError::Internal(format!("etcd: {msg}")),
            }
        }
        ec::Error::TransportError(e) => {
            StoreError::Unavailable(format!("etcd at {endpoints}: transport error: {e}"))
        }
        ec::Error::IoError(e) => StoreError::Unavailable(format!("etcd at {endpoints}: {e}")),
        ec::Error::InvalidArgs(m) => StoreError::InvalidArgument(m),
        other => StoreError::Internal(format!("etcd: {other}")),
    }
}

fn is_lease_not_found(e: &ec::Error) -> bool {
    match e {
        ec::Error::GRpcStatus(s) => {
            s.code() as i32 == NOT_FOUND || s.message().contains("lease not found")
        }
        ec::Error::LeaseKeepAliveError(m) => m.contains("not found"),
        _ => false,
    }
}

fn to_kv(kv: &ec::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    }
}

fn to_event(ev: &ec::Event) -> Option<Event> {
    let kv = to_kv(ev.kv()?);
    let kind = match ev.event_type() {
        ec::EventType::Put => EventKind::Put,
        ec::EventType::Delete => EventKind::Delete,
    };
    Some(Event { kind, kv })
}

fn header_rev(h: Option<&ec::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision())
}

/// Creates an etcd watch on `prefix` from `from` (0 = now) and waits for its
/// creation. Returns the stream and the revision to continue from if
/// nothing arrives (for `from = 0`: creation revision + 1).
async fn create_watch(
    client: &ec::Client,
    prefix: &str,
    from: Revision,
    timeout: Duration,
    endpoints: &str,
) -> Result<(ec::WatchStream, Revision)> {
    let mut c = client.clone();
    let mut opts = ec::WatchOptions::new().with_prefix().with_progress_notify();
    if from > 0 {
        opts = opts.with_start_revision(from);
    }
    let work = async {
        let mut stream = c
            .watch(prefix, Some(opts))
            .await
            .map_err(|e| map_err(endpoints, e))?;
        let resp = stream
            .message()
            .await
            .map_err(|e| map_err(endpoints, e))?
            .ok_or_else(|| {
                StoreError::Unavailable(format!("etcd at {endpoints} closed the watch stream"))
            })?;
        if resp.compact_revision() > 0 {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: resp.compact_revision(),
            });
        }
        if resp.canceled() {
            return Err(StoreError::Unavailable(format!(
                "etcd at {endpoints} cancelled the watch: {}",
                resp.cancel_reason()
            )));
        }
        if !resp.created() {
            return Err(StoreError::Internal(
                "etcd watch: first response is not a creation".into(),
            ));
        }
        let next = if from > 0 {
            from
        } else {
            header_rev(resp.header()) + 1
        };
        Ok((stream, next))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd at {endpoints} did not create the watch within {timeout:?}"
        ))),
    }
}

struct WatchState {
    client: ec::Client,
    endpoints: String,
    prefix: String,
    /// Revision of the next event we may deliver.
    next: Revision,
    stream: Option<ec::WatchStream>,
    buf: VecDeque<Event>,
    opts: EtcdOptions,
    done: bool,
}

impl WatchState {
    /// Next item of the public stream.
    async fn next_item(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(ev) = self.buf.pop_front() {
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                match self.reconnect().await {
                    Ok(()) => continue,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            };
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        self.done = true;
                        return Some(Err(StoreError::Compacted {
                            requested: self.next,
                            compacted: resp.compact_revision(),
                        }));
                    }
                    if resp.canceled() {
                        warn!(prefix = %self.prefix, reason = resp.cancel_reason(),
                            "etcd cancelled a watch; re-creating it");
                        self.stream = None;
                        continue;
                    }
                    if resp.events().is_empty() {
                        // A progress notification: everything up to the
                        // header revision was delivered.
                        if !resp.created() {
                            self.next = self.next.max(header_rev(resp.header()) + 1);
                        }
                        continue;
                    }
                    for ev in resp.events() {
                        if let Some(ev) = to_event(ev) {
                            // Never deliver twice (defensive: etcd resumes
                            // exactly at `next`).
                            if ev.kv.mod_revision >= self.next {
                                self.buf.push_back(ev);
                            }
                        }
                    }
                    if let Some(last) = self.buf.back() {
                        self.next = self.next.max(last.kv.mod_revision + 1);
                    }
                }
                Ok(None) => {
                    debug!(prefix = %self.prefix, "etcd watch stream ended; reconnecting");
                    self.stream = None;
                }
                Err(e) => {
                    debug!(prefix = %self.prefix, error = %e, "etcd watch failed; reconnecting");
                    self.stream = None;
                }
            }
        }
    }

    /// Re-creates the etcd watch from `next`, retrying with backoff for up
    /// to `watch_retry`.
    async fn reconnect(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.opts.watch_retry;
        let mut backoff = Duration::from_millis(100);
        loop {
            match create_watch(
                &self.client,
                &self.prefix,
                self.next,
                self.opts.request_timeout,
                &self.endpoints,
            )
            .await
            {
                Ok((stream, _)) => {
                    debug!(prefix = %self.prefix, from = self.next, "etcd watch re-established");
                    self.stream = Some(stream);
                    return Ok(());
                }
                Err(e @ StoreError::Compacted { .. }) => return Err(e),
                Err(e) => {
                    if tokio::time::Instant::now() + backoff > deadline {
                        return Err(StoreError::Unavailable(format!(
                            "etcd watch on {:?} could not be re-established within {:?}: {e}",
                            self.prefix, self.opts.watch_retry
                        )));
                    }
                    debug!(error = %e, "etcd watch re-creation failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    let ms = ttl.as_millis();
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX).max(1)
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let mut c = self.client.clone();
        let resp = self.bounded(c.get(key, None)).await?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let mut c = self.client.clone();
        let opts = ec::GetOptions::new()
            .with_prefix()
            .with_sort(ec::SortTarget::Key, ec::SortOrder::Ascend);
        let resp = self.bounded(c.get(prefix, Some(opts))).await?;
        Ok(Listing {
            kvs: resp.kvs().iter().map(to_kv).collect(),
            revision: header_rev(resp.header()),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let compares: Vec<ec::Compare> = txn
            .compares
            .iter()
            .map(|c| {
                if c.mod_revision == 0 {
                    ec::Compare::create_revision(c.key.as_str(), ec::CompareOp::Equal, 0)
                } else {
                    ec::Compare::mod_revision(c.key.as_str(), ec::CompareOp::Equal, c.mod_revision)
                }
            })
            .collect();
        let mut lease_used = None;
        let ops: Vec<ec::TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let opts = lease.map(|l| {
                        lease_used.get_or_insert(l);
                        ec::PutOptions::new().with_lease(l)
                    });
                    ec::TxnOp::put(key.as_str(), value.clone(), opts)
                }
                Op::Delete { key } => ec::TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let etxn = ec::Txn::new().when(compares).and_then(ops);
        let mut c = self.client.clone();
        let resp = match tokio::time::timeout(self.opts.request_timeout, c.txn(etxn)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if is_lease_not_found(&e) => {
                return Err(StoreError::LeaseNotFound(lease_used.unwrap_or(0)))
            }
            Ok(Err(e)) => return Err(self.map_err(e)),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "etcd at {} did not answer within {:?}",
                    self.endpoints_str(),
                    self.opts.request_timeout
                )))
            }
        };
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision: header_rev(resp.header()),
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        if from < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "negative watch revision {from}"
            )));
        }
        let endpoints = self.endpoints_str();
        let (stream, next) = create_watch(
            &self.client,
            prefix,
            from,
            self.opts.request_timeout,
            &endpoints,
        )
        .await?;
        let st = WatchState {
            client: self.client.clone(),
            endpoints,
            prefix: prefix.to_string(),
            next,
            stream: Some(stream),
            buf: VecDeque::new(),
            opts: self.opts.clone(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(st, |mut st| async move {
            let item = st.next_item().await?;
            Some((item, st))
        })))
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let mut c = self.client.clone();
        let resp = self.bounded(c.lease_grant(ttl_secs(ttl), None)).await?;
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut c = self.client.clone();
        match tokio::time::timeout(self.opts.request_timeout, c.lease_keep_alive(lease)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound(lease)),
            Ok(Err(e)) => Err(self.map_err(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {} did not answer within {:?}",
                self.endpoints_str(),
                self.opts.request_timeout
            ))),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        let mut c = self.client.clone();
        match tokio::time::timeout(self.opts.request_timeout, c.lease_revoke(lease)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if is_lease_not_found(&e) => Ok(()),
            Ok(Err(e)) => Err(self.map_err(e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd at {} did not answer within {:?}",
                self.endpoints_str(),
                self.opts.request_timeout
            ))),
        }
    }

    /// Health and membership; an unreachable cluster is reported as
    /// `healthy: false` (not an error) so `cluster status` can show it.
    async fn status(&self) -> Result<StoreStatus> {
        let mut c = self.client.clone();
        let status = match self.bounded(c.status()).await {
            Ok(s) => s,
            Err(StoreError::Unavailable(e)) => {
                debug!(error = %e, "etcd status failed");
                return Ok(StoreStatus {
                    backend: "etcd".into(),
                    healthy: false,
                    leader: None,
                    members: Vec::new(),
                    revision: 0,
                });
            }
            Err(e) => return Err(e),
        };
        let leader = status.leader();
        let mut c = self.client.clone();
        let members = self.bounded(c.member_list()).await?;
        let members = members
            .members()
            .iter()
            .map(|m| StoreMember {
                id: format!("{:x}", m.id()),
                addr: m.client_urls().first().cloned().unwrap_or_default(),
                role: if m.id() == leader {
                    MemberRole::Leader
                } else if m.is_learner() {
                    MemberRole::Replica
                } else {
                    MemberRole::Voter
                },
            })
            .collect();
        Ok(StoreStatus {
            backend: "etcd".into(),
            healthy: leader != 0 && status.errors().is_empty(),
            leader: (leader != 0).then(|| format!("{leader:x}")),
            members,
            revision: header_rev(status.header()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse_url("etcd://h1:2379,h2:2380").unwrap(),
            vec!["h1:2379".to_string(), "h2:2380".to_string()]
        );
        assert_eq!(parse_url("10.0.0.1:2379").unwrap(), vec!["10.0.0.1:2379"]);
        assert!(parse_url("etcd://").is_err());
        assert!(parse_url("etcd://host").is_err());
        assert!(parse_url("etcd://host:notaport").is_err());
    }

    #[test]
    fn ttl_rounds_up_to_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
    }
}
