//! Cluster trust for the cluster port: the join token, the cluster CA and
//! node certificates, the rustls configurations, and the proofs a joining
//! node and a member exchange before the member issues a certificate.
//!
//! Model: Docker Swarm's join tokens and k3s's server token. The founding
//! node creates a CA; the full token (`SPT1-<sha256 of the CA>-<secret>`)
//! pins that CA, a bare secret trusts the first member that proves it
//! knows the secret. A joining node and a member prove the secret to each
//! other with HMACs over the TLS session's exported keying material (the
//! member first), so the secret never crosses the wire and a node never
//! sends anything derived from it to a peer that has not proved it first.
//! The member then signs the joiner's certificate request: the joiner's key
//! never leaves it.
//!
//! # Modules
//!
//! `error` ← `token`, `proof` ← `ca` (certificates) ← `tls` (rustls
//! configurations, peer identity) ← `files` (what a node keeps in its data
//! dir), `port` (the guarded server: limits, TLS, who may call what).

mod ca;
mod error;
mod files;
mod port;
mod proof;
mod tls;
mod token;

pub use ca::{ClusterCa, NodeKey, NODE_SERVER_NAME};
pub use error::TrustError;
pub use files::{Trust, TrustFiles};
pub use port::{serve, Peer, PortLimits, PortMode, PortServer, Revoked};
pub use proof::{client_proof, server_proof, verify_client_proof, verify_server_proof, EKM_LABEL};
pub use tls::{
    enrollment_client_config, install_crypto_provider, member_client_config, peer_node_id,
    server_config,
};
pub use token::{fingerprint, Token};
