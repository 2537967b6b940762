//! The export HTTP client and one OTLP/HTTP POST: protobuf, gzip, the destination's headers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::destination::{is_private_ip, Endpoint};

/// The client every sink shares.
pub type ExportClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>;

/// DNS resolution that refuses private addresses unless they are allowed: a destination
/// hostname that resolves to 127.0.0.1, 10.x, 169.254.x … is never connected to, so a
/// tenant cannot point the gateway at its own network (checked at connect time, after
/// resolution, for every export and every Test Connection).
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    /// `broadcast.allow_private_destinations`.
    pub allow_private: bool,
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allow_private {
                return Ok(addrs.into_iter());
            }
            let public: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| !is_private_ip(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to a loopback or private address (needs broadcast.allow_private_destinations)"),
                ));
            }
            Ok(public.into_iter())
        })
    }
}

/// Longest response body read from a destination (errors are short).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Builds the export client: rustls with webpki roots, HTTP/1.1 and HTTP/2, TCP_NODELAY,
/// and the [`GuardedResolver`].
pub fn client(
    connect_timeout: Duration,
    allow_private: bool,
) -> Result<ExportClient, rustls::Error> {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}

/// Gzips an encoded export request.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    gzip_parts(&[bytes])
}

/// The gzip member header (RFC 1952): deflate, no flags, no time, XFL 4 (the fastest
/// level), OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 0xff];

thread_local! {
    /// A raw-deflate state kept for the next body and reset, not set up again: a new one
    /// (allocated, its window and tables zeroed) cost as much as compressing a small batch;
    /// a reset only clears the hash heads. About 300 KiB per thread that sends (the export
    /// thread, and the admin threads that run Test Connection).
    static DEFLATE: std::cell::RefCell<Option<flate2::Compress>> =
        const { std::cell::RefCell::new(None) };
}

/// Gzips the concatenation of `parts` without concatenating them first: raw deflate at the
/// fastest level (a state reused per thread), framed as one gzip member.
pub fn gzip_parts(parts: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(GZIP_HEADER.len() + total / 4 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    let mut deflate = DEFLATE
        .with(|d| d.borrow_mut().take())
        .unwrap_or_else(|| Compress::new(Compression::fast(), false));
    deflate.reset();
    let mut crc = flate2::Crc::new();
    let mut run = |deflate: &mut Compress| -> std::io::Result<()> {
        for part in parts {
            crc.update(part);
            let mut rest: &[u8] = part;
            while !rest.is_empty() {
                if out.capacity() - out.len() < 1024 {
                    out.reserve(rest.len() / 4 + 1024);
                }
                let before = deflate.total_in();
                deflate
                    .compress_vec(rest, &mut out, FlushCompress::None)
                    .map_err(std::io::Error::other)?;
                let taken = usize::try_from(deflate.total_in() - before).unwrap_or(rest.len());
                rest = &rest[taken.min(rest.len())..];
            }
        }
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(4096);
            }
            let before = deflate.total_out();
            match deflate
                .compress_vec(&[], &mut out, FlushCompress::Finish)
                .map_err(std::io::Error::other)?
            {
                Status::StreamEnd => return Ok(()),
                // With room to write, each call must make progress; never spin.
                _ if deflate.total_out() == before => {
                    return Err(std::io::Error::other("deflate made no progress"))
                }
                Status::Ok | Status::BufError => {}
            }
        }
    };
    let result = run(&mut deflate);
    DEFLATE.with(|d| *d.borrow_mut() = Some(deflate));
    result?;
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&crc.amount().to_le_bytes());
    Ok(out)
}

/// What one POST produced.
#[derive(Debug)]
pub enum PostResult {
    /// A response (any status).
    Response {
        /// Status.
        status: u16,
        /// `Retry-After`.
        retry_after: Option<String>,
        /// `X-Sentry-Rate-Limits`.
        sentry_rate_limits: Option<String>,
        /// `Location`, on a redirect.
        location: Option<String>,
        /// Up to 64 KiB of the body.
        body: Bytes,
    },
    /// No response.
    Failed(String),
}

/// One request body and how it is sent.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The bytes, as sent.
    pub body: Bytes,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body is gzipped (`Content-Encoding: gzip`).
    pub gzipped: bool,
    /// Headers of this body only (a webhook's signature), besides the endpoint's.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Payload {
    /// A gzipped OTLP protobuf export.
    pub fn otlp(gzipped: Bytes) -> Self {
        Self {
            body: gzipped,
            content_type: "application/x-protobuf",
            gzipped: true,
            headers: Vec::new(),
        }
    }
}

/// POSTs a gzipped OTLP protobuf body, with `timeout` for the whole exchange.
pub async fn post(
    client: &ExportClient,
    endpoint: &Endpoint,
    gzipped: Bytes,
    timeout: Duration,
) -> PostResult {
    send(client, endpoint, &Payload::otlp(gzipped), timeout).await
}

