//! This node's standing on the cluster port: its trust material (founded,
//! enrolled, or an `--open` cluster), how a joining node enrolls with a
//! member (a PAKE bound to the TLS session, the member confirming first,
//! then a certificate for the joiner's own key), the member's side of it
//! (`/cluster/v1/enroll/hello`, `/cluster/v1/enroll`, failed attempts
//! limited per source address and per node), the record of every
//! certificate it issues (`trust/issued/<id>`, the allowlist the cluster
//! port admits certificates by), and the rotation of the join secret.
//!
//! The hello answers 401 with the member's PAKE message and confirmation
//! (an HTTP authentication challenge, as in RFC 7804): only a joiner whose
//! confirmation verifies ever gets a 2xx. The current secret is the one
//! sealed in the store by the last `cluster token rotate`, or, before any
//! rotation, the one in this node's trust files.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use socketplane_observe::events::{ClusterPortRefused, RefusedReason};
use socketplane_store::{Compare, Op, Store, Txn};
use socketplane_trust::{
    enrollment_client_config, member_answer, pem_key_fingerprint, AttemptLimits, Attempts,
    ClusterCa, Issued, IssuedView, JoinerPake, NodeKey, Peer, PortMode, Revoked, SealedSecret,
    SessionKey, Token, Trust, TrustFiles, EKM_LABEL, NODE_SERVER_NAME,
};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// The routes a caller without a node certificate may use.
pub const ANONYMOUS_PATHS: &[&str] = &[HELLO_PATH, ENROLL_PATH];
const HELLO_PATH: &str = "/cluster/v1/enroll/hello";
const ENROLL_PATH: &str = "/cluster/v1/enroll";
/// A member asks another whether the cluster issued a certificate (members
/// only: not in [`ANONYMOUS_PATHS`]).
const ISSUED_PATH: &str = "/cluster/v1/issued";
/// How long a confirmation asked of members is not asked again. Short: the
/// first ask often comes within milliseconds of the enrollment, before the
/// other members applied its record.
const CONFIRM_AGAIN_AFTER: Duration = Duration::from_secs(2);
const ENROLL_BODY: usize = 16 << 10;
const ANSWER_BODY: usize = 64 << 10;
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a member keeps a hello's session key for the enroll step.
const PENDING_FOR: Duration = Duration::from_secs(30);
const MAX_PENDING: usize = 1024;
/// The authentication scheme named in the hello's 401.
const PAKE_SCHEME: &str = "SocketPlane-SPAKE2";

/// The joiner's PAKE message.
#[derive(Serialize, Deserialize)]
struct Hello {
    pake: String,
}

/// The member's PAKE message and its confirmation for this TLS session.
#[derive(Serialize, Deserialize)]
struct Challenge {
    pake: String,
    proof: String,
}

/// The join secret as the store keeps it (`keys::join_secret`).
#[derive(Serialize, Deserialize)]
struct JoinSecretRecord {
    generation: u64,
    nonce: String,
    sealed: String,
}

#[derive(Serialize, Deserialize)]
struct EnrollRequest {
    cluster: String,
    node_id: String,
    /// The joiner's certificate request (DER, hex).
    csr: String,
    proof: String,
}

