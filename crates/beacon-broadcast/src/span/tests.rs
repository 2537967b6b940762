use super::*;
use crate::record::*;
use bytes::Bytes;
use serde_json::{json, Map};

/// Deterministic ids: trace ids 0x11…, span ids counting up from 1.
struct SeqIds(u8);

impl IdSource for SeqIds {
    fn trace_id(&mut self) -> [u8; 16] {
        [0x11; 16]
    }
    fn span_id(&mut self) -> [u8; 8] {
        self.0 += 1;
        [0, 0, 0, 0, 0, 0, 0, self.0]
    }
}

/// A record's `trace` object from JSON.
fn trace(value: Value) -> Option<Map<String, Value>> {
    value.as_object().cloned()
}

pub(crate) fn record() -> CompletionRecord {
    CompletionRecord {
        api: beacon_config::Api::Chat,
        request_id: "req_1".into(),
        tenant_id: "acme".into(),
        key_id: "key_abc".into(),
        provider: "openai".into(),
        requested_model: "openai/gpt-4o".into(),
        upstream_model: "gpt-4o".into(),
        served_model: Some("gpt-4o-2024-08-06".into()),
        response_id: Some("chatcmpl-1".into()),
        stream: true,
        params: RequestParams {
            temperature: Some(0.5),
            max_tokens: Some(100),
            seed: Some(7),
            ..Default::default()
        },
        usage: TokenUsage {
            prompt_tokens: 120,
            cached_tokens: 20,
            cache_write_tokens: 0,
            completion_tokens: 30,
            reasoning_tokens: 10,
            total_tokens: 150,
            estimated: false,
        },
        cost: Cost {
            input: "0.000275".parse().unwrap(),
            output: "0.0003".parse().unwrap(),
            total: "0.000575".parse().unwrap(),
            cache_read: "0.000025".parse().unwrap(),
            cache_creation: rust_decimal::Decimal::ZERO,
            reasoning: "0.0001".parse().unwrap(),
            source: CostSource::PriceTable,
        },
        timings: Timings {
            received_unix_nanos: 1_700_000_000_000_000_000,
            upstream_start_us: Some(100),
            upstream_headers_us: Some(200_000),
            first_chunk_us: Some(250_000),
            last_byte_us: 1_500_000,
            gateway_overhead_us: 150,
        },
        finish_reasons: vec!["stop".into()],
        outcome: Outcome::Ok,
        upstream_status: Some(200),
        attempts: Vec::new(),
        tool_names: Vec::new(),
        user: Some("user-1".into()),
        session_id: Some("sess-1".into()),
        trace: None,
        trace_context: None,
        content: Some(Content {
            tool_definitions: None,
            input_truncated: false,
            input_messages: Bytes::from(
                r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"SECRET-PROMPT hello"}]"#,
            ),
            output_text: "SECRET-COMPLETION hi".into(),
            output_truncated: false,
            output_tool_calls: vec![],
        }),
        tools: Default::default(),
    }
}

fn settings() -> SpanSettings {
    SpanSettings {
        privacy_mode: false,
        sampling_rate: 1.0,
        dialect: Default::default(),
    }
}

fn value_json(v: &Option<AnyValue>) -> Value {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!({"int": i}),
        Some(any_value::Value::DoubleValue(d)) => json!({"double": d}),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(
            a.values
                .iter()
                .map(|v| value_json(&Some(v.clone())))
                .collect(),
        ),
        other => json!(format!("{other:?}")),
    }
}

/// A readable rendering of spans for snapshots.
fn render(spans: &[Span]) -> Value {
    Value::Array(
        spans
            .iter()
            .map(|sp| {
                let attrs: Map<String, Value> = sp.attributes.iter().map(|kv| (kv.key.clone(), value_json(&kv.value))).collect();
                json!({
                    "name": sp.name,
                    "kind": sp.kind,
                    "trace_id": hex::encode(&sp.trace_id),
                    "span_id": hex::encode(&sp.span_id),
                    "parent_span_id": hex::encode(&sp.parent_span_id),
                    "flags": sp.flags,
                    "start": sp.start_time_unix_nano,
                    "end": sp.end_time_unix_nano,
                    "status": sp.status.as_ref().map(|s| json!({"code": s.code, "message": s.message})),
                    "attributes": attrs,
                })
            })
            .collect(),
    )
}

fn attr<'a>(sp: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    sp.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

#[test]
fn generation_span_only() {
    let spans = build_spans(&record(), &settings(), &mut SeqIds(0));
    assert_eq!(spans.len(), 1);
    insta::assert_json_snapshot!("generation_only", render(&spans));
}

