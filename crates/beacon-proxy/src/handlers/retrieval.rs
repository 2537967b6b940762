//! The Responses retrieval routes (SPEC §2.1), unmetered: `GET` and `DELETE
//! /v1/responses/{id}`, `POST /v1/responses/{id}/cancel` and `GET
//! /v1/responses/{id}/input_items`. Each goes to the provider named by the
//! `x-beacon-provider` header, else the default provider, which must serve the Responses
//! API; the upstream's answer is relayed as it arrives, with its status.

use beacon_config::Api;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::{upstream, App};

/// Longest response id accepted in a path.
const MAX_ID_LEN: usize = 256;

/// Whether `rest` (the path after `/v1/responses/`) is a retrieval route for `method`.
pub fn matches(method: &Method, rest: &str) -> bool {
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if id.is_empty() {
        return false;
    }
    matches!(
        (method, tail),
        (&Method::GET | &Method::DELETE, "")
            | (&Method::POST, "cancel")
            | (&Method::GET, "input_items")
    )
}

/// Serves one retrieval request; `rest` is the path after `/v1/responses/`.
pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    rest: &str,
    request_id: &str,
) -> Result<Response<ProxyBody>, ProxyError> {
    app.directory.authenticate_headers(req.headers())?;
    let id = rest.split('/').next().unwrap_or_default();
    if id.len() > MAX_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ProxyError::InvalidField {
            param: "response_id",
            message: "a response id is letters, digits, `_` and `-`".into(),
        });
    }
    let provider = match req.headers().get("x-beacon-provider") {
        Some(name) => {
            let name = name.to_str().unwrap_or_default();
            app.router
                .provider(name)
                .ok_or_else(|| ProxyError::InvalidField {
                    param: "x-beacon-provider",
                    message: format!(
                        "no provider named `{}`",
                        name.chars().take(64).collect::<String>()
                    ),
                })?
        }
        None => app
            .router
            .default_provider()
            .ok_or_else(|| ProxyError::InvalidField {
                param: "x-beacon-provider",
                message: "no default provider: name one with the x-beacon-provider header".into(),
            })?,
    };
    if !provider.serves(Api::Responses) {
        return Err(ProxyError::UnsupportedApi {
            provider: provider.name.clone(),
            api: Api::Responses,
        });
    }
    let mut url = format!("{}/responses/{rest}", provider.base_url);
    if let Some(q) = req.uri().query() {
        url.push('?');
        url.push_str(q);
    }
    let url: http::Uri = url.parse().map_err(|_| ProxyError::InvalidField {
        param: "query",
        message: "the query string is not valid".into(),
    })?;
    let method = req.method().clone();
    let (parts, body) = req.into_parts();
    let body = super::metered::read_body(
        body,
        parts.headers.get(http::header::CONTENT_LENGTH),
        app.max_body_bytes,
        app.body_read_timeout,
    )
    .await?;
    let mut b = http::Request::builder()
        .method(method)
        .uri(url)
        .header(http::header::ACCEPT, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("beacon/", env!("CARGO_PKG_VERSION")),
        );
    if !body.is_empty() {
        b = b.header(http::header::CONTENT_TYPE, "application/json");
    }
    for (k, v) in provider.auth.iter().chain(&provider.headers) {
        b = b.header(k, v.clone());
    }
    let upstream_req = b
        .body(http_body_util::Full::new(body))
        .map_err(|e| ProxyError::UpstreamInvalid(e.to_string()))?;
    let answer = tokio::time::timeout(app.upstream_timeout, app.client.request(upstream_req)).await;
    let resp = match answer {
        Err(_) => return Err(ProxyError::UpstreamTimeout(app.upstream_timeout.as_secs())),
        Ok(Err(e)) => {
            return Err(ProxyError::UpstreamUnreachable {
                provider: provider.name.clone(),
                kind: upstream::classify_error(&e),
                cause: upstream::describe_error(&e),
            })
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    if status.is_redirection() {
        return Err(ProxyError::UpstreamRedirect {
            provider: provider.name.clone(),
            status: status.as_u16(),
            location: None,
        });
    }
    let (up, body) = resp.into_parts();
    let mut out = Response::new(ProxyBody::Relay(Box::new(body)));
    *out.status_mut() = status;
    let h = out.headers_mut();
    for (k, v) in &up.headers {
        if upstream::passthrough_header(k) || k == http::header::CONTENT_TYPE {
            h.append(k.clone(), v.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(crate::REQUEST_ID_HEADER, v);
    }
    Ok(out)
}
