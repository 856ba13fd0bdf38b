//! A thin etcd v3 client over the generated gRPC stubs ([`super::pb`]):
//! one balanced tonic channel, and just the calls [`super::EtcdStore`] makes.
//! Every request carries etcd's `hasleader` metadata, so a member cut off
//! from its leader refuses instead of serving stale data or stalled watches.
//! With a user and password (etcd's `auth enable`), every request also
//! carries an auth token from `Authenticate`, renewed when etcd says it is
//! no longer valid.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status, Streaming};

use super::pb::etcdserverpb as rpc;
use rpc::auth_client::AuthClient;
use rpc::cluster_client::ClusterClient;
use rpc::kv_client::KvClient;
use rpc::lease_client::LeaseClient;
use rpc::maintenance_client::MaintenanceClient;
use rpc::watch_client::WatchClient;

/// Connection settings of a [`Client`].
#[derive(Debug, Clone)]
pub(crate) struct ConnectOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// TLS for every endpoint (they become `https://`).
    pub tls: Option<super::EtcdTls>,
    /// etcd user and password.
    pub auth: Option<super::EtcdAuth>,
}

/// The host part of `scheme://host:port`, `host:port` or `[v6]:port`.
fn host_of(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A handle on an etcd cluster. Cheap to clone: all clones share one
/// channel, balanced over the endpoints.
#[derive(Clone)]
pub(crate) struct Client {
    channel: Channel,
    auth: Option<Arc<Auth>>,
}

/// The credentials and the current auth token.
struct Auth {
    credentials: super::EtcdAuth,
    token: RwLock<Option<MetadataValue<tonic::metadata::Ascii>>>,
}

/// etcd's answers when a token has expired or was never valid.
fn token_refused(status: &Status) -> bool {
    status.code() == tonic::Code::Unauthenticated || status.message().contains("invalid auth token")
}

/// An open watch: the response stream, and the request sender that keeps
/// the stream's send half open for as long as the watch lives.
pub(crate) struct Watch {
    pub responses: Streaming<rpc::WatchResponse>,
    _requests: mpsc::Sender<rpc::WatchRequest>,
}

impl Client {
    /// Builds the channel without connecting (connections are made on first
    /// use). `endpoints` are `host:port` or `http://host:port`.
    pub fn new(endpoints: &[String], opts: &ConnectOptions) -> Result<Client, String> {
        let mut list = Vec::with_capacity(endpoints.len());
        for e in endpoints {
            let uri = match (&opts.tls, e.split_once("://")) {
                (Some(_), Some(("http", _))) => {
                    return Err(format!(
                        "etcd endpoint {e:?} is plain http, but TLS is configured"
                    ))
                }
                (None, Some(("https", _))) => {
                    return Err(format!(
                        "etcd endpoint {e:?} is https, but no CA is given (--etcd-ca)"
                    ))
                }
                (_, Some(_)) => e.clone(),
                (Some(_), None) => format!("https://{e}"),
                (None, None) => format!("http://{e}"),
            };
            let mut ep = Endpoint::from_shared(uri)
                .map_err(|err| format!("bad etcd endpoint {e:?}: {err}"))?
                .connect_timeout(opts.connect_timeout)
                .timeout(opts.request_timeout)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(3))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true);
            if let Some(tls) = &opts.tls {
                let mut cfg = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca))
                    .domain_name(tls.domain.clone().unwrap_or_else(|| host_of(e).to_string()));
                if let Some((cert, key)) = &tls.identity {
                    cfg = cfg.identity(Identity::from_pem(cert, key));
                }
                ep = ep
                    .tls_config(cfg)
                    .map_err(|err| format!("TLS settings for etcd endpoint {e:?}: {err}"))?;
            }
            list.push(ep);
        }
        Ok(Client {
            channel: Channel::balance_list(list.into_iter()),
            auth: opts.auth.clone().map(|credentials| {
                Arc::new(Auth {
                    credentials,
                    token: RwLock::new(None),
                })
            }),
        })
    }

    /// The auth token, from `Authenticate` when there is none yet.
    async fn token(&self) -> Result<Option<MetadataValue<tonic::metadata::Ascii>>, Status> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        if let Some(t) = auth.token.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(Some(t));
        }
        let mut client = AuthClient::new(self.channel.clone());
        let resp = client
            .authenticate(rpc::AuthenticateRequest {
                name: auth.credentials.user.clone(),
                password: auth.credentials.password.clone(),
            })
            .await
            .map_err(|s| {
                Status::new(
                    s.code(),
                    format!(
                        "etcd refused user {:?}: {}",
                        auth.credentials.user,
                        s.message()
                    ),
                )
            })?
            .into_inner();
        let token = MetadataValue::try_from(resp.token.as_str())
            .map_err(|_| Status::internal("etcd sent an auth token that is not ASCII"))?;
        *auth.token.write().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(Some(token))
    }

    /// `msg` as a request with `hasleader` and, with auth, the token.
    async fn request<T>(&self, msg: T) -> Result<Request<T>, Status> {
        let mut req = with_leader(msg);
        if let Some(token) = self.token().await? {
            req.metadata_mut().insert("token", token);
        }
        Ok(req)
    }

    /// Forgets a token etcd refused, so the next request authenticates
    /// again; says whether to retry.
    fn refused(&self, status: &Status) -> bool {
        match &self.auth {
            Some(auth) if token_refused(status) => {
                *auth.token.write().unwrap_or_else(|e| e.into_inner()) = None;
                true
            }
            _ => false,
        }
    }

    pub async fn range(&self, req: rpc::RangeRequest) -> Result<rpc::RangeResponse, Status> {
        let mut kv = KvClient::new(self.channel.clone());
        match kv.range(self.request(req.clone()).await?).await {
            Err(s) if self.refused(&s) => {
                Ok(kv.range(self.request(req).await?).await?.into_inner())
            }
            r => Ok(r?.into_inner()),
        }
    }

    pub async fn txn(&self, req: rpc::TxnRequest) -> Result<rpc::TxnResponse, Status> {
        let mut kv = KvClient::new(self.channel.clone());
        // An auth refusal comes before etcd applies anything: a retry
        // cannot apply the transaction twice.
        match kv.txn(self.request(req.clone()).await?).await {
            Err(s) if self.refused(&s) => Ok(kv.txn(self.request(req).await?).await?.into_inner()),
            r => Ok(r?.into_inner()),
        }
    }

    pub async fn compact(&self, revision: i64) -> Result<(), Status> {
        let mut kv = KvClient::new(self.channel.clone());
        let req = rpc::CompactionRequest {
            revision,
            physical: true,
        };
        match kv.compact(self.request(req).await?).await {
            Err(s) if self.refused(&s) => kv.compact(self.request(req).await?).await?,
            r => r?,
        };
        Ok(())
    }

    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<i64, Status> {
        let mut lease = LeaseClient::new(self.channel.clone());
        let req = rpc::LeaseGrantRequest {
            ttl: ttl_secs,
            id: 0,
        };
        let resp = match lease.lease_grant(self.request(req).await?).await {
            Err(s) if self.refused(&s) => lease.lease_grant(self.request(req).await?).await?,
            r => r?,
        }
        .into_inner();
        if !resp.error.is_empty() {
            return Err(Status::unknown(resp.error));
        }
        Ok(resp.id)
    }

    pub async fn lease_revoke(&self, id: i64) -> Result<(), Status> {
        let mut lease = LeaseClient::new(self.channel.clone());
        let req = rpc::LeaseRevokeRequest { id };
        match lease.lease_revoke(self.request(req).await?).await {
            Err(s) if self.refused(&s) => lease.lease_revoke(self.request(req).await?).await?,
            r => r?,
        };
        Ok(())
    }

    /// One keep-alive round trip. Returns the remaining TTL in seconds;
    /// 0 means etcd does not know the lease.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, Status> {
        let mut lease = LeaseClient::new(self.channel.clone());
        let (tx, rx) = mpsc::channel(1);
        tx.send(rpc::LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| Status::internal("keep-alive request channel closed"))?;
        let mut responses = lease
            .lease_keep_alive(self.request(ReceiverStream::new(rx)).await?)
            .await
            .inspect_err(|s| {
                self.refused(s);
            })?
            .into_inner();
        let resp = responses
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("etcd closed the keep-alive stream"))?;
        drop(tx);
        Ok(resp.ttl)
    }

    /// Opens a watch stream and sends its one create request.
    pub async fn watch(&self, create: rpc::WatchCreateRequest) -> Result<Watch, Status> {
        let mut watch = WatchClient::new(self.channel.clone());
        let (tx, rx) = mpsc::channel(1);
        let req = rpc::WatchRequest {
            request_union: Some(rpc::watch_request::RequestUnion::CreateRequest(create)),
        };
        tx.send(req)
            .await
            .map_err(|_| Status::internal("watch request channel closed"))?;
        let responses = watch
            .watch(self.request(ReceiverStream::new(rx)).await?)
            .await
            .inspect_err(|s| {
                self.refused(s);
            })?
            .into_inner();
        Ok(Watch {
            responses,
            _requests: tx,
        })
    }

    pub async fn status(&self) -> Result<rpc::StatusResponse, Status> {
        let mut m = MaintenanceClient::new(self.channel.clone());
        match m.status(self.request(rpc::StatusRequest {}).await?).await {
            Err(s) if self.refused(&s) => Ok(m
                .status(self.request(rpc::StatusRequest {}).await?)
                .await?
                .into_inner()),
            r => Ok(r?.into_inner()),
        }
    }

    pub async fn member_list(&self) -> Result<rpc::MemberListResponse, Status> {
        let mut c = ClusterClient::new(self.channel.clone());
        let req = rpc::MemberListRequest {
            linearizable: false,
        };
        match c.member_list(self.request(req).await?).await {
            Err(s) if self.refused(&s) => {
                Ok(c.member_list(self.request(req).await?).await?.into_inner())
            }
            r => Ok(r?.into_inner()),
        }
    }
}

/// Wraps a message in a request that carries `hasleader: true`.
fn with_leader<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("hasleader", MetadataValue::from_static("true"));
    req
}

/// The end of the key range that holds every key starting with `prefix`
/// (etcd's prefix convention: the prefix with its last byte below 0xff
/// incremented; "\0" means "to the end of the key space").
pub(crate) fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::{host_of, prefix_range_end};

    #[test]
    fn hosts_of_endpoints() {
        assert_eq!(host_of("https://etcd1:2379"), "etcd1");
        assert_eq!(host_of("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host_of("https://[::1]:2379"), "::1");
    }

    #[test]
    fn prefix_range_ends() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }
}
