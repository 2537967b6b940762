//! The hand-off from the hot path: a bounded queue fed with `try_send`, never awaited.
//!
//! Backpressure policy: [`Backpressure::DropNewest`]. A full queue means the export
//! pipeline is behind; the completion must not wait for it, so the new record is dropped
//! and counted as [`DropReason::QueueFull`], with one warning per incident rather than
//! one per record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::record::CompletionRecord;
use crate::stats::{DropReason, Stats};

/// What the hand-off does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Drop the record being submitted and count it. The only policy allowed on the hot
    /// path: a completion never waits for telemetry.
    DropNewest,
}

/// The proxy's end of the queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RecordSender {
    tx: mpsc::Sender<CompletionRecord>,
    stats: Arc<Stats>,
    warned_full: Arc<AtomicBool>,
}

impl RecordSender {
    pub(crate) fn new(tx: mpsc::Sender<CompletionRecord>, stats: Arc<Stats>) -> Self {
        Self {
            tx,
            stats,
            warned_full: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Hands a record to the export pipeline without waiting. Returns whether it was queued.
    pub fn submit(&self, record: CompletionRecord) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => {
                self.stats.record_enqueued();
                // The queue drained since the last incident: warn again next time it fills.
                if self.warned_full.load(Ordering::Relaxed)
                    && self.tx.capacity() > self.tx.max_capacity() / 2
                {
                    self.warned_full.store(false, Ordering::Relaxed);
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(record)) => {
                self.stats
                    .record_dropped(&record.tenant_id, "", DropReason::QueueFull);
                if !self.warned_full.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        capacity = self.tx.max_capacity(),
                        "broadcast queue full: dropping completion records until it drains (counted in beacon_broadcast_dropped_total)"
                    );
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(record)) => {
                self.stats
                    .record_dropped(&record.tenant_id, "", DropReason::ShutdownDeadline);
                false
            }
        }
    }

    /// The backpressure policy in force.
    pub fn policy(&self) -> Backpressure {
        Backpressure::DropNewest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::*;

    pub(crate) fn record(tenant: &str) -> CompletionRecord {
        CompletionRecord {
            request_id: "req_1".into(),
            tenant_id: tenant.into(),
            key_id: "key_1".into(),
            provider: "openai".into(),
            requested_model: "openai/gpt-4o".into(),
            upstream_model: "gpt-4o".into(),
            served_model: None,
            response_id: None,
            stream: false,
            params: RequestParams::default(),
            usage: TokenUsage::default(),
            cost: Cost::default(),
            timings: Timings::default(),
            finish_reasons: vec![],
            outcome: Outcome::Ok,
            upstream_status: Some(200),
            user: None,
            session_id: None,
            trace: None,
            trace_context: None,
            content: None,
        }
    }

    #[tokio::test]
    async fn full_queue_drops_newest_and_counts_it() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = mpsc::channel(2);
        let sender = RecordSender::new(tx, stats.clone());
        assert!(sender.submit(record("a")));
        assert!(sender.submit(record("a")));
        assert!(!sender.submit(record("a")));
        assert!(!sender.submit(record("b")));
        assert_eq!(stats.enqueued(), 2);
        assert_eq!(stats.dropped_by(DropReason::QueueFull), 2);
        // Draining makes room again.
        assert!(rx.recv().await.is_some());
        assert!(sender.submit(record("a")));
        drop(rx);
        assert!(!sender.submit(record("a")));
        assert_eq!(stats.dropped_by(DropReason::ShutdownDeadline), 1);
    }

    /// A pipeline with no destinations, writing every record to the log at `path`.
    fn start_with_log(path: &std::path::Path) -> (RecordSender, crate::PipelineHandle) {
        crate::start(
            crate::PipelineConfig {
                queue_capacity: 16,
                record_log: Some(path.to_path_buf()),
                shutdown_deadline: std::time::Duration::from_secs(1),
                allow_private_destinations: false,
                sink: crate::sink::SinkConfig::default(),
                connect_timeout: std::time::Duration::from_secs(1),
            },
            &[],
            Arc::new(Stats::default()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn pipeline_writes_the_record_log_and_flushes_on_shutdown() {
        let dir = std::env::temp_dir().join(format!("beacon-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.jsonl");
        let _ = std::fs::remove_file(&path);
        let (sender, handle) = start_with_log(&path);
        for _ in 0..5 {
            assert!(sender.submit(record("acme")));
        }
        handle.shutdown().await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["tenant_id"], "acme");
        assert_eq!(first["outcome"]["kind"], "ok");
    }

    /// Waits up to 5 s for the record log to hold `n` lines.
    async fn wait_for_lines(path: &std::path::Path, n: usize) -> usize {
        let mut lines = 0;
        for _ in 0..500 {
            lines = std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
            if lines >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        lines
    }

    #[tokio::test]
    async fn records_arriving_after_the_router_went_idle_are_delivered_at_once() {
        let dir = std::env::temp_dir().join(format!("beacon-test-idle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("records.jsonl");
        let _ = std::fs::remove_file(&path);
        let (sender, handle) = start_with_log(&path);
        assert!(sender.submit(record("acme")));
        assert_eq!(wait_for_lines(&path, 1).await, 1);
        // Long past the idle threshold: the router now waits on the queue instead of polling.
        let idle = crate::pipeline::POLL_INTERVAL * crate::pipeline::IDLE_POLLS_BEFORE_WAITING;
        tokio::time::sleep(idle * 5).await;
        assert!(sender.submit(record("acme")));
        assert!(sender.submit(record("acme")));
        // Delivered and logged while the pipeline runs, not only at shutdown.
        assert_eq!(wait_for_lines(&path, 3).await, 3);
        tokio::time::sleep(idle * 5).await;
        assert!(sender.submit(record("acme")));
        assert_eq!(wait_for_lines(&path, 4).await, 4);
        handle.shutdown().await;
        assert_eq!(wait_for_lines(&path, 4).await, 4);
    }
}
