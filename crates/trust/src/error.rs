use std::path::PathBuf;

/// Everything that can go wrong with the cluster's trust material.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("invalid cluster token: {0}")]
    Token(String),
    #[error("certificate: {what}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("enrollment proof: {0}")]
    Proof(String),
    #[error("the sealed join secret: {0}")]
    Sealed(String),
    #[error("the peer certificate is invalid: {0}")]
    PeerCertificate(String),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
}

impl TrustError {
    pub(crate) fn cert(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> TrustError {
        let what = what.into();
        move |source| TrustError::Certificate { what, source }
    }
}
