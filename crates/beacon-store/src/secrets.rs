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
    /// The embedded default's key file cannot be read or written.
    #[error("{path}: {message}")]
    KeyFile {
        /// The key file.
        path: String,
        /// What failed.
        message: String,
    },
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

    /// The key for a store: `BEACON_SECRET_KEY` when set; otherwise, for a SQLite store (one
    /// node), a key file next to the database — `<database>.key`, created with mode 0600 on
    /// first use — so the embedded default can store destinations without setup. A
    /// PostgreSQL store (several nodes) needs the variable: every node must share one key.
    pub fn for_store(store_url: &str) -> Result<Self, SecretError> {
        Self::for_store_with(std::env::var(SECRET_KEY_ENV).ok(), store_url)
    }

    fn for_store_with(from_env: Option<String>, store_url: &str) -> Result<Self, SecretError> {
        let from_env = from_env.filter(|k| !k.trim().is_empty());
        if from_env.is_some() {
            return Self::new(from_env.as_deref());
        }
        let Some(db) = store_url.strip_prefix("sqlite://") else {
            return Self::new(None);
        };
        let db = db.split('?').next().unwrap_or_default();
        if db.is_empty() || db == ":memory:" {
            return Self::new(None);
        }
        let path = format!("{db}.key");
        let fail = |message: String| SecretError::KeyFile {
            path: path.clone(),
            message,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::new(Some(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = hex::encode(rand::random::<[u8; 32]>());
                match write_private(&path, &key) {
                    Ok(()) => {}
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| fail(format!("cannot read the key file: {e}")))?;
                        return Self::new(Some(&text));
                    }
                    Err(e) => return Err(fail(format!("cannot create the key file: {e}"))),
                }
                tracing::info!(path, "generated the key that encrypts destination secrets (set {SECRET_KEY_ENV} to use your own; keep this file with the database)");
                Self::new(Some(&key))
            }
            Err(e) => Err(fail(format!("cannot read the key file: {e}"))),
        }
    }

    /// Fails with [`SecretError::MissingKey`] when no key is configured, so callers can say so
    /// before doing work whose result they could not store.
    pub fn require_key(&self) -> Result<(), SecretError> {
        self.cipher
            .as_ref()
            .map(|_| ())
            .ok_or(SecretError::MissingKey)
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

/// The operator token of a one-node gateway without `admin.token`, kept like the secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAdminToken {
    /// The token.
    pub token: String,
    /// The file that keeps it (`<database>.admin-token`, mode 0600).
    pub path: String,
    /// Created by this call (so shown now; later starts point at the file).
    pub generated: bool,
}

/// For a SQLite store (one node), the operator token in `<database>.admin-token`, created
/// with mode 0600 on first use, so the console of the embedded default can be signed into
/// without setup; `None` for other stores (several nodes share `BEACON_ADMIN_TOKEN`).
pub fn local_admin_token(store_url: &str) -> Result<Option<LocalAdminToken>, SecretError> {
    let Some(db) = store_url.strip_prefix("sqlite://") else {
        return Ok(None);
    };
    let db = db.split('?').next().unwrap_or_default();
    if db.is_empty() || db == ":memory:" {
        return Ok(None);
    }
    let path = format!("{db}.admin-token");
    let fail = |message: String| SecretError::KeyFile {
        path: path.clone(),
        message,
    };
    let read = |path: &str| -> Result<String, SecretError> {
        let token = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read the admin token file: {e}")))?;
        Ok(token.trim().to_string())
    };
    if std::path::Path::new(&path).exists() {
        let token = read(&path)?;
        return Ok(Some(LocalAdminToken {
            token,
            path,
            generated: false,
        }));
    }
    let token = format!("bt_{}", hex::encode(rand::random::<[u8; 20]>()));
    match write_private(&path, &token) {
        Ok(()) => Ok(Some(LocalAdminToken {
            token,
            path,
            generated: true,
        })),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Some(LocalAdminToken {
            token: read(&path)?,
            path,
            generated: false,
        })),
        Err(e) => Err(fail(format!("cannot create the admin token file: {e}"))),
    }
}

/// Creates `path` with `contents`, readable by its owner only; never overwrites.
fn write_private(path: &str, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
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

    #[test]
    fn sqlite_stores_get_a_private_key_file_postgres_needs_the_variable() {
        let dir = std::env::temp_dir().join(format!("beacon-keyfile-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("b.db").display());
        let first = SecretBox::for_store_with(None, &url).unwrap();
        let sealed = first.seal("ctx", "https://k@h/1").unwrap();
        let key_file = dir.join("b.db.key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // The same file next time: old secrets still open.
        let again = SecretBox::for_store_with(Some(String::new()), &url).unwrap();
        assert_eq!(again.open("ctx", &sealed).unwrap(), "https://k@h/1");
        // The variable wins over the file.
        let env = SecretBox::for_store_with(Some(KEY.into()), &url).unwrap();
        assert_eq!(env.open("ctx", &sealed), Err(SecretError::Undecryptable));
        let pg = SecretBox::for_store_with(None, "postgres://u@127.0.0.1/db").unwrap();
        assert_eq!(pg.require_key(), Err(SecretError::MissingKey));
        std::fs::remove_dir_all(&dir).unwrap();
    }

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

    #[test]
    fn the_embedded_default_gets_an_admin_token_kept_beside_the_database() {
        let dir = std::env::temp_dir().join(format!("beacon-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/b.db", dir.display());
        let first = local_admin_token(&url).unwrap().unwrap();
        assert!(first.generated && first.token.starts_with("bt_") && first.token.len() == 43);
        let again = local_admin_token(&url).unwrap().unwrap();
        assert_eq!(
            (again.token.as_str(), again.generated),
            (first.token.as_str(), false)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(local_admin_token("postgres://x@h/db").unwrap(), None);
        assert_eq!(local_admin_token("sqlite://:memory:").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
