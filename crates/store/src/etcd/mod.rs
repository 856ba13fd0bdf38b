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
//!
//! The gRPC client is our own thin layer ([`client`]) over stubs generated
//! once and kept in the tree ([`pb`]), so a build needs no `protoc`.

mod client;
pub mod pb;

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use tonic::{Code, Status};
use tracing::{debug, warn};

use self::client::{prefix_range_end, Client, ConnectOptions};
use self::pb::etcdserverpb as rpc;
use self::pb::mvccpb;

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
    /// TLS to etcd; `None`: plain HTTP/2.
    pub tls: Option<EtcdTls>,
    /// User and password, for an etcd with `auth enable`.
    pub auth: Option<EtcdAuth>,
}

/// An etcd user and its password.
#[derive(Clone)]
pub struct EtcdAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// TLS to etcd: the CA that signed the members' server certificates and,
/// for etcd's `--client-cert-auth`, a client certificate and key (PEM).
#[derive(Clone, Default)]
pub struct EtcdTls {
    pub ca: Vec<u8>,
    /// Client certificate and private key, both PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the servers' certificates must carry; default: each
    /// endpoint's host.
    pub domain: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("EtcdTls")
            .field("client_cert", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    /// Reads the CA and, if given, the client certificate and key (both or
    /// neither) from PEM files.
    pub fn from_files(
        ca: &std::path::Path,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<EtcdTls> {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                StoreError::InvalidArgument(format!("cannot read {}: {e}", p.display()))
            })
        };
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            (None, None) => None,
            _ => {
                return Err(StoreError::InvalidArgument(
                    "an etcd client certificate needs its key, and a key its certificate".into(),
                ))
            }
        };
        Ok(EtcdTls {
            ca: read(ca)?,
            identity,
            domain: None,
        })
    }
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            watch_retry: Duration::from_secs(60),
            tls: None,
            auth: None,
        }
    }
}

/// A handle on an etcd cluster. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
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

/// Parses `etcd://h1:2379,h2:2379` (or a bare `h1:2379,h2:2379`) into
/// endpoints; `etcds://…` gives `https://` endpoints (TLS).
pub fn parse_url(url: &str) -> Result<Vec<String>> {
    let (rest, tls) = match url.strip_prefix("etcds://") {
        Some(r) => (r, true),
        None => (url.strip_prefix("etcd://").unwrap_or(url), false),
    };
    let endpoints: Vec<String> = rest
        .split(',')
        .map(|e| e.trim().trim_end_matches('/').to_string())
        .filter(|e| !e.is_empty())
        .map(|e| match tls && !e.contains("://") {
            true => format!("https://{e}"),
            false => e,
        })
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

    /// [`from_url`](Self::from_url) with explicit options (e.g. TLS for
    /// `etcds://h1:2379`).
    pub async fn from_url_with(url: &str, opts: EtcdOptions) -> Result<EtcdStore> {
        Self::connect_with(&parse_url(url)?, opts).await
    }

    /// [`connect`](Self::connect) with explicit timeouts.
    pub async fn connect_with(endpoints: &[String], opts: EtcdOptions) -> Result<EtcdStore> {
        let store = Self::connect_lazy(endpoints, opts).await?;
        match tokio::time::timeout(store.opts.connect_timeout, store.client.status()).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!(
                "etcd at {} is unreachable: {}",
                store.endpoints_str(),
                e.message()
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
        let copts = ConnectOptions {
            connect_timeout: opts.connect_timeout,
            request_timeout: opts.request_timeout,
            tls: opts.tls.clone(),
            auth: opts.auth.clone(),
        };
        let client = Client::new(endpoints, &copts).map_err(StoreError::InvalidArgument)?;
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

    /// Compacts etcd's history up to `revision` (physical: waits until
    /// done). Watches from below `revision` then fail with `Compacted`.
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        self.bounded(self.client.compact(revision)).await
    }

    fn endpoints_str(&self) -> String {
        self.endpoints.join(",")
    }

    /// Runs one request under the request timeout, mapping errors.
    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = std::result::Result<T, Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.opts.request_timeout, fut).await {
            Ok(r) => r.map_err(|e| map_err(&self.endpoints_str(), &e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "etcd at {} did not answer within {:?}",
            self.endpoints_str(),
            self.opts.request_timeout
        ))
    }
}

