//! Every API of SPEC §2.1 end to end: the real `beacon` binary, driven by the official
//! `openai` SDK (Responses, embeddings, legacy completions, model retrieval, the Responses
//! retrieval routes) and the official `anthropic` SDK (Messages, created and streamed, with
//! a tool use round trip), against a mock upstream that frames each API as documented. Each
//! test checks what the client got, the record, and the span decoded from a mock Sentry by
//! the independent `opentelemetry-proto` decoder — with content, and without it under
//! privacy mode.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::time::Duration;

use beacon_e2e::mock_sentry::MockSentry;
use beacon_e2e::mock_upstream::{MockUpstream, WORDS};
use beacon_e2e::{apis, raw_request, Beacon, PROVIDER_KEY, TENANT_KEY};
use serde_json::{json, Value};

const ANTHROPIC_KEY: &str = "sk-ant-provider-secret-456";
const MARKER: &str = "MARKER-7f3a-apis";

struct Setup {
    upstream: MockUpstream,
    full: MockSentry,
    private: MockSentry,
    beacon: Beacon,
}

fn sentry_dest(m: &MockSentry, name: &str, extra: &str) -> String {
    format!(
        "\n[[tenants.broadcast.destinations]]\ntype = \"sentry\"\nname = \"{name}\"\notlp_endpoint = \"{}\"\ndsn = \"{}\"\n{extra}\n",
        m.endpoint(),
        m.dsn()
    )
}

/// Beacon with the OpenAI-compatible provider `mock`, the Anthropic provider `claude` (same
/// mock), prices for the models used, and two Sentry destinations: one in privacy mode.
async fn setup() -> Setup {
    let upstream = MockUpstream::start().await;
    let full = MockSentry::start("301", "kfull").await;
    let private = MockSentry::start("302", "kpriv").await;
    let extra = format!(
        r#"[tenants.broadcast]
enabled = true
{}{}
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{}"
api_key = "{ANTHROPIC_KEY}"

[[providers]]
name = "router"
base_url = "{}"
api_key = "{PROVIDER_KEY}"
apis = ["chat", "messages"]

[pricing."mock/gpt-4o"]
input = 2.5
cached_input = 1.25
output = 10.0

[pricing."mock/text-embedding-3-small"]
input = 0.02
output = 0.0

[pricing."claude/claude-sonnet-4-5"]
input = 3.0
cached_input = 0.3
cache_write = 3.75
output = 15.0
"#,
        sentry_dest(&full, "full", ""),
        sentry_dest(&private, "private", "privacy_mode = true"),
        upstream.base_url(),
        upstream.base_url(),
    );
    let beacon = Beacon::start(&Beacon::config(&upstream.base_url(), &extra));
    Setup {
        upstream,
        full,
        private,
        beacon,
    }
}

