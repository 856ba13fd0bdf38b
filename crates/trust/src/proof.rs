//! Proofs of the secret, bound to one TLS session: HMAC-SHA256 keyed by
//! the secret over a role label and the session's exported keying
//! material (RFC 5705/8446), so a proof is worthless on any other
//! connection and the secret itself never crosses the wire.

use ring::hmac;

/// The exporter label both sides use.
pub const EKM_LABEL: &[u8] = b"EXPORTER-socketplane-enroll-v1";
const SERVER_ROLE: &[u8] = b"socketplane enroll: member proves the secret\0";
const CLIENT_ROLE: &[u8] = b"socketplane enroll: joiner proves the secret\0";

fn key(secret: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes())
}

fn message(role: &[u8], ekm: &[u8]) -> Vec<u8> {
    [role, ekm].concat()
}

/// What a member sends first.
pub fn server_proof(secret: &str, ekm: &[u8]) -> Vec<u8> {
    hmac::sign(&key(secret), &message(SERVER_ROLE, ekm))
        .as_ref()
        .to_vec()
}

/// What a joiner sends once the member proved itself.
pub fn client_proof(secret: &str, ekm: &[u8]) -> Vec<u8> {
    hmac::sign(&key(secret), &message(CLIENT_ROLE, ekm))
        .as_ref()
        .to_vec()
}

/// Constant-time check of a member's proof.
pub fn verify_server_proof(secret: &str, ekm: &[u8], proof: &[u8]) -> bool {
    hmac::verify(&key(secret), &message(SERVER_ROLE, ekm), proof).is_ok()
}

/// Constant-time check of a joiner's proof.
pub fn verify_client_proof(secret: &str, ekm: &[u8], proof: &[u8]) -> bool {
    hmac::verify(&key(secret), &message(CLIENT_ROLE, ekm), proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_are_bound_to_role_secret_and_session() {
        let p = server_proof("secret-one", b"ekm-a");
        assert!(verify_server_proof("secret-one", b"ekm-a", &p));
        assert!(!verify_server_proof("secret-two", b"ekm-a", &p));
        assert!(!verify_server_proof("secret-one", b"ekm-b", &p));
        assert!(!verify_client_proof("secret-one", b"ekm-a", &p));
        let c = client_proof("secret-one", b"ekm-a");
        assert!(verify_client_proof("secret-one", b"ekm-a", &c));
        assert!(!verify_client_proof("secret-one", b"ekm-a", &c[..16]));
    }
}
