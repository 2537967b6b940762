//! Span building and encoding throughput: record → OTLP spans → protobuf → gzip.
//!
//! `cargo bench -p beacon-broadcast --bench span_encode`; spans per second per core is
//! 1 / (time per record) for the one-span case (the bench runs on one thread).

#![allow(missing_docs, clippy::unwrap_used)]

use beacon_broadcast::record::*;
use beacon_broadcast::span::{build_spans, encode_export, export_request, RandomIds, SpanSettings};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;

fn record(with_agent: bool) -> CompletionRecord {
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

fn bench(c: &mut Criterion) {
    let settings = SpanSettings {
        privacy_mode: false,
        sampling_rate: 1.0,
        dialect: Default::default(),
    };
    let mut g = c.benchmark_group("span_encode");
    for (name, with_agent) in [("generation_only", false), ("agent_hierarchy", true)] {
        let r = record(with_agent);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{name}/prost"), |b| {
            b.iter(|| export_request(build_spans(&r, &settings, &mut RandomIds)).encode_to_vec())
        });
        g.bench_function(format!("{name}/direct"), |b| {
            b.iter(|| encode_export(std::iter::once(&r), &settings, &mut RandomIds))
        });
    }
    // A full batch as the sink sends it: 256 records, encoded and gzipped.
    let batch: Vec<CompletionRecord> = (0..256).map(|_| record(false)).collect();
    g.throughput(Throughput::Elements(256));
    g.bench_function("batch256/direct+gzip", |b| {
        b.iter_batched(
            || (),
            |()| {
                beacon_broadcast::sink::http::gzip(&encode_export(
                    batch.iter(),
                    &settings,
                    &mut RandomIds,
                ))
                .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