async fn call(s: &Setup, mode: &str, request: Value) -> Value {
    apis(json!({"base_url": s.beacon.base_url(), "api_key": TENANT_KEY, "mode": mode, "request": request})).await
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// The generation span of request `rid` at `sentry`.
async fn span_of(sentry: &MockSentry, rid: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let spans = sentry.spans().await;
        if let Some(s) = spans.iter().find(|s| attr(s, "beacon.request_id") == rid) {
            return s.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no span for {rid}: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The span at the full destination, checked against the private one: same tokens and
/// cost, and no text at all in the private payload.
async fn spans_of(s: &Setup, rid: &str) -> Value {
    let full = span_of(&s.full, rid).await;
    let private = span_of(&s.private, rid).await;
    for key in [
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.cost.total_tokens",
        "sentry.op",
    ] {
        assert_eq!(attr(&full, key), attr(&private, key), "{key}");
    }
    for key in [
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
    ] {
        assert!(attr(&private, key).is_null(), "{key} under privacy mode");
    }
    for e in s.private.exports() {
        let text = String::from_utf8_lossy(&e.protobuf);
        for secret in [MARKER, "mock upstream", "Be brief", "Paris"] {
            assert!(!text.contains(secret), "{secret} in a privacy-mode payload");
        }
    }
    full
}

fn rid(out: &Value) -> String {
    out["headers"]["x-request-id"]
        .as_str()
        .unwrap_or_else(|| panic!("no x-request-id: {out}"))
        .to_string()
}

fn charged(rec: &Value) -> f64 {
    rec["cost"]["total"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_create_is_metered_costed_and_exported() {
    let s = setup().await;
    let out = call(
        &s,
        "responses",
        json!({"model": "mock/gpt-4o", "instructions": "Be brief.",
               "input": format!("Say hello {MARKER}"), "session_id": "sess-r1",
               "trace": {"trace_name": "agent"}, "temperature": 0.5, "max_output_tokens": 64}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["output_text"], WORDS.concat());
    let rec = s.beacon.wait_record(&rid(&out));
    assert_eq!(rec["api"], "responses");
    assert_eq!(rec["outcome"]["kind"], "ok");
    let u = &rec["usage"];
    assert_eq!(
        (
            &u["prompt_tokens"],
            &u["cached_tokens"],
            &u["completion_tokens"],
            &u["reasoning_tokens"]
        ),
        (&json!(12), &json!(4), &json!(6), &json!(2))
    );
    assert_eq!(rec["params"]["max_tokens"], 64);
    // usage.cost is what was charged: (8 × 2.5 + 4 × 1.25 + 6 × 10) / 1e6.
    let cost = out["response"]["usage"]["cost"]
        .as_f64()
        .expect("usage.cost");
    assert!((cost - 0.000085).abs() < 1e-12, "{cost}");
    assert!((charged(&rec) - cost).abs() < 1e-12);
    // What went upstream: the model rewritten, Beacon's extensions removed, no stream_options.
    let sent = s.upstream.received().last().unwrap().clone();
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(sent.body["model"], "gpt-4o");
    assert!(sent.body.get("session_id").is_none() && sent.body.get("trace").is_none());
    assert!(sent.body.get("stream_options").is_none());
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str()
    );

    let span = spans_of(&s, &rid(&out)).await;
    assert_eq!(attr(&span, "sentry.op"), "gen_ai.responses");
    assert_eq!(attr(&span, "gen_ai.operation.name"), "responses");
    assert_eq!(attr(&span, "gen_ai.usage.input_tokens"), 12);
    assert_eq!(attr(&span, "gen_ai.usage.cache_read.input_tokens"), 4);
    assert_eq!(attr(&span, "gen_ai.usage.output_tokens"), 6);
    assert_eq!(attr(&span, "gen_ai.usage.reasoning.output_tokens"), 2);
    assert!((attr(&span, "gen_ai.cost.total_tokens").as_f64().unwrap() - cost).abs() < 1e-12);
    assert_eq!(attr(&span, "gen_ai.response.model"), "gpt-4o-2025-04-14");
    assert_eq!(attr(&span, "gen_ai.response.id"), "resp_mock123");
    assert_eq!(attr(&span, "session.id"), "sess-r1");
    let system = attr(&span, "gen_ai.system_instructions").as_str().unwrap();
    assert!(system.contains("Be brief."), "{system}");
    let input = attr(&span, "gen_ai.input.messages").as_str().unwrap();
    assert!(input.contains(MARKER), "{input}");
    let output = attr(&span, "gen_ai.output.messages").as_str().unwrap();
    assert!(output.contains(&WORDS.concat()), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_stream_is_forwarded_event_by_event_and_metered_from_response_completed() {
    let s = setup().await;
    let out = call(
        &s,
        "responses_stream",
        json!({"model": "mock/gpt-4o", "input": [{"role": "user", "content": [{"type": "input_text", "text": MARKER}]}]}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["text"], WORDS.concat());
    let types: Vec<&str> = out["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"response.created"));
    assert_eq!(types.last(), Some(&"response.completed"));
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "response.output_text.delta")
            .count(),
        WORDS.len()
    );
    let sent = s.upstream.received().last().unwrap().clone();
    assert!(
        sent.body.get("stream_options").is_none(),
        "chat's stream_options added to Responses"
    );
    let rec = s
        .beacon
        .wait_record_where(|r| r["api"] == "responses" && r["stream"] == true);
    assert_eq!(rec["outcome"]["kind"], "ok");
    assert_eq!(rec["usage"]["prompt_tokens"], 12);
    assert_eq!(rec["usage"]["completion_tokens"], 6);
    assert_eq!(rec["usage"]["estimated"], false);
    assert_eq!(rec["finish_reasons"], json!(["stop"]));
    assert!(rec["timings"]["first_chunk_us"].as_u64().is_some());
    let span = spans_of(&s, rec["request_id"].as_str().unwrap()).await;
    assert_eq!(attr(&span, "sentry.op"), "gen_ai.responses");
    assert_eq!(attr(&span, "gen_ai.response.streaming"), true);
    assert!(
        attr(&span, "gen_ai.response.time_to_first_chunk")
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(attr(&span, "gen_ai.output.messages")
        .as_str()
        .unwrap()
        .contains("mock upstream"));
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_function_call_round_trip_and_an_error_event_mid_stream() {
    let s = setup().await;
    let out = call(
        &s,
        "responses_tool_round_trip",
        json!({"model": "mock/tool-call", "input": [{"role": "user", "content": "Weather in Paris?"}]}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["call"]["name"], "get_weather");
    assert_eq!(out["answer"], "It is 18C in Paris.");
    let first = s.beacon.wait_record_where(|r| {
        r["api"] == "responses" && r["finish_reasons"] == json!(["tool_calls"])
    });
    let span = span_of(&s.full, first["request_id"].as_str().unwrap()).await;
    let output = attr(&span, "gen_ai.output.messages").as_str().unwrap();
    assert!(
        output.contains("\"tool_call\"") && output.contains("get_weather"),
        "{output}"
    );
    // The second request's input carries the call and its result.
    let second = s
        .beacon
        .wait_record_where(|r| r["api"] == "responses" && r["finish_reasons"] == json!(["stop"]));
    let span = span_of(&s.full, second["request_id"].as_str().unwrap()).await;
    let input = attr(&span, "gen_ai.input.messages").as_str().unwrap();
    assert!(
        input.contains("tool_call_response") && input.contains("18C"),
        "{input}"
    );

    // An upstream `error` event mid-stream: forwarded once, the record's error.
    let out = call(
        &s,
        "responses_stream",
        json!({"model": "mock/error-event", "input": "hi"}),
    )
    .await;
    let types = out["types"].as_array().unwrap();
    assert_eq!(types.iter().filter(|t| *t == "error").count(), 1, "{out}");
    let rec = s.beacon.wait_record_where(|r| {
        r["api"] == "responses" && r["requested_model"] == "mock/error-event"
    });
    assert_eq!(rec["outcome"]["kind"], "upstream_error");
    assert_eq!(rec["outcome"]["error_type"], "server_error");
    assert_eq!(rec["outcome"]["message"], "The model is overloaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_are_metered_at_the_input_price_and_export_texts_never_vectors() {
    let s = setup().await;
    let out = call(
        &s,
        "embeddings",
        json!({"model": "mock/text-embedding-3-small", "input": [format!("first {MARKER}"), "second"]}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    let data = out["embeddings"]["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    // The SDK asked for base64 and decoded it: the vectors arrived intact.
    assert_eq!(data[0]["embedding"], json!([0.25, -0.5, 0.125]));
    let cost = out["raw"]["usage"]["cost"].as_f64().expect("usage.cost");
    assert!((cost - 8.0 * 0.02 / 1e6).abs() < 1e-15, "{cost}");
    let rec = s.beacon.wait_record(&rid(&out));
    assert_eq!(rec["api"], "embeddings");
    assert_eq!(rec["usage"]["prompt_tokens"], 8);
    assert_eq!(rec["usage"]["completion_tokens"], 0);
    let span = spans_of(&s, &rid(&out)).await;
    assert_eq!(attr(&span, "sentry.op"), "gen_ai.embeddings");
    assert_eq!(attr(&span, "gen_ai.operation.name"), "embeddings");
    assert_eq!(attr(&span, "gen_ai.usage.input_tokens"), 8);
    assert!(attr(&span, "gen_ai.input.messages")
        .as_str()
        .unwrap()
        .contains(MARKER));
    assert!(attr(&span, "gen_ai.output.messages").is_null());
    let payload: String = s
        .full
        .exports()
        .iter()
        .map(|e| String::from_utf8_lossy(&e.protobuf).into_owned())
        .collect();
    assert!(
        !payload.contains("AACAPgAAAL8AAAA+"),
        "vectors in the payload"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_completions_stream_and_not() {
    let s = setup().await;
    let out = call(
        &s,
        "completions",
        json!({"model": "mock/gpt-4o", "prompt": format!("Say hello {MARKER}")}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["completion"]["choices"][0]["text"], WORDS.concat());
    assert!(out["completion"]["usage"]["prompt_tokens"] == 5);
    let out = call(
        &s,
        "completions_stream",
        json!({"model": "mock/gpt-4o", "prompt": "hi"}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["text"], WORDS.concat());
    // Usage was asked for on the client's behalf and removed again.
    assert!(out["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["usage"].is_null()));
    let rec = s
        .beacon
        .wait_record_where(|r| r["api"] == "completions" && r["stream"] == true);
    assert_eq!(rec["usage"]["prompt_tokens"], 5);
    assert_eq!(rec["usage"]["estimated"], false);
    let span = spans_of(&s, rec["request_id"].as_str().unwrap()).await;
    assert_eq!(attr(&span, "sentry.op"), "gen_ai.text_completion");
    assert_eq!(attr(&span, "gen_ai.operation.name"), "text_completion");
    assert_eq!(attr(&span, "gen_ai.usage.output_tokens"), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_create_with_x_api_key_counts_cache_tokens_in_the_input() {
    let s = setup().await;
    let out = call(
        &s,
        "messages",
        json!({"model": "claude/claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.",
               "messages": [{"role": "user", "content": format!("Say hello {MARKER}")}],
               "metadata": {"user_id": "user-42"}, "user": "ext-user", "session_id": "sess-m1"}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["message"]["content"][0]["text"], WORDS.concat());
    assert_eq!(
        out["message"]["usage"]["input_tokens"], 10,
        "the upstream's usage is relayed"
    );
    // (10 × 3 + 100 × 0.3 + 20 × 3.75 + 6 × 15) / 1e6
    let rec = s.beacon.wait_record(&rid(&out));
    assert!((charged(&rec) - 0.000225).abs() < 1e-12, "{rec}");
    assert_eq!(rec["api"], "messages");
    assert_eq!(rec["user"], "ext-user");
    let u = &rec["usage"];
    assert_eq!(
        (
            &u["prompt_tokens"],
            &u["cached_tokens"],
            &u["cache_write_tokens"],
            &u["completion_tokens"]
        ),
        (&json!(130), &json!(100), &json!(20), &json!(6))
    );
    assert_eq!(rec["finish_reasons"], json!(["end_turn"]));
    // Upstream: Anthropic's auth and version, not the client's key; Beacon's `user` removed.
    let sent = s.upstream.received().last().unwrap().clone();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(sent.headers.get("authorization").is_none());
    assert!(sent.body.get("user").is_none() && sent.body.get("session_id").is_none());
    assert_eq!(sent.body["metadata"]["user_id"], "user-42");
    assert_eq!(sent.body["model"], "claude-sonnet-4-5");

    let span = spans_of(&s, &rid(&out)).await;
    assert_eq!(attr(&span, "sentry.op"), "gen_ai.chat");
    assert_eq!(attr(&span, "gen_ai.operation.name"), "chat");
    assert_eq!(attr(&span, "gen_ai.usage.input_tokens"), 130);
    assert_eq!(attr(&span, "gen_ai.usage.cache_read.input_tokens"), 100);
    assert_eq!(attr(&span, "gen_ai.usage.cache_creation.input_tokens"), 20);
    // SPEC §4.5's breakdown: 100 × 0.3 and 20 × 3.75 per million.
    let cost = |k: &str| attr(&span, k).as_f64().unwrap();
    assert!((cost("gen_ai.cost.cache_read.input_tokens") - 0.00003).abs() < 1e-12);
    assert!((cost("gen_ai.cost.cache_creation.input_tokens") - 0.000075).abs() < 1e-12);
    assert_eq!(cost("gen_ai.cost.reasoning.output_tokens"), 0.0);
    assert_eq!(attr(&span, "gen_ai.provider.name"), "claude");
    assert!(attr(&span, "gen_ai.system_instructions")
        .as_str()
        .unwrap()
        .contains("Be brief."));

    // metadata.user_id is the user when Beacon's extension is absent.
    let out = call(
        &s,
        "messages",
        json!({"model": "claude/claude-sonnet-4-5", "max_tokens": 16,
               "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": "user-42"}}),
    )
    .await;
    assert_eq!(s.beacon.wait_record(&rid(&out))["user"], "user-42");
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_stream_and_a_tool_use_round_trip() {
    let s = setup().await;
    let out = call(
        &s,
        "messages_stream",
        json!({"model": "claude/claude-sonnet-4-5", "max_tokens": 256,
               "messages": [{"role": "user", "content": MARKER}]}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["final"]["content"][0]["text"], WORDS.concat());
    assert_eq!(out["final"]["usage"]["output_tokens"], 6);
    let rec = s
        .beacon
        .wait_record_where(|r| r["api"] == "messages" && r["stream"] == true);
    assert_eq!(rec["outcome"]["kind"], "ok");
    assert_eq!(rec["usage"]["prompt_tokens"], 130);
    assert_eq!(rec["usage"]["completion_tokens"], 6);
    assert!(rec["timings"]["first_chunk_us"].as_u64().is_some());
    let span = spans_of(&s, rec["request_id"].as_str().unwrap()).await;
    assert_eq!(
        attr(&span, "gen_ai.response.finish_reasons"),
        &json!("end_turn")
    );
    assert!(attr(&span, "gen_ai.response.time_to_first_chunk")
        .as_f64()
        .is_some());

    let out = call(
        &s,
        "messages_tool_round_trip",
        json!({"model": "claude/tool-call", "max_tokens": 256,
               "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["stop_reason"], "tool_use");
    assert_eq!(out["tool_use"]["input"], json!({"city": "Paris"}));
    assert_eq!(out["answer"], "It is 18C in Paris.");
    let first = s.beacon.wait_record_where(|r| {
        r["api"] == "messages" && r["finish_reasons"] == json!(["tool_use"])
    });
    let span = span_of(&s.full, first["request_id"].as_str().unwrap()).await;
    let output = attr(&span, "gen_ai.output.messages").as_str().unwrap();
    assert!(
        output.contains("get_weather") && output.contains("Paris"),
        "{output}"
    );
    // SPEC §4.5: the tools offered (definitions; names only under privacy) and called.
    let tools = attr(&span, "gen_ai.request.available_tools")
        .as_str()
        .unwrap();
    assert!(
        tools.contains("input_schema") && tools.contains("get_weather"),
        "{tools}"
    );
    let calls: Value =
        serde_json::from_str(attr(&span, "gen_ai.response.tool_calls").as_str().unwrap()).unwrap();
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(calls[0]["id"], "toolu_mock1");
    assert!(calls[0]["arguments"].as_str().unwrap().contains("Paris"));
    let private = span_of(&s.private, first["request_id"].as_str().unwrap()).await;
    assert_eq!(
        attr(&private, "gen_ai.request.available_tools"),
        &json!("[\"get_weather\"]")
    );
    let private_calls: Value = serde_json::from_str(
        attr(&private, "gen_ai.response.tool_calls")
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(private_calls[0].get("arguments").is_none());
    let second = s.beacon.wait_record_where(|r| {
        r["api"] == "messages" && r["stream"] == true && r["requested_model"] == "claude/tool-call"
    });
    let span = span_of(&s.full, second["request_id"].as_str().unwrap()).await;
    let input = attr(&span, "gen_ai.input.messages").as_str().unwrap();
    assert!(
        input.contains("tool_call_response") && input.contains("toolu_mock1"),
        "{input}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_error_event_and_a_provider_whose_apis_include_messages() {
    let s = setup().await;
    let out = call(
        &s,
        "messages_stream",
        json!({"model": "claude/error-event", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(out["error"].is_object(), "{out}");
    assert_eq!(
        out["error"]["body"]["error"]["type"], "overloaded_error",
        "{out}"
    );
    let rec = s.beacon.wait_record_where(|r| {
        r["api"] == "messages" && r["requested_model"] == "claude/error-event"
    });
    assert_eq!(rec["outcome"]["kind"], "upstream_error");
    assert_eq!(rec["outcome"]["error_type"], "overloaded_error");
    assert_eq!(rec["outcome"]["message"], "Overloaded");
    assert_eq!(
        rec["usage"]["prompt_tokens"], 130,
        "message_start's usage is kept"
    );
    let auth = format!("Bearer {TENANT_KEY}");
    let raw = raw_request(
        s.beacon.addr,
        "POST",
        "/v1/messages",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"model": "claude/error-event", "max_tokens": 64, "stream": true,
               "messages": [{"role": "user", "content": "hi"}]})
        .to_string(),
    )
    .await;
    let text = String::from_utf8_lossy(&raw.body);
    assert_eq!(text.matches("event: error").count(), 1, "{text}");
    let span = span_of(&s.full, rec["request_id"].as_str().unwrap()).await;
    assert_eq!(attr(&span, "error.type"), "overloaded_error");

    // An OpenAI-kind provider with `messages` in its apis (OpenRouter's Messages endpoint):
    // the native API at {base_url}/messages with its bearer key.
    let out = call(
        &s,
        "messages",
        json!({"model": "router/claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    let sent = s.upstream.received().last().unwrap().clone();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str()
    );
    assert!(sent.headers.get("x-api-key").is_none());
    assert_eq!(s.beacon.wait_record(&rid(&out))["provider"], "router");
    // ... and not the APIs left out of it.
    let r = post(&s, "/v1/embeddings", r#"{"model":"router/e","input":"x"}"#).await;
    assert_eq!(r.json()["error"]["code"], "unsupported_api");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_mid_stream_records_partial_tokens_and_closes_the_upstream() {
    for (mode, request) in [
        (
            "responses_stream",
            json!({"model": "mock/endless", "input": "go on"}),
        ),
        (
            "messages_stream",
            json!({"model": "claude/endless", "max_tokens": 4096,
                                    "messages": [{"role": "user", "content": "go on"}]}),
        ),
    ] {
        let s = setup().await;
        let out = apis(
            json!({"base_url": s.beacon.base_url(), "api_key": TENANT_KEY, "mode": mode,
                              "request": request, "close_after": 12}),
        )
        .await;
        assert_eq!(out["closed"], true, "{out}");
        let api = if mode == "responses_stream" {
            "responses"
        } else {
            "messages"
        };
        let rec = s
            .beacon
            .wait_record_where(|r| r["outcome"]["kind"] == "client_cancelled" && r["api"] == api);
        assert!(
            rec["usage"]["completion_tokens"].as_u64().unwrap() > 0,
            "{rec}"
        );
        // The upstream saw its client (Beacon) go away well before its 500 deltas.
        let start = std::time::Instant::now();
        while !s.upstream.endless_state().0 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{mode}: upstream not closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(s.upstream.endless_state().1 < 100);
        let span = span_of(&s.full, rec["request_id"].as_str().unwrap()).await;
        assert!(attr(&span, "gen_ai.usage.output_tokens").as_u64().unwrap() > 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn model_retrieval_and_the_responses_retrieval_routes() {
    let s = setup().await;
    let out = apis(json!({"base_url": s.beacon.base_url(), "api_key": TENANT_KEY, "mode": "model", "model": "mock/gpt-4o"})).await;
    assert_eq!(out["model"]["id"], "mock/gpt-4o", "{out}");
    assert_eq!(out["model"]["object"], "model");
    let auth = format!("Bearer {TENANT_KEY}");
    let encoded = raw_request(
        s.beacon.addr,
        "GET",
        "/v1/models/claude%2Fclaude-sonnet-4-5",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(encoded.status, 200);
    assert_eq!(encoded.json()["pricing"]["cache_write"], "3.75");
    let missing = raw_request(
        s.beacon.addr,
        "GET",
        "/v1/models/nope%2Fmodel",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");

    // Retrieval routes go to the provider the header names, with its key.
    let out = apis(
        json!({"base_url": s.beacon.base_url(), "api_key": TENANT_KEY, "mode": "retrieve",
                          "id": "resp_abc123", "headers": {"x-beacon-provider": "mock"}}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["retrieved"]["id"], "resp_abc123");
    assert_eq!(out["items"]["data"][0]["id"], "msg_in1");
    assert_eq!(out["cancelled"]["status"], "cancelled");
    assert_eq!(out["deleted"], true);
    let seen: Vec<String> = s
        .upstream
        .received()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    for p in [
        "/v1/responses/resp_abc123",
        "/v1/responses/resp_abc123/input_items",
        "/v1/responses/resp_abc123/cancel",
    ] {
        assert!(seen.iter().any(|x| x == p), "{p} not forwarded: {seen:?}");
    }
    let sent = s.upstream.received().last().unwrap().clone();
    assert_eq!(
        sent.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}").as_str()
    );
    // Not metered: no record for any of them.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.beacon.records().is_empty(), "{:?}", s.beacon.records());
    // No provider named, no default provider: a clear 400.
    let r = raw_request(
        s.beacon.addr,
        "GET",
        "/v1/responses/resp_abc123",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "x-beacon-provider");
    // An Anthropic provider does not serve Responses.
    let r = raw_request(
        s.beacon.addr,
        "GET",
        "/v1/responses/resp_abc123",
        &[("authorization", &auth), ("x-beacon-provider", "claude")],
        "",
    )
    .await;
    assert_eq!(r.json()["error"]["code"], "unsupported_api");
}

/// Sends `body` to `path` with the tenant key; returns the response.
async fn post(s: &Setup, path: &str, body: &str) -> beacon_e2e::RawResponse {
    let auth = format!("Bearer {TENANT_KEY}");
    raw_request(
        s.beacon.addr,
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_per_route_gets_that_routes_error_shape_and_nothing_is_forwarded() {
    let s = setup().await;
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/v1/responses", "{not json", 400, "invalid_json"),
        (
            "/v1/responses",
            r#"{"model":"mock/gpt-4o","input":42}"#,
            400,
            "input",
        ),
        (
            "/v1/responses",
            r#"{"model":"mock/gpt-4o","input":"hi","instructions":[1]}"#,
            400,
            "instructions",
        ),
        (
            "/v1/responses",
            r#"{"model":"nope/x","input":"hi"}"#,
            404,
            "model_not_found",
        ),
        (
            "/v1/responses",
            r#"{"model":"claude/claude-sonnet-4-5","input":"hi"}"#,
            400,
            "unsupported_api",
        ),
        (
            "/v1/embeddings",
            r#"{"model":"mock/text-embedding-3-small"}"#,
            400,
            "input",
        ),
        (
            "/v1/embeddings",
            r#"{"model":"mock/e","input":{"a":1}}"#,
            400,
            "input",
        ),
        ("/v1/embeddings", r#"{"model":5,"input":"x"}"#, 400, "model"),
        (
            "/v1/completions",
            r#"{"model":"mock/gpt-4o"}"#,
            400,
            "prompt",
        ),
        (
            "/v1/completions",
            r#"{"model":"mock/gpt-4o","prompt":"x","stream":"yes"}"#,
            400,
            "stream",
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"claude/claude-sonnet-4-5","messages":[]}"#,
            400,
            "unsupported_api",
        ),
    ];
    for (path, body, status, what) in cases {
        let r = post(&s, path, body).await;
        assert_eq!(r.status, *status, "{path} {body}: {:?}", r.body);
        let err = &r.json()["error"];
        assert!(
            err["code"] == *what || err["param"] == *what,
            "{path} {body}: {err}"
        );
    }
    // Anthropic's shape on /v1/messages.
    let anthropic_cases: &[(&str, u16, &str)] = &[
        ("{not json", 400, "invalid_request_error"),
        (
            r#"{"model":"claude/claude-sonnet-4-5","messages":"hi"}"#,
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model":"claude/claude-sonnet-4-5","messages":[],"system":7}"#,
            400,
            "invalid_request_error",
        ),
        (
            r#"{"model":"nope/x","messages":[]}"#,
            404,
            "not_found_error",
        ),
        (
            r#"{"model":"mock/gpt-4o","messages":[]}"#,
            400,
            "invalid_request_error",
        ),
    ];
    for (body, status, kind) in anthropic_cases {
        let r = post(&s, "/v1/messages", body).await;
        assert_eq!(r.status, *status, "{body}: {:?}", r.body);
        let v = r.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], *kind, "{body}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let r = post(
        &s,
        "/v1/messages",
        r#"{"model":"mock/gpt-4o","messages":[]}"#,
    )
    .await;
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("mock") && message.contains("messages"),
        "{message}"
    );
    // Without a key, the Anthropic SDK's own error class.
    let r = raw_request(s.beacon.addr, "POST", "/v1/messages", &[], "{}").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let out = apis(json!({"base_url": s.beacon.base_url(), "api_key": "bk-wrong", "mode": "messages",
        "request": {"model": "claude/claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}})).await;
    assert_eq!(out["error"]["class"], "AuthenticationError", "{out}");
    // An upstream error status keeps the upstream's Anthropic body.
    let out = call(
        &s,
        "messages",
        json!({"model": "claude/error-529", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(out["error"]["status"], 529, "{out}");
    assert_eq!(out["error"]["body"]["error"]["type"], "overloaded_error");

    assert!(
        s.upstream
            .received()
            .iter()
            .all(|r| r.body["model"] == "error-529"),
        "a rejected request was forwarded: {:?}",
        s.upstream
            .received()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
}
