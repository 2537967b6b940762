//! Span building and encoding throughput: record → OTLP spans → protobuf → gzip.
//!
//! `cargo bench -p beacon-broadcast --bench span_encode`; spans per second per core is
//! 1 / (time per record) for the one-span case (the bench runs on one thread).

#![allow(missing_docs, clippy::unwrap_used)]

use beacon_broadcast::span::{build_spans, encode_export, export_request, RandomIds, SpanSettings};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;

#[path = "common/record.rs"]
mod fixture;
use beacon_broadcast::record::CompletionRecord;
use fixture::record;

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
