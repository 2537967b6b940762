//! Export accounting: every record that is not delivered is counted with a reason.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a record (or one destination's copy of it) was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The hand-off queue was full; the completion did not wait.
    QueueFull,
    /// The destination's sampling rate left this session or request out.
    SampledOut,
    /// The destination's API-key allowlist does not include the calling key.
    Filtered,
    /// The destination answered a non-retryable 4xx.
    Rejected,
    /// Every retry failed.
    RetriesExhausted,
    /// Still queued when the shutdown deadline passed.
    ShutdownDeadline,
    /// The record could not be encoded.
    EncodeError,
}

impl DropReason {
    /// Every reason, for listings that show zeros too.
    pub const ALL: [DropReason; 7] = [
        Self::QueueFull,
        Self::SampledOut,
        Self::Filtered,
        Self::Rejected,
        Self::RetriesExhausted,
        Self::ShutdownDeadline,
        Self::EncodeError,
    ];

    /// snake_case name used in logs and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::SampledOut => "sampled_out",
            Self::Filtered => "filtered",
            Self::Rejected => "rejected",
            Self::RetriesExhausted => "retries_exhausted",
            Self::ShutdownDeadline => "shutdown_deadline",
            Self::EncodeError => "encode_error",
        }
    }
}

impl EncodeLabelValue for DropReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    tenant: String,
    destination: String,
    reason: DropReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    tenant: String,
    destination: String,
}

/// Counters of the export path, registered in Beacon's `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    enqueued: Counter,
    queue_depth: Gauge,
    dropped: Family<DropLabels, Counter>,
    exported: Family<SinkLabels, Counter>,
    dropped_total: AtomicU64,
    by_reason: [AtomicU64; DropReason::ALL.len()],
}

impl Stats {
    /// Registers every counter under `beacon_broadcast_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "beacon_broadcast_enqueued",
            "Completion records handed to the export pipeline",
            self.enqueued.clone(),
        );
        registry.register(
            "beacon_broadcast_queue_depth",
            "Records waiting in the hand-off queue",
            self.queue_depth.clone(),
        );
        registry.register(
            "beacon_broadcast_dropped",
            "Records (or destination copies) not delivered, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "beacon_broadcast_exported",
            "Records delivered, by destination",
            self.exported.clone(),
        );
    }

    pub(crate) fn record_enqueued(&self) {
        self.enqueued.inc();
    }

    pub(crate) fn set_queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Counts one loss. `destination` is empty for losses before fan-out.
    pub fn record_dropped(&self, tenant: &str, destination: &str, reason: DropReason) {
        self.dropped
            .get_or_create(&DropLabels {
                tenant: tenant.to_string(),
                destination: destination.to_string(),
                reason,
            })
            .inc();
        self.dropped_total.fetch_add(1, Ordering::Relaxed);
        self.by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one delivery.
    pub fn record_exported(&self, tenant: &str, destination: &str) {
        self.exported
            .get_or_create(&SinkLabels {
                tenant: tenant.to_string(),
                destination: destination.to_string(),
            })
            .inc();
    }

    /// Records enqueued so far.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.get()
    }

    /// All losses so far, every reason together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// Losses for one reason, all tenants and destinations together.
    pub fn dropped_by(&self, reason: DropReason) -> u64 {
        self.by_reason[reason as usize].load(Ordering::Relaxed)
    }
}
