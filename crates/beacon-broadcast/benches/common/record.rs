//! The completion record the span benchmarks encode: a streamed chat completion with a
//! system and a user message, token counts, cost and timings; optionally under an agent.

use beacon_broadcast::record::*;
use bytes::Bytes;

/// The record (`with_agent`: with a `trace_name` and `span_name`, three spans).
pub fn record(with_agent: bool) -> CompletionRecord {
    CompletionRecord {
        api: beacon_config::Api::Chat,
        request_id: "req_0123456789abcdef0123456789abcdef".into(),
        tenant_id: "acme".into(),
        key_id: "key_0123456789ab".into(),
        provider: "openai".into(),
        requested_model: "openai/gpt-4o".into(),
        upstream_model: "gpt-4o".into(),
        served_model: Some("gpt-4o-2024-08-06".into()),
        response_id: Some("chatcmpl-AbCdEf0123456789".into()),
        stream: true,
        params: RequestParams { temperature: Some(0.7), max_tokens: Some(512), ..Default::default() },
        usage: TokenUsage { prompt_tokens: 812, cached_tokens: 512, completion_tokens: 156, total_tokens: 968, ..Default::default() },
        cost: Cost { input: "0.00139".parse().unwrap(), output: "0.00156".parse().unwrap(), total: "0.00295".parse().unwrap(), source: CostSource::PriceTable, ..Cost::default() },
        timings: Timings { received_unix_nanos: 1_700_000_000_000_000_000, upstream_start_us: Some(80), upstream_headers_us: Some(240_000), first_chunk_us: Some(260_000), last_byte_us: 2_400_000, gateway_overhead_us: 95 },
        finish_reasons: vec!["stop".into()],
        outcome: Outcome::Ok,
        upstream_status: Some(200),
        attempts: Vec::new(),
        tool_names: Vec::new(),
        user: Some("user-123".into()),
        session_id: Some("session-abc".into()),
        trace: with_agent.then(|| {
            serde_json::json!({"trace_name": "support-agent", "span_name": "answer", "environment": "production"}).as_object().unwrap().clone()
        }),
        trace_context: None,
        content: Some(Content {
            tool_definitions: None,
            input_truncated: false,
            input_messages: Bytes::from(r#"[{"role":"system","content":"You are a helpful assistant that answers briefly."},{"role":"user","content":"Explain in two sentences why the sky is blue."}]"#),
            output_text: "Sunlight is scattered by the molecules of the atmosphere, and shorter (blue) wavelengths scatter much more than longer ones. So when we look at the sky away from the sun we mostly see scattered blue light.".into(),
            output_truncated: false,
            output_tool_calls: vec![],
        }),
        tools: Default::default(),
    }
}
