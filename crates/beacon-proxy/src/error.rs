//! The client-facing error boundary: every failure of the hot path becomes one
//! OpenAI-shaped response here, and nowhere else.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::body::ProxyBody;

/// Errors the gateway reports to clients, each with its status, OpenAI `type` and `code`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No `Authorization: Bearer` header.
    #[error("Missing API key. Send it as `Authorization: Bearer <key>` or `x-api-key: <key>`.")]
    MissingKey,
    /// A key that no tenant owns.
    #[error("Incorrect API key provided.")]
    InvalidKey,
    /// The body exceeded `server.max_body_bytes`.
    #[error("Request body is larger than the {limit} bytes this gateway accepts.")]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// The body could not be read from the client.
    #[error("Could not read the request body: {0}")]
    BodyRead(String),
    /// The body did not arrive within `server.body_read_timeout_secs`.
    #[error("The request body did not arrive within {0} seconds.")]
    BodyReadTimeout(f64),
    /// The body is not valid JSON (or not a JSON object).
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    /// A field has the wrong type or value.
    #[error("{message}")]
    InvalidField {
        /// The offending field.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No provider serves the model.
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// The provider the model routes to does not serve the route's API.
    #[error("The provider `{provider}` does not serve the {api} API (its `apis` in Beacon's config); use a model of a provider that does.")]
    UnsupportedApi {
        /// The provider.
        provider: String,
        /// The API asked for.
        api: beacon_config::Api,
    },
    /// Unknown route.
    #[error("Unknown request URL: {method} {path}.")]
    UnknownRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// Known route, wrong method.
    #[error("Method {0} is not allowed on this route.")]
    MethodNotAllowed(String),
    /// The upstream could not be reached.
    #[error("The upstream provider `{provider}` could not be reached ({kind}): {cause}.")]
    UpstreamUnreachable {
        /// The provider's name.
        provider: String,
        /// `connect_timeout`, `connect_error`, `tls_error`, ...
        kind: &'static str,
        /// What failed, from the error chain (DNS, refused, TLS, timeout); never a key.
        cause: String,
    },
    /// The upstream answered with a redirect, which a provider API never does.
    #[error("The upstream provider `{provider}` answered {status} redirecting to {}; check the provider's base_url.", location.as_deref().unwrap_or("nowhere"))]
    UpstreamRedirect {
        /// The provider.
        provider: String,
        /// The 3xx status.
        status: u16,
        /// Its `Location`, when it sent one.
        location: Option<String>,
    },
    /// An attempt got no response headers within `routing.attempt_timeout_secs` and no
    /// other attempt followed.
    #[error("The upstream provider `{provider}` sent no response within {secs} seconds.")]
    UpstreamAttemptTimeout {
        /// The provider.
        provider: String,
        /// `routing.attempt_timeout_secs`.
        secs: f64,
    },
    /// The whole-request upstream timeout elapsed.
    #[error("The upstream provider did not answer within {0} seconds.")]
    UpstreamTimeout(u64),
    /// The upstream answered 2xx with something that is not a chat completion.
    #[error("The upstream provider returned an invalid response: {0}")]
    UpstreamInvalid(String),
    /// The gateway is shutting down.
    #[error("The gateway is shutting down; retry on another node.")]
    ShuttingDown,
    /// Over a key's or tenant's limit (SPEC §5.1).
    #[error("{}", .0.message)]
    Limited(Box<crate::limits::Refusal>),
}

