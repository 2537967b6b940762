//! Every metered route (SPEC §2.1), one pipeline generic over the API's wire format:
//!
//! 1. **admit** — authenticate, read the body (bounded in bytes and time), parse it with
//!    the API's module, route the model, check the provider serves the API. Nothing has
//!    reached routing yet, so a failure here produces no record.
//! 2. **meter** — a [`Meter`] is created; from here on exactly one record is produced.
//! 3. **exchange** — the upstream request, its response headers, and for a non-streaming
//!    reply its whole body. It returns a [`Reply`] or a [`Failure`]; the failure's outcome
//!    is finished in one place, [`serve`].
//! 4. **relay** — a stream is handed to `MeteredSse`, which owns the meter from then on
//!    and finishes it once; a complete reply is observed by the API's module, finished,
//!    and given `usage.cost`.
//!
//! A client that goes away drops the meter unfinished: its `Drop` records the cancel.

use std::time::{Duration, Instant, SystemTime};

use beacon_broadcast::record::{CostSource, Outcome};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::apis::WireApi;
use crate::auth::Caller;
use crate::body::ProxyBody;
use crate::error::{anthropic_error_body, error_body, json_response_with, ErrorShape, ProxyError};
use crate::meter::stream::{MeteredSse, StreamLimits};
use crate::meter::{Meter, RequestInfo};
use crate::request::{ClientRequest, ParseContext};
use crate::routing::plan::{Attempts, Failed};
use crate::routing::policy::{self, AttemptResult, Decision};
use crate::routing::Route;
use crate::{trace_context, upstream, App};

/// `x-beacon-attempts` (SPEC §2.2), made once.
const ATTEMPTS_HEADER: http::HeaderName = http::HeaderName::from_static("x-beacon-attempts");
/// `x-beacon-provider` (SPEC §2.2), made once.
const PROVIDER_HEADER: http::HeaderName = http::HeaderName::from_static("x-beacon-provider");

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
    /// Upstream attempts made (the `x-beacon-attempts` header).
    pub attempts: usize,
    /// The provider that served, when one did (the `x-beacon-provider` header's value).
    pub provider: Option<HeaderValue>,
    /// The key's `x-ratelimit-*` headers, when it is limited (SPEC §5.1).
    pub rate: crate::limits::RateHeaders,
}

/// Serves one request of API `A`; errors are answered in `A`'s shape.
pub async fn handle<A: WireApi>(
    app: &App,
    req: Request<Incoming>,
    request_id: &str,
    received: Instant,
) -> Response<ProxyBody> {
    let mut labels = Labels::default();
    let mut resp = match serve::<A>(app, req, request_id, received, &mut labels).await {
        Ok(resp) => resp,
        Err(e) => {
            crate::log_error(&e, request_id);
            e.into_response_as(request_id, A::SHAPE)
        }
    };
    let h = resp.headers_mut();
    if !labels.rate.is_empty() {
        labels.rate.apply(h);
    }
    h.insert(ATTEMPTS_HEADER, HeaderValue::from(labels.attempts));
    if let Some(v) = labels.provider {
        h.insert(PROVIDER_HEADER, v);
    }
    app.metrics
        .observe_response(&labels.tenant, &labels.model, resp.status().as_u16());
    resp
}

/// How an attempt's answer is relayed, the same for every attempt of a request.
struct Relay<'a> {
    /// The client's headers this API forwards upstream.
    forwarded: &'a [(http::HeaderName, HeaderValue)],
    /// When the whole exchange must be over.
    deadline: tokio::time::Instant,
    /// Read a stream up to its first event (it could still fail over).
    read_ahead: bool,
    /// The key is limited: its own `x-ratelimit-*` replace the upstream's.
    own_rate_headers: bool,
}

/// What the upstream answered, before the relay.
enum Reply {
    /// A stream: relayed by `MeteredSse`, with its first frame when it was read ahead (a
    /// stream that can still fail over is committed only once its first event arrived).
    Stream(Incoming, Option<Bytes>),
    /// A complete 2xx body.
    Complete(Bytes),
    /// An upstream error status, with its body (bounded).
    Error(StatusCode, Bytes),
}

