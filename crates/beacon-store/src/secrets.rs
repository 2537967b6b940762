//! Secrets at rest: destination DSNs and headers are sealed with ChaCha20-Poly1305 under a
//! key from `BEACON_SECRET_KEY` before they reach the database.
//!
//! Sealed format: `v1.` + base64url(nonce ‖ ciphertext ‖ tag). The associated data binds a
//! ciphertext to its row and column, so a sealed value copied into another destination or
//! field does not open.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// The environment variable holding the key.
pub const SECRET_KEY_ENV: &str = "BEACON_SECRET_KEY";

const PREFIX: &str = "v1.";

/// Why secrets cannot be sealed or opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// No key configured while a secret has to be stored or read.
    #[error("{SECRET_KEY_ENV} is not set: it is required to store destination secrets (32 bytes as 64 hex digits or base64; e.g. `openssl rand -hex 32`)")]
    MissingKey,
    /// The key is not 32 bytes of hex or base64.
    #[error("{SECRET_KEY_ENV} must be 32 bytes, as 64 hex digits or base64")]
    InvalidKey,
    /// The sealed value is damaged, was sealed under another key, or belongs elsewhere.
    #[error("a stored secret cannot be decrypted (wrong {SECRET_KEY_ENV}, or the value was tampered with)")]
    Undecryptable,
}

/// Seals and opens secrets.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Option<ChaCha20Poly1305>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("configured", &self.cipher.is_some())
            .finish()
    }
}

impl SecretBox {
    /// From the key text (`None`: no key; sealing and opening then fail with
    /// [`SecretError::MissingKey`]).
    pub fn new(key: Option<&str>) -> Result<Self, SecretError> {
        let Some(text) = key.map(str::trim).filter(|k| !k.is_empty()) else {
            return Ok(Self { cipher: None });
        };
        let bytes = hex::decode(text)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .ok()
                    .filter(|b| b.len() == 32)
            })
            .ok_or(SecretError::InvalidKey)?;
        Ok(Self {
            cipher: Some(ChaCha20Poly1305::new(Key::from_slice(&bytes))),
        })
    }

    /// From `BEACON_SECRET_KEY`.
    pub fn from_env() -> Result<Self, SecretError> {
        Self::new(std::env::var(SECRET_KEY_ENV).ok().as_deref())
    }

    /// Seals `plaintext` for `context` (e.g. `destination:<id>:dsn`).
    pub fn seal(&self, context: &str, plaintext: &str) -> Result<String, SecretError> {
        let cipher = self.cipher.as_ref().ok_or(SecretError::MissingKey)?;
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Undecryptable)?;
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// Opens a value sealed for `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SecretError> {
        let cipher = self.cipher.as_ref().ok_or(SecretError::MissingKey)?;
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .filter(|r| r.len() > 12)
            .ok_or(SecretError::Undecryptable)?;
        let (nonce, body) = raw.split_at(12);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Undecryptable)?;
        String::from_utf8(plain).map_err(|_| SecretError::Undecryptable)
    }
}

/// A secret for display: its first characters and an ellipsis (`abc1…`), never the rest.
pub fn redact(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    if secret.chars().count() <= 4 {
        "…".to_string()
    } else {
        format!("{shown}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seal_and_open_bound_to_context() {
        let b = SecretBox::new(Some(KEY)).unwrap();
        let sealed = b
            .seal("destination:1:dsn", "https://abc@o1.ingest.sentry.io/2")
            .unwrap();
        assert!(sealed.starts_with("v1.") && !sealed.contains("abc@"));
        assert_eq!(
            b.open("destination:1:dsn", &sealed).unwrap(),
            "https://abc@o1.ingest.sentry.io/2"
        );
        // Same plaintext, new nonce.
        assert_ne!(
            sealed,
            b.seal("destination:1:dsn", "https://abc@o1.ingest.sentry.io/2")
                .unwrap()
        );
        // Moved to another row or column, or damaged: refused.
        assert_eq!(
            b.open("destination:2:dsn", &sealed),
            Err(SecretError::Undecryptable)
        );
        let mut damaged = sealed.clone();
        damaged.pop();
        assert_eq!(
            b.open("destination:1:dsn", &damaged),
            Err(SecretError::Undecryptable)
        );
        // Another key cannot open it.
        let other = SecretBox::new(Some(&"ab".repeat(32))).unwrap();
        assert_eq!(
            other.open("destination:1:dsn", &sealed),
            Err(SecretError::Undecryptable)
        );
    }

    #[test]
    fn key_formats_and_missing_key() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert!(SecretBox::new(Some(&b64)).is_ok());
        assert_eq!(
            SecretBox::new(Some("short")).unwrap_err(),
            SecretError::InvalidKey
        );
        let none = SecretBox::new(None).unwrap();
        assert_eq!(none.seal("c", "x"), Err(SecretError::MissingKey));
        assert!(SecretError::MissingKey
            .to_string()
            .contains("BEACON_SECRET_KEY"));
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("abc123def"), "abc1…");
        assert_eq!(redact("abc"), "…");
    }
}
