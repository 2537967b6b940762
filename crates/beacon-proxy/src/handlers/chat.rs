//! `POST /v1/chat/completions`: authenticate, read and parse, route, meter, forward.

use std::time::{Instant, SystemTime};

use beacon_broadcast::record::{CostSource, Outcome};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::Caller;
use crate::body::ProxyBody;
use crate::error::{error_body, json_response, ProxyError};
use crate::meter::chunk::CompletionView;
use crate::meter::stream::{MeteredSse, StreamLimits};
use crate::meter::{Accounted, Meter, RequestInfo};
use crate::request::ChatRequest;
use crate::{trace_context, upstream, App};

/// Largest upstream error body read (the rest is discarded).
const MAX_UPSTREAM_ERROR_BYTES: usize = 1024 * 1024;
/// Largest non-streaming upstream response accepted.
const MAX_UPSTREAM_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Labels of the response for `beacon_requests_total`.
#[derive(Debug, Default)]
pub struct Labels {
    /// Tenant id, once authenticated.
    pub tenant: String,
    /// Requested model, once parsed.
    pub model: String,
}

/// Serves one chat completion request.
pub async fn handle(
    app: &App,
    req: Request<Incoming>,
    request_id: &str,
    received: Instant,
    labels: &mut Labels,
) -> Result<Response<ProxyBody>, ProxyError> {
    let received_wall = SystemTime::now();
    let caller = app
        .directory
        .authenticate(req.headers().get(http::header::AUTHORIZATION))?;
    labels.tenant.clone_from(&caller.tenant.id);

    let (parts, body) = req.into_parts();
    let body = read_body(
        body,
        parts.headers.get(http::header::CONTENT_LENGTH),
        app.max_body_bytes,
        app.body_read_timeout,
    )
    .await?;
    let session_header = parts.headers.get("x-session-id").map(|v| {
        v.to_str().map_err(|_| ProxyError::InvalidField {
            param: "session_id",
            message: "the x-session-id header must be visible ASCII".into(),
        })
    });
    let session_header = session_header.transpose()?;
    let chat = ChatRequest::parse(&body, session_header, &app.metadata_limits)?;
    labels.model.clone_from(&chat.model);
    let route = app
        .router
        .route(&chat.model)
        .ok_or_else(|| ProxyError::ModelNotFound(chat.model.clone()))?;

    let upstream_body = chat.upstream_body(&route.upstream_model);
    let info = request_info(&caller, request_id, &route, &chat, &parts.headers);
    let mut meter = Meter::new(info, app.meter.clone(), received, received_wall);
    let deadline = tokio::time::Instant::from_std(received) + app.upstream_timeout;
    let timeout_secs = app.upstream_timeout.as_secs();

    let upstream_req = upstream::chat_request(&route.provider, upstream_body, chat.stream)
        .map_err(|e| ProxyError::UpstreamInvalid(e.to_string()))?;
    meter.upstream_started();
    // Cut at the end of the shutdown grace period while waiting here, the request is closed
    // with its connection and the meter's Drop records it as `shutdown` (no per-request
    // cancellation future: registering one cost ~2,000 instructions per request).
    let answer = tokio::time::timeout_at(deadline, app.client.request(upstream_req)).await;
    let resp = match answer {
        Err(_) => {
            meter.finish(Outcome::Timeout);
            return Err(ProxyError::UpstreamTimeout(timeout_secs));
        }
        Ok(Err(e)) => {
            let kind = upstream::classify_error(&e);
            let err = ProxyError::UpstreamUnreachable {
                provider: route.provider.name.clone(),
                kind,
                cause: upstream::describe_error(&e),
            };
            tracing::warn!(request_id, provider = %route.provider.name, kind, "{err}");
            meter.finish(Outcome::UpstreamError {
                status: None,
                error_type: kind.to_string(),
                message: err.to_string(),
            });
            return Err(err);
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    meter.upstream_headers(status.as_u16());
    let mut passthrough = http::HeaderMap::new();
    for (k, v) in resp.headers() {
        if upstream::passthrough_header(k) {
            passthrough.append(k.clone(), v.clone());
        }
    }
    if let Some(id) = resp.headers().get("x-request-id") {
        passthrough.insert("x-upstream-request-id", id.clone());
    }

    if status.is_redirection() {
        // A provider API does not redirect; relaying it would send the client (and its
        // Beacon key) around the gateway. It is a misconfigured base_url: say so.
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| l.chars().take(512).collect::<String>());
        let err = ProxyError::UpstreamRedirect {
            provider: route.provider.name.clone(),
            status: status.as_u16(),
            location,
        };
        meter.upstream_done();
        meter.finish(Outcome::UpstreamError {
            status: Some(status.as_u16()),
            error_type: "upstream_redirect".into(),
            message: err.to_string(),
        });
        return Err(err);
    }
    if !status.is_success() {
        return Ok(upstream_error_response(resp, meter, deadline, request_id, passthrough).await);
    }

    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if chat.stream && is_sse {
        let body = MeteredSse::new(
            resp.into_body(),
            meter,
            chat.client_wants_usage,
            StreamLimits {
                deadline,
                timeout_secs,
                idle_timeout: app.upstream_idle_timeout,
                cut: app.cut_signal(),
            },
            chat.model.clone(),
        );
        let mut out = Response::new(ProxyBody::Sse(Box::new(body)));
        let h = out.headers_mut();
        h.extend(passthrough);
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(crate::REQUEST_ID_HEADER, v);
        }
        return Ok(out);
    }

    // Non-streaming: read the whole completion, meter it, add `usage.cost`.
    let collected = tokio::time::timeout_at(
        deadline,
        Limited::new(resp.into_body(), MAX_UPSTREAM_RESPONSE_BYTES).collect(),
    )
    .await;
    meter.upstream_done();
    let bytes = match collected {
        Err(_) => {
            meter.finish(Outcome::Timeout);
            return Err(ProxyError::UpstreamTimeout(timeout_secs));
        }
        Ok(Err(e)) => {
            let message = format!("reading the upstream response failed: {e}");
            meter.finish(Outcome::UpstreamError {
                status: Some(status.as_u16()),
                error_type: "body_read_error".into(),
                message: message.clone(),
            });
            return Err(ProxyError::UpstreamInvalid(message));
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let invalid = |mut meter: Meter| {
        let message = "the upstream answered 2xx with a body that is not a JSON object".to_string();
        meter.finish(Outcome::UpstreamError {
            status: Some(status.as_u16()),
            error_type: "invalid_response".into(),
            message: message.clone(),
        });
        ProxyError::UpstreamInvalid(message)
    };
    let Some(text) = std::str::from_utf8(&bytes)
        .ok()
        .filter(|text| text.trim_start().starts_with('{'))
    else {
        return Err(invalid(meter));
    };
    // One typed pass over the body (only `usage` is parsed further); a body whose fields have
    // unexpected types is read generically instead.
    let view = serde_json::from_str::<CompletionView<'_>>(text).ok();
    let usage = view
        .as_ref()
        .and_then(|v| v.usage)
        .filter(|u| u.get().starts_with('{'))
        .and_then(|u| serde_json::from_str::<serde_json::Value>(u.get()).ok());
    match &view {
        Some(v) => meter.observe_completion(v, usage.as_ref()),
        None => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(json) if json.is_object() => meter.observe_response(&json),
            _ => return Err(invalid(meter)),
        },
    }
    // No usage from the upstream: a large estimate is made off the event loop.
    meter.estimate_off_loop().await;
    let body = match meter.finish(Outcome::Ok) {
        None => bytes.clone(),
        Some(acc) => {
            // No price for the model: no cost is shown, rather than 0 (SPEC §2.3).
            let cost: Option<f64> = (acc.cost.source != CostSource::Unknown)
                .then(|| acc.cost.total.try_into().unwrap_or(0.0));
            // The upstream reported nothing: give the client Beacon's estimate, marked so.
            let estimate = || estimated_usage(&acc, cost).to_string();
            let spliced = match &view {
                Some(v) => {
                    super::splice::add_cost_at(text, v.usage, usage.as_ref(), cost, estimate)
                }
                None => super::splice::add_cost(text, cost, estimate),
            };
            match spliced {
                Some(spliced) => Bytes::from(spliced),
                // A `usage` the splice cannot edit: re-serialize with Beacon's usage.
                None => match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(mut json) => {
                        if let Some(obj) = json.as_object_mut() {
                            obj.insert("usage".into(), estimated_usage(&acc, cost));
                        }
                        Bytes::from(json.to_string())
                    }
                    Err(_) => bytes.clone(),
                },
            }
        }
    };
    let mut out = json_response(StatusCode::OK, body, request_id);
    out.headers_mut().extend(passthrough);
    Ok(out)
}

