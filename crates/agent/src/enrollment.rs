//! This node's standing on the cluster port: its trust material (founded,
//! enrolled, or an `--open` cluster), how a joining node enrolls with a
//! member (proofs of the secret bound to the TLS session, the member
//! first, then a certificate for the joiner's own key), and the member's
//! side of it (`/cluster/v1/enroll/hello`, `/cluster/v1/enroll`).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use socketplane_trust::{
    client_proof, enrollment_client_config, server_proof, verify_client_proof, verify_server_proof,
    ClusterCa, NodeKey, Peer, PortMode, Revoked, Token, Trust, TrustFiles, EKM_LABEL,
    NODE_SERVER_NAME,
};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// The routes a caller without a node certificate may use.
pub const ANONYMOUS_PATHS: &[&str] = &[HELLO_PATH, ENROLL_PATH];
const HELLO_PATH: &str = "/cluster/v1/enroll/hello";
const ENROLL_PATH: &str = "/cluster/v1/enroll";
const ENROLL_BODY: usize = 16 << 10;
const ANSWER_BODY: usize = 64 << 10;
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// A member's proof of the secret for this TLS session.
#[derive(Serialize, Deserialize)]
struct Hello {
    proof: String,
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
        }))
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

    /// The full token for other hosts (`cluster token`).
    pub fn token(&self) -> Option<String> {
        if self.open {
            return None;
        }
        self.current().map(|t| t.token())
    }

    /// Enrolls with `peer`: on success this node has its certificate, the
    /// port serves TLS and the returned config dials members.
    pub async fn enroll(
        &self,
        peer: SocketAddr,
    ) -> std::result::Result<rustls::ClientConfig, String> {
        let Some(token) = &self.token else {
            return Err("this node has no cluster token: start it with --token (or SOCKETPLANE_TOKEN) set to the output of `socketplane cluster token` on a member".into());
        };
        let key = NodeKey::generate().map_err(|e| e.to_string())?;
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
        let trust = Trust {
            ca,
            secret: token.secret.clone(),
            node_key: key,
            node_cert_pem: answer.cert_pem,
        };
        let server = trust.server_config().map_err(|e| e.to_string())?;
        let client = trust.client_config().map_err(|e| e.to_string())?;
        self.files.save(&trust).map_err(|e| e.to_string())?;
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

async fn hello(State(s): State<Arc<Standing>>, Extension(peer): Extension<Peer>) -> Response {
    let (Some(trust), Some(ekm)) = (s.current(), peer.ekm) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node cannot enroll others",
        );
    };
    Json(Hello {
        proof: hex(&server_proof(&trust.secret, &ekm)),
    })
    .into_response()
}

async fn enroll(
    State(s): State<Arc<Standing>>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let (Some(trust), Some(ekm)) = (s.current(), peer.ekm) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node cannot enroll others",
        );
    };
    let Ok(req) = serde_json::from_slice::<EnrollRequest>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "bad enrollment request");
    };
    let proof = unhex(&req.proof).unwrap_or_default();
    if !verify_client_proof(&trust.secret, &ekm, &proof) {
        tracing::warn!(peer = %peer.addr, "A host failed to prove the cluster secret (wrong token); not enrolled.");
        return refuse(StatusCode::FORBIDDEN, "wrong cluster token");
    }
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
    match trust.ca.issue(&req.node_id, &csr) {
        Ok(cert_pem) => {
            tracing::info!(peer = %peer.addr, node = %req.node_id, "Enrolled a node.");
            Json(EnrollAnswer {
                ca_pem: trust.ca.cert_pem.clone(),
                ca_key_pem: trust.ca.key_pem.clone(),
                cert_pem,
            })
            .into_response()
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    }
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
    let (status, body) = call(&mut sender, HELLO_PATH, Vec::new()).await?;
    let hello: Hello = match serde_json::from_slice(&body) {
        Ok(h) if status.is_success() => h,
        _ => {
            return Err(format!(
                "the peer refused to prove the cluster secret ({status})"
            ))
        }
    };
    let proof = unhex(&hello.proof).unwrap_or_default();
    if !verify_server_proof(&token.secret, &ekm, &proof) {
        return Err("the peer could not prove it knows this token's secret: the token is wrong, or the peer is not a member of this cluster".into());
    }
    let req = EnrollRequest {
        cluster: cluster.to_string(),
        node_id: node_id.to_string(),
        csr: hex(csr),
        proof: hex(&client_proof(&token.secret, &ekm)),
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
