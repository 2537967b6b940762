//! Routing that survives provider failures (SPEC §2.2), end to end: the real `beacon`
//! binary, the official `openai` SDK, a mock upstream that fails on demand, a provider on a
//! closed port, and a mock Sentry whose spans are decoded by `opentelemetry-proto`.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::time::{Duration, Instant};

use beacon_e2e::mock_sentry::MockSentry;
use beacon_e2e::mock_upstream::{MockUpstream, WORDS};
use beacon_e2e::{metrics, raw_request, sdk, sum_where, Beacon, TENANT_KEY};
use serde_json::{json, Value};

/// A port with nothing listening (connections are refused).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Beacon with provider `mock`, provider `dead` (refuses connections), and `models` /
/// `routing` TOML appended.
fn start(upstream: &MockUpstream, sentry: Option<&MockSentry>, extra: &str) -> Beacon {
    let broadcast = sentry.map_or(String::new(), |m| {
        format!(
            "[tenants.broadcast]\nenabled = true\n[[tenants.broadcast.destinations]]\ntype = \"sentry\"\nname = \"s\"\notlp_endpoint = \"{}\"\ndsn = \"{}\"\n",
            m.endpoint(),
            m.dsn()
        )
    });
    let config = format!(
        "{broadcast}\n[[providers]]\nname = \"dead\"\nbase_url = \"http://127.0.0.1:{}/v1\"\napi_key = \"sk-dead\"\n{extra}",
        closed_port()
    );
    Beacon::start(&Beacon::config(&upstream.base_url(), &config))
}

