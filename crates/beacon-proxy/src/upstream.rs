//! The upstream client: one pooled hyper-util client for every provider, rustls with the
//! webpki roots, HTTP/1.1 and HTTP/2 (by ALPN), TCP_NODELAY, connect timeout.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use beacon_config::ProviderKind;

use crate::routing::Provider;

/// The client type used for every upstream request.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the pooled client.
pub fn build_client(connect_timeout: Duration) -> Result<UpstreamClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    // Without TCP_NODELAY small writes on keep-alive connections wait ~40 ms for delayed ACKs.
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(512)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https))
}

/// An upstream API request: the provider's credentials and headers, the client's headers
/// the API forwards (`forwarded`, e.g. `anthropic-version`), nothing else of the client's.
pub fn api_request(
    provider: &Provider,
    url: &http::Uri,
    body: Bytes,
    stream: bool,
    forwarded: &[(http::HeaderName, http::HeaderValue)],
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let mut b = http::Request::post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::ACCEPT,
            if stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        )
        .header(
            http::header::USER_AGENT,
            concat!("beacon/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in &provider.auth {
        b = b.header(k, v.clone());
    }
    for (k, v) in forwarded {
        b = b.header(k, v.clone());
    }
    if provider.kind == ProviderKind::Anthropic
        && !forwarded.iter().any(|(k, _)| k == "anthropic-version")
    {
        b = b.header("anthropic-version", crate::routing::ANTHROPIC_VERSION);
    }
    for (k, v) in &provider.headers {
        b = b.header(k, v.clone());
    }
    b.body(Full::new(body))
}

/// Low-cardinality name of a failure to get a response, for records and metrics.
pub fn classify_error(e: &hyper_util::client::legacy::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut timed_out = false;
    let mut tls = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        tls |= s.downcast_ref::<rustls::Error>().is_some();
        source = s.source();
    }
    match (e.is_connect(), timed_out, tls) {
        (true, true, _) => "connect_timeout",
        (_, _, true) => "tls_error",
        (true, false, _) => "connect_error",
        _ => "request_error",
    }
}

/// What made a request fail before any response, in words: the innermost errors of the
/// chain (e.g. `Connection refused (os error 111)`, a DNS or TLS failure). Connect errors
/// carry no request data, so nothing secret can appear.
pub fn describe_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        // Each layer often repeats the one below it; keep the new words only.
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    let text = parts.join(": ");
    text.chars().take(300).collect()
}

/// OpenAI's `x-ratelimit-*` rate headers (a limited key's responses carry its own instead).
pub fn is_openai_rate_header(name: &http::HeaderName) -> bool {
    name.as_str().starts_with("x-ratelimit-")
}

/// Upstream response headers worth passing to the client (rate limits, the upstream's id).
pub fn passthrough_header(name: &http::HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("x-ratelimit-")
        || n.starts_with("anthropic-ratelimit-")
        || n == "retry-after"
        || n == "retry-after-ms"
        || n == "openai-processing-ms"
}