/// Beacon's accounted usage as a `usage` object, marked `"estimated": true` (with `cost`
/// when the model has a price).
fn estimated_usage(acc: &Accounted, cost: Option<f64>) -> serde_json::Value {
    let mut usage = serde_json::json!({
        "prompt_tokens": acc.usage.prompt_tokens,
        "completion_tokens": acc.usage.completion_tokens,
        "total_tokens": acc.usage.total_tokens,
        "estimated": true,
    });
    if let (Some(cost), Some(u)) = (cost, usage.as_object_mut()) {
        u.insert("cost".into(), cost.into());
    }
    usage
}

/// Reads the request body: at most `limit` bytes (413 beyond), within `timeout` (408 after:
/// a client trickling its body cannot hold a connection and a buffer indefinitely).
pub(crate) async fn read_body(
    body: Incoming,
    content_length: Option<&HeaderValue>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ProxyError> {
    let declared = content_length
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let Ok(collected) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await
    else {
        return Err(ProxyError::BodyReadTimeout(timeout.as_secs_f64()));
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(e) => Err(ProxyError::BodyRead(e.to_string())),
    }
}

fn request_info(
    caller: &Caller,
    request_id: &str,
    route: &crate::routing::Route,
    chat: &ChatRequest<'_>,
    headers: &http::HeaderMap,
) -> RequestInfo {
    RequestInfo {
        request_id: request_id.to_string(),
        tenant_id: caller.tenant.id.clone(),
        key_id: caller.key_id.clone(),
        provider: route.provider.name.clone(),
        requested_model: chat.model.clone(),
        upstream_model: route.upstream_model.clone(),
        stream: chat.stream,
        params: chat.params.clone(),
        user: chat.user.clone(),
        session_id: chat.session_id.clone(),
        trace: chat.trace.clone(),
        trace_context: trace_context::from_headers(headers),
        // A copy sized to the messages: a view would pin the whole request buffer (often
        // the client connection's read buffer) for as long as the completion runs — and,
        // when content is exported, until its record is sent.
        messages: Bytes::copy_from_slice(chat.messages.get().as_bytes()),
        keep_content: caller.tenant.keep_content,
    }
}

/// Relays an upstream error status: OpenAI-shaped bodies pass through unchanged, anything
/// else is wrapped in OpenAI's error shape.
async fn upstream_error_response(
    resp: Response<Incoming>,
    mut meter: Meter,
    deadline: tokio::time::Instant,
    request_id: &str,
    passthrough: http::HeaderMap,
) -> Response<ProxyBody> {
    let status = resp.status();
    let body = tokio::time::timeout_at(
        deadline,
        Limited::new(resp.into_body(), MAX_UPSTREAM_ERROR_BYTES).collect(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|c| c.to_bytes())
    .unwrap_or_default();
    meter.upstream_done();
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let upstream_message = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| {
            e.get("message")
                .and_then(|m| m.as_str())
                .or_else(|| e.as_str())
        })
        .map(String::from);
    let openai_shaped = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .is_some_and(|e| e.is_object());
    let message = upstream_message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body);
        let snippet: String = text.chars().take(200).collect();
        format!("The upstream provider answered {status}: {snippet}")
    });
    meter.finish(Outcome::UpstreamError {
        status: Some(status.as_u16()),
        error_type: format!("http_{}", status.as_u16()),
        message: message.clone(),
    });
    let out_body = if openai_shaped {
        body
    } else {
        let error_type = if status.is_server_error() {
            "upstream_error"
        } else {
            "invalid_request_error"
        };
        error_body(&message, error_type, Some("upstream_error"), None)
    };
    let mut out = json_response(status, out_body, request_id);
    out.headers_mut().extend(passthrough);
    out
}
