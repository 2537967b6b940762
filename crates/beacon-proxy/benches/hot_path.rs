//! Hot-path pieces of the proxy, one thread each: SSE parsing of a streamed completion as it
//! arrives in network-sized pieces, the typed chunk view the meter reads from every chunk,
//! and usage extraction from a final usage chunk and from a non-streaming response (read as
//! the handler reads it: one typed pass, then the cost spliced into the upstream's bytes),
//! and the token estimate made when an upstream reports no usage.
//!
//! `cargo bench -p beacon-proxy --bench hot_path`

#![allow(missing_docs, clippy::unwrap_used)]

use beacon_proxy::apis::chat::view::{ChunkView, CompletionView};
use beacon_proxy::handlers::splice::add_cost_at;
use beacon_proxy::meter::usage::parse_usage;
use beacon_proxy::sse::SseParser;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn stream_bytes(chunks: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..chunks {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-AbC\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    s.push_str(USAGE_CHUNK);
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

const USAGE_CHUNK: &str = "data: {\"id\":\"chatcmpl-AbC\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-2024-08-06\",\"choices\":[],\"usage\":{\"prompt_tokens\":812,\"completion_tokens\":156,\"total_tokens\":968,\"prompt_tokens_details\":{\"cached_tokens\":512},\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n\n";

const RESPONSE: &str = r#"{"id":"chatcmpl-AbC","object":"chat.completion","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Sunlight is scattered by the molecules of the atmosphere, and shorter (blue) wavelengths scatter much more than longer ones."},"finish_reason":"stop"}],"usage":{"prompt_tokens":812,"completion_tokens":156,"total_tokens":968,"prompt_tokens_details":{"cached_tokens":512},"completion_tokens_details":{"reasoning_tokens":0}}}"#;

fn sse(c: &mut Criterion) {
    let bytes = stream_bytes(200);
    let mut g = c.benchmark_group("sse_parse");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    for piece in [64usize, 1460, 16 * 1024] {
        g.bench_function(format!("200 chunks in {piece}-byte reads"), |b| {
            let mut out = Vec::with_capacity(256);
            b.iter(|| {
                let mut p = SseParser::new();
                out.clear();
                for part in bytes.chunks(piece) {
                    p.push(part, &mut out).unwrap();
                }
                assert_eq!(out.len(), 202);
            })
        });
    }
    g.finish();
}

fn chunks_and_usage(c: &mut Criterion) {
    let content_chunk = &stream_bytes(1)[6..];
    let content_chunk = &content_chunk[..content_chunk.iter().position(|&b| b == b'\n').unwrap()];
    let usage_chunk = USAGE_CHUNK.trim_start_matches("data: ").trim_end();
    let mut g = c.benchmark_group("meter");
    g.throughput(Throughput::Elements(1));
    g.bench_function("chunk view of a content chunk", |b| {
        b.iter(|| serde_json::from_slice::<ChunkView>(content_chunk).unwrap())
    });
    g.bench_function("usage from the final usage chunk", |b| {
        b.iter(|| {
            let v: ChunkView = serde_json::from_str(usage_chunk).unwrap();
            parse_usage(v.usage.as_ref().unwrap()).unwrap()
        })
    });
    g.bench_function(
        "non-streaming response: typed view, usage, cost spliced in",
        |b| {
            b.iter(|| {
                let v: CompletionView<'_> = serde_json::from_str(RESPONSE).unwrap();
                let usage: serde_json::Value =
                    serde_json::from_str(v.usage.unwrap().get()).unwrap();
                let reported = parse_usage(&usage).unwrap();
                let body = add_cost_at(RESPONSE, v.usage, Some(&usage), Some(0.0025), String::new)
                    .unwrap();
                (reported, body)
            })
        },
    );
    g.bench_function(
        "non-streaming response parsed whole (the former path, for comparison)",
        |b| {
            b.iter(|| {
                let v: serde_json::Value = serde_json::from_str(RESPONSE).unwrap();
                parse_usage(&v["usage"]).unwrap()
            })
        },
    );
    g.finish();
}

fn estimate(c: &mut Criterion) {
    use beacon_proxy::meter::estimate::count_text;
    let mut g = c.benchmark_group("estimate");
    let prose = "The gateway forwards each request, measures its tokens and cost, and sends \
                 a trace of the completion to the tenant's own destinations. "
        .repeat(200);
    let prose = &prose[..16 * 1024];
    let run = "a".repeat(16 * 1024);
    // Warm the table (loaded once per process) before measuring.
    count_text("gpt-4o", "hello", 5);
    g.throughput(Throughput::Bytes(prose.len() as u64));
    g.bench_function("16 KiB of English prose (o200k_base)", |b| {
        b.iter(|| count_text("gpt-4o", prose, prose.len()))
    });
    g.bench_function("16 KiB of one repeated letter (o200k_base)", |b| {
        b.iter(|| count_text("gpt-4o", &run, run.len()))
    });
    g.finish();
}

criterion_group!(benches, sse, chunks_and_usage, estimate);
criterion_main!(benches);