#[test]
fn root_and_intermediate_spans_with_remote_parent() {
    let mut r = record();
    r.trace = trace(json!({
        "trace_id": "my-workflow-run-42",
        "trace_name": "support-agent",
        "span_name": "answer",
        "generation_name": "draft reply",
        "parent_span_id": "b7ad6b7169203331",
        "environment": "production",
        "release": "1.2.3",
        "customer": {"tier": "gold"},
        "attempt": 2
    }));
    let spans = build_spans(
        &r,
        &SpanSettings {
            privacy_mode: false,
            sampling_rate: 0.25,
            dialect: Default::default(),
        },
        &mut SeqIds(0),
    );
    assert_eq!(spans.len(), 3);
    // Hierarchy: root ← intermediate ← generation; the root's parent is the caller's span.
    assert_eq!(
        spans[0].parent_span_id,
        hex::decode("b7ad6b7169203331").unwrap()
    );
    assert_eq!(spans[0].flags, REMOTE_PARENT_FLAGS);
    assert_eq!(spans[1].parent_span_id, spans[0].span_id);
    assert_eq!(spans[2].parent_span_id, spans[1].span_id);
    assert_eq!((spans[1].flags, spans[2].flags), (0, 0));
    // The trace id is the first 16 bytes of SHA-256 of the string; the original is kept.
    let digest = Sha256::digest(b"my-workflow-run-42");
    assert!(spans.iter().all(|s| s.trace_id == digest[..16]));
    insta::assert_json_snapshot!("agent_hierarchy", render(&spans));
}

#[test]
fn trace_ids_as_is_and_invalid_parents_kept_as_metadata() {
    let mut r = record();
    r.trace =
        trace(json!({"trace_id": "0af7651916cd43dd8448eb211c80319c", "parent_span_id": "nope"}));
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    assert_eq!(
        hex::encode(&spans[0].trace_id),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert!(spans[0].parent_span_id.is_empty());
    assert_eq!(spans[0].flags, 0);
    assert_eq!(
        attr(&spans[0], "trace.metadata.parent_span_id"),
        Some(&any_value::Value::StringValue("nope".into()))
    );
    // All-zero ids are not ids.
    r.trace = trace(json!({"trace_id": "00000000000000000000000000000000"}));
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    assert_ne!(spans[0].trace_id, vec![0u8; 16]);
}

#[test]
fn header_context_is_used_when_the_body_has_none() {
    let mut r = record();
    r.trace_context = Some(TraceContext {
        trace_id: "771a43a4192642f0b136d5159a501700".into(),
        parent_span_id: "b7ad6b7169203331".into(),
        sampled: Some(true),
        sample_rate: Some(0.5),
    });
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    // The caller's baggage rate times the destination's.
    let dest = SpanSettings {
        privacy_mode: false,
        sampling_rate: 0.5,
        dialect: Default::default(),
    };
    let sampled = build_spans(&r, &dest, &mut SeqIds(0));
    assert!(matches!(
        attr(&sampled[0], "sentry.client_sample_rate"),
        Some(any_value::Value::DoubleValue(v)) if (*v - 0.25).abs() < 1e-12
    ));
    assert_eq!(
        hex::encode(&spans[0].trace_id),
        "771a43a4192642f0b136d5159a501700"
    );
    assert_eq!(hex::encode(&spans[0].parent_span_id), "b7ad6b7169203331");
    assert_eq!(spans[0].flags, REMOTE_PARENT_FLAGS);
    // The body's trace id wins, and then the header's parent (another trace's span) is not used.
    r.trace = trace(json!({"trace_id": "0af7651916cd43dd8448eb211c80319c"}));
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    assert_eq!(
        hex::encode(&spans[0].trace_id),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert!(spans[0].parent_span_id.is_empty());
}

#[test]
fn privacy_mode_removes_all_text() {
    use prost::Message;
    let spans = build_spans(
        &record(),
        &SpanSettings {
            privacy_mode: true,
            sampling_rate: 1.0,
            dialect: Default::default(),
        },
        &mut SeqIds(0),
    );
    let bytes = export_request(spans.clone()).encode_to_vec();
    let raw = String::from_utf8_lossy(&bytes);
    assert!(
        !raw.contains("SECRET-PROMPT")
            && !raw.contains("SECRET-COMPLETION")
            && !raw.contains("Be brief")
    );
    assert!(attr(&spans[0], "gen_ai.usage.input_tokens").is_some());
    assert!(attr(&spans[0], "gen_ai.cost.total_tokens").is_some());
    // Without privacy mode the text is there.
    let spans = build_spans(&record(), &settings(), &mut SeqIds(0));
    let raw = String::from_utf8_lossy(&export_request(spans).encode_to_vec()).into_owned();
    assert!(raw.contains("SECRET-PROMPT") && raw.contains("SECRET-COMPLETION"));
}

#[test]
fn upstream_failure_without_response() {
    let mut r = record();
    r.outcome = Outcome::UpstreamError {
        status: None,
        error_type: "connect_timeout".into(),
        message: "upstream request failed: connect_timeout".into(),
    };
    r.upstream_status = None;
    r.served_model = None;
    r.usage = TokenUsage::default();
    r.cost = Cost {
        source: CostSource::NotCharged,
        ..Cost::default()
    };
    r.content.as_mut().unwrap().output_text.clear();
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    let g = &spans[0];
    assert_eq!(
        g.status.as_ref().unwrap().code,
        status::StatusCode::Error as i32
    );
    assert_eq!(
        attr(g, "error.type"),
        Some(&any_value::Value::StringValue("connect_timeout".into()))
    );
    assert!(attr(g, "http.response.status_code").is_none());
    assert!(attr(g, "gen_ai.response.model").is_none());
    assert!(attr(g, "gen_ai.usage.output_tokens").is_none());
    assert!(attr(g, "gen_ai.output.messages").is_none());
    assert_eq!(
        attr(g, "gen_ai.cost.total_tokens"),
        Some(&any_value::Value::DoubleValue(0.0))
    );

    r.outcome = Outcome::UpstreamError {
        status: Some(500),
        error_type: "http_500".into(),
        message: "boom".into(),
    };
    r.upstream_status = Some(500);
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    assert_eq!(
        attr(&spans[0], "http.response.status_code"),
        Some(&any_value::Value::IntValue(500))
    );
}

#[test]
fn resource_has_no_deployment_environment() {
    let req = export_request(vec![]);
    let res = req.resource_spans[0].resource.as_ref().unwrap();
    let keys: Vec<&str> = res.attributes.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "service.name",
            "service.version",
            "telemetry.sdk.language",
            "telemetry.sdk.name"
        ]
    );
}

