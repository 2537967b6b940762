//! Who is calling the admin API: the operator (the `[admin] token`), or a tenant through one
//! of its active management keys, which reach that tenant's routes only.

use beacon_store::{Role, Store};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// Checks bearer tokens; holds the operator token only as a SHA-256 digest.
#[derive(Debug, Clone)]
pub struct Authenticator {
    operator: Option<[u8; 32]>,
}

impl Authenticator {
    /// `operator_token`: the `[admin] token` (none: only management keys are accepted).
    pub fn new(operator_token: Option<&str>) -> Self {
        Self {
            operator: operator_token.map(|t| Sha256::digest(t.as_bytes()).into()),
        }
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
