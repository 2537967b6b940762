//! Broadcast: the export path, entirely off the hot path.
//!
//! ```text
//! proxy meter ──CompletionRecord──▶ RecordSender::submit (try_send, never waits)
//!                                        │ bounded queue (full → counted drop)
//!                                        ▼
//!                                pipeline task ──▶ record log (JSON lines)
//!                                        │
//!                                        └─ shutdown: drain until the deadline, count the rest
//! ```
//!
//! [`record`] defines the completion record (SPEC §3) shared with the proxy; [`stats`]
//! counts every record that is not delivered, with its reason.

pub mod ingress;
pub mod pipeline;
pub mod record;
pub mod stats;

use std::sync::Arc;

pub use ingress::{Backpressure, RecordSender};
pub use pipeline::{PipelineConfig, PipelineHandle};
pub use record::CompletionRecord;
pub use stats::{DropReason, Stats};

/// Starts the export pipeline on the current Tokio runtime and returns the proxy's end of
/// the queue and the handle that shuts the pipeline down.
pub fn start(config: PipelineConfig, stats: Arc<Stats>) -> (RecordSender, PipelineHandle) {
    let (tx, rx) = tokio::sync::mpsc::channel(config.queue_capacity.max(1));
    let handle = pipeline::spawn(config, rx, stats.clone());
    (RecordSender::new(tx, stats), handle)
}