/// [`post`] of a gzipped body of `content_type` (Sentry envelopes).
pub async fn post_as(
    client: &ExportClient,
    endpoint: &Endpoint,
    gzipped: Bytes,
    content_type: &'static str,
    timeout: Duration,
) -> PostResult {
    let payload = Payload {
        content_type,
        ..Payload::otlp(gzipped)
    };
    send(client, endpoint, &payload, timeout).await
}

/// POSTs `payload` to `endpoint`, with `timeout` for the whole exchange.
pub async fn send(
    client: &ExportClient,
    endpoint: &Endpoint,
    payload: &Payload,
    timeout: Duration,
) -> PostResult {
    let mut req = http::Request::post(endpoint.url.clone())
        .header(http::header::CONTENT_TYPE, payload.content_type)
        .header(http::header::USER_AGENT, crate::destination::SENTRY_CLIENT);
    if payload.gzipped {
        req = req.header(http::header::CONTENT_ENCODING, "gzip");
    }
    for (k, v) in endpoint.headers.iter().chain(&payload.headers) {
        req = req.header(k, v.clone());
    }
    let req = match req.body(Full::new(payload.body.clone())) {
        Ok(r) => r,
        Err(e) => return PostResult::Failed(format!("invalid request: {e}")),
    };
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| describe(&e))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let retry_after = header("retry-after");
        let sentry_rate_limits = header("x-sentry-rate-limits");
        let location = resp
            .status()
            .is_redirection()
            .then(|| header("location"))
            .flatten()
            .map(|l| l.chars().take(256).collect());
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok::<_, String>(PostResult::Response {
            status,
            retry_after,
            sentry_rate_limits,
            location,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => PostResult::Failed(e),
        Err(_) => PostResult::Failed(format!("no response within {} s", timeout.as_secs_f64())),
    }
}

fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// `google.rpc.Status`, the error body of OTLP/HTTP receivers (Sentry's included).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Human-readable message.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The error text of a destination's reply: `google.rpc.Status.message` when the body is
/// that protobuf, else JSON `detail`/`message`, else the text itself (trimmed).
pub fn error_text(body: &[u8]) -> String {
    use prost::Message;
    if let Ok(s) = RpcStatus::decode(body) {
        if !s.message.is_empty() && s.message.chars().all(|c| !c.is_control() || c == '\n') {
            return s.message;
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["message", "detail", "error"] {
            if let Some(m) = v.get(key).and_then(|m| m.as_str()) {
                return m.to_string();
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    text.trim().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::str::FromStr;
    use tower_service::Service;

    #[tokio::test]
    async fn resolver_refuses_names_of_private_addresses() {
        let name = Name::from_str("localhost").unwrap();
        let err = GuardedResolver {
            allow_private: false,
        }
        .call(name.clone())
        .await
        .unwrap_err();
        assert!(err.to_string().contains("private"), "{err}");
        let addrs: Vec<_> = GuardedResolver {
            allow_private: true,
        }
        .call(name)
        .await
        .unwrap()
        .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    /// Decodes a gzip body as an independent reader does (flate2's `GzDecoder`, which checks
    /// the CRC and length trailer).
    fn gunzip(body: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn gzip_parts_round_trip_with_the_state_reused() {
        // Incompressible bytes make the output outgrow its first reservation.
        let mut noise = Vec::with_capacity(300_000);
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            noise.push(x as u8);
        }
        let text = "gen_ai.usage.input_tokens ".repeat(4_000);
        let cases: [&[&[u8]]; 5] = [
            &[],
            &[b""],
            &[b"one part"],
            &[text.as_bytes(), b"", &noise, text.as_bytes()],
            &[&noise[..70_000], &noise[70_000..]],
        ];
        // Twice: the second round runs on states left by the first.
        for round in 0..2 {
            for parts in cases {
                let body = gzip_parts(parts).unwrap();
                assert_eq!(&body[..3], &[0x1f, 0x8b, 8], "round {round}");
                assert_eq!(gunzip(&body), parts.concat(), "round {round}");
            }
        }
        let small = gzip(text.as_bytes()).unwrap();
        assert!(small.len() < text.len() / 20, "{} bytes", small.len());
    }

    #[test]
    fn decodes_rpc_status_json_and_text() {
        let body = RpcStatus {
            code: 7,
            message: "invalid api key".into(),
        }
        .encode_to_vec();
        assert_eq!(error_text(&body), "invalid api key");
        assert_eq!(
            error_text(br#"{"detail":"event submission rejected with_reason: ProjectId"}"#),
            "event submission rejected with_reason: ProjectId"
        );
        assert_eq!(error_text(b"  plain failure \n"), "plain failure");
    }

    #[test]
    fn gzip_round_trip() {
        let data = b"hello hello hello hello".repeat(100);
        let gz = gzip(&data).unwrap();
        assert!(gz.len() < data.len());
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out).unwrap();
        assert_eq!(out, data);
    }
}
