//! A mock of Sentry's OTLP traces ingestion on 127.0.0.1:0. Like the real endpoint it only
//! answers `/api/<project>/integration/otlp/v1/traces`, authenticates with `X-Sentry-Auth`
//! (403 with a `google.rpc.Status` protobuf body otherwise), and takes gzipped protobuf.
//! Its [`Mode`] can be switched at run time to simulate an outage, rate limiting, refusal
//! or a hang.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

/// How the mock answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 with an empty `ExportTraceServiceResponse`.
    Ok = 0,
    /// 503.
    Unavailable = 1,
    /// 429 with `Retry-After: 1` and `X-Sentry-Rate-Limits`.
    RateLimited = 2,
    /// 403 with a `google.rpc.Status` body.
    Forbidden = 3,
    /// Never answers.
    Hang = 4,
    /// 413 for an export of more generation spans than [`MockSentry::set_max_spans`] allows
    /// (as a receiver does past its body limit); smaller ones are accepted.
    TooLarge = 5,
    /// 308 to another URL.
    Redirect = 6,
    /// 400 whose body echoes the request's headers (auth included), as some proxies do.
    EchoHeaders = 7,
}

/// One accepted export.
#[derive(Debug, Clone)]
pub struct Export {
    /// Request headers.
    pub headers: http::HeaderMap,
    /// The body as sent (gzipped).
    pub raw: Bytes,
    /// The decompressed protobuf.
    pub protobuf: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// A generic OTLP collector: no Sentry path or auth checks.
    generic: bool,
    mode: AtomicU8,
    /// Unknown keys by when they were first seen: like Sentry, requests with a key not yet
    /// looked up get 200 — the first one, or all those within `lookup_delay` of it.
    seen_keys: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    lookup_delay: Mutex<Duration>,
    /// Envelopes received at the envelope endpoint, decompressed.
    envelopes: Mutex<Vec<String>>,
    accepted: Mutex<Vec<Export>>,
    requests: AtomicUsize,
    /// [`Mode::TooLarge`]: exports with more generation spans than this get 413.
    max_spans: AtomicUsize,
    request_times: Mutex<Vec<std::time::Instant>>,
    refused: AtomicUsize,
}

/// The running mock; stops when dropped.
pub struct MockSentry {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Project id in the endpoint and DSN.
    pub project: String,
    /// The DSN public key it accepts.
    pub key: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockSentry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rpc_status(code: u8, message: &str) -> Vec<u8> {
    // google.rpc.Status { code = 1 (varint), message = 2 (string) }, hand-encoded so the
    // test side does not share Beacon's encoder.
    let mut out = vec![0x08, code, 0x12];
    let mut len = message.len();
    while len >= 0x80 {
        out.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(message.as_bytes());
    out
}

impl MockSentry {
    /// Starts a mock for `project` accepting the DSN key `key`.
    pub async fn start(project: &str, key: &str) -> Self {
        Self::start_with(project, key, false).await
    }

    /// Starts a generic OTLP/HTTP collector at `/v1/traces` that accepts any auth.
    pub async fn start_collector() -> Self {
        Self::start_with("", "", true).await
    }

    async fn start_with(project: &str, key: &str, generic: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock sentry");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            generic,
            ..State::default()
        });
        let st = state.clone();
        let (project_s, key_s) = (project.to_string(), key.to_string());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let (project, key) = (project_s.clone(), key_s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        handle(st.clone(), project.clone(), key.clone(), req)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            project: project.into(),
            key: key.into(),
            state,
            task,
        }
    }

    /// The OTLP traces endpoint.
    pub fn endpoint(&self) -> String {
        format!(
            "http://{}/api/{}/integration/otlp/v1/traces",
            self.addr, self.project
        )
    }

    /// The DSN.
    pub fn dsn(&self) -> String {
        format!("http://{}@{}/{}", self.key, self.addr, self.project)
    }

    /// Switches the answer.
    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// How long a wrong key is answered 200 after its first request (Sentry's key lookup;
    /// default: only the first request).
    pub fn set_key_lookup_delay(&self, d: Duration) {
        *self.state.lookup_delay.lock().expect("lock") = d;
    }

    /// [`Mode::TooLarge`]: answer 413 to exports of more than `n` generation spans.
    pub fn set_max_spans(&self, n: usize) {
        self.state.max_spans.store(n, Ordering::SeqCst);
    }

    /// Envelopes (error events) received so far, as text.
    pub fn envelopes(&self) -> Vec<String> {
        self.state.envelopes.lock().expect("lock").clone()
    }

    /// Accepted exports so far.
    pub fn exports(&self) -> Vec<Export> {
        self.state.accepted.lock().expect("lock").clone()
    }

    /// Requests received, accepted or not.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// When each request arrived.
    pub fn request_times(&self) -> Vec<std::time::Instant> {
        self.state.request_times.lock().expect("lock").clone()
    }

    /// Requests refused for a bad path, auth or encoding.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Decodes every accepted export with the independent Python decoder.
    pub async fn spans(&self) -> Vec<Value> {
        decode(&self.exports()).await
    }