fn map_err(endpoints: &str, status: &Status) -> StoreError {
    let msg = status.message().to_string();
    match status.code() {
        Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unavailable => StoreError::Unavailable(format!("etcd at {endpoints}: {msg}")),
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound | Code::OutOfRange => {
            StoreError::InvalidArgument(msg)
        }
        _ => StoreError::Internal(format!("etcd: {msg}")),
    }
}

fn is_lease_not_found(status: &Status) -> bool {
    status.code() == Code::NotFound || status.message().contains("lease not found")
}

fn to_kv(kv: &mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: kv.value.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: (kv.lease != 0).then_some(kv.lease),
    }
}

fn to_event(ev: &mvccpb::Event) -> Option<Event> {
    let kv = to_kv(ev.kv.as_ref()?);
    let kind = match mvccpb::event::EventType::try_from(ev.r#type).ok()? {
        mvccpb::event::EventType::Put => EventKind::Put,
        mvccpb::event::EventType::Delete => EventKind::Delete,
    };
    Some(Event { kind, kv })
}

fn header_rev(h: Option<&rpc::ResponseHeader>) -> Revision {
    h.map_or(0, |h| h.revision)
}

/// Creates an etcd watch on `prefix` from `from` (0 = now) and waits for its
/// creation. Returns the stream and the revision to continue from if
/// nothing arrives (for `from = 0`: creation revision + 1).
async fn create_watch(
    client: &Client,
    prefix: &str,
    from: Revision,
    timeout: Duration,
    endpoints: &str,
) -> Result<(client::Watch, Revision)> {
    let create = rpc::WatchCreateRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: prefix_range_end(prefix.as_bytes()),
        start_revision: from.max(0),
        progress_notify: true,
        ..Default::default()
    };
    let work = async {
        let mut watch = client
            .watch(create)
            .await
            .map_err(|e| map_err(endpoints, &e))?;
        let resp = watch
            .responses
            .message()
            .await
            .map_err(|e| map_err(endpoints, &e))?
            .ok_or_else(|| {
                StoreError::Unavailable(format!("etcd at {endpoints} closed the watch stream"))
            })?;
        if resp.compact_revision > 0 {
            return Err(StoreError::Compacted {
                requested: from,
                compacted: resp.compact_revision,
            });
        }
        if resp.canceled {
            return Err(StoreError::Unavailable(format!(
                "etcd at {endpoints} cancelled the watch: {}",
                resp.cancel_reason
            )));
        }
        if !resp.created {
            return Err(StoreError::Internal(
                "etcd watch: first response is not a creation".into(),
            ));
        }
        let next = if from > 0 {
            from
        } else {
            header_rev(resp.header.as_ref()) + 1
        };
        Ok((watch, next))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd at {endpoints} did not create the watch within {timeout:?}"
        ))),
    }
}