#[derive(Serialize, Deserialize)]
struct EnrollAnswer {
    ca_pem: String,
    ca_key_pem: String,
    cert_pem: String,
    /// The member's view of the allowlist, for the joiner to admit peers
    /// by until its own state has records (absent from older members).
    #[serde(default)]
    issued: Vec<IssuedEntry>,
    /// Node ids registered without a record (members from before records).
    #[serde(default)]
    registered: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct IssuedEntry {
    node_id: String,
    key_sha256: String,
}

/// A certificate the cluster issued, as the store keeps it
/// (`keys::issued`).
#[derive(Serialize, Deserialize)]
struct IssuedRecord {
    key_sha256: String,
}

fn issued_record(key: &[u8; 32]) -> Vec<u8> {
    serde_json::to_vec(&IssuedRecord {
        key_sha256: hex(key),
    })
    .unwrap_or_default()
}

fn parse_key(hex_key: &str) -> Option<[u8; 32]> {
    unhex(hex_key)?.try_into().ok()
}

/// The allowlist from listings of `trust/issued/` and `nodes/` (node ids
/// registered without a record are members from before records existed).
pub fn issued_view(
    issued: &socketplane_store::Listing,
    nodes: &socketplane_store::Listing,
) -> IssuedView {
    let prefix = socketplane_api::keys::issued("");
    let records: HashMap<String, [u8; 32]> = issued
        .kvs
        .iter()
        .filter_map(|kv| {
            let id = kv.key.strip_prefix(&prefix)?;
            let record: IssuedRecord = serde_json::from_slice(&kv.value).ok()?;
            Some((id.to_string(), parse_key(&record.key_sha256)?))
        })
        .collect();
    let nodes_prefix = socketplane_api::keys::nodes();
    let registered = nodes
        .kvs
        .iter()
        .filter_map(|kv| kv.key.strip_prefix(&nodes_prefix))
        .filter(|id| !records.contains_key(*id))
        .map(str::to_string)
        .collect();
    IssuedView {
        records,
        registered,
    }
}

/// This node's trust: what the cluster port serves, what the store dials
/// with, and who may no longer connect.
pub struct Standing {
    files: TrustFiles,
    cluster: String,
    node_id: String,
    /// `--open`, or a cluster founded with it.
    pub open: bool,
    /// The token given at start (`--token`, `SOCKETPLANE_TOKEN`).
    token: Option<Token>,
    trust: RwLock<Option<Trust>>,
    mode: watch::Sender<PortMode>,
    pub revoked: Revoked,
    /// The certificates the cluster issued (the port's allowlist).
    pub issued: Issued,
    /// Confirmations recently asked of members (see
    /// [`confirm_with_members`]), so a forged certificate cannot make this
    /// node ask them again and again.
    asked: Mutex<HashMap<(String, [u8; 32]), Instant>>,
    confirming: std::sync::atomic::AtomicBool,
    /// Whether this node is a store member (only members can record the
    /// certificates they issue, so only members enroll others).
    member: std::sync::atomic::AtomicBool,
    /// Where the rotated secret lives (set once the store is open).
    store: OnceLock<Arc<dyn Store>>,
    /// Hellos waiting for their enroll step, by TLS session.
    pending: Mutex<HashMap<[u8; 32], (SessionKey, Instant)>>,
    attempts: Attempts,
}

impl Standing {
    /// Loads or creates this node's trust material. A founding node
    /// (`bootstrap` and no state) creates the cluster CA and, without a
    /// token, a secret; a joiner waits to enroll.
    pub fn prepare(
        data_dir: &std::path::Path,
        cluster: &str,
        node_id: &str,
        token: Option<&str>,
        open: bool,
        founding: bool,
        member: bool,
    ) -> Result<Arc<Standing>> {
        let files = TrustFiles::new(data_dir);
        let trust_err = |what: &str| {
            let what = what.to_string();
            move |e: socketplane_trust::TrustError| Error::Config(format!("{what}: {e}"))
        };
        let token = token
            .map(Token::parse)
            .transpose()
            .map_err(trust_err("--token"))?;
        if open && token.is_some() {
            return Err(Error::Config(
                "--open and --token contradict each other: an open cluster has no token".into(),
            ));
        }
        let mut trust = files.load().map_err(trust_err("the trust material"))?;
        let mut open = open || files.is_open();
        if trust.is_none() && !open {
            if member {
                // State from before clusters had trust material.
                tracing::warn!("This node's cluster has no trust material (made by an older version): serving it unauthenticated, as with --open.");
                open = true;
            } else if founding {
                let secret = match &token {
                    Some(t) if t.ca_fingerprint.is_some() => {
                        return Err(Error::Config("--token names an existing cluster's CA: to found a new cluster give a bare secret (or none); to join, drop --bootstrap".into()))
                    }
                    Some(t) => t.secret.clone(),
                    None => Token::generate_secret(),
                };
                let founded = Trust::found(cluster, node_id, secret)
                    .map_err(trust_err("creating the cluster CA"))?;
                files
                    .save(&founded)
                    .map_err(trust_err("saving the trust material"))?;
                tracing::info!(dir = %files.dir().display(), "Created the cluster CA; `socketplane cluster token` prints the token other hosts join with.");
                trust = Some(founded);
            }
        }
        if open && founding && !member {
            files
                .mark_open()
                .map_err(trust_err("recording the open cluster"))?;
        }
        let mode = match (&trust, open) {
            (_, true) => PortMode::Open,
            (Some(t), false) => PortMode::Tls(
                t.server_config()
                    .map_err(trust_err("the node certificate"))?,
            ),
            (None, false) => PortMode::Closed,
        };
        Ok(Arc::new(Standing {
            files,
            cluster: cluster.to_string(),
            node_id: node_id.to_string(),
            open,
            token,
            trust: RwLock::new(trust),
            mode: watch::channel(mode).0,
            revoked: Revoked::default(),
            issued: Issued::default(),
            asked: Mutex::new(HashMap::new()),
            confirming: Default::default(),
            member: Default::default(),
            store: OnceLock::new(),
            pending: Mutex::new(HashMap::new()),
            attempts: Attempts::new(AttemptLimits::default()),
        }))
    }