/// An exchange that failed: the record's outcome and the client's error.
struct Failure {
    outcome: Outcome,
    error: ProxyError,
}

/// One attempt's result: what the policy reads, and what the relay would send.
struct Attempted {
    result: AttemptResult,
    retry_after: Option<Duration>,
    exchanged: Result<(Reply, http::HeaderMap), Failure>,
}

impl Attempted {
    /// Low-cardinality name of the attempt's outcome (metrics, the record's attempts).
    fn label(&self) -> std::borrow::Cow<'static, str> {
        match self.result {
            AttemptResult::Status(s) if (200..300).contains(&s) => "served".into(),
            AttemptResult::Status(s) => format!("http_{s}").into(),
            AttemptResult::Unreachable => "unreachable".into(),
            AttemptResult::TimedOut => "attempt_timeout".into(),
            AttemptResult::StreamFailedEarly => "stream_failed".into(),
        }
    }

    fn status(&self) -> Option<u16> {
        match self.result {
            AttemptResult::Status(s) => Some(s),
            _ => None,
        }
    }
}

/// A number in [0, 1) for the weighted pick among targets.
fn roll() -> f64 {
    rand::random::<f64>()
}

async fn serve<A: WireApi>(
    app: &App,
    req: Request<Incoming>,
    request_id: &str,
    received: Instant,
    labels: &mut Labels,
) -> Result<Response<ProxyBody>, ProxyError> {
    // 1. Admit.
    let received_wall = SystemTime::now();
    let caller = app.directory.authenticate_headers(req.headers())?;
    labels.tenant.clone_from(&caller.tenant.id);
    let (parts, body) = req.into_parts();
    let body = read_body(
        body,
        parts.headers.get(http::header::CONTENT_LENGTH),
        app.max_body_bytes,
        app.body_read_timeout,
    )
    .await?;
    let session_header = match parts.headers.get("x-session-id") {
        Some(v) => Some(v.to_str().map_err(|_| ProxyError::InvalidField {
            param: "session_id",
            message: "the x-session-id header must be visible ASCII".into(),
        })?),
        None => None,
    };
    let cx = ParseContext {
        session_header,
        limits: &app.metadata_limits,
    };
    let request = A::parse(&body, &cx)?;
    labels.model.clone_from(&request.model);
    let plan = app.router.plan(&request.model, &request.models, A::API)?;
    let mut attempts = Attempts::default();
    let mut current = plan
        .next(&mut attempts, &app.health, roll)
        .ok_or_else(|| ProxyError::ModelNotFound(request.model.clone()))?;

    // 2. Meter.
    let first = &plan.candidates[current].route;
    let info = request_info::<A>(&caller, request_id, first, &request, &parts.headers);
    let mut meter = Meter::new(info, app.meter.clone(), received, received_wall);
    let deadline = tokio::time::Instant::from_std(received) + app.upstream_timeout;
    // Limits (SPEC §5.1), with the meter made: a refused request is a record too. Tokens are
    // admitted at an estimate of the prompt (its body's bytes ÷ 4) and corrected to the real
    // usage when the record is accounted.
    if caller.limit.is_some() || caller.tenant.limit.is_some() {
        let estimate = (body.len() as u64).div_ceil(4);
        let limiter = app.directory.limiter();
        match limiter.admit_at(
            limiter.clock.at(received_wall),
            caller.limit.as_deref(),
            caller.tenant.limit.as_deref(),
            estimate,
        ) {
            Ok(mut admission) => {
                labels.rate = admission.take_headers();
                meter.hold(admission);
            }
            Err(mut refusal) => {
                labels.rate = std::mem::take(&mut refusal.headers);
                meter.finish(Outcome::Limited {
                    code: refusal.code().to_string(),
                    message: refusal.message.clone(),
                });
                return Err(ProxyError::Limited(Box::new(refusal)));
            }
        }
    }

    // 3. Exchange: attempts until one serves or the policy gives up (SPEC §2.2).
    let forwarded: Vec<_> = A::FORWARDED_HEADERS
        .iter()
        .filter_map(|name| {
            let v = parts.headers.get(*name)?;
            Some((http::HeaderName::from_static(name), v.clone()))
        })
        .collect();
    // A stream that could still fail over is read up to its first event before the client
    // gets anything; a request with a single target is relayed at once, as it always was.
    let read_ahead = plan.candidates.len() > 1;
    let exchanged = loop {
        let route = &plan.candidates[current].route;
        attempts.count += 1;
        let started = Instant::now();
        let attempted = attempt::<A>(
            app,
            route,
            &request,
            Relay {
                forwarded: &forwarded,
                deadline,
                read_ahead,
                own_rate_headers: !labels.rate.is_empty(),
            },
            &mut meter,
        )
        .await;
        let out_of_time = tokio::time::Instant::now() >= deadline;
        let decision = if out_of_time {
            Decision::GiveUp
        } else {
            policy::decide(
                &app.routing,
                attempts.count,
                attempted.result,
                attempted.retry_after,
                received.elapsed(),
                plan.others_left(&attempts),
            )
        };
        let label = attempted.label();
        match (&label, route.provider.served.get()) {
            // The common case, counted on a handle made at start: no label set is built.
            (std::borrow::Cow::Borrowed("served"), Some(served)) => {
                served.inc();
            }
            _ => app.metrics.observe_attempt(&route.provider.name, &label),
        }
        match attempted.result {
            AttemptResult::Status(s) if (200..300).contains(&s) => app.health.succeeded(route),
            AttemptResult::Status(s) if !policy::fails_over(s) => {}
            _ => {
                if app.health.failed(route) == Failed::CooledDown {
                    app.metrics.observe_cooldown(&route.provider.name);
                    tracing::warn!(provider = %route.provider.name, model = %route.upstream_model, "target cooling down after {} consecutive failures", app.routing.cooldown_failures);
                }
            }
        }
        let next = match decision {
            Decision::Serve | Decision::GiveUp => break attempted.exchanged,
            Decision::FailOver => match plan.next(&mut attempts, &app.health, roll) {
                Some(next) => next,
                None => break attempted.exchanged,
            },
            Decision::RetrySame(wait) => {
                meter.attempt_failed(
                    attempted.status(),
                    &label,
                    started,
                    (&route.provider.name, &route.upstream_model),
                );
                app.metrics.observe_failover(&label);
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let to = &plan.candidates[next].route;
        meter.attempt_failed(
            attempted.status(),
            &label,
            started,
            (&to.provider.name, &to.upstream_model),
        );
        app.metrics.observe_failover(&label);
        current = next;
    };
    labels.attempts = meter.attempt_count();
    let (reply, passthrough) = match exchanged {
        Ok(ok) => ok,
        Err(Failure { outcome, error }) => {
            meter.finish(outcome);
            return Err(error);
        }
    };
    labels.provider = Some(plan.candidates[current].route.provider.name_header.clone());

    // 4. Relay.
    match reply {
        Reply::Stream(body, first) => {
            let body = MeteredSse::new(
                body,
                first,
                meter,
                A::decoder(&request),
                StreamLimits {
                    deadline,
                    timeout_secs: app.upstream_timeout.as_secs(),
                    idle_timeout: app.upstream_idle_timeout,
                    cut: app.cut_signal(),
                },
            );
            Ok(sse_response(Box::pin(body), passthrough, request_id))
        }
        Reply::Error(status, body) => {
            let (outcome, out) = relay_error(status, &body, A::SHAPE);
            meter.finish(outcome);
            Ok(json_response_with(status, out, request_id, passthrough))
        }
        Reply::Complete(bytes) => {
            let body = complete::<A>(&bytes, &mut meter).await?;
            Ok(json_response_with(
                StatusCode::OK,
                body,
                request_id,
                passthrough,
            ))
        }
    }
}

/// One attempt on `route`: sends the request (the body already in memory, the model
/// rewritten for this target) and reads what the relay needs — the response headers within
/// `routing.attempt_timeout_secs`, and the whole body of a non-streaming reply or an error
/// status (or, with `read_ahead`, a stream's first frame).
async fn attempt<A: WireApi>(
    app: &App,
    route: &Route,
    request: &ClientRequest<'_>,
    relay: Relay<'_>,
    meter: &mut Meter,
) -> Attempted {
    let Relay {
        forwarded,
        deadline,
        read_ahead,
        own_rate_headers,
    } = relay;
    let failed = |result, outcome, error| Attempted {
        result,
        retry_after: None,
        exchanged: Err(Failure { outcome, error }),
    };
    let Some(url) = route.provider.url(A::API) else {
        // Plans hold only targets that serve the API.
        let error = ProxyError::UnsupportedApi {
            provider: route.provider.name.clone(),
            api: A::API,
        };
        return failed(
            AttemptResult::Status(400),
            upstream_failure(None, "unsupported_api", error.to_string()),
            error,
        );
    };
    let upstream_req = match upstream::api_request(
        &route.provider,
        url,
        request.upstream_body(&route.upstream_model),
        request.stream,
        forwarded,
    ) {
        Ok(r) => r,
        Err(e) => {
            return failed(
                AttemptResult::Status(400),
                upstream_failure(None, "invalid_request", e.to_string()),
                ProxyError::UpstreamInvalid(e.to_string()),
            )
        }
    };
    let timeout_secs = app.upstream_timeout.as_secs();
    let attempt_deadline = deadline.min(tokio::time::Instant::now() + app.routing.attempt_timeout);
    meter.upstream_started();
    // Cut at the end of the shutdown grace period while waiting here, the request is closed
    // with its connection and the meter's Drop records it as `shutdown` (no per-request
    // cancellation future: registering one cost ~2,000 instructions per request).
    let answer = tokio::time::timeout_at(attempt_deadline, app.client.request(upstream_req)).await;
    let resp = match answer {
        Err(_) if attempt_deadline < deadline => {
            let secs = app.routing.attempt_timeout.as_secs_f64();
            let error = ProxyError::UpstreamAttemptTimeout {
                provider: route.provider.name.clone(),
                secs,
            };
            return failed(
                AttemptResult::TimedOut,
                upstream_failure(None, "attempt_timeout", error.to_string()),
                error,
            );
        }
        Err(_) => {
            return failed(
                AttemptResult::TimedOut,
                Outcome::Timeout,
                ProxyError::UpstreamTimeout(timeout_secs),
            )
        }
        Ok(Err(e)) => {
            let kind = upstream::classify_error(&e);
            let error = ProxyError::UpstreamUnreachable {
                provider: route.provider.name.clone(),
                kind,
                cause: upstream::describe_error(&e),
            };
            tracing::warn!(request_id = meter.request_id(), provider = %route.provider.name, kind, "{error}");
            return failed(
                AttemptResult::Unreachable,
                upstream_failure(None, kind, error.to_string()),
                error,
            );
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    meter.upstream_headers(status.as_u16());
    // Read only where the policy may use it (a custom header name costs a parse and a hash).
    let retry_after = if status.is_success() {
        None
    } else {
        policy::retry_after(resp.headers())
    };
    let mut passthrough = http::HeaderMap::with_capacity(crate::error::RESPONSE_HEADERS);
    for (k, v) in resp.headers() {
        // A limited key's responses carry its own x-ratelimit-* (SPEC §5.1), never the
        // provider's account-wide ones: those are not copied to be replaced.
        if upstream::passthrough_header(k)
            && !(own_rate_headers && upstream::is_openai_rate_header(k))
        {
            passthrough.append(k.clone(), v.clone());
        }
    }
    // The upstream's own request id: OpenAI-compatible servers name it `x-request-id`,
    // Anthropic `request-id` (one lookup: a custom header name costs a parse and a hash).
    let id_header = match route.provider.kind {
        beacon_config::ProviderKind::OpenAi => "x-request-id",
        beacon_config::ProviderKind::Anthropic => "request-id",
    };
    if let Some(id) = resp.headers().get(id_header) {
        passthrough.insert("x-upstream-request-id", id.clone());
    }
    let result = AttemptResult::Status(status.as_u16());

    if status.is_redirection() {
        // A provider API does not redirect; relaying it would send the client (and its
        // Beacon key) around the gateway. It is a misconfigured base_url: say so.
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| l.chars().take(512).collect::<String>());
        let error = ProxyError::UpstreamRedirect {
            provider: route.provider.name.clone(),
            status: status.as_u16(),
            location,
        };
        meter.upstream_done();
        return failed(
            result,
            upstream_failure(
                Some(status.as_u16()),
                "upstream_redirect",
                error.to_string(),
            ),
            error,
        );
    }
    if !status.is_success() {
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
        return Attempted {
            result,
            retry_after,
            exchanged: Ok((Reply::Error(status, body), passthrough)),
        };
    }
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    if request.stream && is_sse {
        let mut body = resp.into_body();
        if !read_ahead {
            return Attempted {
                result,
                retry_after,
                exchanged: Ok((Reply::Stream(body, None), passthrough)),
            };
        }
        // Nothing has reached the client yet: a stream that breaks before its first frame
        // can still fail over.
        let first = tokio::time::timeout_at(attempt_deadline, body.frame()).await;
        return match first {
            Ok(Some(Ok(frame))) => Attempted {
                result,
                retry_after,
                exchanged: Ok((Reply::Stream(body, frame.into_data().ok()), passthrough)),
            },
            Err(_) => {
                let error = ProxyError::UpstreamAttemptTimeout {
                    provider: route.provider.name.clone(),
                    secs: app.routing.attempt_timeout.as_secs_f64(),
                };
                failed(
                    AttemptResult::TimedOut,
                    upstream_failure(Some(status.as_u16()), "attempt_timeout", error.to_string()),
                    error,
                )
            }
            Ok(_) => {
                let message = format!(
                    "the upstream provider `{}` ended the stream before its first event",
                    route.provider.name
                );
                failed(
                    AttemptResult::StreamFailedEarly,
                    upstream_failure(Some(status.as_u16()), "stream_failed", message.clone()),
                    ProxyError::UpstreamInvalid(message),
                )
            }
        };
    }
    let collected = tokio::time::timeout_at(
        deadline,
        Limited::new(resp.into_body(), MAX_UPSTREAM_RESPONSE_BYTES).collect(),
    )
    .await;
    meter.upstream_done();
    let exchanged = match collected {
        Err(_) => Err(Failure {
            outcome: Outcome::Timeout,
            error: ProxyError::UpstreamTimeout(timeout_secs),
        }),
        Ok(Err(e)) => {
            let message = format!("reading the upstream response failed: {e}");
            Err(Failure {
                outcome: upstream_failure(
                    Some(status.as_u16()),
                    "body_read_error",
                    message.clone(),
                ),
                error: ProxyError::UpstreamInvalid(message),
            })
        }
        Ok(Ok(c)) => Ok((Reply::Complete(c.to_bytes()), passthrough)),
    };
    Attempted {
        result,
        retry_after,
        exchanged,
    }
}

/// A complete 2xx reply: observed by the API's module, finished, and given `usage.cost`
/// (or Beacon's estimate when the upstream reported no usage).
async fn complete<A: WireApi>(bytes: &Bytes, meter: &mut Meter) -> Result<Bytes, ProxyError> {
    let observed = std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| Some((text, A::observe(text, meter)?)));
    let Some((text, observed)) = observed else {
        let message = "the upstream answered 2xx with a body that is not this API's response";
        meter.finish(upstream_failure(
            meter.upstream_status(),
            "invalid_response",
            message.to_string(),
        ));
        return Err(ProxyError::UpstreamInvalid(message.to_string()));
    };
    // No usage from the upstream: a large estimate is made off the event loop.
    meter.estimate_off_loop().await;
    let Some(acc) = meter.finish(Outcome::Ok) else {
        return Ok(bytes.clone());
    };
    // No price for the model: no cost is shown, rather than 0 (SPEC §2.3).
    let cost: Option<f64> =
        (acc.cost.source != CostSource::Unknown).then(|| acc.cost.total.try_into().unwrap_or(0.0));
    let estimate = || A::estimated_usage(&acc, cost).to_string();
    let spliced = super::splice::add_cost_at(
        text,
        observed.usage_raw,
        observed.usage.as_ref(),
        cost,
        estimate,
    );
    Ok(match spliced {
        Some(spliced) => Bytes::from(spliced),
        // A `usage` the splice cannot edit: re-serialize with Beacon's usage.
        None => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(mut json) => {
                if let Some(obj) = json.as_object_mut() {
                    obj.insert("usage".into(), A::estimated_usage(&acc, cost));
                }
                Bytes::from(json.to_string())
            }
            Err(_) => bytes.clone(),
        },
    })
}

fn upstream_failure(status: Option<u16>, error_type: &str, message: String) -> Outcome {
    Outcome::UpstreamError {
        status,
        error_type: error_type.to_string(),
        message,
    }
}

fn sse_response(
    body: std::pin::Pin<
        Box<dyn http_body::Body<Data = Bytes, Error = std::convert::Infallible> + Send>,
    >,
    passthrough: http::HeaderMap,
    request_id: &str,
) -> Response<ProxyBody> {
    let mut out = Response::new(ProxyBody::Sse(body));
    let h = out.headers_mut();
    // The map the upstream's headers were collected into is the response's (see
    // `json_response_with`).
    *h = passthrough;
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
    out
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

fn request_info<A: WireApi>(
    caller: &Caller,
    request_id: &str,
    route: &Route,
    request: &ClientRequest<'_>,
    headers: &http::HeaderMap,
) -> RequestInfo {
    RequestInfo {
        request_id: request_id.to_string(),
        api: A::API,
        tenant_id: caller.tenant.id.clone(),
        key_id: caller.key_id.clone(),
        provider: route.provider.name.clone(),
        requested_model: request.model.clone(),
        upstream_model: route.upstream_model.clone(),
        stream: request.stream,
        params: request.params.clone(),
        user: request.user.clone(),
        session_id: request.session_id.clone(),
        trace: request.trace.clone(),
        trace_context: trace_context::from_headers(headers),
        messages: request.input.clone(),
        tool_names: request.tool_names.clone(),
        // Linked to earlier tool calls only on the export path of a broadcasting tenant.
        answered_tool_calls: if caller.tenant.broadcast_enabled {
            crate::request::answered_tool_calls(&request.input)
        } else {
            Vec::new()
        },
        tool_definitions: request
            .tool_definitions
            .clone()
            .filter(|_| caller.tenant.keep_content),
        keep_content: caller.tenant.keep_content,
    }
}

/// An upstream error status relayed in the route's shape: a body already in that shape
/// passes through unchanged; anything else is wrapped. Returns the record's outcome (the
/// upstream's message) and the body.
fn relay_error(status: StatusCode, body: &Bytes, shape: ErrorShape) -> (Outcome, Bytes) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let upstream_message = error
        .and_then(|e| {
            e.get("message")
                .and_then(|m| m.as_str())
                .or_else(|| e.as_str())
        })
        .map(String::from);
    let shaped = match shape {
        ErrorShape::OpenAi => error.is_some_and(|e| e.is_object()),
        ErrorShape::Anthropic => {
            parsed
                .as_ref()
                .and_then(|v| v.get("type"))
                .and_then(|t| t.as_str())
                == Some("error")
                && error.is_some_and(|e| e.is_object())
        }
    };
    let message = upstream_message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let snippet: String = text.chars().take(200).collect();
        format!("The upstream provider answered {status}: {snippet}")
    });
    let out = if shaped {
        body.clone()
    } else {
        match shape {
            ErrorShape::OpenAi => {
                let error_type = if status.is_server_error() {
                    "upstream_error"
                } else {
                    "invalid_request_error"
                };
                error_body(&message, error_type, Some("upstream_error"), None)
            }
            ErrorShape::Anthropic => anthropic_error_body(status, &message),
        }
    };
    let outcome = upstream_failure(
        Some(status.as_u16()),
        &format!("http_{}", status.as_u16()),
        message,
    );
    (outcome, out)
}
