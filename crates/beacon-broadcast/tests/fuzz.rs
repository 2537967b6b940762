//! Property-based fuzzing of what tenants and clients control on the export path: Sentry
//! DSNs and endpoints (never a panic, never a private address accepted), and span building
//! from records holding any text (always a protobuf an independent decoder reads back, with
//! one span per record, and no prompt or completion text under privacy mode).
//! `PROPTEST_CASES` sets the number of cases.

use beacon_broadcast::destination::{
    is_private_host, DestinationSpec, DestinationType, Dsn, FieldKind, TYPES,
};
use beacon_broadcast::record::{
    CompletionRecord, Content, Cost, Outcome, RequestParams, Timings, TokenUsage, ToolCall,
};
use beacon_broadcast::span::{encode_export, RandomIds, SpanSettings};
use beacon_config::DestinationConfig;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

fn url_like() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        Just("o1.ingest.sentry.io".to_string()),
        Just("127.0.0.1".to_string()),
        Just("[::127.0.0.1]".to_string()),
        Just("[::ffff:10.0.0.1]".to_string()),
        Just("169.254.169.254".to_string()),
        Just("localhost".to_string()),
        "[a-z0-9.-]{1,20}",
        "[0-9a-f:\\[\\]]{2,20}",
    ];
    (
        prop_oneof![Just("https"), Just("http"), Just("ftp"), Just("")],
        proptest::option::of("[a-zA-Z0-9:]{0,12}"),
        host,
        proptest::option::of(0u32..70000),
        "[a-z0-9/._%-]{0,40}",
    )
        .prop_map(|(scheme, user, host, port, path)| {
            let user = user.map(|u| format!("{u}@")).unwrap_or_default();
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{user}{host}{port}/{path}")
        })
}

/// A destination of type `ty` whose URL fields are `url` and whose DSN is `dsn`.
fn destination(ty: &dyn DestinationType, url: &str, dsn: &str) -> DestinationConfig {
    let mut fields = serde_json::Map::new();
    for f in ty.fields() {
        let value = match f.kind {
            FieldKind::Url | FieldKind::SecretUrl => url,
            FieldKind::Dsn => dsn,
            FieldKind::Choice(options) => options[0],
            FieldKind::Headers => continue,
            FieldKind::Text | FieldKind::Secret => "0123456789abcdef0123",
        };
        fields.insert(f.name.into(), value.into());
    }
    DestinationConfig {
        id: None,
        name: "d".into(),
        enabled: true,
        type_name: ty.name().into(),
        fields,
        privacy_mode: false,
        follow_caller_sampling: None,
        error_events: None,
        sampling_rate: 1.0,
        api_keys: vec![],
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,60}", "\\PC{0,200}", Just(String::new())]
}

fn record() -> impl Strategy<Value = CompletionRecord> {
    (
        (text(), text(), text(), proptest::option::of(text())),
        proptest::collection::btree_map(".{0,16}", text(), 0..10),
        (text(), text(), any::<bool>()),
        (any::<u64>(), any::<u64>(), any::<u32>()),
    )
        .prop_map(
            |((model, tenant, user, session), trace, (prompt, output, failed), (a, b, t))| {
                let mut trace: serde_json::Map<String, Value> = trace
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                trace.insert("trace_name".into(), Value::String(model.clone()));
                CompletionRecord {
                    api: beacon_config::Api::Chat,
                    request_id: "req_1".into(),
                    tenant_id: tenant,
                    key_id: "key_1".into(),
                    provider: "p".into(),
                    requested_model: model.clone(),
                    upstream_model: model,
                    served_model: None,
                    response_id: None,
                    stream: t % 2 == 0,
                    params: RequestParams::default(),
                    usage: TokenUsage {
                        prompt_tokens: a % 1_000_000,
                        completion_tokens: b % 1_000_000,
                        total_tokens: a % 1_000_000 + b % 1_000_000,
                        ..TokenUsage::default()
                    },
                    cost: Cost::default(),
                    timings: Timings {
                        received_unix_nanos: a,
                        last_byte_us: u64::from(t),
                        ..Timings::default()
                    },
                    finish_reasons: vec!["stop".into()],
                    outcome: if failed {
                        Outcome::UpstreamError {
                            status: Some(500),
                            error_type: "http_500".into(),
                            message: output.clone(),
                        }
                    } else {
                        Outcome::Ok
                    },
                    upstream_status: Some(200),
                    attempts: Vec::new(),
                    tool_names: Vec::new(),
                    user: Some(user),
                    session_id: session,
                    trace: Some(trace),
                    trace_context: None,
                    content: Some(Content {
                        tool_definitions: None,
                        input_messages: serde_json::json!([{"role": "user", "content": prompt}])
                            .to_string()
                            .into(),
                        input_truncated: false,
                        output_text: output,
                        output_truncated: false,
                        output_tool_calls: vec![ToolCall {
                            id: Some("call_1".into()),
                            name: Some("f".into()),
                            arguments: "{\"a\":1}".into(),
                        }],
                    }),
                    tools: Default::default(),
                }
            },
        )
}

proptest! {
    #[test]
    fn dsn_parsing_never_panics(dsn in prop_oneof![url_like(), ".{0,80}"]) {
        if let Ok(d) = Dsn::parse(&dsn) {
            prop_assert!(!d.public_key.is_empty() && !d.project_id.is_empty());
            prop_assert!(d.project_id.chars().all(|c| c.is_ascii_digit()));
        }
    }

    #[test]
    fn no_private_destination_is_ever_accepted(endpoint in url_like(), dsn in url_like()) {
        for ty in TYPES {
            if let Ok(spec) = DestinationSpec::new("t", &destination(ty, &endpoint, &dsn), false) {
                let host = spec.endpoint.url.host().unwrap_or_default();
                prop_assert!(!is_private_host(host), "{host} accepted");
                prop_assert_eq!(spec.endpoint.url.scheme_str(), Some("https"));
            }
        }
    }

    #[test]
    fn spans_of_any_records_decode_and_respect_privacy(
        records in proptest::collection::vec(record(), 1..6),
        privacy in any::<bool>(),
    ) {
        let settings = SpanSettings { privacy_mode: privacy, sampling_rate: 1.0, dialect: Default::default(), };
        let bytes = encode_export(records.iter(), &settings, &mut RandomIds);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
        let spans: Vec<_> = decoded
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        let generations = spans
            .iter()
            .filter(|s| s.attributes.iter().any(|a| a.key == "gen_ai.request.model"))
            .count();
        prop_assert_eq!(generations, records.len());
        if privacy {
            let keys: Vec<&str> = spans.iter().flat_map(|s| s.attributes.iter().map(|a| a.key.as_str())).collect();
            for k in ["gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"] {
                prop_assert!(!keys.contains(&k), "{k} exported in privacy mode");
            }
        }
    }
}
