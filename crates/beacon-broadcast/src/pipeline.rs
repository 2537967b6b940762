//! The background side of the queue: one task that drains records and hands them to the
//! sinks, and flushes what is left on shutdown, up to a deadline.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::record::CompletionRecord;
use crate::stats::{DropReason, Stats};

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Queue capacity in records.
    pub queue_capacity: usize,
    /// JSON-lines file receiving every record (content excluded).
    pub record_log: Option<PathBuf>,
    /// How long the queue keeps draining after shutdown begins.
    pub shutdown_deadline: Duration,
}

impl From<&beacon_config::BroadcastConfig> for PipelineConfig {
    fn from(c: &beacon_config::BroadcastConfig) -> Self {
        Self {
            queue_capacity: c.queue_capacity,
            record_log: c.record_log.clone(),
            shutdown_deadline: c.shutdown_deadline,
        }
    }
}

/// Owner of the running pipeline; [`PipelineHandle::shutdown`] flushes and stops it.
#[derive(Debug)]
pub struct PipelineHandle {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl PipelineHandle {
    /// Stops accepting new work, drains the queue up to the deadline, and returns once the
    /// pipeline task has ended. Records still queued at the deadline are counted as
    /// [`DropReason::ShutdownDeadline`].
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "broadcast pipeline task failed");
        }
    }
}

pub(crate) fn spawn(
    config: PipelineConfig,
    rx: mpsc::Receiver<CompletionRecord>,
    stats: Arc<Stats>,
) -> PipelineHandle {
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(config, rx, stats, stop_rx));
    PipelineHandle {
        stop: Some(stop_tx),
        task,
    }
}

async fn run(
    config: PipelineConfig,
    mut rx: mpsc::Receiver<CompletionRecord>,
    stats: Arc<Stats>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut log = match &config.record_log {
        Some(path) => match RecordLog::open(path).await {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open broadcast.record_log; records will not be logged");
                None
            }
        },
        None => None,
    };
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            record = rx.recv() => {
                let Some(record) = record else { break };
                deliver(&record, &mut log, &stats).await;
                // Drain what is already queued before flushing, so a burst costs one flush.
                while let Ok(record) = rx.try_recv() {
                    deliver(&record, &mut log, &stats).await;
                }
                stats.set_queue_depth(rx.len());
                if let Some(log) = log.as_mut() {
                    log.flush().await;
                }
            }
        }
    }

    // Shutdown: no new records can be produced once the server has stopped; drain what is
    // queued until the deadline, then count the rest.
    rx.close();
    let deadline = tokio::time::Instant::now() + config.shutdown_deadline;
    let mut flushed = 0u64;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(record)) => {
                deliver(&record, &mut log, &stats).await;
                flushed += 1;
            }
            Ok(None) => break,
            Err(_) => {
                let mut lost = 0u64;
                while let Ok(record) = rx.try_recv() {
                    stats.record_dropped(&record.tenant_id, "", DropReason::ShutdownDeadline);
                    lost += 1;
                }
                tracing::warn!(
                    lost,
                    "broadcast shutdown deadline passed; queued records dropped"
                );
                break;
            }
        }
    }
    if let Some(log) = log.as_mut() {
        log.flush().await;
    }
    stats.set_queue_depth(0);
    tracing::info!(
        flushed,
        dropped_total = stats.dropped_total(),
        "broadcast pipeline stopped"
    );
}

async fn deliver(record: &CompletionRecord, log: &mut Option<RecordLog>, _stats: &Stats) {
    if let Some(log) = log.as_mut() {
        log.write(record).await;
    }
}

/// Appends one JSON object per record to a file.
struct RecordLog {
    file: tokio::io::BufWriter<tokio::fs::File>,
    failed: bool,
}

impl RecordLog {
    async fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        Ok(Self {
            file: tokio::io::BufWriter::new(file),
            failed: false,
        })
    }

    async fn write(&mut self, record: &CompletionRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize completion record");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line).await {
            self.warn_once(&e);
        }
    }

    async fn flush(&mut self) {
        if let Err(e) = self.file.flush().await {
            self.warn_once(&e);
        }
    }

    fn warn_once(&mut self, e: &std::io::Error) {
        if !self.failed {
            self.failed = true;
            tracing::error!(error = %e, "writing broadcast.record_log failed");
        }
    }
}