#[test]
fn direct_encoding_equals_the_prost_messages() {
    use prost::Message;
    let mut records = vec![record()];
    let mut agent = record();
    agent.trace = trace(
        json!({"trace_id": "run-1", "trace_name": "agent", "span_name": "step", "parent_span_id": "b7ad6b7169203331",
               "environment": "prod", "n": 3, "x": 1.5, "flag": true, "obj": {"a": [1, 2]}}),
    );
    records.push(agent);
    let mut failed = record();
    failed.outcome = Outcome::UpstreamError {
        status: None,
        error_type: "connect_error".into(),
        message: "down".into(),
    };
    failed.upstream_status = None;
    failed.content = None;
    records.push(failed);
    let mut big = record();
    big.content.as_mut().unwrap().output_text = "long output ".repeat(3000);
    records.push(big);
    let mut cancelled = record();
    cancelled.outcome = Outcome::ClientCancelled;
    cancelled.finish_reasons.clear();
    records.push(cancelled);
    records.push(failed_over());

    for settings in [
        settings(),
        SpanSettings {
            privacy_mode: true,
            sampling_rate: 0.01,
            dialect: Default::default(),
        },
    ] {
        let expected: Vec<Span> = {
            let mut ids = SeqIds(0);
            records
                .iter()
                .flat_map(|r| build_spans(r, &settings, &mut ids))
                .collect()
        };
        let expected = export_request(expected);
        let bytes = encode_export(records.iter(), &settings, &mut SeqIds(0));
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, expected);
        // Canonical encoding, byte for byte the same as prost's.
        assert_eq!(bytes, expected.encode_to_vec());
    }
}

/// A completion served by its third attempt, after a 503 and a refused connection.
fn failed_over() -> CompletionRecord {
    let mut r = record();
    r.attempts = vec![
        crate::record::Attempt {
            provider: "primary".into(),
            model: "gpt-4o".into(),
            status: Some(503),
            error_type: "http_503".into(),
            start_us: 100,
            duration_us: 2_000,
        },
        crate::record::Attempt {
            provider: "secondary".into(),
            model: "gpt-4o".into(),
            status: None,
            error_type: "unreachable".into(),
            start_us: 2_200,
            duration_us: 300,
        },
    ];
    r
}

