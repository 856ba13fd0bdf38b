//! The cluster CA and node certificates (rcgen). A node certificate names
//! the node id in its common name and carries the one DNS name every node
//! certificate has, [`NODE_SERVER_NAME`]: nodes are dialled by address,
//! and addresses change (`cluster bind`), so names are not checked beyond
//! it; trust comes from the CA.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::error::TrustError;
use crate::token::fingerprint;

/// The TLS server name of every node.
pub const NODE_SERVER_NAME: &str = "socketplane-node";

/// The cluster CA: its certificate and key (PEM).
#[derive(Clone)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn pem_to_der(pem_text: &str) -> Result<Vec<u8>, TrustError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem_text.as_bytes())
        .map(|d| d.to_vec())
        .map_err(|e| TrustError::PeerCertificate(format!("bad PEM certificate: {e}")))
}

impl ClusterCa {
    /// A new CA for `cluster`.
    pub fn generate(cluster: &str) -> Result<ClusterCa, TrustError> {
        let key = KeyPair::generate().map_err(TrustError::cert("generating the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("socketplane cluster {cluster} CA"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(TrustError::cert("signing the CA certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }

    /// A CA loaded from PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TrustError> {
        let cert_der = pem_to_der(cert_pem)?;
        KeyPair::from_pem(key_pem).map_err(TrustError::cert("reading the CA key"))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der,
        })
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert_der)
    }

    /// Signs a node certificate for `node_id` over the public key of
    /// `csr_der` (whose signature proves the requester holds the key).
    /// Names and usages come from here, never from the request.
    pub fn issue(&self, node_id: &str, csr_der: &[u8]) -> Result<String, TrustError> {
        if node_id.len() != 16 || !node_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TrustError::PeerCertificate(format!(
                "invalid node id {node_id:?}"
            )));
        }
        let key =
            KeyPair::from_pem(&self.key_pem).map_err(TrustError::cert("reading the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key)
            .map_err(TrustError::cert("reading the CA certificate"))?;
        let mut csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(TrustError::cert("reading the certificate request"))?;
        csr.params = node_params(node_id)?;
        let cert = csr
            .signed_by(&issuer)
            .map_err(TrustError::cert("signing a node certificate"))?;
        Ok(cert.pem())
    }
}

fn node_params(node_id: &str) -> Result<CertificateParams, TrustError> {
    let mut params = CertificateParams::new(vec![NODE_SERVER_NAME.to_string()])
        .map_err(TrustError::cert("node certificate names"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

/// A node's own key (PEM); it never leaves the node.
#[derive(Clone)]
pub struct NodeKey {
    pub key_pem: String,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey").finish_non_exhaustive()
    }
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, TrustError> {
        let key = KeyPair::generate().map_err(TrustError::cert("generating the node key"))?;
        Ok(NodeKey {
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate request (DER) for `node_id`, signed with this key.
    pub fn request(&self, node_id: &str) -> Result<Vec<u8>, TrustError> {
        let key =
            KeyPair::from_pem(&self.key_pem).map_err(TrustError::cert("reading the node key"))?;
        let csr = node_params(node_id)?
            .serialize_request(&key)
            .map_err(TrustError::cert("making the certificate request"))?;
        Ok(csr.der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_signs_a_request_for_the_node_id_it_is_told() {
        let ca = ClusterCa::generate("lab").unwrap();
        let again = ClusterCa::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        let key = NodeKey::generate().unwrap();
        let csr = key.request("00000000000000aa").unwrap();
        let cert = ca.issue("00000000000000ab", &csr).unwrap();
        let der = pem_to_der(&cert).unwrap();
        assert_eq!(crate::tls::peer_node_id(&der).unwrap(), "00000000000000ab");
        assert!(ca.issue("not-an-id", &csr).is_err());
        assert!(ca.issue("00000000000000ab", b"garbage").is_err());
    }
}
