//! Broadcast: the export path, entirely off the hot path.
//!
//! ```text
//! proxy meter ──CompletionRecord──▶ RecordSender::submit (try_send, never waits)
//!                                        │ bounded queue, by records and by bytes held in
//!                                        │ the whole export path (full → counted drop)
//!                                        ▼
//!                          pipeline (router task) ──▶ record log (JSON lines)
//!                                        │ per tenant: switch; per destination: key
//!                                        │ allowlist (filtered), sampling (sampled_out)
//!                                        ▼
//!                 sink worker, one per destination (bounded by records and bytes → queue_full)
//!                   batch by size / flush interval → span::encode_export_parts_sized
//!                   (pure; ids from the record's seed, the part every destination shares
//!                   written once per record) → OTLP protobuf → gzip → POST (≤ 2 in
//!                   flight) → retry::classify
//!                                        │
//!                                        └─ exported | rejected | retries_exhausted | shutdown_deadline
//! ```
//!
//! [`record`] is the completion record (SPEC §3) shared with the proxy; [`span`] builds
//! the OTLP spans (SPEC §4.1); [`destination`] validates each destination type;
//! [`sink`] sends; [`stats`] counts every record that is not delivered, with its reason.

pub mod destination;
pub mod error_event;
pub mod ingress;
pub mod ledger;
pub mod pipeline;
pub mod recent;
pub mod record;
mod record_log;
pub mod retry;
pub mod sampling;
pub mod sink;
pub mod span;
pub mod stats;
pub mod test_connection;
pub mod tools;

use std::sync::Arc;

pub use ingress::{Backpressure, RecordSender};
pub use pipeline::{PipelineConfig, PipelineControl, PipelineHandle, StartError};
pub use record::CompletionRecord;
pub use stats::{DropReason, Stats};

/// Starts the export pipeline on the current Tokio runtime: validates every declared
/// destination, starts their workers, and returns the proxy's end of the queue and the
/// handle that shuts the pipeline down.
pub fn start(
    config: PipelineConfig,
    tenants: &[beacon_config::TenantConfig],
    stats: Arc<Stats>,
) -> Result<(RecordSender, PipelineHandle), StartError> {
    let (tx, rx) = tokio::sync::mpsc::channel(config.queue_capacity.max(1));
    let budget = ingress::ByteBudget::with_gauge(config.queue_max_bytes, stats.held_bytes_gauge());
    let handle = pipeline::spawn(config, tenants, rx, stats.clone())?;
    Ok((RecordSender::new(tx, budget, stats), handle))
}