#[test]
fn failed_attempts_are_error_children_of_the_generation_span() {
    let r = failed_over();
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    assert_eq!(spans.len(), 3);
    let generation = &spans[0];
    assert_eq!(
        generation.status.as_ref().unwrap().code,
        status::StatusCode::Ok as i32
    );
    for (sp, (name, code)) in spans[1..].iter().zip([
        ("attempt primary/gpt-4o", Some(503)),
        ("attempt secondary/gpt-4o", None),
    ]) {
        assert_eq!(sp.name, name);
        assert_eq!(sp.parent_span_id, generation.span_id);
        assert_eq!(sp.kind, span::SpanKind::Client as i32);
        assert_eq!(
            sp.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert!(
            matches!(attr(sp, "sentry.op"), Some(any_value::Value::StringValue(v)) if v == "http.client")
        );
        match code {
            Some(c) => assert!(
                matches!(attr(sp, "http.response.status_code"), Some(any_value::Value::IntValue(v)) if *v == c)
            ),
            None => assert!(attr(sp, "http.response.status_code").is_none()),
        }
        // No tokens or cost: the served attempt (the generation span) alone carries them.
        assert!(attr(sp, "gen_ai.usage.input_tokens").is_none());
        assert!(attr(sp, "gen_ai.cost.total_tokens").is_none());
        assert!(sp.start_time_unix_nano >= generation.start_time_unix_nano);
        assert!(sp.end_time_unix_nano > sp.start_time_unix_nano);
    }
    assert_eq!(
        spans[1].start_time_unix_nano,
        r.timings.received_unix_nanos + 100_000
    );
}

#[test]
fn random_ids_are_nonzero_and_distinct_across_threads() {
    let draw = || {
        let mut ids = RandomIds;
        (0..5_000)
            .map(|_| (ids.trace_id(), ids.span_id()))
            .collect::<Vec<_>>()
    };
    let other = std::thread::spawn(draw).join().unwrap();
    let all: Vec<_> = draw().into_iter().chain(other).collect();
    let traces: std::collections::HashSet<_> = all.iter().map(|(t, _)| *t).collect();
    let spans: std::collections::HashSet<_> = all.iter().map(|(_, s)| *s).collect();
    assert_eq!(traces.len(), all.len(), "trace ids repeat");
    assert_eq!(spans.len(), all.len(), "span ids repeat");
    assert!(all.iter().all(|(t, s)| *t != [0; 16] && *s != [0; 8]));
}

#[test]
fn a_model_with_no_price_exports_no_cost_not_zero() {
    let mut r = record();
    r.cost = Cost::default();
    assert_eq!(r.cost.source, CostSource::Unknown);
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    for key in [
        "gen_ai.cost.input_tokens",
        "gen_ai.cost.output_tokens",
        "gen_ai.cost.total_tokens",
    ] {
        assert!(attr(&spans[0], key).is_none(), "{key}");
    }
    assert!(attr(&spans[0], "gen_ai.usage.input_tokens").is_some());
    // And the record says so without numbers.
    assert_eq!(
        serde_json::to_value(r.cost).unwrap(),
        serde_json::json!({"source": "unknown"})
    );
}

#[test]
fn finish_reasons_are_a_string_and_tools_are_named_or_defined_by_privacy() {
    let mut r = record();
    r.finish_reasons = vec!["stop".into(), "length".into()];
    r.tool_names = vec!["get_weather".into(), "search".into()];
    let defs = r#"[{"type":"function","function":{"name":"get_weather","description":"SECRET-DESC"}},{"type":"function","function":{"name":"search"}}]"#;
    let content = r.content.as_mut().unwrap();
    content.tool_definitions = Some(Bytes::from_static(defs.as_bytes()));
    content.output_tool_calls = vec![ToolCall {
        id: Some("call_1".into()),
        name: Some("get_weather".into()),
        arguments: "{\"city\":\"SECRET-CITY\"}".into(),
    }];
    let str_of = |sp: &Span, k: &str| match attr(sp, k) {
        Some(any_value::Value::StringValue(v)) => v.clone(),
        other => panic!("{k}: {other:?}"),
    };
    let full = &build_spans(&r, &settings(), &mut SeqIds(0))[0];
    assert_eq!(
        str_of(full, "gen_ai.response.finish_reasons"),
        r#"["stop","length"]"#
    );
    assert_eq!(str_of(full, "gen_ai.request.available_tools"), defs);
    let calls: Value = serde_json::from_str(&str_of(full, "gen_ai.response.tool_calls")).unwrap();
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(calls[0]["arguments"], "{\"city\":\"SECRET-CITY\"}");
    let private = SpanSettings {
        privacy_mode: true,
        sampling_rate: 1.0,
        dialect: Default::default(),
    };
    let p = &build_spans(&r, &private, &mut SeqIds(0))[0];
    assert_eq!(
        str_of(p, "gen_ai.request.available_tools"),
        r#"["get_weather","search"]"#
    );
    let calls: Value = serde_json::from_str(&str_of(p, "gen_ai.response.tool_calls")).unwrap();
    assert_eq!(
        calls,
        json!([{"id": "call_1", "name": "get_weather", "type": "function"}])
    );
    let bytes = encode_export([&r], &private, &mut SeqIds(0));
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("SECRET-DESC") && !text.contains("SECRET-CITY"));
}

