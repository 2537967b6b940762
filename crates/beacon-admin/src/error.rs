//! Admin API failures, each one OpenAI-shaped: `{"error":{"message","type","code","param"}}`,
//! with `fields` listing every invalid field when there are several, and `test` carrying the
//! Test Connection report when a destination was not saved because its test failed.

use beacon_broadcast::test_connection::TestReport;
use beacon_config::FieldError;
use beacon_store::StoreError;
use bytes::Bytes;
use http::StatusCode;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No bearer token.
    #[error("Missing admin token. Send the operator token or a management key as `Authorization: Bearer <token>`.")]
    MissingToken,
    /// A token that is neither the operator token nor an active management key.
    #[error("Invalid admin token.")]
    InvalidToken,
    /// A management key reaching beyond its tenant, or an operator-only route.
    #[error("{0}")]
    Forbidden(String),
    /// No such route.
    #[error("Unknown admin route: {method} {path}.")]
    UnknownRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// Known route, wrong method.
    #[error("Method {0} is not allowed on this route.")]
    MethodNotAllowed(String),
    /// No such tenant, key or destination.
    #[error("{0} not found.")]
    NotFound(String),
    /// A name or id already taken, a limit reached, or a read-only object.
    #[error("{0}")]
    Conflict(String),
    /// The body is not the JSON object the route takes.
    #[error("Invalid JSON body: {0}")]
    InvalidJson(String),
    /// The body is larger than the admin API accepts.
    #[error("Request body is larger than the {0} bytes the admin API accepts.")]
    BodyTooLarge(usize),
    /// One or more invalid fields.
    #[error("{}", join(.0))]
    Invalid(Vec<FieldError>),
    /// Test Connection failed: nothing was saved.
    #[error("Test Connection failed, nothing was saved: {}", .0.message)]
    TestFailed(TestReport),
    /// The store failed.
    #[error("The store failed: {0}")]
    Store(String),
    /// Too many failed authentications from this address: retry after this many seconds.
    #[error("Too many failed admin authentications from this address; retry in {0} s.")]
    Throttled(u64),
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl AdminError {
    /// One invalid field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::UnknownRoute { .. } | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::InvalidJson(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TestFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            Self::MissingToken => ("invalid_request_error", "missing_api_key"),
            Self::InvalidToken => ("invalid_request_error", "invalid_api_key"),
            Self::Forbidden(_) => ("permission_error", "forbidden"),
            Self::UnknownRoute { .. } => ("invalid_request_error", "unknown_url"),
            Self::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            Self::NotFound(_) => ("invalid_request_error", "not_found"),
            Self::Conflict(_) => ("invalid_request_error", "conflict"),
            Self::InvalidJson(_) => ("invalid_request_error", "invalid_json"),
            Self::BodyTooLarge(_) => ("invalid_request_error", "body_too_large"),
            Self::Invalid(_) => ("invalid_request_error", "invalid_value"),
            Self::TestFailed(_) => ("invalid_request_error", "test_failed"),
            Self::Store(_) => ("server_error", "store_unavailable"),
            Self::Throttled(_) => ("rate_limit_error", "too_many_failed_attempts"),
        }
    }

    /// The response body.
    pub fn body(&self) -> Bytes {
        let (error_type, code) = self.kind();
        let mut error = serde_json::json!({
            "message": self.to_string(),
            "type": error_type,
            "code": code,
            "param": null,
        });
        if let Self::Invalid(fields) = self {
            error["param"] = fields.first().map(|f| f.field.clone()).into();
            error["fields"] = fields
                .iter()
                .map(|f| serde_json::json!({"field": f.field, "message": f.message}))
                .collect();
        }
        let mut body = serde_json::json!({ "error": error });
        if let Self::TestFailed(report) = self {
            body["test"] = serde_json::to_value(report).unwrap_or_default();
        }
        Bytes::from(body.to_string())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Conflict(what) => Self::Conflict(format!("{what} already exists.")),
            other => Self::Store(other.to_string()),
        }
    }
}