    /// This node is a store member from now on: it may enroll others.
    pub fn set_member(&self) {
        self.member
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_member(&self) -> bool {
        self.member.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The store that holds the rotated secret.
    pub fn use_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    pub fn mode(&self) -> watch::Receiver<PortMode> {
        self.mode.subscribe()
    }

    fn current(&self) -> Option<Trust> {
        self.trust.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The TLS the store dials peers with, once this node has a certificate.
    pub fn client_tls(&self) -> Result<Option<rustls::ClientConfig>> {
        match self.current() {
            Some(t) if !self.open => t
                .client_config()
                .map(Some)
                .map_err(|e| Error::Config(format!("the node certificate: {e}"))),
            _ => Ok(None),
        }
    }

    /// Whether joining needs an enrollment first.
    pub fn needs_enrollment(&self) -> bool {
        !self.open && self.current().is_none()
    }

    /// The full token for other hosts (`cluster token`): `Ok(None)` for an
    /// open cluster or a node that has not enrolled yet.
    pub async fn token(&self) -> std::result::Result<Option<String>, String> {
        let Some(trust) = self.current().filter(|_| !self.open) else {
            return Ok(None);
        };
        let secret = self.current_secret(&trust).await?;
        Ok(Some(Token::full(trust.ca.cert_der(), &secret)))
    }

    /// The secret joiners must prove now: the one sealed in the store by
    /// the last rotation, else this node's own.
    async fn current_secret(&self, trust: &Trust) -> std::result::Result<String, String> {
        let Some(store) = self.store.get() else {
            return Ok(trust.secret.clone());
        };
        let kv = store
            .get(&socketplane_api::keys::join_secret())
            .await
            .map_err(|e| format!("reading the join secret: {e}"))?;
        let Some(kv) = kv else {
            return Ok(trust.secret.clone());
        };
        let record: JoinSecretRecord = serde_json::from_slice(&kv.value)
            .map_err(|e| format!("the stored join secret is corrupt: {e}"))?;
        SealedSecret {
            generation: record.generation,
            nonce: record.nonce,
            sealed: record.sealed,
        }
        .open(&trust.ca, &self.cluster)
        .map_err(|e| e.to_string())
    }

    /// `cluster token rotate`: a new secret for every member to enroll
    /// with; the old one stops working at once. Members keep their
    /// certificates. Returns the new full token.
    pub async fn rotate(&self) -> socketplane_cluster::Result<String> {
        use socketplane_cluster::Error as E;
        if self.open {
            return Err(E::Conflict(
                "this cluster was founded with --open: it has no token to rotate".into(),
            ));
        }
        let Some(mut trust) = self.current() else {
            return Err(E::Unavailable(
                "this node has not enrolled yet: it cannot rotate the token".into(),
            ));
        };
        let Some(store) = self.store.get() else {
            return Err(E::Unavailable("the store is not open yet".into()));
        };
        let key = socketplane_api::keys::join_secret();
        let kv = store.get(&key).await.map_err(E::from)?;
        let (generation, compare) = match &kv {
            Some(kv) => {
                let old: JoinSecretRecord = serde_json::from_slice(&kv.value)
                    .map_err(|e| E::Invalid(format!("the stored join secret is corrupt: {e}")))?;
                (
                    old.generation + 1,
                    Compare::mod_revision(&key, kv.mod_revision),
                )
            }
            None => (1, Compare::absent(&key)),
        };
        let secret = Token::generate_secret();
        let sealed = SealedSecret::seal(&trust.ca, &self.cluster, generation, &secret)
            .map_err(|e| E::Unavailable(e.to_string()))?;
        let record = serde_json::to_vec(&JoinSecretRecord {
            generation,
            nonce: sealed.nonce,
            sealed: sealed.sealed,
        })
        .map_err(|e| E::Invalid(e.to_string()))?;
        let done = store
            .txn(Txn::new().when(compare).then(Op::put(&key, record)))
            .await
            .map_err(E::from)?;
        if !done.succeeded {
            return Err(E::Conflict(
                "another member rotated the token at the same time: run `cluster token` to see it"
                    .into(),
            ));
        }
        // This node's files follow, so the secret there is current too.
        trust.secret = secret.clone();
        if let Err(error) = self.files.save(&trust) {
            tracing::warn!(%error, "Rotated the token, but could not save it in this node's trust files (the store holds it).");
        }
        *self.trust.write().unwrap_or_else(|e| e.into_inner()) = Some(trust.clone());
        tracing::info!(
            generation,
            "Rotated the join token: the old one no longer admits hosts."
        );
        Ok(Token::full(trust.ca.cert_der(), &secret))
    }

    /// Records this node's own certificate in the allowlist if nothing is
    /// recorded for its id (the founder's, and a member's from before
    /// records existed). `Ok(false)`: nothing to record (open cluster, not
    /// enrolled). A record for another key is left alone and logged.
    pub async fn record_self(&self) -> std::result::Result<bool, String> {
        let Some(trust) = self.current().filter(|_| !self.open) else {
            return Ok(false);
        };
        let Some(store) = self.store.get() else {
            return Err("the store is not open yet".into());
        };
        let own = trust.key_fingerprint().map_err(|e| e.to_string())?;
        let key = socketplane_api::keys::issued(&self.node_id);
        let done = store
            .txn(
                Txn::new()
                    .when(Compare::absent(&key))
                    .then(Op::put(&key, issued_record(&own))),
            )
            .await
            .map_err(|e| e.to_string())?;
        if done.succeeded {
            self.issued.insert(&self.node_id, own);
            tracing::info!("Recorded this node's certificate in the cluster's allowlist.");
            return Ok(true);
        }
        let kv = store.get(&key).await.map_err(|e| e.to_string())?;
        let recorded = kv
            .and_then(|kv| serde_json::from_slice::<IssuedRecord>(&kv.value).ok())
            .and_then(|r| parse_key(&r.key_sha256));
        if recorded != Some(own) {
            tracing::error!(node = %self.node_id, "The cluster recorded another certificate for this node id than the one in this node's trust files: members will refuse this node. Move the data dir aside and join again.");
        }
        Ok(true)
    }

    /// Keeps a hello's session key for its enroll step.
    fn remember(&self, ekm: [u8; 32], key: SessionKey) -> bool {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING {
            pending.retain(|_, (_, at)| now.duration_since(*at) < PENDING_FOR);
            if pending.len() >= MAX_PENDING {
                return false;
            }
        }
        pending.insert(ekm, (key, now));
        true
    }

    fn take_pending(&self, ekm: &[u8; 32]) -> Option<SessionKey> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .remove(ekm)
            .filter(|(_, at)| at.elapsed() < PENDING_FOR)
            .map(|(key, _)| key)
    }

    /// Enrolls with `peer`: on success this node has its certificate, the
    /// port serves TLS and the returned config dials members.
    ///
    /// `key` is the node's key for every attempt of one join, so attempts
    /// in parallel through several members all record the same key for
    /// this node id (`trust/issued/<id>`), whichever answers first.
    pub async fn enroll(
        &self,
        peer: SocketAddr,
        key: &NodeKey,
    ) -> std::result::Result<rustls::ClientConfig, String> {
        let Some(token) = &self.token else {
            return Err("this node has no cluster token: start it with --token (or SOCKETPLANE_TOKEN) set to the output of `socketplane cluster token` on a member".into());
        };
        let key = key.clone();
        let csr = key.request(&self.node_id).map_err(|e| e.to_string())?;
        let answer = tokio::time::timeout(
            STEP_TIMEOUT * 3,
            enroll_with(peer, token, &self.cluster, &self.node_id, &csr),
        )
        .await
        .map_err(|_| "the enrollment timed out".to_string())??;
        let ca =
            ClusterCa::from_pem(&answer.ca_pem, &answer.ca_key_pem).map_err(|e| e.to_string())?;
        if let Some(pin) = token.ca_fingerprint {
            if ca.fingerprint() != pin {
                return Err("the member sent a CA other than the token's".into());
            }
        }
        let seed = IssuedView {
            records: answer
                .issued
                .iter()
                .filter_map(|e| Some((e.node_id.clone(), parse_key(&e.key_sha256)?)))
                .collect(),
            registered: answer.registered.iter().cloned().collect(),
        };
        let trust = Trust {
            ca,
            secret: token.secret.clone(),
            node_key: key,
            node_cert_pem: answer.cert_pem,
        };
        let server = trust.server_config().map_err(|e| e.to_string())?;
        let client = trust.client_config().map_err(|e| e.to_string())?;
        self.files.save(&trust).map_err(|e| e.to_string())?;
        self.issued.seed(seed);
        *self.trust.write().unwrap_or_else(|e| e.into_inner()) = Some(trust);
        self.mode.send_replace(PortMode::Tls(server));
        tracing::info!(%peer, "Enrolled: this node has its certificate from the cluster CA.");
        Ok(client)
    }

    /// The member's side of enrollment.
    pub fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route(HELLO_PATH, post(hello))
            .route(ENROLL_PATH, post(enroll))
            .route(ISSUED_PATH, post(issued))
            .layer(DefaultBodyLimit::max(ENROLL_BODY))
            .with_state(self.clone())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * ENROLL_BODY || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, why.to_string()).into_response()
}

fn refusal(reason: RefusedReason, peer: SocketAddr) {
    socketplane_observe::emit(ClusterPortRefused {
        reason,
        peer: Some(peer),
    });
}

/// Both steps' answer when this node has no trust to enroll others with
/// or is no store member yet (it could not record the certificate), or
/// the connection has no exported keying material to bind the steps to.
fn cannot_enroll() -> Response {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "this node cannot enroll others",
    )
}

/// The first step: the joiner's PAKE message in, the member's message and
/// confirmation out, as a 401 challenge. Every hello costs the source one
/// attempt until its enroll step proves the secret.
async fn hello(
    State(s): State<Arc<Standing>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let (Some(trust), Some(ekm), true) = (s.current(), peer.ekm, s.is_member()) else {
        return cannot_enroll();
    };
    if let Err(spent) = s.attempts.begin(peer.addr.ip()) {
        refusal(RefusedReason::EnrollAttempts, peer.addr);
        let secs = spent.wait.as_secs().max(1);
        let why = if spent.node_wide {
            tracing::warn!(peer = %peer.addr, "Too many failed enrollments with this node (from any address); refusing enrollments for a while.");
            format!("too many failed enrollment attempts with this node: retry in {secs} s")
        } else {
            tracing::warn!(peer = %peer.addr, "Too many failed enrollments from this address; refusing it for a while.");
            format!(
                "too many failed enrollment attempts from {}: retry in {secs} s",
                peer.addr.ip()
            )
        };
        let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, &why);
        r.headers_mut()
            .insert(axum::http::header::RETRY_AFTER, secs.into());
        return r;
    }
    let Some(message) = serde_json::from_slice::<Hello>(&body)
        .ok()
        .and_then(|h| unhex(&h.pake))
    else {
        return refuse(StatusCode::BAD_REQUEST, "want {\"pake\": <hex>}");
    };
    let secret = match s.current_secret(&trust).await {
        Ok(secret) => secret,
        Err(why) => {
            tracing::warn!(%why, "Cannot enroll: the current join secret is unknown.");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the join secret is unavailable",
            );
        }
    };
    let Ok((reply, proof, key)) = member_answer(&secret, &ekm, &message) else {
        return refuse(StatusCode::BAD_REQUEST, "bad PAKE message");
    };
    if !s.remember(ekm, key) {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many enrollments at once",
        );
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(Challenge {
            pake: hex(&reply),
            proof: hex(&proof),
        }),
    )
        .into_response();
    r.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static(PAKE_SCHEME),
    );
    r
}

