//! Test Connection (SPEC §4.2): send one real test span to a destination and report what
//! happened — reached or not, HTTP status, latency, and the destination's error text.
//!
//! Sentry's ingestion answers 200 to requests for a key it has not looked up yet, even a
//! wrong key, and drops the data later; the lookup can take a few seconds. So when a Sentry
//! destination's first answer is 2xx, *empty* probes (an `ExportTraceServiceRequest` with no
//! spans: accepted, nothing forwarded) follow at [`SENTRY_PROBE_DELAYS`] after that answer,
//! and the first 4xx among them is the test's answer: a wrong key or project shows as 403
//! with Sentry's reason, and a passing test leaves exactly one test transaction.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use prost::Message;
use serde::Serialize;

use crate::destination::{webhook, DestinationSpec, Wire};
use crate::sink::http::{self, ExportClient, PostResult};
use crate::span::{export_request, Attrs, IdSource, RandomIds};

/// The name (and Sentry transaction) of the test span.
pub const TEST_SPAN_NAME: &str = "beacon test connection";
/// `sentry.op` of the test span.
pub const TEST_SPAN_OP: &str = "beacon.test";
/// When a Sentry destination's empty probes are sent, after its first 2xx answer.
pub const SENTRY_PROBE_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// What a test found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestReport {
    /// The destination accepted the test span.
    pub ok: bool,
    /// A response arrived (false: DNS, connect, TLS or timeout failure).
    pub reached: bool,
    /// HTTP status of the reported attempt.
    pub status: Option<u16>,
    /// Latency of the reported attempt, in milliseconds.
    pub latency_ms: u64,
    /// The destination's error text, or what the test left behind on success.
    pub message: String,
}

/// The export request carrying one test span for `spec`.
pub fn test_payload(spec: &DestinationSpec) -> Vec<u8> {
    let mut ids = RandomIds;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let mut attributes = Vec::with_capacity(6);
    attributes.str("sentry.op", TEST_SPAN_OP);
    attributes.str("sentry.description", TEST_SPAN_NAME);
    attributes.str("beacon.tenant", &spec.tenant_id);
    attributes.str("beacon.destination", &spec.name);
    let span = Span {
        trace_id: ids.trace_id().to_vec(),
        span_id: ids.span_id().to_vec(),
        name: TEST_SPAN_NAME.to_string(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        attributes,
        status: Some(Status {
            message: String::new(),
            code: status::StatusCode::Ok as i32,
        }),
        ..Default::default()
    };
    export_request(vec![span]).encode_to_vec()
}

/// Tests `spec` through `client`; each request may take up to `timeout`; a Sentry
/// destination that accepted the test span is then probed at `probes` after that answer.
pub async fn run(
    spec: &DestinationSpec,
    client: &ExportClient,
    timeout: Duration,
    probes: &[Duration],
) -> TestReport {
    let encoded = match &spec.wire {
        Wire::SignedJson(key) => Ok((webhook_test(spec, key), None)),
        Wire::OtlpProtobuf => http::gzip(&test_payload(spec)).and_then(|span| {
            Ok((
                http::Payload::otlp(Bytes::from(span)),
                Some(http::Payload::otlp(Bytes::from(http::gzip(
                    &export_request(Vec::new()).encode_to_vec(),
                )?))),
            ))
        }),
    };
    let (body, empty) = match encoded {
        Ok(parts) => parts,
        Err(e) => {
            return TestReport {
                ok: false,
                reached: false,
                status: None,
                latency_ms: 0,
                message: format!("encoding failed: {e}"),
            }
        }
    };
    let first = attempt(spec, client, &body, timeout).await;
    let Some(empty) = empty.filter(|_| first.ok && spec.endpoint.is_sentry) else {
        return first;
    };
    let answered = tokio::time::Instant::now();
    for at in probes {
        tokio::time::sleep_until(answered + *at).await;
        let probe = attempt(spec, client, &empty, timeout).await;
        // A 4xx is the key or project refused once Sentry looked it up; an outage or a
        // 5xx in between says nothing about the key.
        if probe.status.is_some_and(|s| (400..500).contains(&s)) {
            return probe;
        }
    }
    first
}

/// A webhook's test delivery: a JSON array of one object marked `"test": true`, signed as
/// every delivery is.
fn webhook_test(spec: &DestinationSpec, key: &[u8]) -> http::Payload {
    let body = serde_json::json!([{
        "test": true,
        "message": TEST_SPAN_NAME,
        "tenant_id": spec.tenant_id,
        "destination": spec.name,
    }])
    .to_string();
    http::Payload {
        headers: webhook::delivery_headers(key, body.as_bytes()),
        body: Bytes::from(body),
        content_type: "application/json",
        gzipped: false,
    }
}

async fn attempt(
    spec: &DestinationSpec,
    client: &ExportClient,
    payload: &http::Payload,
    timeout: Duration,
) -> TestReport {
    let started = Instant::now();
    let result = http::send(client, &spec.endpoint, payload, timeout).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        PostResult::Failed(message) => TestReport {
            ok: false,
            reached: false,
            status: None,
            latency_ms,
            message: spec.endpoint.scrub(&message),
        },
        PostResult::Response { status, .. } if (200..300).contains(&status) => TestReport {
            ok: true,
            reached: true,
            status: Some(status),
            latency_ms,
            message: spec.accepted_message(),
        },
        PostResult::Response { status, body, .. } => {
            let text = http::error_text(&body);
            // A destination may echo the request, its auth header included.
            let message = if text.is_empty() {
                format!("HTTP {status}")
            } else {
                spec.endpoint.scrub(&text)
            };
            TestReport {
                ok: false,
                reached: true,
                status: Some(status),
                latency_ms,
                message,
            }
        }
    }
}