impl ProxyError {
    /// HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRead(_)
            | Self::InvalidJson(_)
            | Self::InvalidField { .. }
            | Self::UnsupportedApi { .. } => StatusCode::BAD_REQUEST,
            Self::BodyReadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ModelNotFound(_) | Self::UnknownRoute { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UpstreamUnreachable { .. }
            | Self::UpstreamInvalid(_)
            | Self::UpstreamRedirect { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) | Self::UpstreamAttemptTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Limited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// OpenAI's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::MissingKey | Self::InvalidKey => "invalid_request_error",
            Self::UpstreamUnreachable { .. }
            | Self::UpstreamTimeout(_)
            | Self::UpstreamAttemptTimeout { .. }
            | Self::UpstreamInvalid(_)
            | Self::UpstreamRedirect { .. } => "upstream_error",
            Self::ShuttingDown => "server_error",
            Self::Limited(r) => match r.kind {
                crate::limits::RefusalKind::Rate => "requests",
                crate::limits::RefusalKind::Budget => "insufficient_quota",
            },
            _ => "invalid_request_error",
        }
    }

    /// OpenAI's `error.code`: a stable, low-cardinality identifier (also a metrics label).
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_api_key",
            Self::InvalidKey => "invalid_api_key",
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::BodyRead(_) => "body_read_error",
            Self::BodyReadTimeout(_) => "request_timeout",
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidField { .. } => "invalid_type",
            Self::ModelNotFound(_) => "model_not_found",
            Self::UnsupportedApi { .. } => "unsupported_api",
            Self::UnknownRoute { .. } => "unknown_url",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::UpstreamUnreachable { kind, .. } => kind,
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::UpstreamAttemptTimeout { .. } => "attempt_timeout",
            Self::UpstreamInvalid(_) => "upstream_invalid_response",
            Self::UpstreamRedirect { .. } => "upstream_redirect",
            Self::ShuttingDown => "shutting_down",
            Self::Limited(r) => r.code(),
        }
    }

    /// OpenAI's `error.param`.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            Self::InvalidField { param, .. } => Some(param),
            Self::ModelNotFound(_) | Self::UnsupportedApi { .. } => Some("model"),
            _ => None,
        }
    }

    /// The response for this error in OpenAI's shape, with `x-request-id`.
    pub fn into_response(self, request_id: &str) -> http::Response<ProxyBody> {
        self.into_response_as(request_id, ErrorShape::OpenAi)
    }

    /// The response for this error in the route's `shape`, with `x-request-id`.
    pub fn into_response_as(
        self,
        request_id: &str,
        shape: ErrorShape,
    ) -> http::Response<ProxyBody> {
        let body = match shape {
            ErrorShape::OpenAi => error_body(
                &self.to_string(),
                self.error_type(),
                Some(self.code()),
                self.param(),
            ),
            ErrorShape::Anthropic => anthropic_error_body(self.status(), &self.to_string()),
        };
        let mut resp = json_response(self.status(), body, request_id);
        // The rate headers are added by the route's handler, on every response of the key.
        if let Self::Limited(r) = &self {
            resp.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(r.retry_after_secs),
            );
        }
        if matches!(self, Self::MissingKey | Self::InvalidKey) {
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// The shape of a route's error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"message","type","code","param"}}`.
    OpenAi,
    /// `{"type":"error","error":{"type","message"}}` (Anthropic Messages).
    Anthropic,
}

/// Anthropic's error `type` for an HTTP status.
pub fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// `{"type":"error","error":{"type","message"}}` as bytes.
pub fn anthropic_error_body(status: StatusCode, message: &str) -> Bytes {
    let v = serde_json::json!({
        "type": "error",
        "error": { "type": anthropic_error_type(status), "message": message },
    });
    Bytes::from(v.to_string())
}

/// `{"error":{"message","type","code","param"}}` as bytes.
pub fn error_body(
    message: &str,
    error_type: &str,
    code: Option<&str>,
    param: Option<&str>,
) -> Bytes {
    let v = serde_json::json!({
        "error": { "message": message, "type": error_type, "code": code, "param": param }
    });
    Bytes::from(v.to_string())
}

/// Headers a response is made room for at once: Beacon's own (content type, request id,
/// attempts, provider), what an OpenAI upstream relays (six `x-ratelimit-*`, its request id,
/// `openai-processing-ms`), which a limited key's own rate headers replace — so a map
/// never grows (and moves its entries) while a response is being made.
pub const RESPONSE_HEADERS: usize = 12;

/// A JSON response with the standard headers.
pub fn json_response(
    status: StatusCode,
    body: Bytes,
    request_id: &str,
) -> http::Response<ProxyBody> {
    json_response_with(
        status,
        body,
        request_id,
        http::HeaderMap::with_capacity(RESPONSE_HEADERS),
    )
}

/// [`json_response`] on top of `headers` (what is relayed from the upstream): the map the
/// upstream's headers were collected into becomes the response's, so each relayed header
/// is hashed into a map once, not twice.
pub fn json_response_with(
    status: StatusCode,
    body: Bytes,
    request_id: &str,
    headers: http::HeaderMap,
) -> http::Response<ProxyBody> {
    let mut resp = http::Response::new(ProxyBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    *h = headers;
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(crate::REQUEST_ID_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openai_shape() {
        let e = ProxyError::InvalidField {
            param: "session_id",
            message: "`session_id` must be a string".into(),
        };
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let body = error_body(&e.to_string(), e.error_type(), Some(e.code()), e.param());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["param"], "session_id");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_type");
        assert_eq!(
            ProxyError::ModelNotFound("x".into()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ProxyError::BodyTooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[test]
    fn a_refusal_is_a_429_in_the_routes_shape_with_retry_after() {
        let refusal = || {
            ProxyError::Limited(Box::new(crate::limits::Refusal {
                kind: crate::limits::RefusalKind::Budget,
                message: "Budget exhausted".into(),
                retry_after_secs: 42,
                headers: Default::default(),
            }))
        };
        let r = refusal().into_response_as("req_1", ErrorShape::Anthropic);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "42");
        let r = refusal().into_response("req_1");
        assert_eq!(r.headers()["retry-after"], "42");
        let e = refusal();
        assert_eq!(
            (e.code(), e.error_type()),
            ("budget_exceeded", "insufficient_quota")
        );
        let body = anthropic_error_body(e.status(), &e.to_string());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
}
