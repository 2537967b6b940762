//! SPEC §4.4's destination presets through the real `beacon` binary: each one created
//! through the admin API only when its Test Connection passes against a mock of that
//! service's ingestion (its path, auth header, content type and answer codes), then one
//! completion exported to all of them at once — decoded by the official `opentelemetry-proto`
//! package, in each one's attribute dialect; the webhook's signature verified by the receiver.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::net::SocketAddr;

use beacon_e2e::mock_ingest::{hmac_signature, MockIngest, Service};
use beacon_e2e::mock_sentry::decode_bodies;
use beacon_e2e::mock_upstream::MockUpstream;
use beacon_e2e::{raw_request, Beacon, TempDir};
use serde_json::{json, Value};

const OPERATOR: &str = "op-token-destinations-0123456789";
const WEBHOOK_SECRET: &str = "whsec-0123456789abcdef";

async fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {OPERATOR}");
    let resp = raw_request(
        addr,
        method,
        &format!("/admin/v1{path}"),
        &[
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ],
        body.map(|b| b.to_string()).unwrap_or_default(),
    )
    .await;
    let v = if resp.body.is_empty() {
        Value::Null
    } else {
        resp.json()
    };
    (resp.status, v)
}

/// One preset: its mock, the fields that pass, the same with a wrong credential, and the
/// status its ingestion answers a good export with.
struct Preset {
    mock: MockIngest,
    good: Value,
    wrong: Value,
    refused: u16,
    accepted: u16,
}

