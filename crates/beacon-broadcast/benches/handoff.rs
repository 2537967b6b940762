//! The hand-off from the proxy to the export pipeline under contention: proxy threads call
//! `RecordSender::submit` (a `try_send`, never waiting) while the real pipeline drains the
//! queue on its own thread. Reports wall time per record handed off (all threads together)
//! with 1, 2 and 4 submitting threads.
//!
//! `cargo bench -p beacon-broadcast --bench handoff`

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use beacon_broadcast::record::*;
use beacon_broadcast::sink::SinkConfig;
use beacon_broadcast::{PipelineConfig, RecordSender, Stats};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn record(i: u64) -> CompletionRecord {
    CompletionRecord {
        api: beacon_config::Api::Chat,
        request_id: format!("req_{i:032x}"),
        tenant_id: "acme".into(),
        key_id: "key_0123456789ab".into(),
        provider: "openai".into(),
        requested_model: "openai/gpt-4o".into(),
        upstream_model: "gpt-4o".into(),
        served_model: Some("gpt-4o-2024-08-06".into()),
        response_id: Some("chatcmpl-AbCdEf0123456789".into()),
        stream: false,
        params: RequestParams::default(),
        usage: TokenUsage {
            prompt_tokens: 20,
            completion_tokens: 8,
            total_tokens: 28,
            ..Default::default()
        },
        cost: Cost::default(),
        timings: Timings::default(),
        finish_reasons: vec!["stop".into()],
        outcome: Outcome::Ok,
        upstream_status: Some(200),
        attempts: Vec::new(),
        tool_names: Vec::new(),
        user: None,
        session_id: None,
        trace: None,
        trace_context: None,
        content: None,
        tools: Default::default(),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stats = Arc::new(Stats::default());
    let config = PipelineConfig {
        queue_max_bytes: 1 << 30,
        queue_capacity: 1 << 16,
        record_log: None,
        shutdown_deadline: Duration::from_secs(1),
        allow_private_destinations: true,
        sink: SinkConfig::default(),
        connect_timeout: Duration::from_secs(1),
    };
    let (sender, _pipeline) = runtime
        .block_on(async { beacon_broadcast::start(config, &[], stats.clone()) })
        .unwrap();
    let mut g = c.benchmark_group("handoff");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    for threads in [1usize, 2, 4] {
        g.bench_function(format!("submit/{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(threads as u64);
                // Records are built before the clock starts: only the hand-off is timed.
                let batches: Vec<Vec<CompletionRecord>> = (0..threads)
                    .map(|t| (0..per_thread).map(|i| record(i + t as u64)).collect())
                    .collect();
                let start = Instant::now();
                std::thread::scope(|s| {
                    for batch in batches {
                        let sender: RecordSender = sender.clone();
                        s.spawn(move || {
                            for r in batch {
                                sender.submit(r);
                            }
                        });
                    }
                });
                let elapsed = start.elapsed();
                // Let the pipeline drain before the next sample.
                std::thread::sleep(Duration::from_millis(20));
                // Wall time for all `iters` records: criterion's per-element figure is the
                // aggregate cost of one hand-off with `threads` threads submitting at once.
                elapsed
            })
        });
    }
    g.finish();
    println!(
        "dropped while benchmarking (queue full): {}",
        stats.dropped_by(beacon_broadcast::DropReason::QueueFull)
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