async fn enroll(
    State(s): State<Arc<Standing>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let (Some(trust), Some(ekm)) = (s.current(), peer.ekm) else {
        return cannot_enroll();
    };
    let Ok(req) = serde_json::from_slice::<EnrollRequest>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "bad enrollment request");
    };
    let proof = unhex(&req.proof).unwrap_or_default();
    let Some(key) = s.take_pending(&ekm) else {
        return refuse(StatusCode::FORBIDDEN, "no hello on this connection");
    };
    if !key.verify_joiner(&proof) {
        refusal(RefusedReason::BadToken, peer.addr);
        tracing::warn!(peer = %peer.addr, "A host failed to prove the cluster secret (wrong token); not enrolled.");
        return refuse(StatusCode::FORBIDDEN, "wrong cluster token");
    }
    s.attempts.succeeded(peer.addr.ip());
    if req.cluster != s.cluster {
        return refuse(
            StatusCode::CONFLICT,
            &format!(
                "this node belongs to cluster {:?}, not {:?}",
                s.cluster, req.cluster
            ),
        );
    }
    if s.revoked.contains(&req.node_id) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this node id was removed from the cluster (`socketplane cluster remove`)",
        );
    }
    let Some(csr) = unhex(&req.csr) else {
        return refuse(StatusCode::BAD_REQUEST, "bad certificate request");
    };
    let cert_pem = match trust.ca.issue(&req.node_id, &csr) {
        Ok(cert_pem) => cert_pem,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Ok(key) = pem_key_fingerprint(&cert_pem) else {
        return refuse(StatusCode::BAD_REQUEST, "bad certificate request");
    };
    // Recorded (committed) before the certificate leaves: the cluster
    // admits only what it recorded.
    let Some(store) = s.store.get() else {
        return cannot_enroll();
    };
    if let Err(error) = store
        .put(
            &socketplane_api::keys::issued(&req.node_id),
            issued_record(&key),
        )
        .await
    {
        tracing::warn!(%error, node = %req.node_id, "Could not record a certificate; not enrolling the node.");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster cannot record the certificate now (no quorum?): retry",
        );
    }
    s.issued.insert(&req.node_id, key);
    tracing::info!(peer = %peer.addr, node = %req.node_id, "Enrolled a node.");
    let view = s.issued.view();
    Json(EnrollAnswer {
        ca_pem: trust.ca.cert_pem.clone(),
        ca_key_pem: trust.ca.key_pem.clone(),
        cert_pem,
        issued: view
            .records
            .iter()
            .map(|(id, key)| IssuedEntry {
                node_id: id.clone(),
                key_sha256: hex(key),
            })
            .collect(),
        registered: view.registered.into_iter().collect(),
    })
    .into_response()
}

