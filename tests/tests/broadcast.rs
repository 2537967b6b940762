//! Broadcast end to end: the real `beacon` binary exports spans of real completions to mock
//! Sentry receivers; payloads are decoded by the independent `opentelemetry-proto` package.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::collections::HashMap;
use std::time::Duration;

use beacon_e2e::mock_sentry::{MockSentry, Mode};
use beacon_e2e::mock_upstream::{MockUpstream, WORDS};
use beacon_e2e::{metrics, sdk, sum_where, Beacon, TENANT_KEY};
use serde_json::{json, Value};
use sha2::Digest;

const SECOND_KEY: &str = "bk-second-key-2";

fn sentry_dest(m: &MockSentry, name: &str, extra: &str) -> String {
    format!(
        "\n[[tenants.broadcast.destinations]]\ntype = \"sentry\"\nname = \"{name}\"\notlp_endpoint = \"{}\"\ndsn = \"{}\"\n{extra}\n",
        m.endpoint(),
        m.dsn()
    )
}

/// The test config with broadcast on for tenant `acme` and `destinations` (TOML).
fn broadcasting(upstream: &MockUpstream, destinations: &str) -> String {
    Beacon::config(
        &upstream.base_url(),
        &format!("[tenants.broadcast]\nenabled = true\n{destinations}"),
    )
}

fn key_id(key: &str) -> String {
    format!(
        "key_{}",
        &hex::encode(sha2::Sha256::digest(key.as_bytes()))[..12]
    )
}

fn hello(marker: &str) -> Value {
    json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": format!("Say hello {marker}")}])
}

