//! Proofs of the secret, bound to one TLS session, by a password-
//! authenticated key exchange (SPAKE2 over Ed25519, RustCrypto's `spake2`).
//!
//! Why a PAKE and not an HMAC of the secret: whoever sees an HMAC keyed by
//! the secret (an outsider who asks a member for its proof) can test a
//! dictionary against it offline, and a user-chosen secret falls. With
//! SPAKE2 a message reveals nothing about the secret (it is blinded by a
//! fresh random scalar), and each exchange lets an active attacker test
//! exactly one guess, online, against a member that counts failures
//! (`enrollment` rate-limits per source address). A recorded exchange, from
//! the wire or by talking to a member, gives no offline test at all.
//!
//! Both identities carry the session's exported keying material (RFC
//! 5705/8446), so a key and its confirmations belong to one TLS session:
//! a relay between two sessions (a joiner that pins no CA trusts whoever
//! proves the secret) gets nothing it can use on either.

use ring::hmac;
use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::error::TrustError;

/// The exporter label both sides use.
pub const EKM_LABEL: &[u8] = b"EXPORTER-socketplane-enroll-v2";
const JOINER_ID: &[u8] = b"socketplane joiner\0";
const MEMBER_ID: &[u8] = b"socketplane member\0";
const MEMBER_ROLE: &[u8] = b"socketplane enroll: the member knows the secret";
const JOINER_ROLE: &[u8] = b"socketplane enroll: the joiner knows the secret";

fn identities(ekm: &[u8]) -> (Identity, Identity) {
    (
        Identity::new(&[JOINER_ID, ekm].concat()),
        Identity::new(&[MEMBER_ID, ekm].concat()),
    )
}

/// The key both sides agree on when they used the same secret on the same
/// session; the confirmations prove it to the other side.
pub struct SessionKey(hmac::Key);

impl SessionKey {
    fn new(key: &[u8]) -> SessionKey {
        SessionKey(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// What the member sends with its PAKE message.
    pub fn member_confirmation(&self) -> Vec<u8> {
        hmac::sign(&self.0, MEMBER_ROLE).as_ref().to_vec()
    }

    /// What the joiner sends once the member proved itself.
    pub fn joiner_confirmation(&self) -> Vec<u8> {
        hmac::sign(&self.0, JOINER_ROLE).as_ref().to_vec()
    }

    /// Constant-time check of the joiner's confirmation.
    pub fn verify_joiner(&self, confirmation: &[u8]) -> bool {
        hmac::verify(&self.0, JOINER_ROLE, confirmation).is_ok()
    }

    fn verify_member(&self, confirmation: &[u8]) -> bool {
        hmac::verify(&self.0, MEMBER_ROLE, confirmation).is_ok()
    }
}

/// The joiner's half of the exchange, between its message and the
/// member's answer.
pub struct JoinerPake(Spake2<Ed25519Group>);

impl JoinerPake {
    /// Starts the exchange: the message to send (it reveals nothing about
    /// the secret).
    pub fn start(secret: &str, ekm: &[u8]) -> (JoinerPake, Vec<u8>) {
        let (joiner, member) = identities(ekm);
        let (state, message) =
            Spake2::<Ed25519Group>::start_a(&Password::new(secret), &joiner, &member);
        (JoinerPake(state), message)
    }

    /// The member's message and confirmation: the session key when the
    /// member proved it knows the same secret, else why not.
    pub fn finish(self, message: &[u8], confirmation: &[u8]) -> Result<SessionKey, TrustError> {
        let key = self
            .0
            .finish(message)
            .map_err(|e| TrustError::Proof(format!("bad PAKE message from the member: {e:?}")))?;
        let key = SessionKey::new(&key);
        if !key.verify_member(confirmation) {
            return Err(TrustError::Proof(
                "the member could not prove it knows this token's secret".into(),
            ));
        }
        Ok(key)
    }
}

/// The member's answer to a joiner's message: its own message, its
/// confirmation, and the key to check the joiner's confirmation with.
pub fn member_answer(
    secret: &str,
    ekm: &[u8],
    joiner_message: &[u8],
) -> Result<(Vec<u8>, Vec<u8>, SessionKey), TrustError> {
    let (joiner, member) = identities(ekm);
    let (state, message) =
        Spake2::<Ed25519Group>::start_b(&Password::new(secret), &joiner, &member);
    let key = state
        .finish(joiner_message)
        .map_err(|e| TrustError::Proof(format!("bad PAKE message from the joiner: {e:?}")))?;
    let key = SessionKey::new(&key);
    let confirmation = key.member_confirmation();
    Ok((message, confirmation, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secret_and_session_agree_and_nothing_else_does() {
        let (joiner, msg) = JoinerPake::start("secret-one", b"ekm-a");
        let (reply, confirm, member_key) = member_answer("secret-one", b"ekm-a", &msg).unwrap();
        let joiner_key = joiner.finish(&reply, &confirm).unwrap();
        assert!(member_key.verify_joiner(&joiner_key.joiner_confirmation()));
        assert!(!member_key.verify_joiner(&joiner_key.member_confirmation()));

        for (secret, ekm) in [("secret-two", &b"ekm-a"[..]), ("secret-one", b"ekm-b")] {
            let (joiner, msg) = JoinerPake::start("secret-one", b"ekm-a");
            let (reply, confirm, _) = member_answer(secret, ekm, &msg).unwrap();
            assert!(joiner.finish(&reply, &confirm).is_err(), "{secret}");
        }
        assert!(member_answer("secret-one", b"ekm-a", b"junk").is_err());
    }
}