/// A request of the agent run `run-7` bringing the result of the `get_weather` call an
/// earlier completion asked for, 2.5 s before.
fn tool_result_record() -> CompletionRecord {
    let mut r = record();
    r.trace = trace(json!({"trace_id": "run-7", "trace_name": "weather-agent"}));
    r.tools.answered = vec!["call_1".into()];
    r.tools.executions = vec![crate::record::ToolExecution {
        call_id: "call_1".into(),
        name: "get_weather".into(),
        started_unix_nanos: r.timings.received_unix_nanos - 2_500_000_000,
    }];
    if let Some(c) = r.content.as_mut() {
        c.input_messages = bytes::Bytes::from_static(
            br#"[{"role":"user","content":"Weather in Paris?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"18C and cloudy"}]"#,
        );
    }
    r
}

#[test]
fn a_linked_tool_result_is_an_execute_tool_span_beside_the_generation() {
    let r = tool_result_record();
    let spans = build_spans(&r, &settings(), &mut SeqIds(0));
    // Agent root, the generation under it, and the tool run beside the generation.
    assert_eq!(spans.len(), 3);
    let (root, generation, tool) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!(tool.parent_span_id, root.span_id);
    assert_eq!(generation.parent_span_id, root.span_id);
    assert_eq!(tool.name, "execute_tool get_weather");
    assert_eq!(tool.kind, span::SpanKind::Internal as i32);
    // From the end of the completion that asked, to this request's arrival.
    assert_eq!(
        tool.end_time_unix_nano - tool.start_time_unix_nano,
        2_500_000_000
    );
    assert_eq!(tool.end_time_unix_nano, generation.start_time_unix_nano);
    insta::assert_json_snapshot!("execute_tool", render(&spans));
    // Privacy mode: the tool's name and call id, never its arguments or result.
    let private = build_spans(
        &r,
        &SpanSettings {
            privacy_mode: true,
            sampling_rate: 1.0,
            dialect: Default::default(),
        },
        &mut SeqIds(0),
    );
    let tool = &private[2];
    assert!(attr(tool, "gen_ai.tool.call.id").is_some());
    assert!(attr(tool, "gen_ai.tool.call.arguments").is_none());
    assert!(attr(tool, "gen_ai.tool.call.result").is_none());
    // The direct encoding carries the same span.
    let mut direct = crate::span::encode_export([&r], &settings(), &mut SeqIds(0));
    let decoded = <ExportTraceServiceRequest as prost::Message>::decode(direct.as_slice()).unwrap();
    let encoded = &decoded.resource_spans[0].scope_spans[0].spans;
    assert_eq!(encoded.len(), 3);
    assert_eq!(encoded[2], spans[2]);
    direct.clear();
}

/// [`tool_result_record`] under a `prod` environment, in `dialect`.
fn tool_round_trip(dialect: crate::destination::Dialect, privacy_mode: bool) -> Vec<Span> {
    let mut r = tool_result_record();
    if let Some(trace) = r.trace.as_mut() {
        trace.insert("environment".into(), "prod".into());
    }
    let settings = SpanSettings {
        privacy_mode,
        sampling_rate: 1.0,
        dialect,
    };
    build_spans(&r, &settings, &mut SeqIds(0))
}