/// `POST /cluster/v1/issued` (members only): whether this node holds a
/// record that the cluster issued the certificate in the body.
async fn issued(State(s): State<Arc<Standing>>, body: Bytes) -> Response {
    let Some((id, key)) = serde_json::from_slice::<IssuedEntry>(&body)
        .ok()
        .and_then(|e| Some((e.node_id.clone(), parse_key(&e.key_sha256)?)))
    else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "want {\"node_id\", \"key_sha256\"}",
        );
    };
    let recorded = s.issued.recorded(&id, &key) && !s.revoked.contains(&id);
    Json(serde_json::json!({ "issued": recorded })).into_response()
}

/// A certificate of the CA missed this node's allowlist: perhaps this
/// node's state is behind (it was down while the node was enrolled, and
/// that node now leads, so the state cannot catch up without it). Asks the
/// members this node's state knows, over TLS, each checked against this
/// node's allowlist; one that holds the record makes this node admit the
/// certificate. Only with the embedded store (etcd reads are current).
/// One round at a time, of at most eight certificates (a forged
/// certificate costs this node a few requests every two seconds at most).
pub fn confirm_with_members(
    standing: &Arc<Standing>,
    embedded: Option<&Arc<socketplane_store_raft::EmbeddedStore>>,
    missed: HashMap<String, [u8; 32]>,
) {
    use std::sync::atomic::Ordering;
    let Some(embedded) = embedded else {
        return;
    };
    if standing.confirming.swap(true, Ordering::AcqRel) {
        return;
    }
    let (standing, embedded) = (standing.clone(), embedded.clone());
    tokio::spawn(async move {
        confirm(&standing, &embedded, missed).await;
        standing.confirming.store(false, Ordering::Release);
    });
}

