//! The demo's destination: an in-process OTLP/HTTP receiver. It accepts
//! `POST /v1/traces` (protobuf, gzip or not) as a collector does, decodes every request and
//! counts the spans, so the demo tenant's broadcast has somewhere real to go.

use std::convert::Infallible;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

/// Largest export request accepted (compressed, and again decompressed).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What the receiver has taken in.
#[derive(Debug, Default)]
pub struct Received {
    /// Export requests accepted.
    pub requests: AtomicU64,
    /// Spans in them.
    pub spans: AtomicU64,
}

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn bad(message: &str) -> Response<Full<Bytes>> {
    answer(
        StatusCode::BAD_REQUEST,
        "text/plain",
        Bytes::from(message.to_string()),
    )
}

/// Serves one request.
pub async fn handle(
    received: Arc<Received>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST || req.uri().path() != "/v1/traces" {
        return Ok(answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"the demo receiver takes POST /v1/traces"),
        ));
    }
    let gzip = req
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let Ok(body) = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    else {
        return Ok(answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain",
            Bytes::from_static(b"too large"),
        ));
    };
    let mut bytes = body.to_bytes();
    if gzip {
        let mut out = Vec::new();
        let read = flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut out);
        if read.is_err() || out.len() > MAX_BODY {
            return Ok(bad("the body is not gzip within the size limit"));
        }
        bytes = Bytes::from(out);
    }
    let Ok(export) = ExportTraceServiceRequest::decode(bytes) else {
        return Ok(bad("the body is not an OTLP ExportTraceServiceRequest"));
    };
    let spans: usize = export
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    received.requests.fetch_add(1, Ordering::Relaxed);
    received.spans.fetch_add(spans as u64, Ordering::Relaxed);
    tracing::debug!(spans, "demo receiver: export accepted");
    Ok(answer(
        StatusCode::OK,
        "application/x-protobuf",
        Bytes::from(ExportTraceServiceResponse::default().encode_to_vec()),
    ))
}
