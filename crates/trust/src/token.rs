//! The join token: `SPT1-<sha256 of the CA certificate, hex>-<secret>`, or
//! a bare user-chosen secret.

use ring::digest;

use crate::error::TrustError;

const PREFIX: &str = "SPT1-";
/// A user-chosen secret shorter than this is refused: it would be guessed.
const MIN_SECRET_LEN: usize = 8;
const MAX_TOKEN_LEN: usize = 512;

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The CA's SHA-256 fingerprint, when the token pins it.
    pub ca_fingerprint: Option<[u8; 32]>,
    pub secret: String,
}

// Never print the secret (logs, panics).
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("ca_fingerprint", &self.ca_fingerprint.map(|fp| hex(&fp)))
            .field("secret", &"<hidden>")
            .finish()
    }
}

impl Token {
    /// Parses a full token or a bare secret.
    pub fn parse(text: &str) -> Result<Token, TrustError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_LEN {
            return Err(TrustError::Token(format!(
                "longer than {MAX_TOKEN_LEN} characters"
            )));
        }
        if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(TrustError::Token(
                "contains spaces or control characters".into(),
            ));
        }
        let (ca_fingerprint, secret) = match text.strip_prefix(PREFIX) {
            Some(rest) => {
                let (fp, secret) = rest.split_once('-').ok_or_else(|| {
                    TrustError::Token("want SPT1-<CA fingerprint>-<secret>".into())
                })?;
                (Some(unhex32(fp)?), secret)
            }
            None => (None, text),
        };
        if secret.len() < MIN_SECRET_LEN {
            return Err(TrustError::Token(format!(
                "the secret must have at least {MIN_SECRET_LEN} characters"
            )));
        }
        Ok(Token {
            ca_fingerprint,
            secret: secret.to_string(),
        })
    }

    /// A fresh random secret (256 bits, hex).
    pub fn generate_secret() -> String {
        let mut b = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .expect("the system random number generator failed");
        hex(&b)
    }

    /// The full token that pins `ca_der`.
    pub fn full(ca_der: &[u8], secret: &str) -> String {
        format!("{PREFIX}{}-{secret}", hex(&fingerprint(ca_der)))
    }
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Result<[u8; 32], TrustError> {
    let bad = || TrustError::Token("the CA fingerprint must be 64 hex digits".into());
    if s.len() != 64 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_bare_tokens_parse() {
        let secret = Token::generate_secret();
        assert_eq!(secret.len(), 64);
        let full = Token::full(b"ca", &secret);
        let t = Token::parse(&full).unwrap();
        assert_eq!(t.ca_fingerprint, Some(fingerprint(b"ca")));
        assert_eq!(t.secret, secret);
        let bare = Token::parse("correct-horse-battery").unwrap();
        assert_eq!(bare.ca_fingerprint, None);
        assert_eq!(bare.secret, "correct-horse-battery");
        for bad in [
            "short",
            "SPT1-abc-secretsecret",
            "SPT1-nodash",
            "a b c d e f g h",
        ] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
        assert!(!format!("{t:?}").contains(&secret));
    }
}
