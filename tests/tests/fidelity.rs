//! Fidelity with real upstreams (SPEC §2.3), driven by the official `openai` SDK against a
//! mock that sends what real servers send: LiteLLM's usage chunk (a choice with an empty
//! delta), a stream that ends without `[DONE]`, an error event mid-stream, and the cost in
//! the usage chunk a client asked for.

use beacon_e2e::mock_upstream::MockUpstream;
use beacon_e2e::{raw_request, sdk, Beacon, RawResponse, TENANT_KEY};
use serde_json::{json, Value};

async fn setup() -> (MockUpstream, Beacon) {
    let upstream = MockUpstream::start().await;
    let beacon = Beacon::start(&Beacon::config(&upstream.base_url(), ""));
    (upstream, beacon)
}

async fn stream(beacon: &Beacon, model: &str, extra: Value) -> Value {
    let mut request = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().into_iter().flatten() {
        request[k] = v.clone();
    }
    sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "stream", "request": request})).await
}

async fn raw_stream(beacon: &Beacon, model: &str) -> RawResponse {
    let auth = format!("Bearer {TENANT_KEY}");
    raw_request(
        beacon.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .await
}

fn request_id(out: &Value) -> String {
    out["headers"]["x-request-id"]
        .as_str()
        .expect("x-request-id")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn litellms_usage_chunk_is_removed_when_the_client_did_not_ask_for_usage() {
    let (_u, beacon) = setup().await;
    let out = stream(&beacon, "mock/litellm-usage", json!({})).await;
    assert!(out.get("error").is_none(), "{out}");
    let chunks = out["chunks"].as_array().unwrap();
    assert!(
        chunks.iter().all(|c| c["usage"].is_null()),
        "a usage chunk reached a client that did not ask for it: {chunks:?}"
    );
    assert_eq!(out["content"], "Hello from the mock upstream.");
    let rec = beacon.wait_record(&request_id(&out));
    assert_eq!(rec["usage"]["prompt_tokens"], 12);
    assert_eq!(rec["usage"]["estimated"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_usage_chunk_a_client_asked_for_carries_the_cost() {
    let upstream = MockUpstream::start().await;
    let priced = "\n[pricing.\"mock/litellm-usage\"]\ninput = 3.0\noutput = 15.0\n";
    let beacon = Beacon::start(&(Beacon::config(&upstream.base_url(), "") + priced));
    for model in ["mock/echo", "mock/litellm-usage"] {
        let out = stream(
            &beacon,
            model,
            json!({"stream_options": {"include_usage": true}}),
        )
        .await;
        let last = out["chunks"].as_array().unwrap().last().unwrap().clone();
        let usage = &last["usage"];
        assert_eq!(usage["prompt_tokens"], 12, "{model}: {last}");
        let rec = beacon.wait_record(&request_id(&out));
        let charged: f64 = rec["cost"]["total"].as_str().unwrap().parse().unwrap();
        assert!(charged > 0.0);
        let cost = usage["cost"].as_f64().expect("usage.cost in the stream");
        assert!(
            (cost - charged).abs() < 1e-12,
            "{model}: {cost} vs {charged}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_finished_every_choice_without_done_is_a_success() {
    let (_u, beacon) = setup().await;
    let out = stream(&beacon, "mock/no-done", json!({})).await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["content"], "Hello from the mock upstream.");
    let rec = beacon.wait_record(&request_id(&out));
    assert_eq!(rec["outcome"]["kind"], "ok", "{rec}");
    assert_eq!(rec["finish_reasons"], json!(["stop"]));
    // On the wire: Beacon ends it with one [DONE] and no error chunk.
    let raw = raw_stream(&beacon, "mock/no-done").await;
    let text = String::from_utf8_lossy(&raw.body);
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("[DONE]").count(), 1);
    assert!(!text.contains("\"error\""), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_error_event_is_forwarded_once_and_becomes_the_records_error() {
    let (_u, beacon) = setup().await;
    let out = stream(&beacon, "mock/error-event", json!({})).await;
    let err = &out["error"];
    assert_eq!(err["class"], "APIError", "{out}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("The model is overloaded"),
        "{err}"
    );
    let raw = raw_stream(&beacon, "mock/error-event").await;
    let text = String::from_utf8_lossy(&raw.body);
    assert_eq!(
        text.matches("\"error\"").count(),
        1,
        "one error event: {text}"
    );
    assert!(
        !text.contains("finish_reason\":\"error"),
        "no second, Beacon-made error: {text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let id = raw.headers["x-request-id"].to_str().unwrap();
    let rec = beacon.wait_record(id);
    assert_eq!(rec["outcome"]["kind"], "upstream_error");
    assert_eq!(rec["outcome"]["error_type"], "server_error");
    assert_eq!(rec["outcome"]["message"], "The model is overloaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_provider_gives_a_502_naming_it_and_the_cause() {
    let upstream = MockUpstream::start().await;
    let cfg = Beacon::config(&upstream.base_url(), "")
        + "\n[[providers]]\nname = \"dead\"\nbase_url = \"http://127.0.0.1:1/v1\"\napi_key = \"sk-dead-provider-secret\"\n";
    let beacon = Beacon::start(&cfg);
    let out = sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "chat",
                         "request": {"model": "dead/x", "messages": [{"role": "user", "content": "hi"}]}}))
    .await;
    let err = &out["error"];
    assert_eq!(err["status"], 502, "{out}");
    let message = err["body"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
        + err["body"]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`dead`"), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(!message.contains("sk-dead-provider-secret"));
}
