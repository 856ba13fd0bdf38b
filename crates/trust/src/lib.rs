//! Cluster trust for the cluster port: the join token, the cluster CA and
//! node certificates, the rustls configurations, and the proofs a joining
//! node and a member exchange before the member issues a certificate.
//!
//! Model: Docker Swarm's join tokens and k3s's server token. The founding
//! node creates a CA; the full token (`SPT1-<sha256 of the CA>-<secret>`)
//! pins that CA, a bare secret trusts the first member that proves it
//! knows the secret. A joining node and a member prove the secret to each
//! other with a password-authenticated key exchange (SPAKE2) bound to the
//! TLS session's exported keying material, the member confirming first: the
//! secret never crosses the wire, a joiner never sends anything that tests
//! a guess of it to a peer that has not proved it, and no exchange, recorded
//! or provoked, allows an offline guess of a weak user-chosen secret.
//! The member then signs the joiner's certificate request: the joiner's key
//! never leaves it.
//!
//! # Modules
//!
//! `error` ← `token`, `proof` (the PAKE) ← `ca` (certificates) ← `sealed`
//! (the rotated secret as the store keeps it), `tls` (rustls
//! configurations, peer identity) ← `files` (what a node keeps in its data
//! dir), `port` (the guarded server: limits, TLS, who may call what),
//! `attempts` (failed enrollments per source address and per node),
//! `issued` (the allowlist: which certificate the cluster issued to which
//! node id).

mod attempts;
mod ca;
mod error;
mod files;
mod issued;
mod port;
mod proof;
mod sealed;
mod tls;
mod token;

pub use attempts::{AttemptLimits, Attempts, Spent};
pub use ca::{ClusterCa, NodeKey, NODE_SERVER_NAME};
pub use error::TrustError;
pub use files::{Trust, TrustFiles};
pub use issued::{Admission, Issued, IssuedView};
pub use port::{serve, Peer, PortLimits, PortMode, PortServer, Revoked};
pub use proof::{member_answer, JoinerPake, SessionKey, EKM_LABEL};
pub use sealed::SealedSecret;
pub use tls::{
    enrollment_client_config, install_crypto_provider, key_fingerprint, member_client_config,
    peer_node_id, pem_key_fingerprint, server_config,
};
pub use token::{fingerprint, Token};