fn str_attr<'a>(sp: &'a Span, key: &str) -> Option<&'a str> {
    match attr(sp, key) {
        Some(any_value::Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

#[test]
fn langfuse_dialect_names_observations_and_splits_usage() {
    use crate::destination::Dialect;
    let spans = tool_round_trip(Dialect::Langfuse, false);
    insta::assert_json_snapshot!("langfuse_dialect", render(&spans));
    let (root, generation, tool) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!(str_attr(root, "langfuse.observation.type"), Some("agent"));
    assert_eq!(
        str_attr(generation, "langfuse.observation.type"),
        Some("generation")
    );
    assert_eq!(str_attr(tool, "langfuse.observation.type"), Some("tool"));
    for sp in &spans {
        assert_eq!(str_attr(sp, "langfuse.trace.name"), Some("weather-agent"));
        assert_eq!(str_attr(sp, "langfuse.environment"), Some("prod"));
    }
    // 120 prompt tokens of which 20 cached; 30 completion tokens of which 10 reasoning.
    let usage: Value =
        serde_json::from_str(str_attr(generation, "langfuse.observation.usage_details").unwrap())
            .unwrap();
    assert_eq!(
        (
            &usage["input"],
            &usage["input_cache_read"],
            &usage["output"],
            &usage["output_reasoning"],
            &usage["total"]
        ),
        (&json!(100), &json!(20), &json!(20), &json!(10), &json!(150))
    );
    let cost: Value =
        serde_json::from_str(str_attr(generation, "langfuse.observation.cost_details").unwrap())
            .unwrap();
    assert_eq!(cost["total"], json!(0.000575));
    assert_eq!(
        str_attr(generation, "langfuse.observation.completion_start_time"),
        Some("2023-11-14T22:13:20.250000Z")
    );
    assert!(str_attr(generation, "langfuse.observation.input")
        .unwrap()
        .contains("Weather in Paris?"));
    assert_eq!(
        str_attr(tool, "langfuse.observation.output"),
        Some("18C and cloudy")
    );
    // Privacy mode: no input or output in any dialect attribute.
    let private = tool_round_trip(Dialect::Langfuse, true);
    for sp in &private {
        assert!(str_attr(sp, "langfuse.observation.input").is_none());
        assert!(str_attr(sp, "langfuse.observation.output").is_none());
    }
    assert!(str_attr(&private[1], "langfuse.observation.usage_details").is_some());
}

#[test]
fn openinference_dialect_for_phoenix() {
    use crate::destination::Dialect;
    let spans = tool_round_trip(Dialect::OpenInference, false);
    insta::assert_json_snapshot!("openinference_dialect", render(&spans));
    let (root, generation, tool) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!(str_attr(root, "openinference.span.kind"), Some("AGENT"));
    assert_eq!(str_attr(generation, "openinference.span.kind"), Some("LLM"));
    assert_eq!(str_attr(tool, "openinference.span.kind"), Some("TOOL"));
    assert_eq!(str_attr(tool, "tool.name"), Some("get_weather"));
    assert_eq!(
        str_attr(generation, "llm.model_name"),
        Some("gpt-4o-2024-08-06")
    );
    assert!(matches!(
        attr(generation, "llm.token_count.prompt"),
        Some(any_value::Value::IntValue(120))
    ));
    assert!(matches!(
        attr(generation, "llm.cost.total"),
        Some(any_value::Value::DoubleValue(c)) if (c - 0.000575).abs() < 1e-12
    ));
    assert_eq!(
        str_attr(generation, "output.value"),
        Some("SECRET-COMPLETION hi")
    );
    assert_eq!(
        str_attr(generation, "input.mime_type"),
        Some("application/json")
    );
    let private = tool_round_trip(Dialect::OpenInference, true);
    for sp in &private {
        for key in [
            "input.value",
            "output.value",
            "llm.output_messages.0.message.content",
        ] {
            assert!(str_attr(sp, key).is_none(), "{key}");
        }
    }
    // The answer's tool calls, as OpenInference names them.
    let mut r = record();
    if let Some(c) = r.content.as_mut() {
        c.output_tool_calls = vec![crate::record::ToolCall {
            id: Some("call_9".into()),
            name: Some("lookup".into()),
            arguments: r#"{"q":"x"}"#.into(),
        }];
    }
    let settings = SpanSettings {
        privacy_mode: false,
        sampling_rate: 1.0,
        dialect: Dialect::OpenInference,
    };
    let spans = build_spans(&r, &settings, &mut SeqIds(0));
    let prefix = "llm.output_messages.0.message.tool_calls.0.tool_call";
    assert_eq!(
        str_attr(&spans[0], &format!("{prefix}.function.name")),
        Some("lookup")
    );
    assert_eq!(
        str_attr(&spans[0], &format!("{prefix}.function.arguments")),
        Some(r#"{"q":"x"}"#)
    );
    assert_eq!(str_attr(&spans[0], &format!("{prefix}.id")), Some("call_9"));
    // The default dialect carries none of them.
    let plain = tool_round_trip(Dialect::GenAi, false);
    for sp in &plain {
        assert!(sp.attributes.iter().all(|kv| !kv.key.starts_with("llm.")
            && !kv.key.starts_with("langfuse.")
            && kv.key != "openinference.span.kind"));
    }
}

/// A record whose content was converted elsewhere (another destination's batch).
struct Preconverted<'r>(&'r CompletionRecord, std::sync::Arc<content::Converted>);

impl Source for Preconverted<'_> {
    fn record(&self) -> &CompletionRecord {
        self.0
    }
    fn converted(&self) -> Option<std::sync::Arc<content::Converted>> {
        Some(self.1.clone())
    }
}

#[test]
fn content_converted_once_encodes_the_same_bytes_in_every_dialect() {
    use crate::destination::Dialect;
    let mut failed = record();
    failed.outcome = Outcome::UpstreamError {
        error_type: "server_error".into(),
        message: "boom".into(),
        status: Some(500),
    };
    if let Some(c) = failed.content.as_mut() {
        c.output_text.clear();
    }
    let mut embedding = record();
    embedding.api = beacon_config::Api::Embeddings;
    // Tool calls in the answer, and content cut at the limits.
    let mut tools = record();
    if let Some(c) = tools.content.as_mut() {
        c.output_tool_calls = vec![ToolCall {
            id: Some("call_1".into()),
            name: Some("get_weather".into()),
            arguments: r#"{"city":"Paris"}"#.into(),
        }];
        c.input_truncated = true;
        c.output_truncated = true;
    }
    tools.finish_reasons = vec!["tool_calls".into()];
    for r in [record(), failed, embedding, tools] {
        let converted = std::sync::Arc::new(content::Converted::of(&r).unwrap());
        for dialect in [Dialect::GenAi, Dialect::Langfuse, Dialect::OpenInference] {
            for privacy_mode in [false, true] {
                let s = SpanSettings {
                    privacy_mode,
                    dialect,
                    ..settings()
                };
                let own = encode_export_parts_sized([&r], &s, &mut SeqIds(0), None, 64);
                let shared = encode_export_parts_sized(
                    [Preconverted(&r, converted.clone())],
                    &s,
                    &mut SeqIds(0),
                    None,
                    64,
                );
                assert_eq!(own, shared, "{dialect:?}, privacy {privacy_mode}");
            }
        }
    }
    // What is shared is what the spans carry: the prompt and answer in gen_ai form.
    let converted = content::Converted::of(&record()).unwrap();
    assert_eq!(
        converted.system.as_deref(),
        Some(r#"[{"type":"text","content":"Be brief."}]"#)
    );
    assert!(converted.input.unwrap().contains("SECRET-PROMPT hello"));
    assert!(converted.output.unwrap().contains("SECRET-COMPLETION hi"));
    let mut none = record();
    none.content = None;
    assert_eq!(content::Converted::of(&none), None);
}

/// A record carrying its id seed, as a queued record does.
struct WithSeed<'r>(&'r CompletionRecord, IdSeed);

impl Source for WithSeed<'_> {
    fn record(&self) -> &CompletionRecord {
        self.0
    }
    fn id_seed(&self) -> Option<IdSeed> {
        Some(self.1)
    }
}