async fn confirm(
    standing: &Standing,
    embedded: &socketplane_store_raft::EmbeddedStore,
    missed: HashMap<String, [u8; 32]>,
) {
    let now = Instant::now();
    let missed: Vec<(String, [u8; 32])> = {
        let mut asked = standing.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked.retain(|_, at| now.duration_since(*at) < CONFIRM_AGAIN_AFTER);
        missed
            .into_iter()
            .filter(|(id, key)| {
                standing.issued.check(id, key) != socketplane_trust::Admission::Admitted
                    && !standing.revoked.contains(id)
                    && asked.len() < MAX_PENDING
                    && asked.insert((id.clone(), *key), now).is_none()
            })
            .take(8)
            .collect()
    };
    if missed.is_empty() {
        return;
    }
    let Ok(Some(client)) = standing.client_tls() else {
        tracing::info!("Cannot confirm certificates with members: no client certificate.");
        return;
    };
    let client = Arc::new(client);
    let members: Vec<(String, SocketAddr)> = embedded
        .local_list(&socketplane_api::keys::nodes())
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<socketplane_api::NodeRecord>(&kv.value).ok())
        .filter(|n| n.id != standing.node_id)
        .map(|n| (n.id, SocketAddr::from((n.addr, n.cluster_port))))
        .collect();
    for (id, key) in missed {
        let asks = members
            .iter()
            .filter(|(member, _)| *member != id)
            .map(|(member, addr)| ask_member(standing, client.clone(), member, *addr, &id, &key));
        let answers = futures::future::join_all(asks).await;
        if let Some(member) = answers.into_iter().flatten().next() {
            tracing::info!(node = %id, by = %member, "A member confirmed a certificate this node's state did not know yet (this node is catching up).");
            standing.issued.insert(&id, key);
        } else {
            let asked: Vec<&str> = members.iter().map(|(m, _)| m.as_str()).collect();
            tracing::info!(node = %id, ?asked, "No member confirmed a certificate this node's state does not know.");
        }
    }
}

