//! The join secret as the store keeps it after `cluster token rotate`:
//! sealed (AES-256-GCM) under a key derived from the cluster CA's key, so
//! every member (each holds the CA key) can open it and enroll with the
//! current secret, while the store's contents alone (an etcd dump, `GET
//! /v1/debug/store`) never show it.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::ca::ClusterCa;
use crate::error::TrustError;
use crate::token::hex;

const SALT: &[u8] = b"socketplane sealed join secret v1";

/// A sealed secret and its generation (hex fields, for a JSON record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSecret {
    pub generation: u64,
    pub nonce: String,
    pub sealed: String,
}

struct KeyLen;
impl hkdf::KeyType for KeyLen {
    fn len(&self) -> usize {
        32
    }
}

fn key(ca: &ClusterCa, cluster: &str) -> Result<LessSafeKey, TrustError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(ca.key_pem.as_bytes());
    let info = [cluster.as_bytes()];
    let okm = prk
        .expand(&info, KeyLen)
        .map_err(|_| TrustError::Sealed("key derivation".into()))?;
    let mut bytes = [0u8; 32];
    okm.fill(&mut bytes)
        .map_err(|_| TrustError::Sealed("key derivation".into()))?;
    let unbound =
        UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| TrustError::Sealed("bad key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

fn aad(cluster: &str, generation: u64) -> Vec<u8> {
    format!("{cluster}\0{generation}").into_bytes()
}

impl SealedSecret {
    /// Seals `secret` as generation `generation` of `cluster`'s secret.
    pub fn seal(
        ca: &ClusterCa,
        cluster: &str,
        generation: u64,
        secret: &str,
    ) -> Result<SealedSecret, TrustError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| TrustError::Sealed("the random number generator failed".into()))?;
        let mut data = secret.as_bytes().to_vec();
        key(ca, cluster)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(cluster, generation)),
                &mut data,
            )
            .map_err(|_| TrustError::Sealed("sealing failed".into()))?;
        Ok(SealedSecret {
            generation,
            nonce: hex(&nonce),
            sealed: hex(&data),
        })
    }

    /// The secret, when this CA sealed it for `cluster`.
    pub fn open(&self, ca: &ClusterCa, cluster: &str) -> Result<String, TrustError> {
        let bad = |what: &str| TrustError::Sealed(what.to_string());
        let nonce: [u8; NONCE_LEN] = unhex(&self.nonce)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| bad("bad nonce"))?;
        let mut data = unhex(&self.sealed).ok_or_else(|| bad("bad ciphertext"))?;
        let plain = key(ca, cluster)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(cluster, self.generation)),
                &mut data,
            )
            .map_err(|_| bad("it was not sealed by this cluster's CA"))?;
        String::from_utf8(plain.to_vec()).map_err(|_| bad("not UTF-8"))
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 4096 || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_ca_and_cluster_open_it() {
        let ca = ClusterCa::generate("c1").unwrap();
        let other = ClusterCa::generate("c1").unwrap();
        let s = SealedSecret::seal(&ca, "c1", 3, "the-secret-value").unwrap();
        assert!(!s.sealed.contains(&hex(b"the-secret-value")));
        assert_eq!(s.open(&ca, "c1").unwrap(), "the-secret-value");
        assert!(s.open(&other, "c1").is_err());
        assert!(s.open(&ca, "c2").is_err());
        let mut moved = s.clone();
        moved.generation = 4;
        assert!(moved.open(&ca, "c1").is_err());
    }
}
