//! The proxy end to end: the real `beacon` binary, a mock OpenAI upstream, and the official
//! `openai` Python SDK as the client.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::time::Duration;

use beacon_e2e::mock_upstream::{MockUpstream, WORDS};
use beacon_e2e::{raw_request, sdk, Beacon, PROVIDER_KEY, TENANT_KEY};
use serde_json::{json, Value};

async fn setup() -> (MockUpstream, Beacon) {
    let mock = MockUpstream::start().await;
    let beacon = Beacon::start(&Beacon::config(&mock.base_url(), ""));
    (mock, beacon)
}

fn args(beacon: &Beacon, mode: &str, request: Value) -> Value {
    json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": mode, "request": request})
}

fn hello() -> Value {
    json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}])
}

#[tokio::test(flavor = "multi_thread")]
async fn non_streaming_completion_with_cost() {
    let (mock, beacon) = setup().await;
    let out = sdk(args(&beacon, "chat", json!({"model": "mock/echo", "messages": hello(), "temperature": 0.3, "max_tokens": 50, "seed": 7}))).await;
    let c = &out["completion"];
    assert_eq!(
        c["choices"][0]["message"]["content"],
        WORDS.concat(),
        "{out}"
    );
    assert_eq!(c["usage"]["prompt_tokens"], 12);
    // 8 uncached × 2.5 + 4 cached × 1.25 + 6 × 10, per million tokens.
    let cost = c["usage"]["cost"].as_f64().expect("usage.cost");
    assert!((cost - 0.000085).abs() < 1e-12, "cost {cost}");
    let request_id = out["headers"]["x-request-id"]
        .as_str()
        .expect("x-request-id")
        .to_string();
    assert!(request_id.starts_with("req_"));
    assert_eq!(out["headers"]["x-ratelimit-remaining-requests"], "9999");

    let r = beacon.wait_record(&request_id);
    assert_eq!(r["tenant_id"], "acme");
    assert_eq!(r["provider"], "mock");
    assert_eq!(r["requested_model"], "mock/echo");
    assert_eq!(r["upstream_model"], "echo");
    assert_eq!(r["served_model"], "echo-2024-08-06");
    assert_eq!(r["response_id"], "chatcmpl-mock123");
    assert_eq!(r["stream"], false);
    assert_eq!(r["outcome"]["kind"], "ok");
    assert_eq!(r["upstream_status"], 200);
    assert_eq!(r["finish_reasons"], json!(["stop"]));
    assert_eq!(r["params"]["temperature"], 0.3);
    assert_eq!(r["params"]["max_tokens"], 50);
    assert_eq!(r["params"]["seed"], 7);
    assert_eq!(r["usage"]["prompt_tokens"], 12);
    assert_eq!(r["usage"]["cached_tokens"], 4);
    assert_eq!(r["usage"]["completion_tokens"], WORDS.len());
    assert_eq!(r["usage"]["estimated"], false);
    assert_eq!(r["cost"]["total"], "0.000085");
    assert_eq!(r["cost"]["source"], "price_table");
    let t = &r["timings"];
    assert!(t["received_unix_nanos"].as_u64().unwrap() > 0);
    assert!(t["upstream_start_us"].as_u64().unwrap() <= t["last_byte_us"].as_u64().unwrap());
    assert!(r["key_id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(mock.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_hides_the_usage_chunk_the_client_did_not_ask_for() {
    let (mock, beacon) = setup().await;
    let out = sdk(args(
        &beacon,
        "stream",
        json!({"model": "mock/echo", "messages": hello()}),
    ))
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["content"], WORDS.concat());
    let chunks = out["chunks"].as_array().unwrap();
    assert!(
        chunks.iter().all(|c| c["usage"].is_null()),
        "no usage chunk expected: {chunks:?}"
    );
    assert!(chunks
        .iter()
        .all(|c| !c["choices"].as_array().unwrap().is_empty()));
    // Beacon asked the upstream for usage anyway, and metered it.
    assert_eq!(
        mock.received()[0].body["stream_options"]["include_usage"],
        true
    );
    let id = out["headers"]["x-request-id"].as_str().unwrap();
    let r = beacon.wait_record(id);
    assert_eq!(r["stream"], true);
    assert_eq!(r["outcome"]["kind"], "ok");
    assert_eq!(r["usage"]["completion_tokens"], WORDS.len());
    assert_eq!(r["usage"]["estimated"], false);
    assert!(r["timings"]["first_chunk_us"].as_u64().is_some());
    assert_eq!(
        out["headers"]["content-type"],
        "text/event-stream; charset=utf-8"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_shows_usage_when_asked() {
    let (_mock, beacon) = setup().await;
    let out = sdk(args(
        &beacon,
        "stream",
        json!({"model": "mock/echo", "messages": hello(), "stream_options": {"include_usage": true}}),
    ))
    .await;
    let chunks = out["chunks"].as_array().unwrap();
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 12 + WORDS.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn first_chunk_reaches_the_client_before_the_upstream_sends_the_rest() {
    // The upstream sends one chunk and then waits until the *client* says it has it. A
    // gateway that buffered the stream would deadlock here until the mock gives up.
    let (mock, beacon) = setup().await;
    let mut a = args(
        &beacon,
        "stream",
        json!({"model": "mock/gated", "messages": hello()}),
    );
    a["release_url"] = json!(mock.release_url());
    let out = sdk(a).await;
    assert_eq!(out["released"], true, "{out}");
    assert!(mock.released());
    assert!(
        !mock.gate_timed_out(),
        "the first chunk was held back by the gateway"
    );
    assert_eq!(out["content"], WORDS.concat());
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_500_is_relayed_in_openai_shape() {
    let (_mock, beacon) = setup().await;
    let out = sdk(args(
        &beacon,
        "chat",
        json!({"model": "mock/error-500", "messages": hello()}),
    ))
    .await;
    let e = &out["error"];
    assert_eq!(e["class"], "InternalServerError", "{out}");
    assert_eq!(e["status"], 500);
    assert_eq!(
        e["body"]["message"],
        "The server had an error while processing your request."
    );
    let id = e["headers"]["x-request-id"].as_str().unwrap();
    let r = beacon.wait_record(id);
    assert_eq!(r["outcome"]["kind"], "upstream_error");
    assert_eq!(r["outcome"]["status"], 500);
    assert_eq!(r["outcome"]["error_type"], "http_500");
    assert_eq!(r["cost"]["total"], "0");
    assert_eq!(r["usage"]["completion_tokens"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_rate_limit_headers_reach_the_client() {
    let (_mock, beacon) = setup().await;
    let out = sdk(args(
        &beacon,
        "stream",
        json!({"model": "mock/rate-limited", "messages": hello()}),
    ))
    .await;
    let e = &out["error"];
    assert_eq!(e["class"], "RateLimitError", "{out}");
    assert_eq!(e["headers"]["retry-after"], "7");
    assert_eq!(e["headers"]["x-ratelimit-remaining-requests"], "0");
    assert_eq!(e["body"]["code"], "rate_limit_exceeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn non_openai_upstream_errors_are_wrapped() {
    let (_mock, beacon) = setup().await;
    let resp = raw_request(
        beacon.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {TENANT_KEY}")),
            ("content-type", "application/json"),
        ],
        json!({"model": "mock/html-502", "messages": hello()}).to_string(),
    )
    .await;
    assert_eq!(resp.status, 502);
    let v = resp.json();
    assert_eq!(v["error"]["type"], "upstream_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("502"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_dropping_mid_stream_ends_with_an_error_chunk() {
    let (_mock, beacon) = setup().await;
    let out = sdk(args(
        &beacon,
        "stream",
        json!({"model": "mock/drop-mid", "messages": hello()}),
    ))
    .await;
    // The SDK raises on the error chunk, after the chunks that did arrive.
    assert_eq!(out["error"]["class"], "APIError", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mid-stream"),
        "{out}"
    );
    assert_eq!(out["content"], format!("{}{}", WORDS[0], WORDS[1]));
    let id = out["headers"]["x-request-id"].as_str().unwrap();
    let r = beacon.wait_record(id);
    assert_eq!(r["outcome"]["kind"], "upstream_error");
    assert_eq!(r["outcome"]["error_type"], "stream_interrupted");
    // No usage came: the tokens so far were counted with the tokenizer.
    assert_eq!(r["usage"]["estimated"], true);
    assert!(
        r["usage"]["completion_tokens"].as_u64().unwrap() >= 2,
        "{r}"
    );
    assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_stream_ends_with_error_chunk_and_done() {
    let (_mock, beacon) = setup().await;
    let resp = raw_request(
        beacon.addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {TENANT_KEY}"))],
        json!({"model": "mock/drop-mid", "messages": hello(), "stream": true}).to_string(),
    )
    .await;
    assert_eq!(resp.status, 200);
    let text = String::from_utf8_lossy(&resp.body);
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]", "{text}");
    let err: Value =
        serde_json::from_str(events[events.len() - 2].trim_start_matches("data: ")).unwrap();
    assert_eq!(err["choices"][0]["finish_reason"], "error");
    assert_eq!(err["error"]["type"], "upstream_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_reused_and_a_broken_one_is_replaced() {
    let (mock, beacon) = setup().await;
    let workers = std::thread::available_parallelism().unwrap().get();
    let auth = format!("Bearer {TENANT_KEY}");
    let complete = |stream: bool, model: &'static str| {
        let auth = auth.clone();
        let addr = beacon.addr;
        async move {
            let body = json!({"model": model, "messages": hello(), "stream": stream});
            raw_request(
                addr,
                "POST",
                "/v1/chat/completions",
                &[("authorization", &auth)],
                body.to_string(),
            )
            .await
        }
    };
    for i in 0..16 {
        let resp = complete(i % 2 == 1, "mock/echo").await;
        assert_eq!(resp.status, 200);
        assert!(String::from_utf8_lossy(&resp.body).contains("mock"));
    }
    // One kept-alive connection per proxy worker at most (each worker has its own pool).
    let reused = mock.connections();
    assert!(
        (1..=workers).contains(&reused),
        "{reused} upstream connections for 16 sequential requests"
    );

    // The upstream breaks a connection mid-stream: it is not reused, the next requests work.
    let broken = complete(true, "mock/drop-mid").await;
    assert!(
        String::from_utf8_lossy(&broken.body).contains("stream_interrupted"),
        "{broken:?}"
    );
    for i in 0..8 {
        let resp = complete(i % 2 == 0, "mock/echo").await;
        assert_eq!(resp.status, 200, "request {i} after a broken connection");
    }
    let after = mock.connections();
    assert!(
        after <= workers + 1,
        "{after} upstream connections after one broke"
    );
    assert_eq!(mock.received().len(), 16 + 1 + 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_cancelling_mid_stream_closes_upstream_and_records_partial_tokens() {
    let (mock, beacon) = setup().await;
    let mut a = args(
        &beacon,
        "stream",
        json!({"model": "mock/endless", "messages": hello()}),
    );
    a["close_after"] = json!(4);
    let out = sdk(a).await;
    assert_eq!(out["closed"], true, "{out}");
    let id = out["headers"]["x-request-id"].as_str().unwrap().to_string();
    // The upstream notices the gateway went away (it would otherwise stream for 10 s).
    let start = std::time::Instant::now();
    while !mock.endless_state().0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "upstream connection still open: {:?}",
            mock.endless_state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mock.endless_state().1 < 400);
    let r = beacon.wait_record(&id);
    assert_eq!(r["outcome"]["kind"], "client_cancelled", "{r}");
    assert_eq!(r["usage"]["estimated"], true);
    assert!(
        r["usage"]["completion_tokens"].as_u64().unwrap() >= 3,
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn what_reaches_the_upstream() {
    let (mock, beacon) = setup().await;
    let mut a = args(
        &beacon,
        "chat",
        json!({"model": "mock/echo", "messages": hello(), "user": "user-42",
               "extra_body": {"session_id": "sess-1", "trace": {"trace_name": "agent", "env": "prod"}}}),
    );
    a["headers"] = json!({"x-custom-client-header": "client-secret", "x-session-id": "ignored-because-body-wins"});
    let out = sdk(a).await;
    assert!(out.get("error").is_none(), "{out}");
    let got = &mock.received()[0];
    assert_eq!(got.body["model"], "echo");
    assert_eq!(got.body["user"], "user-42");
    assert!(got.body.get("session_id").is_none());
    assert!(got.body.get("trace").is_none());
    assert_eq!(
        got.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}")
    );
    for (name, value) in &got.headers {
        let v = value.to_str().unwrap_or_default();
        assert!(
            !v.contains(TENANT_KEY),
            "client key leaked upstream in {name}"
        );
        assert!(
            !v.contains("client-secret"),
            "client header {name} forwarded"
        );
    }
    assert!(got.headers.get("x-session-id").is_none());
    let id = out["headers"]["x-request-id"].as_str().unwrap();
    let r = beacon.wait_record(id);
    assert_eq!(r["session_id"], "sess-1");
    assert_eq!(r["user"], "user-42");
    assert_eq!(r["trace"]["trace_name"], "agent");
    // The provider key never comes back.
    assert!(!out.to_string().contains(PROVIDER_KEY));
}

#[tokio::test(flavor = "multi_thread")]
async fn session_header_and_trace_headers_are_recorded() {
    let (_mock, beacon) = setup().await;
    let mut a = args(
        &beacon,
        "chat",
        json!({"model": "mock/echo", "messages": hello()}),
    );
    a["headers"] = json!({"x-session-id": "sess-hdr", "sentry-trace": "771a43a4192642f0b136d5159a501700-b7ad6b7169203331-1"});
    let out = sdk(a).await;
    let r = beacon.wait_record(out["headers"]["x-request-id"].as_str().unwrap());
    assert_eq!(r["session_id"], "sess-hdr");
    assert_eq!(
        r["trace_context"]["trace_id"],
        "771a43a4192642f0b136d5159a501700"
    );
    assert_eq!(r["trace_context"]["parent_span_id"], "b7ad6b7169203331");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_usage_is_estimated_with_the_tokenizer() {
    let (_mock, beacon) = setup().await;
    let out = sdk(args(
        &beacon,
        "chat",
        json!({"model": "mock/no-usage", "messages": hello()}),
    ))
    .await;
    let u = &out["completion"]["usage"];
    assert!(u["completion_tokens"].as_u64().unwrap() > 0, "{out}");
    let r = beacon.wait_record(out["headers"]["x-request-id"].as_str().unwrap());
    assert_eq!(r["usage"]["estimated"], true);
    // "Hello from the mock upstream." is 6 tokens in o200k_base.
    assert_eq!(r["usage"]["completion_tokens"], 6);

    let out = sdk(args(
        &beacon,
        "stream",
        json!({"model": "mock/no-usage", "messages": hello()}),
    ))
    .await;
    let r = beacon.wait_record(out["headers"]["x-request-id"].as_str().unwrap());
    assert_eq!(r["outcome"]["kind"], "ok");
    assert_eq!(r["usage"]["estimated"], true);
    assert_eq!(r["usage"]["completion_tokens"], 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_prompts_without_usage_are_estimated_off_the_event_loop() {
    let mock = MockUpstream::start().await;
    let config = Beacon::config(
        &mock.base_url(),
        "[pricing.\"mock/no-usage\"]\ninput = 1.0\noutput = 2.0\n",
    )
    .replace("max_body_bytes = 65536", "max_body_bytes = 2097152");
    let beacon = Beacon::start(&config);
    // 900 kB of one letter: the input that made a quadratic BPE merge spin for hours.
    // One-letter runs merge into 8-letter tokens in o200k_base.
    let run = json!([{"role": "user", "content": "a".repeat(900_000)}]);
    let out = sdk(args(
        &beacon,
        "chat",
        json!({"model": "mock/no-usage", "messages": run}),
    ))
    .await;
    let prompt = out["completion"]["usage"]["prompt_tokens"]
        .as_u64()
        .expect("the response carries the estimate");
    assert!((112_500..113_000).contains(&prompt), "{prompt}");
    let r = beacon.wait_record(out["headers"]["x-request-id"].as_str().unwrap());
    assert_eq!(r["usage"]["estimated"], true);
    assert_eq!(r["usage"]["prompt_tokens"], prompt);
    assert_eq!(r["usage"]["completion_tokens"], 6);

    // A stream's record is finished on the estimator thread once the answer is out.
    let words = json!([{"role": "user", "content": "word ".repeat(40_000)}]);
    let out = sdk(args(
        &beacon,
        "stream",
        json!({"model": "mock/no-usage", "messages": words}),
    ))
    .await;
    assert_eq!(out["content"], "Hello from the mock upstream.", "{out}");
    let r = beacon.wait_record(out["headers"]["x-request-id"].as_str().unwrap());
    assert_eq!(r["outcome"]["kind"], "ok");
    assert_eq!(r["usage"]["estimated"], true);
    // " word" is one token: 40,000 of them plus the framing.
    let prompt = r["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!((40_000..40_020).contains(&prompt), "{prompt}");
    assert_eq!(r["usage"]["completion_tokens"], 6);
    // Priced on the estimator thread too: 40,0xx input tokens at $1/M, 6 output at $2/M.
    let total: f64 = r["cost"]["total"].as_str().unwrap().parse().unwrap();
    assert!((0.04..0.0401).contains(&total), "{r}");

    // Both estimates were counted with the tokenizer, none coarse.
    let m = raw_request(beacon.addr, "GET", "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains(r#"beacon_token_estimates_total{method="tokenizer"} 2"#),
        "{text}"
    );
    assert!(!text.contains(r#"method="coarse""#), "{text}");
}

async fn post(
    beacon: &Beacon,
    key: Option<&str>,
    body: impl Into<bytes::Bytes>,
) -> beacon_e2e::RawResponse {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    raw_request(beacon.addr, "POST", "/v1/chat/completions", &headers, body).await
}

fn assert_error(resp: &beacon_e2e::RawResponse, status: u16, code: &str, param: Option<&str>) {
    assert_eq!(resp.status, status, "{:?}", resp.body);
    let v = resp.json();
    let e = &v["error"];
    assert_eq!(e["code"], code, "{v}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(e["type"].is_string());
    assert_eq!(e["param"], param.map_or(Value::Null, |p| json!(p)));
    assert!(resp.headers.contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_openai_shaped_errors() {
    let (mock, beacon) = setup().await;
    let ok_body = json!({"model": "mock/echo", "messages": hello()}).to_string();
    assert_error(
        &post(&beacon, None, ok_body.clone()).await,
        401,
        "missing_api_key",
        None,
    );
    assert_error(
        &post(&beacon, Some("bk-wrong"), ok_body.clone()).await,
        401,
        "invalid_api_key",
        None,
    );
    let k = Some(TENANT_KEY);
    assert_error(
        &post(&beacon, k, "{\"model\": ").await,
        400,
        "invalid_json",
        None,
    );
    assert_error(&post(&beacon, k, "").await, 400, "invalid_json", None);
    assert_error(&post(&beacon, k, "[]").await, 400, "invalid_json", None);
    assert_error(
        &post(&beacon, k, json!({"messages": hello()}).to_string()).await,
        400,
        "invalid_type",
        Some("model"),
    );
    assert_error(
        &post(
            &beacon,
            k,
            json!({"model": "mock/echo", "messages": "hi"}).to_string(),
        )
        .await,
        400,
        "invalid_type",
        Some("messages"),
    );
    assert_error(
        &post(
            &beacon,
            k,
            json!({"model": "mock/echo", "messages": [], "stream": "yes"}).to_string(),
        )
        .await,
        400,
        "invalid_type",
        Some("stream"),
    );
    assert_error(
        &post(
            &beacon,
            k,
            json!({"model": "mock/echo", "messages": [], "session_id": 5}).to_string(),
        )
        .await,
        400,
        "invalid_type",
        Some("session_id"),
    );
    assert_error(
        &post(
            &beacon,
            k,
            json!({"model": "mock/echo", "messages": [], "trace": "x"}).to_string(),
        )
        .await,
        400,
        "invalid_type",
        Some("trace"),
    );
    assert_error(
        &post(
            &beacon,
            k,
            json!({"model": "mock/echo", "messages": [], "user": ["u"]}).to_string(),
        )
        .await,
        400,
        "invalid_type",
        Some("user"),
    );
    // Unknown model: no default provider is configured.
    assert_error(
        &post(
            &beacon,
            k,
            json!({"model": "gpt-4o", "messages": hello()}).to_string(),
        )
        .await,
        404,
        "model_not_found",
        Some("model"),
    );
    assert_error(
        &post(
            &beacon,
            k,
            json!({"model": "nope/gpt-4o", "messages": hello()}).to_string(),
        )
        .await,
        404,
        "model_not_found",
        Some("model"),
    );
    // Oversized body (limit 64 KiB in the test config), with and without Content-Length.
    let big = json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x".repeat(70_000)}]}).to_string();
    assert_error(
        &post(&beacon, k, big.clone()).await,
        413,
        "request_too_large",
        None,
    );
    // Wrong method, unknown route.
    let r = raw_request(beacon.addr, "GET", "/v1/chat/completions", &[], "").await;
    assert_error(&r, 405, "method_not_allowed", None);
    let r = raw_request(beacon.addr, "POST", "/v1/nothing", &[], "").await;
    assert_error(&r, 404, "unknown_url", None);
    // Nothing of the above reached the upstream, and the gateway still works.
    assert!(mock.received().is_empty());
    let r = post(&beacon, k, ok_body).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_chunked_body_gets_413() {
    let (_mock, beacon) = setup().await;
    // Send without Content-Length (chunked) so the limit is enforced while reading.
    let stream = tokio::net::TcpStream::connect(beacon.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >(4);
    let body = http_body_util::StreamBody::new(ReceiverStream(rx));
    let req = http::Request::post("/v1/chat/completions")
        .header("host", "x")
        .header("authorization", format!("Bearer {TENANT_KEY}"))
        .body(body)
        .unwrap();
    tokio::spawn(async move {
        for _ in 0..100 {
            if tx
                .send(Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![
                    b' ';
                    4096
                ]))))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_util::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_timeout_and_unreachable_upstream() {
    let mock = MockUpstream::start().await;
    // A closed port: bind, note the port, drop the listener.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = Beacon::config(&mock.base_url(), "")
        .replace("upstream_timeout_secs = 30", "upstream_timeout_secs = 1")
        + &format!("\n[[providers]]\nname = \"down\"\nbase_url = \"http://{closed}/v1\"\n");
    let beacon = Beacon::start(&config);

    let out = sdk(args(
        &beacon,
        "chat",
        json!({"model": "mock/slow-headers", "messages": hello()}),
    ))
    .await;
    assert_eq!(out["error"]["status"], 504, "{out}");
    assert_eq!(out["error"]["body"]["code"], "upstream_timeout");
    let r = beacon.wait_record(out["error"]["headers"]["x-request-id"].as_str().unwrap());
    assert_eq!(r["outcome"]["kind"], "timeout");

    let out = sdk(args(
        &beacon,
        "chat",
        json!({"model": "down/gpt-4o", "messages": hello()}),
    ))
    .await;
    assert_eq!(out["error"]["status"], 502, "{out}");
    assert_eq!(out["error"]["body"]["code"], "connect_error");
    let r = beacon.wait_record(out["error"]["headers"]["x-request-id"].as_str().unwrap());
    assert_eq!(r["outcome"]["kind"], "upstream_error");
    assert_eq!(r["outcome"]["error_type"], "connect_error");
    assert!(r["outcome"]["status"].is_null());
    assert!(r["upstream_status"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn models_metrics_and_health() {
    let (_mock, beacon) = setup().await;
    let out =
        sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "models"})).await;
    let ids: Vec<&str> = out["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"mock/echo"), "{out}");
    let echo = out["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "mock/echo")
        .unwrap();
    assert_eq!(echo["pricing"]["input"], "2.5");

    let unauth = raw_request(beacon.addr, "GET", "/v1/models", &[], "").await;
    assert_eq!(unauth.status, 401);

    sdk(args(
        &beacon,
        "chat",
        json!({"model": "mock/echo", "messages": hello()}),
    ))
    .await;
    let out = sdk(args(
        &beacon,
        "stream",
        json!({"model": "mock/echo", "messages": hello()}),
    ))
    .await;
    beacon.wait_record(out["headers"]["x-request-id"].as_str().unwrap());
    let m = raw_request(beacon.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8_lossy(&m.body);
    for needle in [
        r#"beacon_requests_total{tenant="acme",model="mock/echo",status="200"} 2"#,
        r#"beacon_completions_total{tenant="acme",model="mock/echo",outcome="ok"} 2"#,
        r#"beacon_tokens_total{tenant="acme",model="mock/echo",kind="prompt"} 24"#,
        "beacon_time_to_first_chunk_seconds_count 1",
        "beacon_broadcast_enqueued_total 2",
        "beacon_cost_usd_total",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(
        raw_request(beacon.addr, "GET", "/healthz", &[], "")
            .await
            .status,
        200
    );
    assert_eq!(
        raw_request(beacon.addr, "GET", "/readyz", &[], "")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_prior_knowledge_is_served() {
    let (_mock, beacon) = setup().await;
    let stream = tokio::net::TcpStream::connect(beacon.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/v1/chat/completions", beacon.addr))
        .header("authorization", format!("Bearer {TENANT_KEY}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model": "mock/echo", "messages": hello()}).to_string(),
        )))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_an_in_flight_stream_finish() {
    let (mock, mut beacon) = setup().await;
    let base = beacon.base_url();
    let release = mock.release_url();
    let client = tokio::spawn(async move {
        sdk(json!({"base_url": base, "api_key": TENANT_KEY, "mode": "stream",
                   "request": {"model": "mock/gated", "messages": hello()}, "release_url": release}))
        .await
    });
    // Wait for the stream to start, then ask Beacon to stop while it is in flight.
    let start = std::time::Instant::now();
    while mock.received().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    beacon.terminate();
    let out = client.await.unwrap();
    assert_eq!(out["content"], WORDS.concat(), "{out}");
    let status = tokio::task::spawn_blocking(move || {
        let s = beacon.wait_exit(Duration::from_secs(10));
        (s, beacon)
    })
    .await
    .unwrap();
    assert!(
        status.0.is_some_and(|s| s.success()),
        "beacon did not exit cleanly: {:?}\n{}",
        status.0,
        status.1.logs()
    );
    // The record of the drained stream was flushed before exit.
    let records = status.1.records();
    assert!(
        records
            .iter()
            .any(|r| r["outcome"]["kind"] == "ok" && r["stream"] == true),
        "{records:?}"
    );
}

#[test]
fn check_reports_field_named_errors() {
    let dir = beacon_e2e::TempDir::new("check");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nope\"\n[[providers]]\nname = \"x\"\nbase_url = \"ftp://x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(beacon_e2e::beacon_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.listen") && err.contains("providers[0].base_url"),
        "{err}"
    );
    // A destination's own fields are checked by its type, every one named.
    let bad_destinations = dir.path().join("bad-destinations.toml");
    let config = Beacon::config("http://127.0.0.1:9/v1", "").replace("{RECORD_LOG}", "r.jsonl")
        + r#"
[[tenants]]
id = "t2"
api_keys = ["sk-check-destinations-0123456789"]
[[tenants.broadcast.destinations]]
type = "langfuse"
name = "lf"
public_key = "pk-lf-1"
[[tenants.broadcast.destinations]]
type = "kafka"
name = "k"
[[tenants.broadcast.destinations]]
type = "webhook"
name = "w"
url = "https://hooks.example.com/b"
secret = "0123456789abcdef"
colour = "red"
"#;
    std::fs::write(&bad_destinations, config).unwrap();
    let out = std::process::Command::new(beacon_e2e::beacon_bin())
        .args(["check", "--config"])
        .arg(&bad_destinations)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "broadcast.destinations[0].secret_key: is required for type `langfuse`",
        "broadcast.destinations[1].type: unknown destination type `kafka`",
        "broadcast.destinations[2].colour: is not a field of type `webhook`",
    ] {
        assert!(err.contains(needle), "missing {needle} in {err}");
    }

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        Beacon::config("http://127.0.0.1:9/v1", "").replace("{RECORD_LOG}", "r.jsonl"),
    )
    .unwrap();
    let out = std::process::Command::new(beacon_e2e::beacon_bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
