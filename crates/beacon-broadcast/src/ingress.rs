//! The hand-off from the hot path: a bounded queue fed with `try_send`, never awaited.
//!
//! Backpressure policy: [`Backpressure::DropNewest`]. A full queue means the export
//! pipeline is behind; the completion must not wait for it, so the new record is dropped
//! and counted as [`DropReason::QueueFull`], with one warning per incident rather than
//! one per record.
//!
//! The queue is bounded twice: by records (`broadcast.queue_capacity`) and by bytes
//! (`broadcast.queue_max_bytes`). Each record accepted takes a [`Charge`] of its size
//! against the [`ByteBudget`], and gives it back only when the last destination is done
//! with it (delivered or dropped), so the budget bounds everything the export path holds —
//! the hand-off queue, the destination queues and the batches being sent — not just this
//! queue.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use crate::record::CompletionRecord;
use crate::span::content::Converted;
use crate::span::{IdSeed, Prepared, SeededIds};
use crate::stats::{DropReason, Stats};

/// Values kept for several destinations ([`Queued::converted`], [`Queued::prepared`]) take
/// at most this fraction of the budget together: past it each destination makes its own, so
/// a destination slow to encode its queue holds at most this much beyond its records.
const SHARED_FRACTION: usize = 8;

/// Bytes of records the export path holds, and the most it may hold.
#[derive(Debug)]
pub struct ByteBudget {
    used: AtomicUsize,
    max: usize,
    /// Of `used`, the bytes of values kept for several destinations.
    shared: AtomicUsize,
    /// `beacon_broadcast_held_bytes`, kept equal to `used` on every change.
    gauge: Gauge,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Self> {
        Self::with_gauge(max, Gauge::default())
    }

    /// A budget of `max` bytes whose holdings `gauge` shows.
    pub fn with_gauge(max: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
            shared: AtomicUsize::new(0),
            gauge,
        })
    }

    fn show(&self, used: usize) {
        self.gauge.set(i64::try_from(used).unwrap_or(i64::MAX));
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes `bytes` from the budget, or `None` when they do not fit.
    pub fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.checked_add(bytes).filter(|n| *n <= self.max)?;
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.show(next);
                    return Some(Charge {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }
}

impl ByteBudget {
    /// Takes `bytes` for a value kept for several destinations: within the budget, and
    /// within its [`SHARED_FRACTION`] for such values; `None` when they do not fit.
    fn try_charge_shared(self: &Arc<Self>, bytes: usize) -> Option<SharedCharge> {
        let limit = self.max / SHARED_FRACTION;
        let mut shared = self.shared.load(Ordering::Relaxed);
        loop {
            let next = shared.checked_add(bytes).filter(|n| *n <= limit)?;
            match self.shared.compare_exchange_weak(
                shared,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => shared = now,
            }
        }
        match self.try_charge(bytes) {
            Some(charge) => Some(SharedCharge(charge)),
            None => {
                self.shared.fetch_sub(bytes, Ordering::Relaxed);
                None
            }
        }
    }

    /// Bytes of values kept for several destinations now.
    pub fn shared(&self) -> usize {
        self.shared.load(Ordering::Relaxed)
    }
}

/// A [`Charge`] for a value kept for several destinations, also counted in the budget's
/// shared part until dropped.
#[derive(Debug)]
struct SharedCharge(Charge);

impl Drop for SharedCharge {
    fn drop(&mut self) {
        self.0
            .budget
            .shared
            .fetch_sub(self.0.bytes, Ordering::Relaxed);
    }
}

/// Bytes counted against a [`ByteBudget`] until dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Charge {
    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let before = self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        self.budget.show(before.saturating_sub(self.bytes));
    }
}

/// Something made from a queued record once for several destinations: the destinations
/// still to use it (each destination's copy of the record counts itself in and takes one
/// turn, or leaves when dropped without it: `sink::Held`), and the value kept — charged to
/// the byte budget — from the first of them to the last, so it is held only while a
/// destination still needs it, not through another's retries.
#[derive(Debug)]
struct Shared<T> {
    state: Mutex<SharedState<T>>,
}

#[derive(Debug)]
struct SharedState<T> {
    users: usize,
    kept: Option<(Arc<T>, SharedCharge)>,
}

