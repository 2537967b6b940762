//! `beacon demo` (issue 16): the real binary with no config, no provider account and no
//! network. The test reads the first-run block on stdout as a newcomer would, completes
//! requests through the official openai SDK (chat, a chat stream, a Responses stream),
//! and finds each in the Recent completions API with its tokens, cost, timings, the demo
//! destination's delivery and the spans as exported; at shutdown the in-process OTLP
//! receiver reports the spans it took in.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::process::Command;
use std::time::{Duration, Instant};

use beacon_e2e::{apis, field, raw_request, sdk, Demo, TempDir};
use serde_json::{json, Value};

async fn admin_get(addr: std::net::SocketAddr, token: &str, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let r = raw_request(addr, "GET", path, &[("authorization", &auth)], "").await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread")]
async fn beacon_demo_completes_requests_and_shows_them_in_recent_completions() {
    let dir = TempDir::new("demo");
    let mut demo = Demo::start(dir.path());
    let (base_url, addr, key, token) = (
        demo.base_url.clone(),
        demo.addr,
        demo.key.clone(),
        demo.token.clone(),
    );
    let block = demo.block.clone();
    let try_it = field(&block, "Try it");
    assert!(
        try_it.contains("demo/echo-1") && try_it.contains(&key),
        "{try_it}"
    );
    assert!(field(&block, "Console").ends_with("/console"));

    // Three completions through the official SDK.
    let chat = sdk(json!({"base_url": base_url, "api_key": key, "mode": "chat",
        "request": {"model": "demo/echo-1", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello from the demo test"}]}}))
    .await;
    assert_eq!(
        chat["completion"]["choices"][0]["message"]["content"], "Echo: Hello from the demo test",
        "{chat}"
    );
    let chat_id = chat["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_string();
    let prompt_tokens = chat["completion"]["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    assert!(prompt_tokens > 0);
    let stream = sdk(
        json!({"base_url": base_url, "api_key": key, "mode": "stream",
        "request": {"model": "demo/echo-1", "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "stream these words back"}]}}),
    )
    .await;
    assert_eq!(
        stream["content"], "Echo: stream these words back",
        "{stream}"
    );
    assert!(
        stream["chunks"].as_array().unwrap().len() > 5,
        "word by word: {stream}"
    );
    let stream_id = stream["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_string();
    let responses = apis(
        json!({"base_url": base_url, "api_key": key, "mode": "responses_stream",
        "request": {"model": "demo/echo-1", "input": "and the Responses API"}}),
    )
    .await;
    assert_eq!(
        responses["text"], "Echo: and the Responses API",
        "{responses}"
    );
    assert_eq!(
        responses["types"].as_array().unwrap().last().unwrap(),
        "response.completed"
    );

    // All three in Recent completions, delivered to the demo receiver.
    let started = Instant::now();
    let list = loop {
        let (status, v) = admin_get(addr, &token, "/admin/v1/tenants/demo/recent").await;
        assert_eq!(status, 200, "{v}");
        let list = v["data"].as_array().unwrap().clone();
        if list.len() == 3
            && list
                .iter()
                .all(|e| e["destinations"][0]["state"] == "exported")
        {
            break list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not all three exported: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(list[0]["record"]["api"], "responses", "newest first");
    let chat_entry = list.iter().find(|e| e["request_id"] == chat_id).unwrap();
    let record = &chat_entry["record"];
    assert_eq!(record["requested_model"], "demo/echo-1");
    assert_eq!(record["outcome"]["kind"], "ok");
    assert_eq!(record["usage"]["prompt_tokens"], prompt_tokens);
    // 2.5 and 10 USD per million tokens (the demo's price).
    let cost: f64 = record["cost"]["total"].as_str().unwrap().parse().unwrap();
    let completion_tokens = record["usage"]["completion_tokens"].as_u64().unwrap() as f64;
    let expected = (prompt_tokens as f64 * 2.5 + completion_tokens * 10.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");
    assert!(record["timings"]["last_byte_us"].as_u64().unwrap() > 0);
    assert_eq!(chat_entry["destinations"][0]["name"], "demo-receiver");
    assert!(
        chat_entry.get("spans").is_none() && chat_entry["destinations"][0].get("spans").is_none(),
        "the list has no spans"
    );
    let stream_entry = list.iter().find(|e| e["request_id"] == stream_id).unwrap();
    assert!(
        stream_entry["record"]["timings"]["first_chunk_us"]
            .as_u64()
            .is_some(),
        "{stream_entry}"
    );

    // One completion with its spans as they were exported.
    let (status, detail) = admin_get(
        addr,
        &token,
        &format!("/admin/v1/tenants/demo/recent/{chat_id}"),
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    let spans = detail["destinations"][0]["spans"].as_array().unwrap();
    let generation = spans
        .iter()
        .find(|s| s["attributes"]["gen_ai.operation.name"] == "chat")
        .unwrap_or_else(|| panic!("no generation span: {detail}"));
    assert_eq!(generation["name"], "chat demo/echo-1");
    assert_eq!(
        generation["attributes"]["gen_ai.usage.input_tokens"],
        prompt_tokens
    );
    assert_eq!(
        generation["attributes"]["beacon.request_id"],
        chat_id.as_str()
    );
    assert!(
        generation["attributes"]["gen_ai.input.messages"]
            .as_str()
            .unwrap()
            .contains("Hello from the demo test"),
        "content is exported (no privacy mode): {generation}"
    );
    assert_eq!(generation["trace_id"].as_str().unwrap().len(), 32);
    assert!(
        generation["attributes"]
            .get("beacon.content.truncated")
            .is_none(),
        "a short answer is not marked truncated: {generation}"
    );

    // Scoped and bounded: another tenant's id, an unknown id, no token.
    let (status, v) = admin_get(addr, &token, "/admin/v1/tenants/demo/recent/req_unknown").await;
    assert_eq!(status, 404, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("last 100"));
    let (status, _) = admin_get(addr, "bt_wrong", "/admin/v1/tenants/demo/recent").await;
    assert_eq!(status, 401);
    let (status, _) = admin_get(addr, &key, "/admin/v1/tenants/demo/recent").await;
    assert_eq!(status, 401, "a client key does not sign into the admin API");

    // Shutdown: the receiver took in the spans the sender says it delivered.
    let pid = demo.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    while demo.child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "demo did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let logs = demo.stderr.lock().unwrap().join("\n");
    let line = logs
        .lines()
        .find(|l| l.contains("OTLP receiver took these in"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains("exports="), "{line}");
    let spans_in: u64 = line
        .split("spans=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(spans_in >= 3, "{line}");
}
