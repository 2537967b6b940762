//! Tenant authentication: bearer key → tenant, from an in-memory snapshot that is swapped
//! atomically when tenants change (no store query on the hot path).

/// Keys are SHA-256 digests (uniform already): a fast seeded hash (foldhash) is as good as
/// SipHash here, at a fraction of its cost per request.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

use arc_swap::ArcSwap;
use beacon_config::TenantConfig;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ProxyError;
use crate::limits::{Limited, Limiter};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id (never the key).
    pub key_id: String,
    /// The key's tenant.
    pub tenant: Arc<TenantEntry>,
    /// The key's own limits, when it has any (SPEC §5.1).
    pub limit: Option<Arc<Limited>>,
}

/// What the hot path needs to know about a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantEntry {
    /// Tenant id.
    pub id: String,
    /// Broadcast switch.
    pub broadcast_enabled: bool,
    /// Some enabled destination is not in privacy mode, so prompts and completions are kept.
    pub keep_content: bool,
    /// The tenant's limits, when it has any (SPEC §5.1).
    pub limit: Option<Arc<Limited>>,
}

#[derive(Debug)]
struct KeyEntry {
    sha256: [u8; 32],
    key_id: String,
    tenant: Arc<TenantEntry>,
    limit: Option<Arc<Limited>>,
}

/// One immutable view of all tenants and keys.
#[derive(Debug, Default)]
pub struct Snapshot {
    keys: HashMap<[u8; 32], KeyEntry>,
}

impl Snapshot {
    /// Builds a snapshot from declared tenants, without limits.
    pub fn from_config(tenants: &[TenantConfig]) -> Self {
        Self::with_limits(tenants, None)
    }

    /// Builds a snapshot whose keys and tenants with limits count against `limiter`'s
    /// scopes (the same counters across snapshots).
    pub fn with_limits(tenants: &[TenantConfig], limiter: Option<&Limiter>) -> Self {
        let limited = |limits: &beacon_config::Limits, scope: String| {
            let limiter = limiter?;
            (!limits.is_empty()).then(|| Arc::new(Limited::new(*limits, limiter.scope(scope))))
        };
        let mut keys = HashMap::default();
        for t in tenants {
            let b = &t.broadcast;
            let entry = Arc::new(TenantEntry {
                id: t.id.clone(),
                broadcast_enabled: b.enabled,
                keep_content: b.enabled
                    && b.destinations.iter().any(|d| d.enabled && !d.privacy_mode),
                limit: limited(&t.limits, format!("t:{}", t.id)),
            });
            for k in &t.api_keys {
                let limit = t
                    .key_limits
                    .get(&k.id)
                    .and_then(|l| limited(l, format!("k:{}", k.id)));
                keys.insert(
                    k.sha256,
                    KeyEntry {
                        sha256: k.sha256,
                        key_id: k.id.clone(),
                        tenant: entry.clone(),
                        limit,
                    },
                );
            }
        }
        Self { keys }
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// The current snapshot, replaceable at runtime.
#[derive(Debug, Default)]
pub struct Directory {
    current: ArcSwap<Snapshot>,
    limiter: Arc<Limiter>,
}

impl Directory {
    /// Starts with `snapshot`.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(snapshot),
            limiter: Arc::default(),
        }
    }

    /// Starts with `tenants`, their limits counted by a limiter of its own.
    pub fn with_tenants(tenants: &[TenantConfig]) -> Self {
        let limiter = Arc::new(Limiter::default());
        Self {
            current: ArcSwap::from_pointee(Snapshot::with_limits(tenants, Some(&limiter))),
            limiter,
        }
    }

    /// Replaces the snapshot with one of `tenants`, limits included.
    pub fn load(&self, tenants: &[TenantConfig]) {
        self.replace(Snapshot::with_limits(tenants, Some(&self.limiter)));
    }

    /// The limiter every snapshot's limits count against.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// Replaces the snapshot; requests in flight keep the one they started with.
    pub fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Number of keys in the current snapshot.
    pub fn key_count(&self) -> usize {
        self.current.load().key_count()
    }

    /// Authenticates an `Authorization` header value.
    pub fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<Caller, ProxyError> {
        let key = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .ok_or(ProxyError::MissingKey)?;
        self.lookup(key)
    }

    /// Authenticates a request by `Authorization: Bearer <key>`, or else by `x-api-key: <key>`
    /// (what the Anthropic SDK sends), on every route (SPEC §2.1).
    pub fn authenticate_headers(&self, headers: &http::HeaderMap) -> Result<Caller, ProxyError> {
        if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
            return self.authenticate(Some(auth));
        }
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ProxyError::MissingKey)?;
        self.lookup(key)
    }

    fn lookup(&self, key: &str) -> Result<Caller, ProxyError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let snapshot = self.current.load();
        // The map is keyed by a hash of the key, so lookup time says nothing about the key;
        // the final comparison is constant-time all the same.
        match snapshot.keys.get(&digest) {
            Some(entry) if bool::from(entry.sha256.ct_eq(&digest)) => Ok(Caller {
                key_id: entry.key_id.clone(),
                tenant: entry.tenant.clone(),
                limit: entry.limit.clone(),
            }),
            _ => Err(ProxyError::InvalidKey),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer(v: &str) -> Option<&str> {
    let (scheme, token) = v.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use beacon_config::{ApiKeyConfig, TenantBroadcastConfig};

    fn dir() -> Directory {
        Directory::new(Snapshot::from_config(&[TenantConfig {
            id: "acme".into(),
            name: "Acme".into(),
            api_keys: vec![ApiKeyConfig::from_plaintext("bk-acme-1")],
            broadcast: TenantBroadcastConfig::default(),
            limits: Default::default(),
            key_limits: Default::default(),
        }]))
    }

    fn hv(s: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn keys_map_to_tenants() {
        let d = dir();
        let c = d.authenticate(Some(&hv("Bearer bk-acme-1"))).unwrap();
        assert_eq!(c.tenant.id, "acme");
        assert!(c.key_id.starts_with("key_"));
        assert!(d.authenticate(Some(&hv("bearer  bk-acme-1 "))).is_ok());
        assert!(matches!(
            d.authenticate(Some(&hv("Bearer nope"))),
            Err(ProxyError::InvalidKey)
        ));
        assert!(matches!(
            d.authenticate(Some(&hv("Basic bk-acme-1"))),
            Err(ProxyError::MissingKey)
        ));
        assert!(matches!(d.authenticate(None), Err(ProxyError::MissingKey)));
        assert!(matches!(
            d.authenticate(Some(&hv("Bearer "))),
            Err(ProxyError::MissingKey)
        ));
    }

    #[test]
    fn snapshots_swap_atomically() {
        let d = dir();
        d.replace(Snapshot::default());
        assert!(matches!(
            d.authenticate(Some(&hv("Bearer bk-acme-1"))),
            Err(ProxyError::InvalidKey)
        ));
    }
}