/// Runs many completions in one SDK process; returns their request ids.
async fn many(beacon: &Beacon, items: Vec<Value>) -> Vec<String> {
    let out = sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "many", "requests": items})).await;
    out["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["content"], WORDS.concat(), "completion failed: {r}");
            r["request_id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn req(model: &str, extra: Value) -> Value {
    let mut request = json!({"model": model, "messages": hello("")});
    if let (Some(r), Some(e)) = (request.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            r.insert(k.clone(), v.clone());
        }
    }
    json!({"request": request})
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

/// Waits until `pred` holds on /metrics.
async fn wait_metrics(
    beacon: &Beacon,
    what: &str,
    pred: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let start = std::time::Instant::now();
    loop {
        let m = metrics(beacon.addr).await;
        if pred(&m) {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; metrics: {:?}",
            m.iter()
                .filter(|(k, _)| k.contains("broadcast"))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_sentry_with_attributes_and_hierarchy() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("4506", "abc123def").await;
    let config = broadcasting(&upstream, &sentry_dest(&sentry, "Sentry", ""));
    let beacon = Beacon::start(&config);

    let mut a = json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "stream", "request": {
        "model": "mock/echo", "messages": hello("MARKER-full"), "temperature": 0.2, "user": "user-9",
        "extra_body": {"session_id": "sess-42", "trace": {
            "trace_id": "workflow-run-42", "trace_name": "support-agent", "span_name": "answer",
            "parent_span_id": "b7ad6b7169203331", "environment": "staging", "release": "2.0.1",
            "customer": {"tier": "gold"}}}}});
    a["headers"] = json!({});
    let out = sdk(a).await;
    assert_eq!(out["content"], WORDS.concat(), "{out}");

    let spans = sentry.wait_spans(3, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 3, "{spans:?}");
    let by_name = |n: &str| {
        spans
            .iter()
            .find(|s| s["name"] == n)
            .unwrap_or_else(|| panic!("no span {n}: {spans:?}"))
    };
    let root = by_name("support-agent");
    let mid = by_name("answer");
    let generation = by_name("chat mock/echo");

    // Hierarchy and the link into the caller's trace.
    let digest = sha2::Sha256::digest(b"workflow-run-42");
    let trace_id = hex::encode(&digest[..16]);
    assert!(spans.iter().all(|s| s["trace_id"] == trace_id));
    assert_eq!(root["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(root["flags"], 0x300);
    assert_eq!(mid["parent_span_id"], root["span_id"]);
    assert_eq!(generation["parent_span_id"], mid["span_id"]);
    assert_eq!(mid["flags"], 0);
    assert_eq!(attr(root, "sentry.op"), "gen_ai.invoke_agent");
    assert_eq!(attr(root, "gen_ai.agent.name"), "support-agent");
    assert_eq!(attr(mid, "sentry.op"), "function");
    assert!(spans.iter().all(|s| s["events"] == 0), "no span events");

    // The generation span's attributes.
    assert_eq!(generation["kind"], 3, "SPAN_KIND_CLIENT");
    for (k, v) in [
        ("sentry.op", json!("gen_ai.chat")),
        ("gen_ai.operation.name", json!("chat")),
        ("gen_ai.provider.name", json!("mock")),
        ("gen_ai.request.model", json!("mock/echo")),
        ("gen_ai.response.model", json!("echo-2024-08-06")),
        ("gen_ai.response.id", json!("chatcmpl-mock123")),
        ("gen_ai.response.finish_reasons", json!("stop")),
        ("gen_ai.request.stream", json!(true)),
        ("gen_ai.response.streaming", json!(true)),
        ("gen_ai.request.temperature", json!(0.2)),
        ("gen_ai.usage.input_tokens", json!(12)),
        ("gen_ai.usage.output_tokens", json!(6)),
        ("gen_ai.usage.total_tokens", json!(18)),
        ("gen_ai.usage.cache_read.input_tokens", json!(4)),
        ("gen_ai.cost.total_tokens", json!(0.000085)),
        ("http.response.status_code", json!(200)),
        ("beacon.tenant", json!("acme")),
        ("beacon.usage.estimated", json!(false)),
        ("user.id", json!("user-9")),
        ("session.id", json!("sess-42")),
        ("gen_ai.conversation.id", json!("sess-42")),
        ("sentry.environment", json!("staging")),
        ("sentry.release", json!("2.0.1")),
        ("trace.metadata.customer", json!("{\"tier\":\"gold\"}")),
        ("trace.metadata.trace_id", json!("workflow-run-42")),
    ] {
        assert_eq!(attr(generation, k), &v, "{k}: {generation}");
    }
    let input_cost = attr(generation, "gen_ai.cost.input_tokens")
        .as_f64()
        .unwrap();
    let output_cost = attr(generation, "gen_ai.cost.output_tokens")
        .as_f64()
        .unwrap();
    assert!((input_cost - 0.000025).abs() < 1e-12 && (output_cost - 0.00006).abs() < 1e-12);
    assert!(
        attr(generation, "gen_ai.response.time_to_first_chunk")
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(attr(generation, "gen_ai.input.messages")
        .as_str()
        .unwrap()
        .contains("MARKER-full"));
    assert!(attr(generation, "gen_ai.system_instructions")
        .as_str()
        .unwrap()
        .contains("Be brief."));
    assert!(attr(generation, "gen_ai.output.messages")
        .as_str()
        .unwrap()
        .contains("mock upstream"));
    assert!(attr(generation, "sentry.client_sample_rate").is_null());
    assert_eq!(generation["resource"]["service.name"], "beacon");
    assert_eq!(generation["resource"]["telemetry.sdk.language"], "rust");
    assert!(generation["resource"]
        .get("deployment.environment")
        .is_none());
    assert!(generation["end"].as_u64().unwrap() > generation["start"].as_u64().unwrap());

    // What went over the wire.
    let e = &sentry.exports()[0];
    assert_eq!(
        e.headers["x-sentry-auth"],
        format!(
            "Sentry sentry_key=abc123def, sentry_version=7, sentry_client=beacon/{}",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(e.headers["content-type"], "application/x-protobuf");
    assert_eq!(e.headers["content-encoding"], "gzip");
    assert!(!e.headers.contains_key("authorization"));
    assert_eq!(sentry.refused(), 0);

    let m = wait_metrics(&beacon, "exported", |m| {
        sum_where(
            m,
            &["beacon_broadcast_exported_total", "destination=\"Sentry\""],
        ) >= 1.0
    })
    .await;
    assert_eq!(sum_where(&m, &["beacon_broadcast_dropped_total"]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sentry_trace_header_links_into_the_callers_trace() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("7", "k7").await;
    let config = broadcasting(&upstream, &sentry_dest(&sentry, "S", ""));
    let beacon = Beacon::start(&config);
    let mut a = json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "chat", "request": {"model": "mock/echo", "messages": hello("")}});
    a["headers"] = json!({"sentry-trace": "771a43a4192642f0b136d5159a501700-b7ad6b7169203331-1"});
    sdk(a).await;
    let spans = sentry.wait_spans(1, Duration::from_secs(10)).await;
    assert_eq!(spans[0]["trace_id"], "771a43a4192642f0b136d5159a501700");
    assert_eq!(spans[0]["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(spans[0]["flags"], 0x300);
    assert_eq!(spans[0]["name"], "chat mock/echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_did_not_sample_its_trace_gets_no_sentry_spans() {
    let upstream = MockUpstream::start().await;
    let following = MockSentry::start("8", "k8").await;
    let not_following = MockSentry::start("9", "k9").await;
    let collector = MockSentry::start_collector().await;
    let otlp = |name: &str, extra: &str| {
        format!(
            "\n[[tenants.broadcast.destinations]]\ntype = \"otlp\"\nname = \"{name}\"\nendpoint = \"http://{}/v1/traces\"\n{extra}\n",
            collector.addr
        )
    };
    let config = broadcasting(
        &upstream,
        &(sentry_dest(&following, "follows", "")
            + &sentry_dest(&not_following, "ignores", "follow_caller_sampling = false")
            + &otlp("collector", "")),
    );
    let beacon = Beacon::start(&config);
    let call = |trace: &str, baggage: Option<&str>| {
        let mut a = json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "chat", "request": {"model": "mock/echo", "messages": hello("")}});
        a["headers"] = json!({"sentry-trace": trace});
        if let Some(b) = baggage {
            a["headers"]["baggage"] = json!(b);
        }
        a
    };
    // Not sampled (-0): the Sentry destination that follows the caller exports nothing; the
    // one switched off and the OTLP collector (off by default) export the span.
    sdk(call(
        "771a43a4192642f0b136d5159a501700-b7ad6b7169203331-0",
        None,
    ))
    .await;
    let ignored = not_following.wait_spans(1, Duration::from_secs(10)).await;
    assert_eq!(ignored[0]["trace_id"], "771a43a4192642f0b136d5159a501700");
    collector.wait_spans(1, Duration::from_secs(10)).await;
    // Sampled, with the caller's rate in baggage: everyone exports, and Sentry is told the
    // rate for extrapolation.
    sdk(call(
        "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        Some("sentry-trace_id=0af7651916cd43dd8448eb211c80319c,sentry-sample_rate=0.25"),
    ))
    .await;
    let spans = following.wait_spans(1, Duration::from_secs(10)).await;
    assert_eq!(
        spans.len(),
        1,
        "the unsampled completion reached Sentry: {spans:?}"
    );
    assert_eq!(spans[0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(attr(&spans[0], "sentry.client_sample_rate"), 0.25);
    let m = wait_metrics(&beacon, "sampled_out", |m| {
        sum_where(m, &["beacon_broadcast_dropped_total", "sampled_out"]) >= 1.0
    })
    .await;
    assert_eq!(
        sum_where(
            &m,
            &[
                "beacon_broadcast_dropped_total",
                "destination=\"follows\"",
                "sampled_out"
            ]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_become_deduplicated_sentry_error_events_linked_to_the_span() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("13", "kerr").await;
    let quiet = MockSentry::start("14", "kquiet").await;
    // One attempt per request: the failures are relayed at once, not retried.
    let config = broadcasting(
        &upstream,
        &(sentry_dest(&sentry, "S", "") + &sentry_dest(&quiet, "Q", "error_events = false")),
    ) + "\n[routing]\nmax_attempts = 1\n";
    let beacon = Beacon::start(&config);
    let marker = "MARKER-err-9c1";
    let failing = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| json!({"request": {"model": "mock/error-500", "messages": hello(marker)}}))
            .collect()
    };
    let out = sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "many", "requests": failing(1)})).await;
    assert!(out["results"][0]["error"].is_string(), "{out}");
    let start = std::time::Instant::now();
    while sentry.envelopes().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no envelope");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let envelope = sentry.envelopes()[0].clone();
    assert!(!envelope.contains(marker), "prompt text in an error event");
    let event: Value = serde_json::from_str(envelope.lines().nth(2).unwrap()).unwrap();
    assert_eq!(event["level"], "error");
    assert_eq!(event["exception"]["values"][0]["type"], "UpstreamError");
    assert_eq!(
        event["fingerprint"],
        json!(["mock", "mock/error-500", "UpstreamError", "500"])
    );
    assert_eq!(event["tags"]["beacon.tenant"], "acme");
    // Linked to the generation span Sentry got.
    let spans = sentry.wait_spans(1, Duration::from_secs(10)).await;
    assert_eq!(event["contexts"]["trace"]["trace_id"], spans[0]["trace_id"]);
    assert_eq!(event["contexts"]["trace"]["span_id"], spans[0]["span_id"]);

    // A burst of 20 identical failures within the same minute: its one event was the first
    // one, so all 20 are counted as deduplicated and none is sent.
    sdk(json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "many", "requests": failing(20)})).await;
    let m = wait_metrics(&beacon, "20 deduplicated", |m| {
        sum_where(
            m,
            &[
                "beacon_broadcast_error_events_total",
                "destination=\"S\"",
                "deduplicated",
            ],
        ) >= 20.0
    })
    .await;
    assert_eq!(
        sum_where(
            &m,
            &[
                "beacon_broadcast_error_events_total",
                "destination=\"S\"",
                "outcome=\"sent\""
            ]
        ),
        1.0
    );
    assert_eq!(sentry.envelopes().len(), 1);
    // A destination with error_events = false gets the spans and no events.
    assert!(quiet.envelopes().is_empty());
    assert_eq!(
        sum_where(
            &m,
            &["beacon_broadcast_error_events_total", "destination=\"Q\""]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn privacy_mode_keeps_every_text_out_of_the_payload() {
    let upstream = MockUpstream::start().await;
    let private = MockSentry::start("11", "kp").await;
    let full = MockSentry::start("12", "kf").await;
    let config = broadcasting(
        &upstream,
        &(sentry_dest(&private, "private", "privacy_mode = true")
            + &sentry_dest(&full, "full", "")),
    );
    let beacon = Beacon::start(&config);
    let marker = "MARKER-5d1e-privacy";
    let items = vec![
        json!({"request": {"model": "mock/echo", "messages": hello(marker)}}),
        json!({"request": {"model": "mock/echo", "messages": hello(marker)}, "stream": true}),
    ];
    many(&beacon, items).await;
    let p = private.wait_spans(2, Duration::from_secs(10)).await;
    full.wait_spans(2, Duration::from_secs(10)).await;
    for e in private.exports() {
        for bytes in [&e.protobuf[..], &e.raw[..]] {
            let text = String::from_utf8_lossy(bytes);
            for secret in [marker, "Be brief", "mock upstream", "Hello"] {
                assert!(
                    !text.contains(secret),
                    "{secret} found in a privacy-mode payload"
                );
            }
        }
    }
    // Tokens, cost, timing and model are still there.
    for s in &p {
        assert_eq!(attr(s, "gen_ai.usage.input_tokens"), 12);
        assert!(attr(s, "gen_ai.cost.total_tokens").as_f64().unwrap() > 0.0);
        assert_eq!(attr(s, "gen_ai.request.model"), "mock/echo");
        assert!(attr(s, "gen_ai.input.messages").is_null());
    }
    let text: String = full
        .exports()
        .iter()
        .map(|e| String::from_utf8_lossy(&e.protobuf).into_owned())
        .collect();
    assert!(
        text.contains(marker),
        "the non-private destination gets the content"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_isolated() {
    let upstream = MockUpstream::start().await;
    let a = MockSentry::start("21", "ka").await;
    let b = MockSentry::start("22", "kb").await;
    let config = Beacon::config(
        &upstream.base_url(),
        &format!(
            "[tenants.broadcast]\nenabled = true\n{}\n[[tenants]]\nid = \"beta\"\napi_keys = [\"{SECOND_KEY}\"]\n[tenants.broadcast]\nenabled = true\n{}",
            sentry_dest(&a, "A", ""),
            sentry_dest(&b, "B", "")
        ),
    );
    let beacon = Beacon::start(&config);
    let mut items = vec![req("mock/echo", json!({})); 3];
    items.push(
        json!({"api_key": SECOND_KEY, "request": {"model": "mock/echo", "messages": hello("")}}),
    );
    many(&beacon, items).await;
    let sa = a.wait_spans(3, Duration::from_secs(10)).await;
    let sb = b.wait_spans(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.spans().await.len(), 3);
    assert_eq!(b.spans().await.len(), 1);
    assert!(sa.iter().all(|s| attr(s, "beacon.tenant") == "acme"));
    assert!(sb.iter().all(|s| attr(s, "beacon.tenant") == "beta"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sampling_keeps_sessions_whole_and_the_key_allowlist_filters() {
    let upstream = MockUpstream::start().await;
    let sampled = MockSentry::start("31", "ks").await;
    let only_first = MockSentry::start("32", "ko").await;
    let extra = format!(
        "api_keys = [\"{TENANT_KEY}\", \"{SECOND_KEY}\"]\n[tenants.broadcast]\nenabled = true\n{}{}",
        sentry_dest(&sampled, "sampled", "sampling_rate = 0.5"),
        sentry_dest(&only_first, "only-first", &format!("api_keys = [\"{}\"]", key_id(TENANT_KEY)))
    );
    // The base config declares the tenant's keys; replace them with both keys.
    let config = Beacon::config(&upstream.base_url(), "")
        .replace(&format!("api_keys = [\"{TENANT_KEY}\"]"), "")
        + &extra;
    let beacon = Beacon::start(&config);
    let mut items = Vec::new();
    for session in 0..10 {
        for _ in 0..2 {
            items.push(req(
                "mock/echo",
                json!({"extra_body": {"session_id": format!("session-{session}")}}),
            ));
        }
    }
    for i in 0..5 {
        items.push(json!({"api_key": SECOND_KEY, "request": {"model": "mock/echo", "messages": hello(""), "extra_body": {"session_id": format!("other-{i}")}}}));
    }
    many(&beacon, items).await;

    // Every record is accounted for at each destination.
    let m = wait_metrics(
        &beacon,
        "all 25 records accounted at both destinations",
        |m| {
            let done = |d: &str| {
                sum_where(
                    m,
                    &[
                        "beacon_broadcast_exported_total",
                        &format!("destination=\"{d}\""),
                    ],
                ) + sum_where(
                    m,
                    &[
                        "beacon_broadcast_dropped_total",
                        &format!("destination=\"{d}\""),
                    ],
                )
            };
            done("sampled") == 25.0 && done("only-first") == 25.0
        },
    )
    .await;
    assert_eq!(
        sum_where(
            &m,
            &[
                "beacon_broadcast_dropped_total",
                "destination=\"only-first\"",
                "reason=\"filtered\""
            ]
        ),
        5.0
    );
    assert_eq!(
        sum_where(
            &m,
            &[
                "beacon_broadcast_exported_total",
                "destination=\"only-first\""
            ]
        ),
        20.0
    );
    let kept = sum_where(
        &m,
        &["beacon_broadcast_exported_total", "destination=\"sampled\""],
    );
    let sampled_out = sum_where(
        &m,
        &[
            "beacon_broadcast_dropped_total",
            "destination=\"sampled\"",
            "reason=\"sampled_out\"",
        ],
    );
    assert_eq!(kept + sampled_out, 25.0);
    assert!(
        kept > 0.0 && sampled_out > 0.0,
        "kept {kept}, sampled out {sampled_out}"
    );

    let spans = sampled
        .wait_spans(kept as usize, Duration::from_secs(10))
        .await;
    let mut per_session: HashMap<String, usize> = HashMap::new();
    for s in &spans {
        assert_eq!(attr(s, "sentry.client_sample_rate"), 0.5);
        *per_session
            .entry(attr(s, "session.id").as_str().unwrap().to_string())
            .or_default() += 1;
    }
    for (session, n) in per_session {
        if session.starts_with("session-") {
            assert_eq!(n, 2, "session {session} was split by sampling");
        }
    }
    assert_eq!(
        only_first
            .wait_spans(20, Duration::from_secs(10))
            .await
            .len(),
        20
    );
}

async fn fault_setup(mode: Mode, extra: &str) -> (MockUpstream, MockSentry, Beacon) {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("41", "kfault").await;
    sentry.set_mode(mode);
    let config = broadcasting(&upstream, &sentry_dest(&sentry, "S", "")) + extra;
    let beacon = Beacon::start(&config);
    (upstream, sentry, beacon)
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_exports_are_counted_and_completions_unaffected() {
    let (_u, sentry, beacon) = fault_setup(Mode::Forbidden, "").await;
    many(&beacon, vec![req("mock/echo", json!({})); 5]).await;
    let m = wait_metrics(&beacon, "5 rejected", |m| {
        sum_where(
            m,
            &["beacon_broadcast_dropped_total", "reason=\"rejected\""],
        ) == 5.0
    })
    .await;
    assert_eq!(sum_where(&m, &["beacon_broadcast_exported_total"]), 0.0);
    // 403 is not retried.
    assert!(sentry.requests() <= 5, "{} requests", sentry.requests());
    assert!(
        beacon
            .logs()
            .contains("event submission rejected with_reason: ProjectId"),
        "Sentry's error text is logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unavailable_then_recovered_delivers_everything() {
    let (_u, sentry, beacon) = fault_setup(Mode::Unavailable, "").await;
    many(&beacon, vec![req("mock/echo", json!({})); 4]).await;
    // The exporter retries while the receiver answers 503...
    let start = std::time::Instant::now();
    while sentry.requests() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and delivers once it recovers.
    sentry.set_mode(Mode::Ok);
    sentry.wait_spans(4, Duration::from_secs(15)).await;
    let m = metrics(beacon.addr).await;
    assert_eq!(sum_where(&m, &["beacon_broadcast_dropped_total"]), 0.0);
    assert_eq!(sum_where(&m, &["beacon_broadcast_exported_total"]), 4.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_exports_wait_and_are_delivered() {
    let (_u, sentry, beacon) = fault_setup(Mode::RateLimited, "").await;
    many(&beacon, vec![req("mock/echo", json!({})); 3]).await;
    let start = std::time::Instant::now();
    while sentry.requests() < 1 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Wait until the rate limit is over, then let the receiver accept.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    sentry.set_mode(Mode::Ok);
    sentry.wait_spans(3, Duration::from_secs(15)).await;
    // Retry-After: 1 is honoured by every batch of the destination: after the first 429,
    // nothing is sent for a second, except batches that were already on the wire.
    let times = sentry.request_times();
    let t0 = times[0];
    let during: Vec<_> = times
        .iter()
        .filter(|t| **t > t0 + Duration::from_millis(100) && **t < t0 + Duration::from_millis(950))
        .collect();
    assert!(
        during.is_empty(),
        "{} requests inside the Retry-After window",
        during.len()
    );
    assert_eq!(
        sum_where(
            &metrics(beacon.addr).await,
            &["beacon_broadcast_dropped_total"]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hanging_receiver_times_out_and_recovers() {
    let (_u, sentry, beacon) = fault_setup(Mode::Hang, "").await;
    // Completions are not held up by the hanging destination.
    let ids = many(&beacon, vec![req("mock/echo", json!({})); 5]).await;
    for id in &ids {
        assert_eq!(beacon.wait_record(id)["outcome"]["kind"], "ok");
    }
    let start = std::time::Instant::now();
    while sentry.requests() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the 1 s export timeout should trigger a retry"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sentry.set_mode(Mode::Ok);
    sentry.wait_spans(5, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_port_exhausts_retries_and_counts_them() {
    let upstream = MockUpstream::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dest = format!(
        "\n[[tenants.broadcast.destinations]]\ntype = \"sentry\"\nname = \"down\"\notlp_endpoint = \"http://{closed}/api/5/integration/otlp/v1/traces\"\ndsn = \"http://k@{closed}/5\"\n"
    );
    let beacon = Beacon::start(&Beacon::config(
        &upstream.base_url(),
        &format!("[tenants.broadcast]\nenabled = true\n{dest}"),
    ));
    many(&beacon, vec![req("mock/echo", json!({})); 3]).await;
    let m = wait_metrics(&beacon, "retries exhausted", |m| {
        sum_where(
            m,
            &[
                "beacon_broadcast_dropped_total",
                "reason=\"retries_exhausted\"",
            ],
        ) == 3.0
    })
    .await;
    assert_eq!(sum_where(&m, &["beacon_broadcast_exported_total"]), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_destination_drops_and_counts_instead_of_growing() {
    // A small per-destination buffer so it fills: 2 batches in flight + 4 queued.
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("51", "kstuck").await;
    sentry.set_mode(Mode::Hang);
    let config = broadcasting(&upstream, &sentry_dest(&sentry, "S", "")).replace(
        "flush_interval_secs = 0.2",
        "flush_interval_secs = 0.2\ndestination_queue_capacity = 4\nmax_batch_records = 1",
    );
    let beacon = Beacon::start(&config);
    let n = 40;
    let ids = many(&beacon, vec![req("mock/echo", json!({})); n]).await;
    assert_eq!(ids.len(), n);
    let m = wait_metrics(&beacon, "queue_full drops", |m| {
        sum_where(
            m,
            &["beacon_broadcast_dropped_total", "reason=\"queue_full\""],
        ) > 0.0
    })
    .await;
    let queue_full = sum_where(
        &m,
        &["beacon_broadcast_dropped_total", "reason=\"queue_full\""],
    );
    // At most 2 in flight, 4 queued and 1 being batched are held; everything else was dropped and counted.
    assert!(queue_full >= (n - 8) as f64, "{queue_full}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", beacon.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss_kib < 200 * 1024, "RSS {rss_kib} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_otlp_destination_gets_its_headers() {
    let upstream = MockUpstream::start().await;
    let collector = MockSentry::start_collector().await;
    let dest = format!(
        "\n[[tenants.broadcast.destinations]]\ntype = \"otlp\"\nname = \"Tempo\"\nendpoint = \"http://{}/v1/traces\"\nheaders = {{ authorization = \"Bearer tempo-token\", x-scope-orgid = \"acme\" }}\n",
        collector.addr
    );
    let beacon = Beacon::start(&Beacon::config(
        &upstream.base_url(),
        &format!("[tenants.broadcast]\nenabled = true\n{dest}"),
    ));
    many(&beacon, vec![req("mock/echo", json!({}))]).await;
    let spans = collector.wait_spans(1, Duration::from_secs(10)).await;
    assert_eq!(attr(&spans[0], "gen_ai.request.model"), "mock/echo");
    let e = &collector.exports()[0];
    assert_eq!(e.headers["authorization"], "Bearer tempo-token");
    assert_eq!(e.headers["x-scope-orgid"], "acme");
    assert!(!e.headers.contains_key("x-sentry-auth"));
    // The collector's token never shows up in Beacon's logs.
    assert!(!beacon.logs().contains("tempo-token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn broadcast_switch_off_exports_nothing() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("61", "koff").await;
    let beacon = Beacon::start(&Beacon::config(
        &upstream.base_url(),
        &format!(
            "[tenants.broadcast]\nenabled = false\n{}",
            sentry_dest(&sentry, "S", "")
        ),
    ));
    let ids = many(&beacon, vec![req("mock/echo", json!({})); 2]).await;
    for id in &ids {
        beacon.wait_record(id);
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sentry.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_flushes_queued_spans_before_exit() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("71", "kterm").await;
    // A long flush interval: the spans are still batched when SIGTERM arrives.
    let config = broadcasting(&upstream, &sentry_dest(&sentry, "S", ""))
        .replace("flush_interval_secs = 0.2", "flush_interval_secs = 30");
    let mut beacon = Beacon::start(&config);
    many(&beacon, vec![req("mock/echo", json!({})); 3]).await;
    assert_eq!(sentry.requests(), 0);
    beacon.terminate();
    let status =
        tokio::task::spawn_blocking(move || (beacon.wait_exit(Duration::from_secs(10)), beacon))
            .await
            .unwrap();
    assert!(status.0.is_some_and(|s| s.success()), "{}", status.1.logs());
    assert_eq!(sentry.spans().await.len(), 3, "{}", status.1.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_hanging_destination_stops_at_the_deadline_and_counts() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("81", "khang").await;
    sentry.set_mode(Mode::Hang);
    let config = broadcasting(&upstream, &sentry_dest(&sentry, "S", ""))
        .replace("export_timeout_secs = 1", "export_timeout_secs = 60");
    let mut beacon = Beacon::start(&config);
    many(&beacon, vec![req("mock/echo", json!({})); 3]).await;
    let start = std::time::Instant::now();
    while sentry.requests() == 0 {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    beacon.terminate();
    let started = std::time::Instant::now();
    let (status, beacon) =
        tokio::task::spawn_blocking(move || (beacon.wait_exit(Duration::from_secs(15)), beacon))
            .await
            .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{}", beacon.logs());
    // shutdown_deadline_secs = 3 in the test config.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let logs = beacon.logs();
    assert!(
        logs.contains("broadcast pipeline stopped") && logs.contains("dropped_total=3"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_calls_are_exported_as_tool_call_parts() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("91", "ktool").await;
    let beacon = Beacon::start(&broadcasting(&upstream, &sentry_dest(&sentry, "S", "")));
    let out = sdk(
        json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "stream",
                         "request": {"model": "mock/tool-call", "messages": hello("")}}),
    )
    .await;
    assert!(out.get("error").is_none(), "{out}");
    sdk(
        json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "chat",
               "request": {"model": "mock/tool-call", "messages": hello("")}}),
    )
    .await;
    let spans = sentry.wait_spans(2, Duration::from_secs(10)).await;
    for s in &spans {
        let output: Value =
            serde_json::from_str(attr(s, "gen_ai.output.messages").as_str().unwrap()).unwrap();
        assert_eq!(
            output[0]["parts"],
            json!([{"type": "tool_call", "id": "call_abc", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}]),
            "{s}"
        );
        assert_eq!(output[0]["finish_reason"], "tool_calls");
        assert_eq!(
            attr(s, "gen_ai.response.finish_reasons"),
            &json!("tool_calls")
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_round_trip_yields_an_execute_tool_span_between_the_two_generations() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("93", "ktoolrun").await;
    let beacon = Beacon::start(&broadcasting(&upstream, &sentry_dest(&sentry, "S", "")));
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let trace = json!({"trace_id": "weather-run-1", "trace_name": "weather-agent"});
    let ask = json!({"role": "user", "content": "Weather in Paris?"});
    let first = sdk(
        json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "chat",
        "request": {"model": "mock/tool-call", "messages": [ask], "tools": tools,
                    "extra_body": {"trace": trace}}}),
    )
    .await;
    let call = first["completion"]["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather", "{first}");
    // The app runs the tool, then sends its result back with the conversation so far.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let assistant = json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": call["id"], "type": "function",
        "function": {"name": "get_weather", "arguments": call["function"]["arguments"]}}]});
    let result = json!({"role": "tool", "tool_call_id": call["id"], "content": "18C and cloudy"});
    let messages = json!([ask, assistant, result]);
    let second = json!({"base_url": beacon.base_url(), "api_key": TENANT_KEY, "mode": "chat",
        "request": {"model": "mock/echo", "messages": messages, "tools": tools,
                    "extra_body": {"trace": trace}}});
    let out = sdk(second.clone()).await;
    assert!(out.get("error").is_none(), "{out}");
    // Two agent roots, two generations and one tool run.
    let spans = sentry.wait_spans(5, Duration::from_secs(10)).await;
    // A later turn resends the same result: no second tool span for it.
    let out = sdk(second).await;
    assert!(out.get("error").is_none(), "{out}");
    let spans = {
        let all = sentry
            .wait_spans(spans.len() + 2, Duration::from_secs(10))
            .await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let settled = sentry.spans().await;
        assert_eq!(settled.len(), all.len(), "{settled:?}");
        settled
    };
    let tools_run: Vec<&Value> = spans
        .iter()
        .filter(|s| attr(s, "sentry.op") == "gen_ai.execute_tool")
        .collect();
    assert_eq!(tools_run.len(), 1, "{spans:?}");
    let tool = tools_run[0];
    let generations: Vec<&Value> = spans
        .iter()
        .filter(|s| attr(s, "sentry.op") == "gen_ai.chat")
        .collect();
    assert_eq!(generations.len(), 3, "{spans:?}");
    let (asking, answering) = (
        generations
            .iter()
            .find(|g| g["name"] == "chat mock/tool-call")
            .unwrap(),
        generations
            .iter()
            .filter(|g| g["name"] == "chat mock/echo")
            .min_by_key(|g| g["start"].as_u64())
            .unwrap(),
    );
    assert_eq!(tool["name"], "execute_tool get_weather");
    assert_eq!(attr(tool, "gen_ai.tool.name"), "get_weather");
    assert_eq!(attr(tool, "gen_ai.tool.call.id"), &call["id"]);
    assert_eq!(
        attr(tool, "gen_ai.tool.call.arguments"),
        &call["function"]["arguments"]
    );
    assert_eq!(attr(tool, "gen_ai.tool.call.result"), "18C and cloudy");
    assert_eq!(attr(tool, "gen_ai.agent.name"), "weather-agent");
    // Between the two generations: from the asking completion's end to the result's arrival,
    // beside the answering generation in its trace.
    let (start, end) = (
        tool["start"].as_u64().unwrap(),
        tool["end"].as_u64().unwrap(),
    );
    assert_eq!(start, asking["end"].as_u64().unwrap());
    assert_eq!(end, answering["start"].as_u64().unwrap());
    assert!(
        end - start >= 300_000_000,
        "the tool ran at least 300 ms: {tool}"
    );
    assert_eq!(tool["trace_id"], answering["trace_id"]);
    assert_eq!(tool["parent_span_id"], answering["parent_span_id"]);
    // The record log keeps the link (ids and names only).
    let records = beacon.records();
    assert!(records
        .iter()
        .any(|r| r["tools"]["executions"][0]["name"] == "get_weather"));
}