struct WatchState {
    client: Client,
    endpoints: String,
    prefix: String,
    /// Revision of the next event we may deliver.
    next: Revision,
    stream: Option<client::Watch>,
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
            let Some(watch) = self.stream.as_mut() else {
                match self.reconnect().await {
                    Ok(()) => continue,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            };
            match watch.responses.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision > 0 {
                        self.done = true;
                        return Some(Err(StoreError::Compacted {
                            requested: self.next,
                            compacted: resp.compact_revision,
                        }));
                    }
                    if resp.canceled {
                        warn!(prefix = %self.prefix, reason = %resp.cancel_reason,
                            "etcd cancelled a watch; re-creating it");
                        self.stream = None;
                        continue;
                    }
                    if resp.events.is_empty() {
                        // A progress notification: everything up to the
                        // header revision was delivered.
                        if !resp.created {
                            self.next = self.next.max(header_rev(resp.header.as_ref()) + 1);
                        }
                        continue;
                    }
                    for ev in &resp.events {
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
                Ok((watch, _)) => {
                    debug!(prefix = %self.prefix, from = self.next, "etcd watch re-established");
                    self.stream = Some(watch);
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

fn compare(c: &crate::Compare) -> rpc::Compare {
    use rpc::compare::{CompareResult, CompareTarget, TargetUnion};
    // "absent" is create_revision == 0; anything else an exact mod_revision.
    let (target, union) = if c.mod_revision == 0 {
        (CompareTarget::Create, TargetUnion::CreateRevision(0))
    } else {
        (CompareTarget::Mod, TargetUnion::ModRevision(c.mod_revision))
    };
    rpc::Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: c.key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

fn request_op(op: &Op) -> rpc::RequestOp {
    use rpc::request_op::Request;
    let request = match op {
        Op::Put { key, value, lease } => Request::RequestPut(rpc::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.clone(),
            lease: lease.unwrap_or(0),
            ..Default::default()
        }),
        Op::Delete { key } => Request::RequestDeleteRange(rpc::DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        }),
    };
    rpc::RequestOp {
        request: Some(request),
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let req = rpc::RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        };
        let resp = self.bounded(self.client.range(req)).await?;
        Ok(resp.kvs.first().map(to_kv))
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let req = rpc::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_range_end(prefix.as_bytes()),
            sort_order: rpc::range_request::SortOrder::Ascend as i32,
            sort_target: rpc::range_request::SortTarget::Key as i32,
            ..Default::default()
        };
        let resp = self.bounded(self.client.range(req)).await?;
        Ok(Listing {
            kvs: resp.kvs.iter().map(to_kv).collect(),
            revision: header_rev(resp.header.as_ref()),
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let lease_used = txn.ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            Op::Delete { .. } => None,
        });
        let req = rpc::TxnRequest {
            compare: txn.compares.iter().map(compare).collect(),
            success: txn.ops.iter().map(request_op).collect(),
            failure: Vec::new(),
        };
        let resp = match tokio::time::timeout(self.opts.request_timeout, self.client.txn(req)).await
        {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if is_lease_not_found(&e) => {
                return Err(StoreError::LeaseNotFound(lease_used.unwrap_or(0)))
            }
            Ok(Err(e)) => return Err(map_err(&self.endpoints_str(), &e)),
            Err(_) => return Err(self.timed_out()),
        };
        Ok(TxnResult {
            succeeded: resp.succeeded,
            revision: header_rev(resp.header.as_ref()),
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        if from < 0 {
            return Err(StoreError::InvalidArgument(format!(
                "negative watch revision {from}"
            )));
        }
        let endpoints = self.endpoints_str();
        let (watch, next) = create_watch(
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
            stream: Some(watch),
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
        self.bounded(self.client.lease_grant(ttl_secs(ttl))).await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<()> {
        match tokio::time::timeout(
            self.opts.request_timeout,
            self.client.lease_keep_alive(lease),
        )
        .await
        {
            Ok(Ok(ttl)) if ttl > 0 => Ok(()),
            Ok(Ok(_)) => Err(StoreError::LeaseNotFound(lease)),
            Ok(Err(e)) if is_lease_not_found(&e) => Err(StoreError::LeaseNotFound(lease)),
            Ok(Err(e)) => Err(map_err(&self.endpoints_str(), &e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        match tokio::time::timeout(self.opts.request_timeout, self.client.lease_revoke(lease)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if is_lease_not_found(&e) => Ok(()),
            Ok(Err(e)) => Err(map_err(&self.endpoints_str(), &e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Health and membership; an unreachable cluster is reported as
    /// `healthy: false` (not an error) so `cluster status` can show it.
    async fn status(&self) -> Result<StoreStatus> {
        let status = match self.bounded(self.client.status()).await {
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
        let leader = status.leader;
        let members = self.bounded(self.client.member_list()).await?;
        let members = members
            .members
            .iter()
            .map(|m| StoreMember {
                id: format!("{:x}", m.id),
                addr: m.client_ur_ls.first().cloned().unwrap_or_default(),
                role: if m.id == leader {
                    MemberRole::Leader
                } else if m.is_learner {
                    MemberRole::Replica
                } else {
                    MemberRole::Voter
                },
            })
            .collect();
        Ok(StoreStatus {
            backend: "etcd".into(),
            healthy: leader != 0 && status.errors.is_empty(),
            leader: (leader != 0).then(|| format!("{leader:x}")),
            members,
            revision: header_rev(status.header.as_ref()),
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

    #[test]
    fn absent_compares_on_create_revision() {
        let c = compare(&crate::Compare {
            key: "k".into(),
            mod_revision: 0,
        });
        assert_eq!(c.target, rpc::compare::CompareTarget::Create as i32);
        assert_eq!(
            c.target_union,
            Some(rpc::compare::TargetUnion::CreateRevision(0))
        );
        let c = compare(&crate::Compare {
            key: "k".into(),
            mod_revision: 7,
        });
        assert_eq!(c.target, rpc::compare::CompareTarget::Mod as i32);
        assert_eq!(
            c.target_union,
            Some(rpc::compare::TargetUnion::ModRevision(7))
        );
    }
}
