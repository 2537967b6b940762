//! A mock OpenAI-compatible upstream on 127.0.0.1:0 that behaves like the real API:
//! `chat.completion` JSON, SSE framing (`data: …\n\n`, `[DONE]`), the usage chunk only when
//! `stream_options.include_usage` is true, OpenAI error bodies, rate-limit headers.
//!
//! The same server speaks the other APIs of SPEC §2.1 (Responses, embeddings, legacy
//! completions, Anthropic Messages, the Responses retrieval routes): see `mock_apis`.
//!
//! The upstream model name picks the behaviour:
//!
//! | model | behaviour |
//! | --- | --- |
//! | anything else | a normal completion ("Hello from the mock upstream") |
//! | `no-usage` | a completion that never reports usage |
//! | `gated` | streams one chunk, then waits for `POST /control/release` (15 s at most) |
//! | `error-500` | 500 with an OpenAI error body |
//! | `rate-limited` | 429 with `retry-after` and `x-ratelimit-*` |
//! | `html-502` | 502 with an HTML body (not OpenAI-shaped) |
//! | `drop-mid` | streams two chunks, then breaks the connection |
//! | `endless` | a chunk every 20 ms (500 at most); notes when the client goes away |
//! | `slow-headers` | answers after 5 s |
//! | `tool-call` | a `get_weather` tool call (streamed as id/name, then arguments in two pieces) |
//! | `error-503-empty` | 503 with no body at all |
//! | `redirect` | 301 with `Location: https://elsewhere.example/v1/chat/completions` |
//! | `silent-stream` | stream: 200 and SSE headers, then nothing for 10 s |
//! | `malformed-sse` | stream: a chunk, an event whose data is not JSON, then the rest as usual |
//! | `oversize-sse` | stream: a chunk, then 9 MiB of `data:` with no event terminator |
//! | `litellm-usage` | stream: the usage chunk as LiteLLM sends it, `"choices":[{"index":0,"delta":{}}]` |
//! | `no-done` | stream: every choice finishes, then the stream ends without `[DONE]` |
//! | `reports-cost…` | a completion whose usage carries the upstream's own `cost` (0.5 USD), as OpenRouter's does |
//! | `error-event` | stream: two chunks, then `data: {"error":{…}}` (overloaded), then the end, no `[DONE]` |
//! | `error-400` | 400 with an OpenAI error body (a client error: never failed over) |
//! | `flaky-429` | every other request: 429 with `retry-after: 1`, then a normal completion |
//! | `stream-dies-early` | stream: 200 and SSE headers, then the connection breaks before any event |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

/// The words the mock streams, one per chunk.
pub const WORDS: [&str; 6] = ["Hello", " from", " the", " mock", " upstream", "."];

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path.
    pub path: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body as JSON.
    pub body: Value,
}

/// The mock's shared state.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) received: Mutex<Vec<Received>>,
    pub(crate) release: Notify,
    pub(crate) released: AtomicBool,
    pub(crate) gate_timed_out: AtomicBool,
    pub(crate) client_gone: AtomicBool,
    pub(crate) endless_sent: AtomicUsize,
    pub(crate) connections: AtomicUsize,
    pub(crate) flaky: AtomicUsize,
}

/// The running mock; stops when dropped.
pub struct MockUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Starts the mock on 127.0.0.1:0.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock upstream");
        let addr = listener.local_addr().expect("mock addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// URL that releases a `gated` stream.
    pub fn release_url(&self) -> String {
        format!("http://{}/control/release", self.addr)
    }

    /// Chat requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Whether a `gated` stream was released by `POST /control/release` (not by timeout).
    pub fn released(&self) -> bool {
        self.state.released.load(Ordering::SeqCst)
    }

    /// Whether a `gated` stream gave up waiting.
    pub fn gate_timed_out(&self) -> bool {
        self.state.gate_timed_out.load(Ordering::SeqCst)
    }

    /// Whether the client of an `endless` stream went away, and how many chunks it sent.
    pub fn endless_state(&self) -> (bool, usize) {
        (
            self.state.client_gone.load(Ordering::SeqCst),
            self.state.endless_sent.load(Ordering::SeqCst),
        )
    }
}

/// A streaming body fed by a channel; notes when it is dropped before the end.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// The mock's response body.
pub(crate) type MockBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<MockBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("content-type", content_type.parse().expect("ct"));
    h.insert("x-request-id", "req_upstream_123".parse().expect("id"));
    h.insert("openai-processing-ms", "12".parse().expect("ms"));
    h.insert("x-ratelimit-limit-requests", "10000".parse().expect("rl"));
    h.insert(
        "x-ratelimit-remaining-requests",
        "9999".parse().expect("rl"),
    );
    r
}