impl<T> Shared<T> {
    fn new() -> Self {
        Self {
            state: Mutex::new(SharedState {
                users: 0,
                kept: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState<T>> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn add_user(&self) {
        self.lock().users += 1;
    }

    /// A user leaves without its turn; the last one lets the kept value go.
    fn leave(&self) {
        let mut state = self.lock();
        state.users = state.users.saturating_sub(1);
        if state.users == 0 {
            state.kept = None;
        }
    }

    /// One user's turn: the kept value (let go by the last user), or `make`'s, kept for
    /// the users after this one when the budget has room. With no user after it and
    /// nothing kept, `make` is called only when `alone` is true (otherwise the caller does
    /// the work itself: `None`).
    fn take(
        &self,
        budget: &Arc<ByteBudget>,
        alone: bool,
        make: impl FnOnce() -> Option<T>,
        bytes: impl FnOnce(&T) -> usize,
    ) -> Option<Arc<T>> {
        let mut state = self.lock();
        let others = state.users.saturating_sub(1);
        state.users = others;
        if let Some((value, _)) = state.kept.as_ref() {
            let value = value.clone();
            if others == 0 {
                state.kept = None;
            }
            return Some(value);
        }
        if others == 0 && !alone {
            return None;
        }
        let value = Arc::new(make()?);
        if others > 0 {
            if let Some(charge) = budget.try_charge_shared(bytes(&value)) {
                state.kept = Some((value.clone(), charge));
            }
        }
        Some(value)
    }

    /// The kept value, for a user that has had its turn (a batch encoded again after a
    /// split): not counted again.
    fn kept(&self) -> Option<Arc<T>> {
        self.lock().kept.as_ref().map(|(value, _)| value.clone())
    }
}

/// A record in the export path, with its charge against the byte budget: released when
/// the last holder (the queue, a destination's queue or batch) drops it.
#[derive(Debug)]
pub struct Queued {
    /// The record.
    pub record: CompletionRecord,
    charge: Charge,
    /// Its prompt and answer converted, for the destinations that send them.
    converted: Shared<Converted>,
    /// Its spans' shared part, for the destinations that send spans.
    prepared: Shared<Prepared>,
    /// The seed of the record's trace and span ids, the same for every destination.
    id_seed: IdSeed,
}

impl Queued {
    /// A queued record holding `charge`.
    pub fn new(record: CompletionRecord, charge: Charge) -> Self {
        Self {
            record,
            charge,
            converted: Shared::new(),
            prepared: Shared::new(),
            id_seed: crate::span::id_seed(),
        }
    }

    /// The seed every destination draws the record's trace and span ids from
    /// ([`crate::span::SeededIds`]).
    pub fn id_seed(&self) -> IdSeed {
        self.id_seed
    }

    /// The record's size as charged.
    pub fn bytes(&self) -> usize {
        self.charge.bytes()
    }

    /// One more destination will encode the record's prompt and answer.
    pub fn add_content_user(&self) {
        self.converted.add_user();
    }

    /// A destination counted by [`Queued::add_content_user`] will not encode it after all
    /// (its copy was dropped before being encoded).
    pub fn leave_content(&self) {
        self.converted.leave();
    }

    /// One more destination will encode the record's spans.
    pub fn add_span_user(&self) {
        self.prepared.add_user();
    }

    /// A destination counted by [`Queued::add_span_user`] will not encode them after all.
    pub fn leave_spans(&self) {
        self.prepared.leave();
    }

    /// The record's prompt and answer converted for one destination's spans (its turn),
    /// converted once for all of them: the first destination of several converts and keeps
    /// the result, charged to the same byte budget, and the last one lets it go. A single
    /// user, or no room: converted for this caller only. `None` without content.
    pub fn converted(&self) -> Option<Arc<Converted>> {
        self.converted.take(
            &self.charge.budget,
            true,
            || Converted::of(&self.record),
            Converted::bytes,
        )
    }

    /// [`Queued::converted`] for a destination that has had its turn: the kept conversion,
    /// or one of its own.
    pub fn converted_again(&self) -> Option<Arc<Converted>> {
        self.converted
            .kept()
            .or_else(|| Converted::of(&self.record).map(Arc::new))
    }

    /// The shared part of the record's spans for one destination (its turn), written once
    /// for every destination that sends spans and kept from the first to the last as
    /// [`Queued::converted`] is. `None` for a single user, which writes its spans whole.
    pub fn prepared(&self) -> Option<Arc<Prepared>> {
        self.prepared.take(
            &self.charge.budget,
            false,
            || {
                let mut ids = SeededIds::new(self.id_seed);
                Some(Prepared::of(&self.record, &mut ids))
            },
            Prepared::bytes,
        )
    }

    /// [`Queued::prepared`] for a destination that has had its turn: the kept part, if any.
    pub fn prepared_again(&self) -> Option<Arc<Prepared>> {
        self.prepared.kept()
    }
}

impl std::ops::Deref for Queued {
    type Target = CompletionRecord;
    fn deref(&self) -> &CompletionRecord {
        &self.record
    }
}

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
    /// Records travel boxed in their `Arc`: one pointer through the queue, where the record
    /// itself (about 1 KB) was copied into the queue's slot, out of it, and into the `Arc`
    /// the destinations share.
    tx: mpsc::Sender<Arc<Queued>>,
    budget: Arc<ByteBudget>,
    stats: Arc<Stats>,
    warned_full: Arc<AtomicBool>,
}

impl RecordSender {
    pub(crate) fn new(
        tx: mpsc::Sender<Arc<Queued>>,
        budget: Arc<ByteBudget>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            tx,
            budget,
            stats,
            warned_full: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Hands a record to the export pipeline without waiting. Returns whether it was queued.
    pub fn submit(&self, record: CompletionRecord) -> bool {
        let Some(charge) = self.budget.try_charge(record.approx_bytes()) else {
            self.full(&record.tenant_id, "bytes");
            return false;
        };
        match self.tx.try_send(Arc::new(Queued::new(record, charge))) {
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
            Err(mpsc::error::TrySendError::Full(queued)) => {
                self.full(&queued.tenant_id, "records");
                false
            }
            Err(mpsc::error::TrySendError::Closed(record)) => {
                self.stats
                    .record_dropped(&record.tenant_id, "", DropReason::ShutdownDeadline);
                false
            }
        }
    }

    fn full(&self, tenant: &str, limit: &'static str) {
        self.stats.record_dropped(tenant, "", DropReason::QueueFull);
        if !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit,
                capacity = self.tx.max_capacity(),
                max_bytes = self.budget.max(),
                held_bytes = self.budget.used(),
                "broadcast queue full: dropping completion records until it drains (counted in beacon_broadcast_dropped_total)"
            );
        }
    }

    /// The backpressure policy in force.
    pub fn policy(&self) -> Backpressure {
        Backpressure::DropNewest
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::*;

    pub(crate) fn record(tenant: &str) -> CompletionRecord {
        CompletionRecord {
            api: beacon_config::Api::Chat,
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

    #[tokio::test]
    async fn full_queue_drops_newest_and_counts_it() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = mpsc::channel(2);
        let sender = RecordSender::new(tx, ByteBudget::new(usize::MAX), stats.clone());
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

    #[tokio::test]
    async fn the_byte_budget_bounds_what_is_held_until_the_last_holder_lets_go() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = mpsc::channel(100);
        let one = record("a").approx_bytes();
        let gauge = Gauge::default();
        let budget = ByteBudget::with_gauge(one * 2 + one / 2, gauge.clone());
        let sender = RecordSender::new(tx, budget.clone(), stats.clone());
        assert!(sender.submit(record("a")));
        assert!(sender.submit(record("a")));
        assert!(
            !sender.submit(record("a")),
            "a third record is over the bytes"
        );
        assert_eq!(stats.dropped_by(DropReason::QueueFull), 1);
        assert_eq!(budget.used(), one * 2);
        // Taken off the queue but still held (say, by a destination): still charged.
        let first = rx.recv().await.unwrap();
        let copy = first.clone();
        assert!(!sender.submit(record("a")));
        drop(first);
        assert_eq!(budget.used(), one * 2, "a destination still holds it");
        drop(copy);
        assert_eq!(budget.used(), one);
        assert_eq!(gauge.get(), one as i64, "the gauge follows every release");
        assert!(sender.submit(record("a")));
        // A record bigger than the whole budget is refused, not queued.
        let mut big = record("a");
        big.user = Some("x".repeat(one * 3));
        assert!(!sender.submit(big));
    }

    #[test]
    fn converted_content_is_shared_by_its_users_and_let_go_by_the_last() {
        let mut r = record("a");
        r.content = Some(Content {
            input_messages: bytes::Bytes::from_static(br#"[{"role":"user","content":"hello"}]"#),
            input_truncated: false,
            output_text: "hi there".into(),
            output_truncated: false,
            tool_definitions: None,
            output_tool_calls: vec![],
        });
        let expected = Converted::of(&r).unwrap();
        let held = r.approx_bytes();
        let queued = |budget: &Arc<ByteBudget>, users: usize| {
            let q = Queued::new(r.clone(), budget.try_charge(held).unwrap());
            for _ in 0..users {
                q.add_content_user();
            }
            q
        };

        // Three destinations send the content: converted by the first, kept (and charged)
        // until the third has it.
        let budget = ByteBudget::new(1 << 20);
        let q = queued(&budget, 3);
        let first = q.converted().unwrap();
        assert_eq!(*first, expected);
        assert_eq!(budget.used(), held + expected.bytes());
        let second = q.converted().unwrap();
        assert!(Arc::ptr_eq(&first, &second), "converted once");
        let third = q.converted().unwrap();
        assert!(Arc::ptr_eq(&first, &third));
        assert_eq!(
            budget.used(),
            held,
            "let go by the last user, record still held"
        );
        drop(q);
        assert_eq!(budget.used(), 0);

        // One user (or none counted): converted for it, nothing kept or charged.
        for users in [0, 1] {
            let q = queued(&budget, users);
            assert_eq!(q.converted().as_deref(), Some(&expected));
            assert_eq!(budget.used(), held);
            let again = q.converted().unwrap();
            assert_eq!(*again, expected);
            assert_eq!(budget.used(), held);
        }

        // A user whose queue refused the record is taken back: the other is the only one.
        let q = queued(&budget, 2);
        q.leave_content();
        assert!(q.converted().is_some());
        assert_eq!(budget.used(), held);
        drop(q);

        // No room for it in the budget: converted for the caller all the same, not kept.
        let tight = ByteBudget::new(held + 8);
        let q = queued(&tight, 2);
        assert_eq!(q.converted().as_deref(), Some(&expected));
        assert_eq!(tight.used(), held);

        // Nothing to convert without content.
        let plain = record("a");
        let q = Queued::new(
            plain.clone(),
            budget.try_charge(plain.approx_bytes()).unwrap(),
        );
        q.add_content_user();
        q.add_content_user();
        assert_eq!(q.converted(), None);
        assert_eq!(budget.used(), plain.approx_bytes());
    }

    #[test]
    fn the_spans_shared_part_is_written_once_for_several_destinations_and_none_for_one() {
        let r = record("a");
        let held = r.approx_bytes();
        let budget = ByteBudget::new(1 << 20);
        let queued = |budget: &Arc<ByteBudget>, users: usize| {
            let q = Queued::new(r.clone(), budget.try_charge(held).unwrap());
            for _ in 0..users {
                q.add_span_user();
            }
            q
        };
        // Two destinations send spans: the first writes and keeps it (charged), the second
        // takes the same one and lets it go.
        let q = queued(&budget, 2);
        let first = q.prepared().unwrap();
        assert_eq!(budget.used(), held + first.bytes());
        let second = q.prepared().unwrap();
        assert!(Arc::ptr_eq(&first, &second), "written once");
        assert_eq!(budget.used(), held, "let go by the last user");
        // Asked again (a batch split after a 413): the encoder writes its spans itself.
        assert!(q.prepared().is_none());
        drop(q);
        assert_eq!(budget.used(), 0);
        // One destination (or one left after a refusal): nothing made, kept or charged.
        for (users, refused) in [(1, 0), (2, 1)] {
            let q = queued(&budget, users);
            for _ in 0..refused {
                q.leave_spans();
            }
            assert!(q.prepared().is_none());
            assert_eq!(budget.used(), held);
        }
        // A record dropped before its second destination encoded it releases what was kept.
        let q = queued(&budget, 2);
        assert!(q.prepared().is_some());
        assert!(budget.used() > held);
        drop(q);
        assert_eq!(budget.used(), 0);
        // No room in the budget: written for the caller, not kept.
        let tight = ByteBudget::new(held + 8);
        let q = queued(&tight, 2);
        assert!(q.prepared().is_some());
        assert_eq!(tight.used(), held);
    }

    /// A pipeline with no destinations, writing every record to the log at `path`.
    fn start_with_log(path: &std::path::Path) -> (RecordSender, crate::PipelineHandle) {
        crate::start(
            crate::PipelineConfig {
                queue_capacity: 16,
                queue_max_bytes: 1 << 20,
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
        handle.shutdown().await.unwrap();
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
        handle.shutdown().await.unwrap();
        assert_eq!(wait_for_lines(&path, 4).await, 4);
    }
}