/// (trace id, span id, parent span id) of every span of an export, in order.
fn span_ids(export: &[u8]) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    use prost::Message;
    let request = ExportTraceServiceRequest::decode(export).unwrap();
    request.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| {
            (
                s.trace_id.clone(),
                s.span_id.clone(),
                s.parent_span_id.clone(),
            )
        })
        .collect()
}

#[test]
fn a_record_has_the_same_ids_in_every_destination_and_its_own_across_records() {
    use crate::destination::Dialect;
    // Agent, function, generation, two failed attempts: several spans from one seed.
    let mut r = failed_over();
    r.trace = trace(json!({"trace_name": "agent", "span_name": "step"}));
    let encode = |seed: u8, dialect, privacy_mode| {
        let s = SpanSettings {
            privacy_mode,
            dialect,
            ..settings()
        };
        let mut random = RandomIds;
        let (head, spans) =
            encode_export_parts_sized([WithSeed(&r, [seed; 32])], &s, &mut random, None, 64);
        span_ids(&[head, spans].concat())
    };
    let ids = encode(7, Dialect::GenAi, false);
    assert_eq!(ids.len(), 5, "{ids:?}");
    assert!(ids.iter().all(|(t, _, _)| *t == ids[0].0 && t.len() == 16));
    for dialect in [Dialect::GenAi, Dialect::Langfuse, Dialect::OpenInference] {
        for privacy_mode in [false, true] {
            assert_eq!(encode(7, dialect, privacy_mode), ids, "{dialect:?}");
        }
    }
    let other = encode(8, Dialect::GenAi, false);
    assert_ne!(other[0].0, ids[0].0, "another record, another trace");
    // Without a seed, each encoding draws its own.
    let s = settings();
    let unseeded = |_| {
        let (head, spans) = encode_export_parts_sized([&r], &s, &mut RandomIds, None, 64);
        span_ids(&[head, spans].concat())
    };
    assert_ne!(unseeded(0)[0].0, unseeded(1)[0].0);
}