async fn chat(beacon: &Beacon, request: Value) -> Value {
    sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "chat", "request": request})).await
}

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn rid(out: &Value) -> String {
    out["headers"]["x-request-id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_fails_over_to_the_fallback_and_the_failed_attempt_is_a_child_span() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("501", "kroute").await;
    let beacon = start(
        &upstream,
        Some(&sentry),
        "[[models]]\nname = \"smart\"\ntargets = [{ provider = \"mock\", model = \"error-503-empty\" }]\nfallbacks = [\"mock/echo\"]\n",
    );
    let out = chat(&beacon, hi("smart")).await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(
        out["completion"]["choices"][0]["message"]["content"],
        WORDS.concat()
    );
    assert_eq!(out["headers"]["x-beacon-attempts"], "2");
    assert_eq!(out["headers"]["x-beacon-provider"], "mock");
    let rec = beacon.wait_record(&rid(&out));
    assert_eq!(rec["outcome"]["kind"], "ok");
    assert_eq!(rec["upstream_model"], "echo");
    let attempts = rec["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{rec}");
    assert_eq!(attempts[0]["model"], "error-503-empty");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[0]["error_type"], "http_503");
    let models: Vec<Value> = upstream
        .received()
        .iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert_eq!(
        models,
        [json!("error-503-empty"), json!("echo")],
        "the body is rewritten per target"
    );

    let spans = sentry.wait_spans(2, Duration::from_secs(10)).await;
    let generation = spans
        .iter()
        .find(|s| s["attributes"]["sentry.op"] == "gen_ai.chat")
        .unwrap();
    let attempt = spans
        .iter()
        .find(|s| s["attributes"]["sentry.op"] == "http.client")
        .unwrap();
    assert_eq!(attempt["parent_span_id"], generation["span_id"]);
    assert_eq!(attempt["name"], "attempt mock/error-503-empty");
    assert_eq!(attempt["attributes"]["http.response.status_code"], 503);
    assert_eq!(attempt["status"]["code"], 2, "STATUS_CODE_ERROR: {attempt}");
    assert!(attempt["attributes"]["gen_ai.usage.input_tokens"].is_null());
    assert_eq!(generation["attributes"]["gen_ai.usage.input_tokens"], 12);
    let m = metrics(beacon.addr).await;
    assert_eq!(
        sum_where(
            &m,
            &["beacon_upstream_attempts_total", "outcome=\"http_503\""]
        ),
        1.0
    );
    assert_eq!(
        sum_where(
            &m,
            &["beacon_upstream_attempts_total", "outcome=\"served\""]
        ),
        1.0
    );
    assert_eq!(
        sum_where(&m, &["beacon_failovers_total", "reason=\"http_503\""]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_stalled_and_client_errors() {
    let upstream = MockUpstream::start().await;
    let beacon = start(
        &upstream,
        None,
        r#"
[routing]
attempt_timeout_secs = 1

[[models]]
name = "via-dead"
targets = [{ provider = "dead", model = "gpt-4o" }]
fallbacks = ["mock/echo"]

[[models]]
name = "via-slow"
targets = [{ provider = "mock", model = "slow-headers" }]
fallbacks = ["mock/echo"]

[[models]]
name = "via-400"
targets = [{ provider = "mock", model = "error-400" }]
fallbacks = ["mock/echo"]
"#,
    );
    // Connection refused → the next target.
    let out = chat(&beacon, hi("via-dead")).await;
    assert!(out.get("error").is_none(), "{out}");
    let rec = beacon.wait_record(&rid(&out));
    assert_eq!(rec["attempts"][0]["provider"], "dead");
    assert_eq!(rec["attempts"][0]["error_type"], "unreachable");
    assert!(rec["attempts"][0]["status"].is_null());
    // No headers within attempt_timeout_secs → the next target, well before the 5 s stall.
    let t = Instant::now();
    let out = chat(&beacon, hi("via-slow")).await;
    assert!(out.get("error").is_none(), "{out}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let rec = beacon.wait_record(&rid(&out));
    assert_eq!(rec["attempts"][0]["error_type"], "attempt_timeout");
    // A 400 is the client's: returned at once, no second attempt.
    let before = upstream.received().len();
    let out = chat(&beacon, hi("via-400")).await;
    assert_eq!(out["error"]["status"], 400, "{out}");
    assert_eq!(out["error"]["headers"]["x-beacon-attempts"], "1");
    assert_eq!(upstream.received().len(), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_on_the_only_target_is_honoured() {
    let upstream = MockUpstream::start().await;
    let beacon = start(&upstream, None, "");
    let t = Instant::now();
    let out = chat(&beacon, hi("mock/flaky-429")).await;
    assert!(out.get("error").is_none(), "{out}");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(out["headers"]["x-beacon-attempts"], "2");
    let rec = beacon.wait_record(&rid(&out));
    assert_eq!(rec["attempts"][0]["status"], 429);
    assert_eq!(rec["attempts"][0]["provider"], "mock");
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_fail_over_only_before_their_first_chunk() {
    let upstream = MockUpstream::start().await;
    let beacon = start(
        &upstream,
        None,
        "[[models]]\nname = \"s1\"\ntargets = [{ provider = \"mock\", model = \"stream-dies-early\" }]\nfallbacks = [\"mock/echo\"]\n\n[[models]]\nname = \"s2\"\ntargets = [{ provider = \"mock\", model = \"drop-mid\" }]\nfallbacks = [\"mock/echo\"]\n",
    );
    let out = sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "stream", "request": hi("s1")})).await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["content"], WORDS.concat());
    let rec = beacon.wait_record(&rid(&out));
    assert_eq!(rec["attempts"][0]["error_type"], "stream_failed");
    assert_eq!(rec["outcome"]["kind"], "ok");
    // After its first chunk reached the client, a stream is not retried: it ends with the
    // error chunk.
    let out = sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "stream", "request": hi("s2")})).await;
    assert_eq!(out["error"]["class"], "APIError", "{out}");
    let rec = beacon.wait_record(&rid(&out));
    assert_eq!(rec["outcome"]["kind"], "upstream_error");
    assert!(rec["attempts"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_split_the_load_and_a_dead_target_cools_down_and_comes_back() {
    let upstream = MockUpstream::start().await;
    let beacon = start(
        &upstream,
        None,
        r#"
[routing]
cooldown_failures = 2
cooldown_secs = 5

[[models]]
name = "split"
targets = [{ provider = "mock", model = "heavy", weight = 3 }, { provider = "mock", model = "light", weight = 1 }]

[[models]]
name = "cooling"
targets = [{ provider = "dead", model = "gpt-4o" }]
fallbacks = ["mock/echo"]
"#,
    );
    let items: Vec<Value> = (0..400).map(|_| json!({"request": hi("split")})).collect();
    let out = sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "many", "requests": items})).await;
    assert!(out["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("error").is_none()));
    let heavy = upstream
        .received()
        .iter()
        .filter(|r| r.body["model"] == "heavy")
        .count();
    let share = heavy as f64 / 400.0;
    assert!((0.6..=0.9).contains(&share), "heavy target got {share}");

    // Two failures cool `dead` down: the third request goes straight to the fallback.
    let attempts = |out: &Value| {
        out["headers"]["x-beacon-attempts"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(attempts(&chat(&beacon, hi("cooling")).await), "2");
    assert_eq!(attempts(&chat(&beacon, hi("cooling")).await), "2");
    assert_eq!(
        attempts(&chat(&beacon, hi("cooling")).await),
        "1",
        "skipped while cooling"
    );
    let m = metrics(beacon.addr).await;
    assert_eq!(
        sum_where(
            &m,
            &["beacon_upstream_cooldowns_total", "provider=\"dead\""]
        ),
        1.0
    );
    assert_eq!(
        sum_where(
            &m,
            &["beacon_upstream_cooling_targets", "provider=\"dead\""]
        ),
        1.0
    );
    tokio::time::sleep(Duration::from_millis(5200)).await;
    assert_eq!(
        attempts(&chat(&beacon, hi("cooling")).await),
        "2",
        "tried again after the cooldown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_models_list_and_the_deadline() {
    let upstream = MockUpstream::start().await;
    let beacon = start(
        &upstream,
        None,
        r#"
[routing]
attempt_timeout_secs = 1
deadline_secs = 1.5
max_attempts = 5
"#,
    );
    let mut req = hi("mock/error-503-empty");
    req["extra_body"] = json!({"models": ["dead/gpt-4o", "mock/echo"]});
    let out = chat(&beacon, req).await;
    assert!(out.get("error").is_none(), "{out}");
    assert_eq!(out["headers"]["x-beacon-attempts"], "3");
    let last = upstream.received().last().unwrap().clone();
    assert_eq!(last.body["model"], "echo");
    assert!(
        last.body.get("models").is_none(),
        "`models` is Beacon's, never forwarded"
    );

    // Two stalling targets and a 1.5 s deadline: the chain stops after the second attempt
    // (not the five allowed) with the last error.
    let mut req = hi("mock/slow-headers");
    req["extra_body"] = json!({"models": ["mock/slow-headers", "mock/slow-headers", "mock/echo"]});
    let t = Instant::now();
    let out = chat(&beacon, req).await;
    assert_eq!(out["error"]["status"], 504, "{out}");
    assert_eq!(out["error"]["headers"]["x-beacon-attempts"], "2");
    assert!(t.elapsed() < Duration::from_secs(4));
    assert_eq!(out["error"]["body"]["code"], "attempt_timeout", "{out}");

    // Bad input: `models` must be a list of model names.
    let auth = format!("Bearer {TENANT_KEY}");
    for bad in [json!("mock/echo"), json!([1, 2]), json!([""])] {
        let r = raw_request(
            beacon.addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            json!({"model": "mock/echo", "messages": [], "models": bad}).to_string(),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.json()["error"]["param"], "models");
    }
}

#[test]
fn aliases_and_routing_keys_are_validated_with_field_names() {
    let dir = beacon_e2e::TempDir::new("routing-check");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[routing]
max_attempts = 0
[[providers]]
name = "p"
base_url = "http://p.example/v1"
[[models]]
name = "a"
targets = [{ provider = "nope", model = "m" }, { provider = "p", model = "m", weight = 0 }]
fallbacks = ["b"]
[[models]]
name = "b"
targets = []
fallbacks = ["a"]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(beacon_e2e::beacon_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for needle in [
        "routing.max_attempts",
        "models[0].targets[0].provider",
        "models[0].targets[1].weight",
        "models[1].targets",
        "models[0].fallbacks",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_fails_over_the_same_way() {
    let upstream = MockUpstream::start().await;
    let beacon = start(
        &upstream,
        None,
        r#"
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "http://127.0.0.1:1/v1"
api_key = "sk-ant-dead"

[[providers]]
name = "claude2"
kind = "anthropic"
base_url = "{UPSTREAM}"
api_key = "sk-ant-live"

[[models]]
name = "emb"
targets = [{ provider = "dead", model = "text-embedding-3-small" }]
fallbacks = ["mock/text-embedding-3-small"]

[[models]]
name = "sonnet"
targets = [{ provider = "claude", model = "claude-sonnet-4-5" }, { provider = "claude2", model = "claude-sonnet-4-5" }]
"#
        .replace("{UPSTREAM}", &upstream.base_url())
        .as_str(),
    );
    let auth = format!("Bearer {TENANT_KEY}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let r = raw_request(
        beacon.addr,
        "POST",
        "/v1/embeddings",
        &headers,
        json!({"model": "emb", "input": "hello"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.headers["x-beacon-attempts"], "2");
    let body = json!({"model": "sonnet", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    // Whichever target the weights pick first, the live one serves.
    for _ in 0..4 {
        let r = raw_request(
            beacon.addr,
            "POST",
            "/v1/messages",
            &headers,
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.headers["x-beacon-provider"], "claude2");
    }
}