    /// Waits until at least `n` spans were accepted (up to `timeout`), then returns them all.
    pub async fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let start = std::time::Instant::now();
        loop {
            let spans = self.spans().await;
            if spans.len() >= n {
                return spans;
            }
            assert!(
                start.elapsed() < timeout,
                "expected {n} spans, have {}: {spans:?}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Decodes exports with `tests/py/decode_otlp.py` (the `opentelemetry-proto` package).
pub async fn decode(exports: &[Export]) -> Vec<Value> {
    let bodies: Vec<&[u8]> = exports.iter().map(|e| e.protobuf.as_slice()).collect();
    decode_bodies(&bodies).await
}

/// Decodes uncompressed `ExportTraceServiceRequest` bodies with `tests/py/decode_otlp.py`:
/// their spans, attributes as a flat map.
pub async fn decode_bodies(bodies: &[&[u8]]) -> Vec<Value> {
    if bodies.is_empty() {
        return Vec::new();
    }
    let dir = crate::TempDir::new("otlp");
    let mut paths = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let p = dir.path().join(format!("{i}.pb"));
        std::fs::write(&p, body).expect("write payload");
        paths.push(p);
    }
    let script = crate::workspace_root().join("tests/py/decode_otlp.py");
    let out = tokio::process::Command::new(crate::python())
        .arg(script)
        .args(paths.iter().map(|p| p.as_os_str()))
        .output()
        .await
        .expect("run decoder");
    assert!(
        out.status.success(),
        "decoder failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = Path::new(dir.path());
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("decoder JSON")
        .as_array()
        .cloned()
        .unwrap_or_default()
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("ct"));
    r
}

async fn handle(
    state: Arc<State>,
    project: String,
    key: String,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    state
        .request_times
        .lock()
        .expect("lock")
        .push(std::time::Instant::now());
    let (parts, body) = req.into_parts();
    let raw = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let refuse = |status, msg: &str| {
        state.refused.fetch_add(1, Ordering::SeqCst);
        Ok(reply(status, "application/x-protobuf", rpc_status(16, msg)))
    };
    if !state.generic
        && parts.method == http::Method::POST
        && parts.uri.path() == format!("/api/{project}/envelope/")
    {
        // Sentry's envelope endpoint (error events): the same auth, a gzipped envelope.
        let expected_auth =
            format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=beacon/");
        let auth_ok = parts
            .headers
            .get("x-sentry-auth")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.starts_with(&expected_auth));
        let envelope_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            == Some("application/x-sentry-envelope");
        let mut text = String::new();
        let decoded =
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&raw[..]), &mut text);
        if !auth_ok || !envelope_type || decoded.is_err() {
            return refuse(StatusCode::BAD_REQUEST, "bad envelope");
        }
        state.envelopes.lock().expect("lock").push(text);
        return Ok(reply(
            StatusCode::OK,
            "application/json",
            r#"{"id":"0123456789abcdef0123456789abcdef"}"#,
        ));
    }
    let path = if state.generic {
        "/v1/traces".to_string()
    } else {
        format!("/api/{project}/integration/otlp/v1/traces")
    };
    if parts.method != http::Method::POST || parts.uri.path() != path {
        return refuse(StatusCode::NOT_FOUND, "not found");
    }
    let expected_auth = format!("Sentry sentry_key={key}, sentry_version=7, sentry_client=beacon/");
    let auth = parts
        .headers
        .get("x-sentry-auth")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !state.generic
        && (!auth.starts_with(&expected_auth) || parts.headers.contains_key("authorization"))
    {
        // Sentry's edge answers 200 to the first request of a key it has not cached yet
        // and only rejects it once the key is known to be bad.
        let lookup = *state.lookup_delay.lock().expect("lock");
        let now = std::time::Instant::now();
        let first_seen = *state
            .seen_keys
            .lock()
            .expect("lock")
            .entry(auth.to_string())
            .or_insert(now);
        if first_seen == now || now.duration_since(first_seen) < lookup {
            return Ok(reply(
                StatusCode::OK,
                "application/x-protobuf",
                Bytes::new(),
            ));
        }
        return refuse(StatusCode::FORBIDDEN, "invalid or missing sentry_key");
    }
    if parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        != Some("application/x-protobuf")
        || parts
            .headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            != Some("gzip")
    {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected gzipped application/x-protobuf",
        );
    }
    let mut protobuf = Vec::new();
    if flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut protobuf)
        .is_err()
    {
        return refuse(StatusCode::BAD_REQUEST, "invalid gzip");
    }
    match state.mode.load(Ordering::SeqCst) {
        1 => {
            return Ok(reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "service unavailable",
            ))
        }
        2 => {
            let mut r = reply(
                StatusCode::TOO_MANY_REQUESTS,
                "application/x-protobuf",
                rpc_status(8, "rate limited"),
            );
            r.headers_mut()
                .insert("retry-after", "1".parse().expect("ra"));
            r.headers_mut().insert(
                "x-sentry-rate-limits",
                "1:transaction;span:key:rate_limited".parse().expect("rl"),
            );
            return Ok(r);
        }
        3 => {
            return Ok(reply(
                StatusCode::FORBIDDEN,
                "application/x-protobuf",
                rpc_status(7, "event submission rejected with_reason: ProjectId"),
            ))
        }
        4 => {
            std::future::pending::<()>().await;
        }
        // Every generation span carries the key `gen_ai.request.model` once.
        5 if protobuf
            .windows(b"gen_ai.request.model".len())
            .filter(|w| *w == b"gen_ai.request.model")
            .count()
            > state.max_spans.load(Ordering::SeqCst) =>
        {
            return Ok(reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "request body too large",
            ))
        }
        6 => {
            let mut r = reply(StatusCode::PERMANENT_REDIRECT, "text/plain", "");
            r.headers_mut().insert(
                "location",
                "https://elsewhere.example/v1/traces".parse().expect("loc"),
            );
            return Ok(r);
        }
        7 => {
            let echoed: Vec<String> = parts
                .headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or_default()))
                .collect();
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("bad request; you sent: {}", echoed.join("; ")),
            ));
        }
        _ => {}
    }
    state.accepted.lock().expect("lock").push(Export {
        headers: parts.headers,
        raw,
        protobuf,
    });
    Ok(reply(
        StatusCode::OK,
        "application/x-protobuf",
        Bytes::new(),
    ))
}