/// A record whose spans' shared part was written elsewhere (another destination's batch).
struct WithPrepared<'r>(&'r CompletionRecord, IdSeed, std::sync::Arc<Prepared>);

impl Source for WithPrepared<'_> {
    fn record(&self) -> &CompletionRecord {
        self.0
    }
    fn id_seed(&self) -> Option<IdSeed> {
        Some(self.1)
    }
    fn prepared(&self) -> Option<std::sync::Arc<Prepared>> {
        Some(self.2.clone())
    }
}

#[test]
fn spans_finished_from_a_shared_part_are_the_bytes_written_whole() {
    use crate::destination::Dialect;
    let mut failed = failed_over();
    failed.trace = trace(
        json!({"trace_name": "agent", "span_name": "step", "environment": "prod", "trace_id": "run-9"}),
    );
    let mut sampled = record();
    sampled.trace_context = Some(TraceContext {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        parent_span_id: "00f067aa0ba902b7".into(),
        sampled: Some(true),
        sample_rate: Some(0.5),
    });
    let mut tools = tool_result_record();
    if let Some(c) = tools.content.as_mut() {
        c.output_tool_calls = vec![ToolCall {
            id: Some("call_2".into()),
            name: Some("get_time".into()),
            arguments: r#"{"tz":"CET"}"#.into(),
        }];
    }
    tools.tool_names = vec!["get_weather".into(), "get_time".into()];
    for (n, r) in [record(), failed, sampled, tools].iter().enumerate() {
        let seed = [40 + n as u8; 32];
        let prepared = std::sync::Arc::new(Prepared::of(r, &mut SeededIds::new(seed)));
        // Made at its exact size, and charged for what it holds: its bytes, and no more
        // than a little beyond them.
        assert_eq!(prepared.bytes.capacity(), prepared.bytes.len());
        assert!(prepared.bytes() >= prepared.bytes.len() + prepared.spans.len() * 24);
        assert!(prepared.bytes() <= prepared.bytes.len() + 256 * prepared.spans.len() + 256);
        for dialect in [Dialect::GenAi, Dialect::Langfuse, Dialect::OpenInference] {
            for (privacy_mode, sampling_rate) in [(false, 1.0), (true, 1.0), (false, 0.25)] {
                let s = SpanSettings {
                    privacy_mode,
                    sampling_rate,
                    dialect,
                };
                let mut exported = (Vec::new(), Vec::new());
                let whole = encode_export_parts_sized(
                    [WithSeed(r, seed)],
                    &s,
                    &mut RandomIds,
                    Some(&mut exported.0),
                    64,
                );
                let finished = encode_export_parts_sized(
                    [WithPrepared(r, seed, prepared.clone())],
                    &s,
                    &mut RandomIds,
                    Some(&mut exported.1),
                    64,
                );
                assert_eq!(
                    whole, finished,
                    "record {n}, {dialect:?}, privacy {privacy_mode}, rate {sampling_rate}"
                );
                assert_eq!(exported.0, exported.1);
                // And both are the prost encoding of the same spans (field order included),
                // each attribute once: the shared and the destination's parts do not overlap.
                let spans = build_spans(r, &s, &mut SeededIds::new(seed));
                for sp in &spans {
                    let mut keys: Vec<&str> =
                        sp.attributes.iter().map(|kv| kv.key.as_str()).collect();
                    let all = keys.len();
                    keys.sort_unstable();
                    keys.dedup();
                    assert_eq!(
                        keys.len(),
                        all,
                        "record {n}, {dialect:?}: a key twice in {}",
                        sp.name
                    );
                }
                assert_eq!(
                    [whole.0, whole.1].concat(),
                    prost::Message::encode_to_vec(&export_request(spans)),
                    "record {n}, {dialect:?}"
                );
            }
        }
    }
}
