//! rustls configurations for the cluster port (TLS 1.3 only, ring), and
//! the node id a peer's certificate names.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::ca::NODE_SERVER_NAME;
use crate::error::TrustError;
use crate::token::fingerprint;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// Makes ring the process-wide rustls provider (for libraries that build
/// their own configurations); harmless if one is installed.
pub fn install_crypto_provider() {
    let _ = crypto::ring::default_provider().install_default();
}

fn certs(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TrustError::PeerCertificate(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TrustError::PeerCertificate("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn key(pem_text: &str) -> Result<PrivateKeyDer<'static>, TrustError> {
    PrivateKeyDer::from_pem_slice(pem_text.as_bytes())
        .map_err(|e| TrustError::PeerCertificate(format!("bad PEM key: {e}")))
}

fn roots(ca_der: &[u8]) -> Result<Arc<RootCertStore>, TrustError> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    Ok(Arc::new(roots))
}

/// The cluster port's server side: presents the node certificate (with
/// the CA, so a token's fingerprint can be checked), asks for a client
/// certificate of the cluster CA but lets a handshake without one through:
/// such a connection may only enroll.
pub fn server_config(
    ca_der: &[u8],
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>, TrustError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_der)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TrustError::PeerCertificate(format!("client verifier: {e}")))?;
    let mut chain = certs(cert_pem)?;
    chain.push(CertificateDer::from(ca_der.to_vec()));
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key(key_pem)?)?;
    Ok(Arc::new(config))
}

/// A member dialling a member: the peer must present a certificate of the
/// cluster CA; this node presents its own.
pub fn member_client_config(
    ca_der: &[u8],
    cert_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, TrustError> {
    let inner = WebPkiServerVerifier::builder_with_provider(roots(ca_der)?, provider())
        .build()
        .map_err(|e| TrustError::PeerCertificate(format!("server verifier: {e}")))?;
    let verifier = Arc::new(NodeVerifier::Ca(inner));
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(certs(cert_pem)?, key(key_pem)?)?)
}

/// A joining node dialling a member to enroll: with a pinned CA
/// fingerprint the member must present a certificate of that CA; without
/// one any certificate passes here and the member proves the secret
/// instead, bound to this session.
pub fn enrollment_client_config(pin: Option<[u8; 32]>) -> Result<ClientConfig, TrustError> {
    let verifier = Arc::new(match pin {
        Some(fp) => NodeVerifier::Pinned(fp),
        None => NodeVerifier::FirstMember,
    });
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The node id (certificate common name) of a verified peer certificate.
pub fn peer_node_id(der: &[u8]) -> Result<String, TrustError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TrustError::PeerCertificate(e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| TrustError::PeerCertificate("no common name".into()))?;
    Ok(cn.to_string())
}

/// The fingerprint of a certificate's key: SHA-256 of its
/// SubjectPublicKeyInfo (what `issued/<id>` records).
pub fn key_fingerprint(der: &[u8]) -> Result<[u8; 32], TrustError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TrustError::PeerCertificate(e.to_string()))?;
    Ok(fingerprint(cert.public_key().raw))
}

/// [`key_fingerprint`] of the first certificate in PEM.
pub fn pem_key_fingerprint(cert_pem: &str) -> Result<[u8; 32], TrustError> {
    let der = certs(cert_pem)?;
    key_fingerprint(&der[0])
}

/// How a client checks a member's certificate.
#[derive(Debug)]
enum NodeVerifier {
    /// Chains to the cluster CA; the name checked is [`NODE_SERVER_NAME`].
    Ca(Arc<WebPkiServerVerifier>),
    /// Chains to the CA with this fingerprint, sent along by the member.
    Pinned([u8; 32]),
    /// Anything (the enrollment proofs authenticate the member).
    FirstMember,
}

fn node_name() -> ServerName<'static> {
    ServerName::try_from(NODE_SERVER_NAME).expect("a valid DNS name")
}

impl ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self {
            NodeVerifier::Ca(inner) => inner.verify_server_cert(
                end_entity,
                intermediates,
                &node_name(),
                ocsp_response,
                now,
            ),
            NodeVerifier::Pinned(fp) => {
                let ca = intermediates
                    .iter()
                    .find(|c| fingerprint(c) == *fp)
                    .ok_or_else(|| {
                        rustls::Error::General(
                            "the peer's CA does not match the token's fingerprint".into(),
                        )
                    })?;
                let roots = roots(ca).map_err(|e| rustls::Error::General(e.to_string()))?;
                WebPkiServerVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?
                    .verify_server_cert(end_entity, &[], &node_name(), ocsp_response, now)
            }
            NodeVerifier::FirstMember => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