pub(crate) fn openai_error(
    status: StatusCode,
    message: &str,
    error_type: &str,
    code: Option<&str>,
) -> Response<MockBody> {
    let body =
        json!({"error": {"message": message, "type": error_type, "param": null, "code": code}});
    full(status, "application/json", body.to_string())
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    let c = json!({
        "id": "chatcmpl-mock123", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {c}\n\n")
}

fn usage() -> Value {
    json!({
        "prompt_tokens": 12, "completion_tokens": WORDS.len(), "total_tokens": 12 + WORDS.len(),
        "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    })
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/control/release" {
        state.released.store(true, Ordering::SeqCst);
        state.release.notify_waiters();
        state.release.notify_one();
        return Ok(full(StatusCode::OK, "application/json", "{}"));
    }
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let method = parts.method.clone();
    if let Some(rest) = path.strip_prefix("/v1/responses/") {
        state.received.lock().expect("lock").push(Received {
            path: path.clone(),
            headers: parts.headers.clone(),
            body: Value::Null,
        });
        return Ok(crate::mock_apis::retrieval(&method, rest));
    }
    let known = [
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/messages",
    ];
    if !known.contains(&path.as_str()) {
        return Ok(openai_error(
            StatusCode::NOT_FOUND,
            "Unknown request URL",
            "invalid_request_error",
            Some("unknown_url"),
        ));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(openai_error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        ));
    };
    state.received.lock().expect("lock").push(Received {
        path: path.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    match path.as_str() {
        "/v1/responses" => return Ok(crate::mock_apis::responses(state, &body)),
        "/v1/embeddings" => return Ok(crate::mock_apis::embeddings(&body)),
        "/v1/completions" => return Ok(crate::mock_apis::completions(&body)),
        "/v1/messages" => return Ok(crate::mock_apis::messages(state, &parts.headers, &body)),
        _ => {}
    }
    let model = body["model"].as_str().unwrap_or_default().to_string();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);

    match model.as_str() {
        "error-500" => {
            return Ok(openai_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request.",
                "server_error",
                None,
            ))
        }
        "rate-limited" => {
            let mut r = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests",
                "requests",
                Some("rate_limit_exceeded"),
            );
            r.headers_mut()
                .insert("retry-after", "7".parse().expect("ra"));
            r.headers_mut()
                .insert("x-ratelimit-remaining-requests", "0".parse().expect("rl"));
            return Ok(r);
        }
        "error-400" => {
            return Ok(openai_error(
                StatusCode::BAD_REQUEST,
                "Invalid value for 'temperature'.",
                "invalid_request_error",
                Some("invalid_value"),
            ))
        }
        "flaky-429" if state.flaky.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) => {
            let mut r = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests",
                "requests",
                Some("rate_limit_exceeded"),
            );
            r.headers_mut()
                .insert("retry-after", "1".parse().expect("ra"));
            return Ok(r);
        }
        "stream-dies-early" if stream => {
            return Ok(stream_response(|tx| async move {
                let _ = tx
                    .send(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "upstream died before its first event",
                    )))
                    .await;
            }));
        }
        "html-502" => {
            return Ok(full(
                StatusCode::BAD_GATEWAY,
                "text/html",
                "<html><body>502 Bad Gateway</body></html>",
            ))
        }
        "slow-headers" => tokio::time::sleep(Duration::from_secs(5)).await,
        "error-503-empty" => {
            let mut r = full(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "");
            r.headers_mut().remove("content-type");
            return Ok(r);
        }
        "redirect" => {
            let mut r = full(StatusCode::MOVED_PERMANENTLY, "text/html", "");
            r.headers_mut().insert(
                "location",
                "https://elsewhere.example/v1/chat/completions"
                    .parse()
                    .expect("loc"),
            );
            return Ok(r);
        }
        _ => {}
    }

    if !stream {
        let mut resp = json!({
            "id": "chatcmpl-mock123", "object": "chat.completion", "created": 1_700_000_000,
            "model": format!("{model}-2024-08-06"), "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": WORDS.concat(), "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": usage(),
        });
        if model == "no-usage" {
            resp.as_object_mut().expect("obj").remove("usage");
        }
        if model.starts_with("reports-cost") {
            resp["usage"]["cost"] = json!(0.5);
        }
        if model == "tool-call" {
            resp["choices"][0]["message"] = json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]});
            resp["choices"][0]["finish_reason"] = json!("tool_calls");
        }
        return Ok(full(StatusCode::OK, "application/json", resp.to_string()));
    }

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let served = format!("{model}-2024-08-06");
    tokio::spawn(async move {
        let send = |s: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(Bytes::from(s))).await.is_ok() }
        };
        let mut ok = model == "silent-stream"
            || send(chunk(
                &served,
                json!({"role": "assistant", "content": ""}),
                None,
            ))
            .await;
        match model.as_str() {
            "gated" => {
                ok &= send(chunk(&served, json!({"content": WORDS[0]}), None)).await;
                if tokio::time::timeout(Duration::from_secs(15), state.release.notified())
                    .await
                    .is_err()
                    && !state.released.load(Ordering::SeqCst)
                {
                    state.gate_timed_out.store(true, Ordering::SeqCst);
                }
                for w in &WORDS[1..] {
                    ok &= send(chunk(&served, json!({"content": w}), None)).await;
                }
            }
            "tool-call" => {
                let call = |v: Value| json!({"tool_calls": [v]});
                ok &= send(chunk(
                    &served,
                    call(json!({"index": 0, "id": "call_abc", "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}})),
                    None,
                ))
                .await;
                ok &= send(chunk(
                    &served,
                    call(json!({"index": 0, "function": {"arguments": "{\"city\":"}})),
                    None,
                ))
                .await;
                ok &= send(chunk(
                    &served,
                    call(json!({"index": 0, "function": {"arguments": "\"Paris\"}"}})),
                    None,
                ))
                .await;
                ok &= send(chunk(&served, json!({}), Some("tool_calls"))).await;
                if include_usage {
                    let u = json!({"id": "chatcmpl-mock123", "object": "chat.completion.chunk", "created": 1_700_000_000,
                                   "model": served, "choices": [], "usage": usage()});
                    ok &= send(format!("data: {u}\n\n")).await;
                }
                let _ = ok && send("data: [DONE]\n\n".to_string()).await;
                return;
            }
            "silent-stream" => {
                // Headers went out with the first (role) chunk held back: nothing more.
                tokio::time::sleep(Duration::from_secs(10)).await;
                return;
            }
            "malformed-sse" => {
                ok &= send(chunk(&served, json!({"content": WORDS[0]}), None)).await;
                ok &= send("data: {this is not json\n\n".to_string()).await;
                for w in &WORDS[1..] {
                    ok &= send(chunk(&served, json!({"content": w}), None)).await;
                }
            }
            "oversize-sse" => {
                if !(ok && send(chunk(&served, json!({"content": WORDS[0]}), None)).await) {
                    return;
                }
                let piece = format!("data: {}", "x".repeat(1024 * 1024));
                for _ in 0..9 {
                    if !send(piece.clone()).await {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
                return;
            }
            "drop-mid" => {
                send(chunk(&served, json!({"content": WORDS[0]}), None)).await;
                send(chunk(&served, json!({"content": WORDS[1]}), None)).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // An error from the body makes hyper abort the connection mid-message.
                let _ = tx
                    .send(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "upstream died",
                    )))
                    .await;
                return;
            }
            "endless" => {
                for i in 0..500 {
                    if !send(chunk(
                        &served,
                        json!({"content": format!(" word{i}")}),
                        None,
                    ))
                    .await
                    {
                        state.client_gone.store(true, Ordering::SeqCst);
                        return;
                    }
                    state.endless_sent.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            "error-event" => {
                for w in &WORDS[..2] {
                    ok &= send(chunk(&served, json!({"content": w}), None)).await;
                }
            }
            // About a second: a stream still running when a node is told to stop.
            "slow-stream" => {
                for i in 0..10 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    ok &= send(chunk(
                        &served,
                        json!({"content": format!(" slow{i}")}),
                        None,
                    ))
                    .await;
                }
            }
            _ => {
                for w in WORDS {
                    ok &= send(chunk(&served, json!({"content": w}), None)).await;
                }
            }
        }
        if model == "error-event" {
            let e = json!({"error": {"message": "The model is overloaded", "type": "server_error",
                                     "param": null, "code": "overloaded"}});
            let _ = ok && send(format!("data: {e}\n\n")).await;
            return;
        }
        ok &= send(chunk(&served, json!({}), Some("stop"))).await;
        if include_usage && model != "no-usage" {
            let choices = if model == "litellm-usage" {
                json!([{"index": 0, "delta": {}}])
            } else {
                json!([])
            };
            let u = json!({"id": "chatcmpl-mock123", "object": "chat.completion.chunk", "created": 1_700_000_000,
                           "model": served, "system_fingerprint": "fp_mock", "choices": choices, "usage": usage()});
            ok &= send(format!("data: {u}\n\n")).await;
        }
        if model == "no-done" {
            return;
        }
        let _ = ok && send("data: [DONE]\n\n".to_string()).await;
    });
    let mut r = Response::new(ChannelBody { rx }.boxed());
    let h = r.headers_mut();
    h.insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().expect("ct"),
    );
    h.insert("x-request-id", "req_upstream_123".parse().expect("id"));
    h.insert(
        "x-ratelimit-remaining-requests",
        "9999".parse().expect("rl"),
    );
    Ok(r)
}

/// An SSE response whose events `produce` sends on the channel it is given.
pub(crate) fn stream_response<F, Fut>(produce: F) -> Response<MockBody>
where
    F: FnOnce(mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(produce(tx));
    let mut r = Response::new(ChannelBody { rx }.boxed());
    let h = r.headers_mut();
    h.insert(
        "content-type",
        "text/event-stream; charset=utf-8".parse().expect("ct"),
    );
    h.insert("x-request-id", "req_upstream_123".parse().expect("id"));
    r
}
