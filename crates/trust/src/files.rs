//! What a node keeps in `<data-dir>/trust/` (directory 0700, files 0600):
//! the CA certificate and key, the secret, its own key and certificate;
//! or the marker `open` for a cluster founded with `--open`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::ca::{ClusterCa, NodeKey};
use crate::error::TrustError;
use crate::tls;
use crate::token::Token;

const CA: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const SECRET: &str = "secret";
const NODE_CERT: &str = "node.pem";
const NODE_KEY: &str = "node-key.pem";
const OPEN: &str = "open";

/// A member's trust material.
#[derive(Clone, Debug)]
pub struct Trust {
    pub ca: ClusterCa,
    pub secret: String,
    pub node_key: NodeKey,
    pub node_cert_pem: String,
}

impl Trust {
    /// A founding node's: a new CA, and this node's certificate from it.
    pub fn found(cluster: &str, node_id: &str, secret: String) -> Result<Trust, TrustError> {
        let ca = ClusterCa::generate(cluster)?;
        let node_key = NodeKey::generate()?;
        let node_cert_pem = ca.issue(node_id, &node_key.request(node_id)?)?;
        Ok(Trust {
            ca,
            secret,
            node_key,
            node_cert_pem,
        })
    }

    /// A fresh secret for a founding node without `--token`.
    pub fn found_secret() -> String {
        Token::generate_secret()
    }

    /// The full token (`SPT1-…`) to give other hosts.
    pub fn token(&self) -> String {
        Token::full(self.ca.cert_der(), &self.secret)
    }

    /// The fingerprint of this node's key (what `issued/<id>` records).
    pub fn key_fingerprint(&self) -> Result<[u8; 32], TrustError> {
        tls::pem_key_fingerprint(&self.node_cert_pem)
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TrustError> {
        tls::server_config(
            self.ca.cert_der(),
            &self.node_cert_pem,
            &self.node_key.key_pem,
        )
    }

    pub fn client_config(&self) -> Result<rustls::ClientConfig, TrustError> {
        tls::member_client_config(
            self.ca.cert_der(),
            &self.node_cert_pem,
            &self.node_key.key_pem,
        )
    }
}

/// The trust directory of a data dir.
#[derive(Debug, Clone)]
pub struct TrustFiles {
    dir: PathBuf,
}

impl TrustFiles {
    pub fn new(data_dir: &Path) -> TrustFiles {
        TrustFiles {
            dir: data_dir.join("trust"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this node belongs to a cluster founded with `--open`.
    pub fn is_open(&self) -> bool {
        self.dir.join(OPEN).exists()
    }

    /// The stored material, if this node has enrolled or founded.
    pub fn load(&self) -> Result<Option<Trust>, TrustError> {
        if !self.dir.join(NODE_CERT).exists() {
            return Ok(None);
        }
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TrustError::Io {
                what: "reading",
                path,
                source,
            })
        };
        let corrupt = |e: TrustError| TrustError::Corrupt {
            path: self.dir.clone(),
            detail: e.to_string(),
        };
        let ca = ClusterCa::from_pem(&read(CA)?, &read(CA_KEY)?).map_err(corrupt)?;
        Ok(Some(Trust {
            ca,
            secret: read(SECRET)?.trim().to_string(),
            node_key: NodeKey {
                key_pem: read(NODE_KEY)?,
            },
            node_cert_pem: read(NODE_CERT)?,
        }))
    }

    /// Stores a member's material (the certificate last: its presence
    /// says the rest is complete).
    pub fn save(&self, trust: &Trust) -> Result<(), TrustError> {
        self.make_dir()?;
        self.write(CA, trust.ca.cert_pem.as_bytes())?;
        self.write(CA_KEY, trust.ca.key_pem.as_bytes())?;
        self.write(SECRET, trust.secret.as_bytes())?;
        self.write(NODE_KEY, trust.node_key.key_pem.as_bytes())?;
        self.write(NODE_CERT, trust.node_cert_pem.as_bytes())
    }

    /// Records that this node's cluster is open (founded with `--open`).
    pub fn mark_open(&self) -> Result<(), TrustError> {
        self.make_dir()?;
        self.write(
            OPEN,
            b"this cluster was founded with --open: no authentication\n",
        )
    }

    fn make_dir(&self) -> Result<(), TrustError> {
        let io = |source| TrustError::Io {
            what: "creating",
            path: self.dir.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io)?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
    }

    /// Writes a 0600 file atomically (created with that mode, never wider).
    fn write(&self, name: &str, data: &[u8]) -> Result<(), TrustError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |source| TrustError::Io {
            what: "writing",
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(data).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_round_trips_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let files = TrustFiles::new(tmp.path());
        assert!(files.load().unwrap().is_none());
        let trust = Trust::found("lab", "0123456789abcdef", "a-secret-of-ours".into()).unwrap();
        files.save(&trust).unwrap();
        let back = files.load().unwrap().unwrap();
        assert_eq!(back.token(), trust.token());
        assert!(back.server_config().is_ok() && back.client_config().is_ok());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(files.dir()), 0o700);
        for f in [CA, CA_KEY, SECRET, NODE_CERT, NODE_KEY] {
            assert_eq!(mode(&files.dir().join(f)), 0o600, "{f}");
        }
        assert!(!files.is_open());
        files.mark_open().unwrap();
        assert!(files.is_open());
    }
}
