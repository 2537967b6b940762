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

/// Longest label value exported, in bytes before escaping; longer values are cut (with `…`).
pub const MAX_LABEL_BYTES: usize = 128;

/// A label value that came from outside the operator's config — a client's model name, a
/// tenant's destination name: escaped once, when made, as the Prometheus and OpenMetrics
/// text formats require (`\\`, `\"`, `\n`), and cut at [`MAX_LABEL_BYTES`], so no value
/// can end its label early, forge a series, or make the exposition unparsable.
/// prometheus-client writes label values as they are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LabelValue(std::sync::Arc<str>);

impl LabelValue {
    /// Escapes (and if need be cuts) `raw`.
    pub fn new(raw: &str) -> Self {
        if raw.len() <= MAX_LABEL_BYTES && !raw.contains(['\\', '"', '\n']) {
            return Self(raw.into());
        }
        let mut end = raw.len().min(MAX_LABEL_BYTES);
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        let mut out = String::with_capacity(end + 8);
        for c in raw[..end].chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        if end < raw.len() {
            out.push('…');
        }
        Self(out.into())
    }

    /// The escaped text, as it appears in the exposition.
    pub fn as_escaped(&self) -> &str {
        &self.0
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    tenant: LabelValue,
    destination: LabelValue,
    reason: DropReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SinkLabels {
    tenant: LabelValue,
    destination: LabelValue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorEventLabels {
    tenant: LabelValue,
    destination: LabelValue,
    outcome: &'static str,
}

/// Counters of the export path, registered in Beacon's `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    enqueued: Counter,
    queue_depth: Gauge,
    held_bytes: Gauge,
    dropped: Family<DropLabels, Counter>,
    exported: Family<SinkLabels, Counter>,
    error_events: Family<ErrorEventLabels, Counter>,
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
            "beacon_broadcast_held_bytes",
            "Bytes of completion records the export path holds (hand-off queue, destination queues, batches being sent), bounded by broadcast.queue_max_bytes",
            self.held_bytes.clone(),
        );
        registry.register(
            "beacon_broadcast_dropped",
            "Records (or destination copies) not delivered, by reason",
            self.dropped.clone(),
        );
        registry.register(
            "beacon_broadcast_error_events",
            "Failed completions sent to Sentry destinations as error events, by outcome: sent, deduplicated (another event with the same fingerprint within the minute), failed (not accepted)",
            self.error_events.clone(),
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

    /// The gauge of bytes held by the export path (kept by the byte budget).
    pub(crate) fn held_bytes_gauge(&self) -> Gauge {
        self.held_bytes.clone()
    }

    /// Counts one loss. `destination` is empty for losses before fan-out.
    pub fn record_dropped(&self, tenant: &str, destination: &str, reason: DropReason) {
        self.dropped_n(
            &LabelValue::new(tenant),
            &LabelValue::new(destination),
            reason,
            1,
        );
    }

    /// Counts `n` losses of one destination, whose labels its worker made once.
    pub fn dropped_n(
        &self,
        tenant: &LabelValue,
        destination: &LabelValue,
        reason: DropReason,
        n: u64,
    ) {
        self.dropped
            .get_or_create(&DropLabels {
                tenant: tenant.clone(),
                destination: destination.clone(),
                reason,
            })
            .inc_by(n);
        self.dropped_total.fetch_add(n, Ordering::Relaxed);
        self.by_reason[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` deliveries to one destination, whose labels its worker made once.
    /// An error event for a destination ended as `outcome` (sent, deduplicated, failed).
    pub fn error_event(
        &self,
        tenant: &LabelValue,
        destination: &LabelValue,
        outcome: &'static str,
    ) {
        self.error_events
            .get_or_create(&ErrorEventLabels {
                tenant: tenant.clone(),
                destination: destination.clone(),
                outcome,
            })
            .inc();
    }

    /// Records delivered to a destination.
    pub fn exported_n(&self, tenant: &LabelValue, destination: &LabelValue, n: u64) {
        self.exported
            .get_or_create(&SinkLabels {
                tenant: tenant.clone(),
                destination: destination.clone(),
            })
            .inc_by(n);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_cut() {
        assert_eq!(LabelValue::new("gpt-4o").as_escaped(), "gpt-4o");
        assert_eq!(
            LabelValue::new("a\"} 1\nforged{x=\"\\").as_escaped(),
            r#"a\"} 1\nforged{x=\"\\"#
        );
        let long = "é".repeat(100);
        let cut = LabelValue::new(&long);
        assert!(cut.as_escaped().ends_with('…'));
        assert_eq!(cut.as_escaped().len(), MAX_LABEL_BYTES + '…'.len_utf8());
    }

    #[test]
    fn a_hostile_destination_name_cannot_forge_a_series() {
        let stats = Stats::default();
        stats.record_dropped(
            "acme",
            "x\"} 1\nbeacon_fake_total{a=\"",
            DropReason::Rejected,
        );
        let mut registry = Registry::default();
        stats.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            !text.lines().any(|l| l.starts_with("beacon_fake_total")),
            "{text}"
        );
    }
}