/// Asks `member` at `addr` whether the cluster issued `id`'s certificate
/// with key `key`: `Some(member)` if it holds the record. The member's own
/// certificate must be one this node's port admits (by the same rule: a
/// member whose own record this node has not applied yet, but whose
/// registration it holds, is asked too).
async fn ask_member(
    standing: &Standing,
    client: Arc<rustls::ClientConfig>,
    member: &str,
    addr: SocketAddr,
    id: &str,
    key: &[u8; 32],
) -> Option<String> {
    let ask = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let name = rustls::pki_types::ServerName::try_from(NODE_SERVER_NAME)
            .ok()?
            .to_owned();
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .ok()?;
        let cert = tls.get_ref().1.peer_certificates()?.first()?.clone();
        let their_id = socketplane_trust::peer_node_id(&cert).ok()?;
        let their_key = socketplane_trust::key_fingerprint(&cert).ok()?;
        if their_id != member
            || standing.revoked.contains(&their_id)
            || standing.issued.check(&their_id, &their_key)
                != socketplane_trust::Admission::Admitted
        {
            return None;
        }
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .ok()?;
        tokio::spawn(conn);
        let body = serde_json::to_vec(&IssuedEntry {
            node_id: id.to_string(),
            key_sha256: hex(key),
        })
        .ok()?;
        let (status, body) = call(&mut sender, ISSUED_PATH, body).await.ok()?;
        let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
        (status.is_success() && answer["issued"] == serde_json::Value::Bool(true))
            .then(|| member.to_string())
    };
    tokio::time::timeout(STEP_TIMEOUT, ask).await.ok().flatten()
}