async fn presets() -> Vec<Preset> {
    let mut out = Vec::new();
    let mock = MockIngest::start(Service::langfuse("pk-lf-test", "sk-lf-secret-1")).await;
    out.push(Preset {
        good: json!({"type": "langfuse", "name": "Langfuse", "host": mock.base(),
            "public_key": "pk-lf-test", "secret_key": "sk-lf-secret-1"}),
        wrong: json!({"type": "langfuse", "name": "Langfuse", "host": mock.base(),
            "public_key": "pk-lf-test", "secret_key": "sk-lf-wrong-key"}),
        refused: 401,
        accepted: 200,
        mock,
    });
    let mock = MockIngest::start(Service::langsmith("lsv2_pt_secret", "beacon-prod")).await;
    out.push(Preset {
        good: json!({"type": "langsmith", "name": "LangSmith", "endpoint": format!("{}/otel", mock.base()),
            "api_key": "lsv2_pt_secret", "project": "beacon-prod"}),
        wrong: json!({"type": "langsmith", "name": "LangSmith", "endpoint": format!("{}/otel", mock.base()),
            "api_key": "lsv2_pt_wrong", "project": "beacon-prod"}),
        refused: 401,
        accepted: 200,
        mock,
    });
    let mock = MockIngest::start(Service::honeycomb("hcaik_environment_key", "llm")).await;
    out.push(Preset {
        good: json!({"type": "honeycomb", "name": "Honeycomb", "endpoint": mock.base(),
            "api_key": "hcaik_environment_key", "dataset": "llm"}),
        wrong: json!({"type": "honeycomb", "name": "Honeycomb", "endpoint": mock.base(),
            "api_key": "hcaik_revoked_key", "dataset": "llm"}),
        refused: 401,
        accepted: 200,
        mock,
    });
    let mock = MockIngest::start(Service::grafana_cloud("123456", "glc_token_secret")).await;
    out.push(Preset {
        good: json!({"type": "grafana_cloud", "name": "Grafana", "otlp_endpoint": format!("{}/otlp", mock.base()),
            "instance_id": "123456", "token": "glc_token_secret"}),
        wrong: json!({"type": "grafana_cloud", "name": "Grafana", "otlp_endpoint": format!("{}/otlp", mock.base()),
            "instance_id": "654321", "token": "glc_token_secret"}),
        refused: 401,
        accepted: 200,
        mock,
    });
    let mock = MockIngest::start(Service::datadog("dd0api0key0secret")).await;
    out.push(Preset {
        good: json!({"type": "datadog", "name": "Datadog", "site": "datadoghq.eu",
            "endpoint": mock.url(), "api_key": "dd0api0key0secret"}),
        wrong: json!({"type": "datadog", "name": "Datadog", "site": "datadoghq.eu",
            "endpoint": mock.url(), "api_key": "dd0wrong0key"}),
        refused: 403,
        accepted: 202,
        mock,
    });
    let mock = MockIngest::start(Service::phoenix("/s/acme", "px-secret-key", "llm-app")).await;
    out.push(Preset {
        good: json!({"type": "phoenix", "name": "Phoenix", "endpoint": format!("{}/s/acme", mock.base()),
            "api_key": "px-secret-key", "project": "llm-app"}),
        wrong: json!({"type": "phoenix", "name": "Phoenix", "endpoint": format!("{}/s/acme", mock.base()),
            "api_key": "px-wrong-key", "project": "llm-app"}),
        refused: 401,
        accepted: 200,
        mock,
    });
    let mock = MockIngest::start(Service::webhook(WEBHOOK_SECRET)).await;
    out.push(Preset {
        good: json!({"type": "webhook", "name": "Webhook", "url": mock.url(),
            "secret": WEBHOOK_SECRET, "privacy_mode": true}),
        wrong: json!({"type": "webhook", "name": "Webhook", "url": mock.url(),
            "secret": "whsec-not-the-receivers"}),
        refused: 401,
        accepted: 200,
        mock,
    });
    out
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_preset_is_tested_saved_and_sent_in_its_own_dialect() {
    let upstream = MockUpstream::start().await;
    let dir = TempDir::new("destinations");
    let store = format!("sqlite://{}", dir.path().join("d.db").display());
    let beacon = Beacon::start(
        &(Beacon::config(&upstream.base_url(), "")
            + &format!("\n[admin]\ntoken = \"{OPERATOR}\"\n\n[store]\nurl = \"{store}\"\n")),
    );
    let addr = beacon.addr;

    // The console's forms come from the type list.
    let (s, v) = admin(addr, "GET", "/destination-types", None).await;
    assert_eq!(s, 200, "{v}");
    let types: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "sentry",
            "otlp",
            "langfuse",
            "langsmith",
            "honeycomb",
            "grafana_cloud",
            "datadog",
            "phoenix",
            "webhook"
        ]
    );

    let (s, v) = admin(addr, "POST", "/tenants", Some(json!({"id": "hooli"}))).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = admin(
        addr,
        "POST",
        "/tenants/hooli/keys",
        Some(json!({"name": "app"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let (s, _) = admin(
        addr,
        "PUT",
        "/tenants/hooli/broadcast",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(s, 200);

    // Bad input: field-named errors, nothing sent.
    for (body, param) in [
        (
            json!({"type": "langfuse", "name": "x", "public_key": "pk"}),
            "secret_key",
        ),
        (
            json!({"type": "langfuse", "name": "x", "public_key": "pk", "secret_key": 5}),
            "secret_key",
        ),
        (
            json!({"type": "honeycomb", "name": "x", "api_key": "k", "colour": "red"}),
            "colour",
        ),
        (
            json!({"type": "datadog", "name": "x", "api_key": "k", "site": "example.com"}),
            "site",
        ),
        (
            json!({"type": "grafana_cloud", "name": "x", "otlp_endpoint": "http://127.0.0.1:9/tempo",
            "instance_id": "1", "token": "t"}),
            "otlp_endpoint",
        ),
        (
            json!({"type": "webhook", "name": "x", "url": "http://127.0.0.1:9/h", "secret": "short"}),
            "secret",
        ),
        (
            json!({"type": "phoenix", "name": "x", "endpoint": "ftp://127.0.0.1:9"}),
            "endpoint",
        ),
        (json!({"type": "kafka", "name": "x"}), "type"),
    ] {
        let (s, v) = admin(
            addr,
            "POST",
            "/tenants/hooli/destinations",
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {v}"
        );
    }

    let presets = presets().await;
    for p in &presets {
        // A wrong credential: the service's refusal, reported; nothing saved.
        let (s, v) = admin(
            addr,
            "POST",
            "/tenants/hooli/destinations",
            Some(p.wrong.clone()),
        )
        .await;
        assert_eq!(
            (s, v["test"]["status"].as_u64()),
            (422, Some(u64::from(p.refused))),
            "{}: {v}",
            p.good["type"]
        );
        assert_eq!(p.mock.refused().len(), 1, "{}", p.good["type"]);
        // The right one: the test passes with the service's own success code.
        let (s, v) = admin(
            addr,
            "POST",
            "/tenants/hooli/destinations",
            Some(p.good.clone()),
        )
        .await;
        assert_eq!(s, 201, "{}: {v}", p.good["type"]);
        assert_eq!(
            v["test"]["status"].as_u64(),
            Some(u64::from(p.accepted)),
            "{v}"
        );
        // Secrets are shown redacted.
        let shown = v.to_string();
        for secret in [
            "sk-lf-secret-1",
            "lsv2_pt_secret",
            "hcaik_environment_key",
            "glc_token_secret",
            "dd0api0key0secret",
            "px-secret-key",
            WEBHOOK_SECRET,
        ] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(p.mock.accepted().len(), 1, "the test request");
        if p.good["type"] == "webhook" {
            // A webhook's URL may itself be a credential: shown as scheme and host only.
            assert_eq!(v["url"], format!("{}/…", p.mock.base()), "{v}");
        }
    }
    let (_, v) = admin(addr, "GET", "/tenants/hooli/destinations", None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), presets.len(), "{v}");

    // Moving a destination to another address needs its secret again: a caller who sees
    // only redacted secrets cannot have them sent to a server of theirs.
    let langfuse_id = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["type"] == "langfuse")
        .map(|d| d["id"].as_str().unwrap().to_string())
        .unwrap();
    let elsewhere = MockIngest::start(Service::langfuse("pk-lf-test", "sk-lf-secret-1")).await;
    let path = format!("/tenants/hooli/destinations/{langfuse_id}");
    for body in [
        json!({"host": elsewhere.base()}),
        json!({"host": elsewhere.base(), "secret_key": "sk-l…"}),
    ] {
        for (method, route) in [("POST", format!("{path}/test")), ("PATCH", path.clone())] {
            let (s, v) = admin(addr, method, &route, Some(body.clone())).await;
            assert_eq!(
                (s, v["error"]["param"].as_str()),
                (400, Some("secret_key")),
                "{v}"
            );
        }
    }
    assert_eq!(elsewhere.accepted().len() + elsewhere.refused().len(), 0);
    // Entered again, it may move (tested there first).
    let (s, v) = admin(
        addr,
        "POST",
        &format!("{path}/test"),
        Some(json!({"host": elsewhere.base(), "secret_key": "sk-lf-secret-1"})),
    )
    .await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");
    assert_eq!(elsewhere.accepted().len(), 1);

    // One completion reaches every destination (the config change applies within a second).
    let start = std::time::Instant::now();
    loop {
        assert_eq!(beacon_e2e::completion_status(addr, &key).await, 200);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if presets.iter().all(|p| p.mock.accepted().len() >= 2) {
            break;
        }
        assert!(start.elapsed().as_secs() < 10, "exports did not arrive");
    }

    for p in &presets {
        let ty = p.good["type"].as_str().unwrap();
        let got = p.mock.accepted();
        let export = &got[1];
        if ty == "webhook" {
            // The receiver checked X-Beacon-Signature against its own HMAC of the body.
            assert_eq!(export.header("content-type"), Some("application/json"));
            assert_eq!(export.header("content-encoding"), None, "uncompressed");
            assert_eq!(
                export.header("x-beacon-signature").unwrap(),
                hmac_signature(WEBHOOK_SECRET.as_bytes(), &export.body)
            );
            assert!(export
                .header("x-beacon-timestamp")
                .unwrap()
                .parse::<u64>()
                .is_ok());
            assert_eq!(export.header("x-beacon-delivery").unwrap().len(), 32);
            let test: Value = serde_json::from_slice(&got[0].body).unwrap();
            assert_eq!(test[0]["test"], true, "{test}");
            assert!(
                got[0].header("x-beacon-delivery").is_some()
                    && got[0].header("x-beacon-timestamp").is_some()
            );
            let records: Value = serde_json::from_slice(&export.body).unwrap();
            let r = &records[0];
            assert_eq!(r["tenant_id"], "hooli", "{records}");
            assert_eq!(r["requested_model"], "mock/echo");
            assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0, "{r}");
            assert!(r["cost"]["total"].is_string(), "{r}");
            assert!(r.get("content").is_none(), "privacy mode: no content: {r}");
            continue;
        }
        assert_eq!(
            export.header("content-type"),
            Some("application/x-protobuf"),
            "{ty}"
        );
        assert_eq!(export.header("content-encoding"), Some("gzip"), "{ty}");
        let spans = decode_bodies(&[&export.body]).await;
        let generation = spans
            .iter()
            .find(|s| attr(s, "gen_ai.request.model") == "mock/echo")
            .unwrap_or_else(|| panic!("{ty}: no generation span in {spans:?}"));
        assert_eq!(attr(generation, "beacon.tenant"), "hooli", "{ty}");
        assert!(
            attr(generation, "gen_ai.usage.input_tokens")
                .as_i64()
                .unwrap()
                > 0,
            "{ty}"
        );
        match ty {
            "langfuse" => {
                assert_eq!(attr(generation, "langfuse.observation.type"), "generation");
                let usage: Value = serde_json::from_str(
                    attr(generation, "langfuse.observation.usage_details")
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
                assert_eq!(
                    usage["total"].as_u64(),
                    attr(generation, "gen_ai.usage.total_tokens").as_u64()
                );
                assert!(attr(generation, "langfuse.observation.input").is_string());
            }
            "phoenix" => {
                assert_eq!(attr(generation, "openinference.span.kind"), "LLM");
                assert_eq!(
                    attr(generation, "llm.token_count.prompt"),
                    attr(generation, "gen_ai.usage.input_tokens")
                );
                assert!(attr(generation, "input.value").is_string());
                assert!(attr(generation, "llm.cost.total").as_f64().unwrap() > 0.0);
            }
            _ => {
                for key in ["langfuse.observation.type", "openinference.span.kind"] {
                    assert!(attr(generation, key).is_null(), "{ty}: {key}");
                }
            }
        }
    }
    // One completion has one trace id and one generation span id in every tool (and the
    // webhook's record names them): a completion made while every destination is live
    // reaches them all with the same ids.
    let before: Vec<usize> = presets.iter().map(|p| p.mock.accepted().len()).collect();
    assert_eq!(beacon_e2e::completion_status(addr, &key).await, 200);
    for (p, n) in presets.iter().zip(&before) {
        p.mock.wait_accepted(n + 1).await;
    }
    let mut ids_by_destination = Vec::new();
    for (p, n) in presets.iter().zip(&before) {
        let got = p.mock.accepted();
        if p.good["type"] == "webhook" {
            // The webhook's records carry the ids their spans have everywhere else.
            let ids: std::collections::BTreeMap<String, (String, String)> = got[*n..]
                .iter()
                .flat_map(|r| serde_json::from_slice::<Vec<Value>>(&r.body).unwrap())
                .map(|r| {
                    let id = |k: &str| {
                        r[k].as_str()
                            .unwrap_or_else(|| panic!("{k}: {r}"))
                            .to_string()
                    };
                    (id("request_id"), (id("trace_id"), id("span_id")))
                })
                .collect();
            ids_by_destination.push(("webhook".to_string(), ids));
            continue;
        }
        let bodies: Vec<&[u8]> = got[*n..].iter().map(|r| r.body.as_slice()).collect();
        let ids: std::collections::BTreeMap<String, (String, String)> = decode_bodies(&bodies)
            .await
            .iter()
            .filter(|s| attr(s, "gen_ai.request.model") == "mock/echo")
            .map(|s| {
                (
                    attr(s, "beacon.request_id").as_str().unwrap().to_string(),
                    (
                        s["trace_id"].as_str().unwrap().to_string(),
                        s["span_id"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect();
        ids_by_destination.push((p.good["type"].as_str().unwrap().to_string(), ids));
    }
    let (first_type, first) = &ids_by_destination[0];
    let common: Vec<&String> = first
        .keys()
        .filter(|rid| ids_by_destination.iter().all(|(_, m)| m.contains_key(*rid)))
        .collect();
    assert!(
        !common.is_empty(),
        "no completion reached every destination: {ids_by_destination:?}"
    );
    for rid in common {
        for (ty, ids) in &ids_by_destination {
            assert_eq!(ids[rid], first[rid], "{rid}: {ty} against {first_type}");
        }
    }
    // Every refusal was a credential the test sent, and nothing else was refused.
    for p in &presets {
        assert_eq!(p.mock.refused().len(), 1, "{:?}", p.mock.refused());
    }
    let logs = beacon.logs();
    for secret in [
        "sk-lf-secret-1",
        "lsv2_pt_secret",
        "glc_token_secret",
        "px-secret-key",
        WEBHOOK_SECRET,
    ] {
        assert!(!logs.contains(secret), "{secret} in the log");
    }
}
