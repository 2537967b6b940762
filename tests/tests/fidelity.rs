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

async fn chat(beacon: &Beacon, model: &str) -> Value {
    sdk(
        json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "chat",
               "request": {"model": model, "messages": [{"role": "user", "content": "hi"}]}}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_with_no_price_has_no_cost_anywhere() {
    let upstream = MockUpstream::start().await;
    let collector = beacon_e2e::mock_sentry::MockSentry::start_collector().await;
    let dest = format!(
        "\n[tenants.broadcast]\nenabled = true\n[[tenants.broadcast.destinations]]\ntype = \"otlp\"\nname = \"c\"\nendpoint = \"http://{}/v1/traces\"\n",
        collector.addr
    );
    let beacon = Beacon::start(&Beacon::config(&upstream.base_url(), &dest));
    let out = chat(&beacon, "mock/unpriced").await;
    let usage = &out["completion"]["usage"];
    assert_eq!(usage["prompt_tokens"], 12, "{out}");
    assert!(
        usage.get("cost").is_none_or(Value::is_null),
        "no cost, not 0: {usage}"
    );
    let rec = beacon.wait_record(&request_id(&out));
    assert_eq!(rec["cost"], json!({"source": "unknown"}));
    // A stream's usage chunk carries none either.
    let out = stream(
        &beacon,
        "mock/unpriced",
        json!({"stream_options": {"include_usage": true}}),
    )
    .await;
    let last = out["chunks"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["usage"]["prompt_tokens"], 12);
    assert!(
        last["usage"].get("cost").is_none_or(Value::is_null),
        "{last}"
    );
    // The spans carry tokens and no cost attribute.
    let spans = collector
        .wait_spans(2, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(spans.len(), 2);
    for s in &spans {
        let a = &s["attributes"];
        assert_eq!(a["gen_ai.usage.input_tokens"], 12);
        assert!(a.get("gen_ai.cost.total_tokens").is_none(), "{a}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_explicit_price_wins_over_the_upstreams_cost_which_wins_over_the_shipped_table() {
    let upstream = MockUpstream::start().await;
    // 12 prompt and 6 completion tokens at 1000 and 2000 USD per million: 0.024 USD.
    let priced = "\n[pricing.\"mock/reports-cost-priced\"]\ninput = 1000.0\noutput = 2000.0\n";
    let beacon = Beacon::start(&(Beacon::config(&upstream.base_url(), "") + priced));
    let out = chat(&beacon, "mock/reports-cost-priced").await;
    assert_eq!(out["completion"]["usage"]["cost"], 0.024, "{out}");
    let rec = beacon.wait_record(&request_id(&out));
    assert_eq!(rec["cost"]["total"], "0.024");
    assert_eq!(rec["cost"]["source"], "price_table");
    // No operator price: the upstream's own figure is the cost.
    let out = chat(&beacon, "mock/reports-cost").await;
    assert_eq!(out["completion"]["usage"]["cost"], 0.5, "{out}");
    let rec = beacon.wait_record(&request_id(&out));
    assert_eq!(rec["cost"]["total"], "0.5");
    assert_eq!(rec["cost"]["source"], "upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn models_show_the_price_that_will_be_charged() {
    let upstream = MockUpstream::start().await;
    // A provider listing a dated model id: the meter prices it from the shipped gpt-4o entry.
    let extra = format!(
        "\n[[providers]]\nname = \"corp\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-2024-08-06\", \"house-model\"]\n",
        upstream.base_url()
    );
    let beacon = Beacon::start(&(Beacon::config(&upstream.base_url(), "") + &extra));
    let out =
        sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "models"})).await;
    let models = out["models"].as_array().unwrap();
    let find = |id: &str| {
        models
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    let dated = find("corp/gpt-4o-2024-08-06");
    assert_eq!(dated["pricing"]["input"], "2.5", "{dated}");
    assert!(
        find("corp/house-model")["pricing"].is_null(),
        "no price, no made-up one"
    );
    // And a completion of it is charged that price.
    let out = chat(&beacon, "corp/gpt-4o-2024-08-06").await;
    let rec = beacon.wait_record(&request_id(&out));
    assert_eq!(rec["cost"]["source"], "price_table", "{rec}");
}
