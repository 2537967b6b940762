//! Who is calling the admin API: the operator (the `[admin] token`), or a tenant through one
//! of its active management keys, which reach that tenant's routes only.
//!
//! Guessing is throttled per client address ([`Throttle`]): past `admin.max_failed_auth`
//! failed authentications within `admin.failed_auth_window_secs`, the address gets 429 with
//! `retry-after` until its window ends, without its tokens being checked; every failure is
//! logged at WARN with the address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use beacon_store::{Role, Store};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::error::AdminError;

/// An authenticated admin caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator token: every tenant and operator-only routes.
    Operator,
    /// A management key of this tenant.
    Tenant {
        /// The tenant.
        tenant: String,
        /// The key's id.
        key_id: String,
    },
}

impl Principal {
    /// Allows the request if it may act on `tenant`.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), AdminError> {
        match self {
            Self::Operator => Ok(()),
            Self::Tenant { tenant: own, .. } if own == tenant => Ok(()),
            Self::Tenant { .. } => Err(AdminError::Forbidden(
                "This management key belongs to another tenant.".into(),
            )),
        }
    }

    /// Allows operator-only requests.
    pub fn check_operator(&self) -> Result<(), AdminError> {
        match self {
            Self::Operator => Ok(()),
            Self::Tenant { .. } => Err(AdminError::Forbidden(
                "Only the operator token may do this.".into(),
            )),
        }
    }
}

/// Addresses tracked at most; past it, addresses whose window is over are forgotten first,
/// then the one tracked longest.
pub const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// Failed authentications per client address (IPv6 by /64: one host owns a whole prefix).
#[derive(Debug)]
pub struct Throttle {
    max_failures: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    /// Allows `max_failures` failures per `window` and address.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
            v4 => v4,
        }
    }

    /// `Err(wait)` while `ip` is over its failures: how long until its window ends.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Ok(seen) = self.seen.lock() else {
            return Ok(());
        };
        match seen.get(&Self::key(ip)) {
            Some(&(failures, since)) if failures >= self.max_failures => {
                let end = since + self.window;
                let now = Instant::now();
                if end > now {
                    Err(end - now)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure of `ip`; returns its failures in the current window.
    pub fn failed(&self, ip: IpAddr) -> u32 {
        let Ok(mut seen) = self.seen.lock() else {
            return 0;
        };
        let now = Instant::now();
        let key = Self::key(ip);
        if seen.len() >= MAX_TRACKED_ADDRESSES && !seen.contains_key(&key) {
            seen.retain(|_, (_, since)| *since + self.window > now);
            if seen.len() >= MAX_TRACKED_ADDRESSES {
                if let Some(oldest) = seen.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                    seen.remove(&oldest);
                }
            }
        }
        let entry = seen.entry(key).or_insert((0, now));
        if entry.1 + self.window <= now {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        entry.0
    }
}

/// Checks bearer tokens; holds the operator token only as a SHA-256 digest.
#[derive(Debug, Clone)]
pub struct Authenticator {
    operator: Option<[u8; 32]>,
    throttle: Arc<Throttle>,
}

impl Authenticator {
    /// `operator_token`: the `[admin] token` (none: only management keys are accepted);
    /// failed authentications throttled with the defaults (10 per minute and address).
    pub fn new(operator_token: Option<&str>) -> Self {
        Self::with_throttle(operator_token, Throttle::new(10, Duration::from_secs(60)))
    }

    /// Like [`Authenticator::new`], with this throttle of failed authentications.
    pub fn with_throttle(operator_token: Option<&str>, throttle: Throttle) -> Self {
        Self {
            operator: operator_token.map(|t| Sha256::digest(t.as_bytes()).into()),
            throttle: Arc::new(throttle),
        }
    }

    /// The throttle of failed authentications.
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Authenticates an `Authorization` header value.
    pub async fn authenticate(
        &self,
        store: &Store,
        authorization: Option<&http::HeaderValue>,
    ) -> Result<Principal, AdminError> {
        let token = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(beacon_proxy::auth::bearer)
            .ok_or(AdminError::MissingToken)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(operator) = &self.operator {
            if bool::from(operator.ct_eq(&digest)) {
                return Ok(Principal::Operator);
            }
        }
        match store.active_key_by_hash(&digest).await? {
            Some(key) if key.role == Role::Management => Ok(Principal::Tenant {
                tenant: key.tenant_id,
                key_id: key.id,
            }),
            Some(_) => Err(AdminError::Forbidden(
                "This is a client key: it can make completions but not manage the tenant. Create a key with role `management`.".into(),
            )),
            None => Err(AdminError::InvalidToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_address_is_throttled_after_its_failures_until_the_window_ends() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        for n in 1..=3 {
            assert_eq!(t.check(ip), Ok(()));
            assert_eq!(t.failed(ip), n);
        }
        let wait = t.check(ip).unwrap_err();
        assert!(wait <= Duration::from_secs(60) && wait > Duration::from_secs(59));
        assert_eq!(t.check(other), Ok(()), "per address");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.check(ip), Ok(()));
        assert_eq!(t.failed(ip), 1, "a new window");
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_addresses_are_throttled_by_their_64_prefix() {
        let t = Throttle::new(2, Duration::from_secs(60));
        t.failed("2001:db8:1:2::1".parse().unwrap());
        t.failed("2001:db8:1:2::ffff".parse().unwrap());
        assert!(t.check("2001:db8:1:2:abcd::9".parse().unwrap()).is_err());
        assert!(t.check("2001:db8:1:3::1".parse().unwrap()).is_ok());
        assert!(t.check("::ffff:203.0.113.9".parse().unwrap()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_tracked_addresses_are_bounded() {
        let t = Throttle::new(2, Duration::from_secs(60));
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 100) {
            t.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert!(t.seen.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }
}