/// The joiner's side: one TLS connection, the member proves the secret
/// first, then this node proves it and sends its certificate request.
async fn enroll_with(
    peer: SocketAddr,
    token: &Token,
    cluster: &str,
    node_id: &str,
    csr: &[u8],
) -> std::result::Result<EnrollAnswer, String> {
    let config = enrollment_client_config(token.ca_fingerprint).map_err(|e| e.to_string())?;
    let tcp = tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect(peer))
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("connecting: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(NODE_SERVER_NAME)
        .map_err(|e| e.to_string())?
        .to_owned();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            format!(
                "TLS with the member failed (with a full token: its CA is not the token's): {e}"
            )
        })?;
    let mut ekm = [0u8; 32];
    tls.get_ref()
        .1
        .export_keying_material(&mut ekm, EKM_LABEL, None)
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let (pake, message) = JoinerPake::start(&token.secret, &ekm);
    let hello = serde_json::to_vec(&Hello {
        pake: hex(&message),
    })
    .map_err(|e| e.to_string())?;
    let (status, body) = call(&mut sender, HELLO_PATH, hello).await?;
    let challenge: Challenge = match serde_json::from_slice(&body) {
        Ok(c) if status == StatusCode::UNAUTHORIZED => c,
        _ => {
            return Err(format!(
                "the peer refused to prove the cluster secret ({status}): {}",
                String::from_utf8_lossy(&body)
            ))
        }
    };
    let key = pake
        .finish(
            &unhex(&challenge.pake).unwrap_or_default(),
            &unhex(&challenge.proof).unwrap_or_default(),
        )
        .map_err(|_| "the peer could not prove it knows this token's secret: the token is wrong, or the peer is not a member of this cluster".to_string())?;
    let req = EnrollRequest {
        cluster: cluster.to_string(),
        node_id: node_id.to_string(),
        csr: hex(csr),
        proof: hex(&key.joiner_confirmation()),
    };
    let body = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    let (status, body) = call(&mut sender, ENROLL_PATH, body).await?;
    if !status.is_success() {
        return Err(format!(
            "the member refused the enrollment ({status}): {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("bad enrollment answer: {e}"))
}

async fn call(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
    body: Vec<u8>,
) -> std::result::Result<(StatusCode, Bytes), String> {
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, NODE_SERVER_NAME)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(STEP_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| "the member did not answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), ANSWER_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketplane_store::{KeyValue, Listing};

    fn listing(kvs: &[(String, Vec<u8>)]) -> Listing {
        Listing {
            kvs: kvs
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: 1,
                    mod_revision: 1,
                    lease: None,
                })
                .collect(),
            revision: 1,
        }
    }

    #[test]
    fn the_allowlist_reads_records_and_members_registered_without_one() {
        use socketplane_api::keys;
        let issued = listing(&[
            (keys::issued("00000000000000aa"), issued_record(&[1; 32])),
            (keys::issued("00000000000000bb"), b"not json".to_vec()),
            (
                keys::issued("00000000000000cc"),
                br#"{"key_sha256":"0102"}"#.to_vec(),
            ),
        ]);
        let nodes = listing(&[
            (keys::node("00000000000000aa"), b"{}".to_vec()),
            (keys::node("00000000000000dd"), b"{}".to_vec()),
        ]);
        let view = issued_view(&issued, &nodes);
        // Unreadable records count as none (their ids are refused).
        assert_eq!(view.records.len(), 1);
        assert_eq!(view.records.get("00000000000000aa"), Some(&[1; 32]));
        // A node with a record is not "registered without one".
        assert_eq!(
            view.registered.iter().collect::<Vec<_>>(),
            vec!["00000000000000dd"]
        );
    }
}
