//! Where a span is sent: one worker per destination. Records arrive on a bounded channel,
//! are batched (by size, or within the flush interval), turned into spans, encoded as one
//! OTLP `ExportTraceServiceRequest`, gzipped and POSTed, with at most
//! [`MAX_IN_FLIGHT`] requests in flight and retries classified by [`crate::retry`].
//!
//! Every record that reaches a worker ends as exactly one of: exported, rejected, retries
//! exhausted, encode error, or shutdown deadline — each counted for its destination.
//!
//! A destination holds at most `queue_capacity` records and `max_bytes` bytes of them
//! (queued or being sent; [`Held`] gives its bytes back when dropped), so one stuck
//! destination cannot take the export path's whole byte budget. A batch the destination
//! refuses as too large (413) is split in halves and each half sent again; only a single
//! record it still refuses is counted as rejected.

pub mod http;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::destination::{DestinationSpec, Wire};
use crate::error_event;
use crate::ingress::Queued;
use crate::recent;
use crate::record::CompletionRecord;
use crate::retry::{self, Attempt, Decision};
use crate::span::{self, RandomIds, SpanSettings};
use crate::stats::{DropReason, LabelValue, Stats};

/// Concurrent export requests per destination.
pub const MAX_IN_FLIGHT: usize = 2;

/// Batching and sending settings shared by all sinks.
#[derive(Debug, Clone, Copy)]
pub struct SinkConfig {
    /// Records buffered per destination before new ones are dropped (`queue_full`).
    pub queue_capacity: usize,
    /// Bytes of records one destination may hold (queued and being sent).
    pub max_bytes: usize,
    /// Records per export request.
    pub max_batch: usize,
    /// A partial batch is sent at most this long after its first record.
    pub flush_interval: Duration,
    /// Timeout of one export request.
    pub request_timeout: Duration,
    /// Error events per fingerprint per minute (SPEC §4.3).
    pub error_events_per_minute: u32,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 2048,
            max_bytes: 64 * 1024 * 1024,
            max_batch: 256,
            flush_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            error_events_per_minute: 1,
        }
    }
}

/// Export health of one destination, for the admin API and the console.
#[derive(Debug, Default)]
pub struct SinkHealth {
    exported: AtomicU64,
    dropped: AtomicU64,
    dropped_by: [AtomicU64; DropReason::ALL.len()],
    last_error: Mutex<Option<(String, SystemTime)>>,
    last_success: Mutex<Option<SystemTime>>,
    /// The destination asked us to wait (429/503 with `Retry-After` or
    /// `X-Sentry-Rate-Limits`): no batch is sent before this instant.
    rate_limited_until: Mutex<Option<tokio::time::Instant>>,
    /// Bytes of records this destination holds now (queued and being sent).
    held_bytes: AtomicUsize,
    /// Span bytes per record in the last batch encoded: the next batch's buffer is sized
    /// from it, so a batch's spans are not copied again and again as the buffer doubles.
    span_bytes_per_record: AtomicUsize,
}

impl SinkHealth {
    /// Records delivered.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }
    /// Records not delivered, every reason together (sampled out and filtered excluded:
    /// those are choices, not losses).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Records not delivered to this destination, by reason (sampled out and filtered
    /// included), every reason listed.
    pub fn dropped_by_reason(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (*r, self.dropped_by[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
    /// The last error and when it happened.
    pub fn last_error(&self) -> Option<(String, SystemTime)> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }
    /// When the last export succeeded.
    pub fn last_success(&self) -> Option<SystemTime> {
        self.last_success.lock().ok().and_then(|g| *g)
    }
    /// Bytes of records this destination holds now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Until when the destination is rate-limited, if it is.
    pub fn rate_limited_until(&self) -> Option<tokio::time::Instant> {
        let until = self.rate_limited_until.lock().ok().and_then(|g| *g)?;
        (until > tokio::time::Instant::now()).then_some(until)
    }

    fn rate_limit(&self, wait: Duration) {
        if let Ok(mut g) = self.rate_limited_until.lock() {
            let until = tokio::time::Instant::now() + wait;
            *g = Some(g.map_or(until, |old| old.max(until)));
        }
    }

    fn set_error(&self, e: String) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some((e, SystemTime::now()));
        }
    }
}

/// One destination's copy of a record: counted in the destination's held bytes until
/// dropped, whichever way its journey ends.
#[derive(Debug)]
pub struct Held {
    record: Arc<Queued>,
    health: Arc<SinkHealth>,
    /// Where the outcome goes when the Recent completions view tracks the record.
    recent: Option<recent::Slot>,
    /// The turns it still has at what several destinations share ([`CONTENT_TURN`],
    /// [`SPANS_TURN`]): counted in when made, taken by the first encoding, left if dropped
    /// unencoded.
    turns: std::sync::atomic::AtomicU8,
}

/// A turn at the record's converted prompt and answer ([`Queued::converted`]).
const CONTENT_TURN: u8 = 1;
/// A turn at the shared part of the record's spans ([`Queued::prepared`]).
const SPANS_TURN: u8 = 2;

impl Held {
    fn new(
        record: Arc<Queued>,
        health: Arc<SinkHealth>,
        recent: Option<recent::Slot>,
        turns: u8,
    ) -> Self {
        health
            .held_bytes
            .fetch_add(record.bytes(), Ordering::Relaxed);
        if turns & CONTENT_TURN != 0 {
            record.add_content_user();
        }
        if turns & SPANS_TURN != 0 {
            record.add_span_user();
        }
        Self {
            record,
            health,
            recent,
            turns: std::sync::atomic::AtomicU8::new(turns),
        }
    }

    /// Whether `turn` was still its own (it is taken now).
    fn take_turn(&self, turn: u8) -> bool {
        self.turns.fetch_and(!turn, Ordering::Relaxed) & turn != 0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.health
            .held_bytes
            .fetch_sub(self.record.bytes(), Ordering::Relaxed);
        // Not encoded (dropped in the queue, at shutdown): the others need not wait for it.
        let turns = *self.turns.get_mut();
        if turns & CONTENT_TURN != 0 {
            self.record.leave_content();
        }
        if turns & SPANS_TURN != 0 {
            self.record.leave_spans();
        }
        // Every counted ending settles the slot first; one still open here was let go at
        // shutdown.
        if let Some(slot) = self.recent.as_ref().filter(|s| s.pending()) {
            slot.dropped(DropReason::ShutdownDeadline);
        }
    }
}

impl std::ops::Deref for Held {
    type Target = CompletionRecord;
    fn deref(&self) -> &CompletionRecord {
        &self.record.record
    }
}

impl span::Source for &Held {
    fn record(&self) -> &CompletionRecord {
        &self.record.record
    }

    /// Shared with the other destinations that send the record's content
    /// ([`crate::ingress::Queued::converted`]); this copy's turn the first time.
    fn converted(&self) -> Option<Arc<span::content::Converted>> {
        if self.take_turn(CONTENT_TURN) {
            self.record.converted()
        } else {
            self.record.converted_again()
        }
    }

    /// One set of ids for the record in every destination.
    fn id_seed(&self) -> Option<span::IdSeed> {
        Some(self.record.id_seed())
    }

    /// Shared with the other destinations that send the record's spans
    /// ([`crate::ingress::Queued::prepared`]); this copy's turn the first time.
    fn prepared(&self) -> Option<Arc<span::Prepared>> {
        if self.take_turn(SPANS_TURN) {
            self.record.prepared()
        } else {
            self.record.prepared_again()
        }
    }
}

/// The pipeline's handle on one destination worker. Dropping every clone closes the
/// worker's queue, which makes it flush and stop.
#[derive(Debug, Clone)]
pub struct Sink {
    /// The destination.
    pub spec: Arc<DestinationSpec>,
    /// Its export health.
    pub health: Arc<SinkHealth>,
    target: Target,
    max_bytes: usize,
    tx: mpsc::Sender<Held>,
}

/// What a worker knows of its destination (no queue sender, so it cannot keep itself open).
#[derive(Debug, Clone)]
struct Target {
    spec: Arc<DestinationSpec>,
    health: Arc<SinkHealth>,
    /// The tenant and destination label values, escaped once for every count.
    labels: Arc<(LabelValue, LabelValue)>,
    /// Error events sent per fingerprint (SPEC §4.3).
    dedupe: Arc<Mutex<error_event::Dedupe>>,
}

impl Target {
    fn new(spec: Arc<DestinationSpec>, health: Arc<SinkHealth>, per_minute: u32) -> Self {
        let labels = Arc::new((
            LabelValue::new(&spec.tenant_id),
            LabelValue::new(&spec.name),
        ));
        Self {
            spec,
            health,
            labels,
            dedupe: Arc::new(Mutex::new(error_event::Dedupe::new(per_minute))),
        }
    }

    fn drop_n(&self, n: usize, stats: &Stats, reason: DropReason) {
        let n = n as u64;
        stats.dropped_n(&self.labels.0, &self.labels.1, reason, n);
        self.health.dropped_by[reason as usize].fetch_add(n, Ordering::Relaxed);
        if !matches!(reason, DropReason::SampledOut | DropReason::Filtered) {
            self.health.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

impl Sink {
    /// Offers a record without waiting; a worker queue full by records or by bytes drops
    /// it (counted). `recent` is the record's slot when the Recent completions view tracks it.
    /// Returns whether it was queued.
    pub fn offer(&self, record: Arc<Queued>, stats: &Stats, recent: Option<recent::Slot>) -> bool {
        if self.health.held_bytes().saturating_add(record.bytes()) > self.max_bytes {
            if let Some(slot) = recent {
                slot.dropped(DropReason::QueueFull);
            }
            self.drop_one(stats, DropReason::QueueFull);
            return false;
        }
        // Its turns at what the destinations that will encode the record share: the
        // content conversion (OTLP, not privacy mode) and the spans' common part (OTLP).
        let mut turns = 0;
        if record.content.is_some() && self.spec.encodes_content() {
            turns |= CONTENT_TURN;
        }
        if self.spec.encodes_spans() {
            turns |= SPANS_TURN;
        }
        let (held, reason) =
            match self
                .tx
                .try_send(Held::new(record, self.health.clone(), recent, turns))
            {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(held)) => (held, DropReason::QueueFull),
                Err(mpsc::error::TrySendError::Closed(held)) => {
                    (held, DropReason::ShutdownDeadline)
                }
            };
        if let Some(slot) = &held.recent {
            slot.dropped(reason);
        }
        self.drop_one(stats, reason);
        false
    }

    /// Counts a record that will not reach this destination.
    pub fn drop_one(&self, stats: &Stats, reason: DropReason) {
        self.target.drop_n(1, stats, reason);
    }
}

/// Starts the worker of one destination. `health` carries the counters over from the worker
/// it replaces when a destination's settings change (same id), so its stats do not restart.
pub fn spawn(
    spec: DestinationSpec,
    health: Option<Arc<SinkHealth>>,
    client: http::ExportClient,
    stats: Arc<Stats>,
    config: SinkConfig,
    deadline_passed: watch::Receiver<bool>,
) -> (Sink, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let spec = Arc::new(spec);
    let health = health.unwrap_or_default();
    let target = Target::new(spec.clone(), health.clone(), config.error_events_per_minute);
    let sink = Sink {
        spec,
        health,
        target: target.clone(),
        max_bytes: config.max_bytes,
        tx,
    };
    let worker = Worker {
        sink: target,
        client,
        stats,
        config,
        deadline_passed,
    };
    let handle = tokio::spawn(worker.run(rx));
    (sink, handle)
}

struct Worker {
    sink: Target,
    client: http::ExportClient,
    stats: Arc<Stats>,
    config: SinkConfig,
    deadline_passed: watch::Receiver<bool>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Held>) {
        let mut batch: Vec<Held> = Vec::with_capacity(self.config.max_batch);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut deadline = self.deadline_passed.clone();
        // One timer for the whole life of the worker, re-armed when a batch starts.
        let flush_timer = tokio::time::sleep(self.config.flush_interval);
        tokio::pin!(flush_timer);
        loop {
            tokio::select! {
                record = rx.recv() => {
                    let Some(first) = record else { break };
                    if batch.is_empty() {
                        flush_timer.as_mut().reset(tokio::time::Instant::now() + self.config.flush_interval);
                    }
                    batch.push(first);
                    // Take whatever else is already queued in the same wake-up.
                    while batch.len() < self.config.max_batch {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    if batch.len() >= self.config.max_batch {
                        self.flush(&mut batch, &mut in_flight).await;
                    }
                }
                () = &mut flush_timer, if !batch.is_empty() => {
                    self.flush(&mut batch, &mut in_flight).await;
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                Ok(()) = deadline.changed() => {
                    if *deadline.borrow() {
                        break;
                    }
                }
            }
        }
        // Closed (shutdown): send what is left unless the deadline has already passed.
        tracing::debug!(destination = %self.sink.spec.name, pending = batch.len(), "destination worker closing");
        if *self.deadline_passed.borrow() {
            let mut n = batch.len();
            batch.clear();
            while rx.try_recv().is_ok() {
                n += 1;
            }
            self.sink
                .drop_n(n, &self.stats, DropReason::ShutdownDeadline);
        } else {
            self.flush(&mut batch, &mut in_flight).await;
        }
        while in_flight.join_next().await.is_some() {}
    }

    async fn flush(&self, batch: &mut Vec<Held>, in_flight: &mut JoinSet<()>) {
        if batch.is_empty() {
            return;
        }
        while in_flight.len() >= MAX_IN_FLIGHT {
            let _ = in_flight.join_next().await;
        }
        let records = std::mem::take(batch);
        let send = Send {
            sink: self.sink.clone(),
            client: self.client.clone(),
            stats: self.stats.clone(),
            timeout: self.config.request_timeout,
            deadline_passed: self.deadline_passed.clone(),
            events_done: std::collections::HashSet::new(),
        };
        in_flight.spawn(send.run(records));
    }
}

/// One batch's journey: encode, gzip, POST, retry.
struct Send {
    sink: Target,
    client: http::ExportClient,
    stats: Arc<Stats>,
    timeout: Duration,
    deadline_passed: watch::Receiver<bool>,
    /// Records whose error event was handled (a batch split after a 413 is encoded again).
    events_done: std::collections::HashSet<String>,
}

/// How one batch's attempts ended.
enum Sent {
    /// Counted: exported, rejected, retries exhausted, encode error or shutdown.
    Done,
    /// The destination refused the batch as too large (413): split it and try again.
    TooLarge,
}

impl Send {
    fn drop_all(&self, records: &[Held], reason: DropReason) {
        for slot in records.iter().filter_map(|r| r.recent.as_ref()) {
            slot.dropped(reason);
        }
        self.sink.drop_n(records.len(), &self.stats, reason);
    }

    async fn run(mut self, records: Vec<Held>) {
        // Halves of batches refused as too large are sent in order, first half first.
        let mut pending = vec![records];
        while let Some(mut batch) = pending.pop() {
            match self.send(&batch).await {
                Sent::Done => {}
                Sent::TooLarge => {
                    let second = batch.split_off(batch.len() / 2);
                    tracing::debug!(destination = %self.sink.spec.name, records = batch.len() + second.len(), "destination answered 413; splitting the batch");
                    pending.push(second);
                    pending.push(batch);
                }
            }
        }
    }

    /// Sends the batch's failed completions as Sentry error events (SPEC §4.3), each linked
    /// to its generation span (`exported`: where each record's spans are, in record order), at most
    /// `error_events_per_minute` per fingerprint; each counted as sent, deduplicated or
    /// failed. One attempt each: an event is an alert, not a record to redeliver.
    async fn error_events(&mut self, records: &[Held], exported: &[span::Exported]) {
        let Some(endpoint) = self.sink.spec.error_events.clone() else {
            return;
        };
        let labels = self.sink.labels.clone();
        for (record, at) in records.iter().zip(exported) {
            let (trace_id, span_id) = (&at.trace_id, &at.generation_span_id);
            let Some(kind) = error_event::exception_type(record) else {
                continue;
            };
            if !self.events_done.insert(record.request_id.clone()) {
                continue;
            }
            let fingerprint = error_event::fingerprint(record, kind);
            let allowed = match self.sink.dedupe.lock() {
                Ok(mut d) => d.allow(&fingerprint, std::time::Instant::now()),
                Err(_) => true,
            };
            if !allowed {
                self.stats.error_event(&labels.0, &labels.1, "deduplicated");
                continue;
            }
            let scrub = |s: &str| self.sink.spec.endpoint.scrub(s);
            let envelope = error_event::envelope(record, kind, trace_id, span_id, &scrub);
            let Ok(body) = http::gzip(&envelope) else {
                self.stats.error_event(&labels.0, &labels.1, "failed");
                continue;
            };
            let result = http::post_as(
                &self.client,
                &endpoint,
                Bytes::from(body),
                "application/x-sentry-envelope",
                self.timeout,
            )
            .await;
            match result {
                http::PostResult::Response { status, .. } if (200..300).contains(&status) => {
                    self.stats.error_event(&labels.0, &labels.1, "sent");
                }
                http::PostResult::Response { status, body, .. } => {
                    let error =
                        endpoint.scrub(&format!("HTTP {status}: {}", http::error_text(&body)));
                    tracing::warn!(destination = %self.sink.spec.name, %error, "an error event was not accepted");
                    self.stats.error_event(&labels.0, &labels.1, "failed");
                }
                http::PostResult::Failed(e) => {
                    tracing::warn!(destination = %self.sink.spec.name, error = %endpoint.scrub(&e), "an error event could not be sent");
                    self.stats.error_event(&labels.0, &labels.1, "failed");
                }
            }
        }
    }

    /// The batch as a gzipped OTLP export, the tracked records' span bytes beside it (read
    /// back into the Recent view once delivered); failed completions are sent as Sentry
    /// error events on the way.
    async fn encode_otlp<'h>(
        &mut self,
        records: &'h [Held],
    ) -> std::io::Result<(http::Payload, Tracked<'h>)> {
        let spec = self.sink.spec.clone();
        let settings = SpanSettings {
            privacy_mode: spec.privacy_mode,
            sampling_rate: spec.sampling_rate,
            dialect: spec.dialect,
        };
        let mut exported = Vec::new();
        let wants_events = spec.error_events.is_some();
        let tracked = records.iter().any(|r| r.recent.is_some());
        let per_record = self
            .sink
            .health
            .span_bytes_per_record
            .load(Ordering::Relaxed);
        let (head, spans) = span::encode_export_parts_sized(
            records.iter(),
            &settings,
            &mut RandomIds,
            (wants_events || tracked).then_some(&mut exported),
            records.len() * (per_record + per_record / 8) + 1024,
        );
        self.sink
            .health
            .span_bytes_per_record
            .store(spans.len() / records.len().max(1), Ordering::Relaxed);
        let tracked = records
            .iter()
            .zip(exported.iter())
            .filter_map(|(r, at)| {
                let slot = r.recent.as_ref()?;
                Some((slot, spans.get(at.spans.clone()).map(<[u8]>::to_vec)))
            })
            .collect();
        if wants_events {
            self.error_events(records, &exported).await;
        }
        let body = http::gzip_parts(&[&head, &spans])?;
        Ok((http::Payload::otlp(Bytes::from(body)), tracked))
    }

    /// Encodes and sends `records`, retrying as [`retry::classify`] decides, and counts how
    /// each ended — except a multi-record batch refused as too large, returned to be split.
    async fn send(&mut self, records: &[Held]) -> Sent {
        let spec = self.sink.spec.clone();
        let encoded = match &spec.wire {
            Wire::OtlpProtobuf => self.encode_otlp(records).await,
            Wire::SignedJson(key) => Ok(signed_json(records, &spec, key)),
        };
        let (payload, tracked) = match encoded {
            Ok(p) => p,
            Err(e) => {
                self.sink.health.set_error(format!("encoding failed: {e}"));
                self.drop_all(records, DropReason::EncodeError);
                return Sent::Done;
            }
        };
        let mut attempt = 1;
        loop {
            // Per-destination rate limit: every batch waits it out, not only the one that hit it.
            if let Some(until) = self.sink.health.rate_limited_until() {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = wait_true(&mut self.deadline_passed) => {
                        self.drop_all(records, DropReason::ShutdownDeadline);
                        return Sent::Done;
                    }
                }
            }
            let result = tokio::select! {
                r = http::send(&self.client, &spec.endpoint, &payload, self.timeout) => r,
                () = wait_true(&mut self.deadline_passed) => {
                    self.drop_all(records, DropReason::ShutdownDeadline);
                    return Sent::Done;
                }
            };
            let (outcome, error) = match &result {
                http::PostResult::Response {
                    status,
                    retry_after,
                    sentry_rate_limits,
                    location,
                    body,
                } => {
                    let mut error = format!("HTTP {status}: {}", http::error_text(body));
                    if let Some(location) = location {
                        error.push_str(&format!(" (redirect to {location}: a destination's endpoint must be its final URL)"));
                    }
                    (
                        Attempt::Response {
                            status: *status,
                            retry_after: retry_after.as_deref(),
                            sentry_rate_limits: sentry_rate_limits.as_deref(),
                        },
                        error,
                    )
                }
                http::PostResult::Failed(e) => (Attempt::Failed, e.clone()),
            };
            // A destination may echo the request (headers included) in its error reply.
            let error = spec.endpoint.scrub(&error);
            match retry::classify(&outcome, attempt, rand::random::<f64>()) {
                Decision::Delivered => {
                    let labels = &self.sink.labels;
                    self.stats
                        .exported_n(&labels.0, &labels.1, records.len() as u64);
                    self.sink
                        .health
                        .exported
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    if let Ok(mut g) = self.sink.health.last_success.lock() {
                        *g = Some(SystemTime::now());
                    }
                    for (slot, spans) in tracked {
                        slot.exported(spans);
                    }
                    return Sent::Done;
                }
                Decision::Rejected
                    if records.len() > 1
                        && matches!(outcome, Attempt::Response { status: 413, .. }) =>
                {
                    return Sent::TooLarge;
                }
                Decision::Rejected => {
                    tracing::warn!(tenant = %spec.tenant_id, destination = %spec.name, records = records.len(), %error, "destination rejected an export");
                    self.sink.health.set_error(error);
                    self.drop_all(records, DropReason::Rejected);
                    return Sent::Done;
                }
                Decision::GiveUp => {
                    tracing::warn!(tenant = %spec.tenant_id, destination = %spec.name, records = records.len(), %error, attempts = attempt, "export retries exhausted");
                    self.sink.health.set_error(error);
                    self.drop_all(records, DropReason::RetriesExhausted);
                    return Sent::Done;
                }
                Decision::RetryAfter(wait) => {
                    if matches!(
                        outcome,
                        Attempt::Response {
                            status: 429 | 503,
                            ..
                        }
                    ) {
                        self.sink.health.rate_limit(wait);
                    }
                    tracing::debug!(destination = %spec.name, %error, attempt, wait_ms = wait.as_millis() as u64, "export failed; retrying");
                    self.sink.health.set_error(error);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = wait_true(&mut self.deadline_passed) => {
                            self.drop_all(records, DropReason::ShutdownDeadline);
                            return Sent::Done;
                        }
                    }
                    attempt += 1;
                }
            }
        }
    }
}

/// The batch's records the Recent view follows, with the bytes of their spans (none for a
/// webhook, which sends no spans).
type Tracked<'h> = Vec<(&'h recent::Slot, Option<Vec<u8>>)>;

/// A webhook delivery (SPEC §4.4): the records as a JSON array, signed; the tracked records
/// have no span bytes to show.
fn signed_json<'h>(
    records: &'h [Held],
    spec: &DestinationSpec,
    key: &[u8],
) -> (http::Payload, Tracked<'h>) {
    use crate::destination::webhook;
    let body = webhook::body(
        records.iter().map(|r| {
            let record = &r.record.record;
            (record, Some(span::record_ids(record, r.record.id_seed())))
        }),
        spec.privacy_mode,
    );
    let headers = webhook::delivery_headers(key, &body);
    let tracked = records
        .iter()
        .filter_map(|r| Some((r.recent.as_ref()?, None)))
        .collect();
    let payload = http::Payload {
        body: Bytes::from(body),
        content_type: "application/json",
        gzipped: false,
        headers,
    };
    (payload, tracked)
}

/// Resolves once the watched flag is true (never, if its sender is gone while false).
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::{ByteBudget, Queued};
    use span::Source;

    /// Two destinations' copies of one record, both sending content and spans.
    fn two_copies(budget: &Arc<ByteBudget>) -> (Held, Held, usize) {
        let record = crate::span::tests::record();
        let held_bytes = record.approx_bytes();
        let queued = Arc::new(Queued::new(record, budget.try_charge(held_bytes).unwrap()));
        let health = Arc::new(SinkHealth::default());
        let turns = CONTENT_TURN | SPANS_TURN;
        (
            Held::new(queued.clone(), health.clone(), None, turns),
            Held::new(queued, health, None, turns),
            held_bytes,
        )
    }

    #[test]
    fn destinations_share_one_conversion_and_one_span_part() {
        let budget = ByteBudget::new(1 << 20);
        let (a, b, held_bytes) = two_copies(&budget);
        let first = (&a).converted().unwrap();
        let part = (&a).prepared().unwrap();
        assert!(
            budget.used() > held_bytes + first.bytes(),
            "both kept for the second destination"
        );
        assert_eq!(budget.shared(), first.bytes() + part.bytes());
        // The first encodes its batch again (split after a 413): the kept values, and the
        // second destination's turn is still its own.
        assert!(Arc::ptr_eq(&(&a).converted().unwrap(), &first));
        assert!(Arc::ptr_eq(&(&a).prepared().unwrap(), &part));
        assert!(budget.shared() > 0);
        let second = (&b).converted().unwrap();
        assert!(Arc::ptr_eq(&first, &second), "one conversion");
        assert!(
            Arc::ptr_eq(&(&b).prepared().unwrap(), &part),
            "one span part"
        );
        assert_eq!(budget.used(), held_bytes, "let go once both have them");
        assert_eq!(budget.shared(), 0);
        // Asked again after that: made for the caller, nothing kept.
        assert_eq!((&b).converted().as_deref(), Some(&*first));
        assert!((&b).prepared().is_none());
        assert_eq!(budget.used(), held_bytes);
    }

    #[test]
    fn a_copy_dropped_unencoded_lets_the_others_go_first() {
        let budget = ByteBudget::new(1 << 20);
        let (a, b, held_bytes) = two_copies(&budget);
        assert!((&a).prepared().is_some());
        assert!(budget.used() > held_bytes, "kept for the second");
        // The second destination drops its copy (its queue, or the shutdown deadline):
        // what was kept for it goes although the first still holds the record.
        drop(b);
        assert_eq!(budget.used(), held_bytes);
        assert_eq!(budget.shared(), 0);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn values_kept_for_several_destinations_take_at_most_an_eighth_of_the_budget() {
        let record = crate::span::tests::record();
        let held_bytes = record.approx_bytes();
        // Room for sixteen records, and for the span part of one or two of them only.
        let budget = ByteBudget::new(16 * held_bytes);
        let health = Arc::new(SinkHealth::default());
        let mut copies = Vec::new();
        let mut kept = 0;
        for _ in 0..8 {
            let queued = Arc::new(Queued::new(
                record.clone(),
                budget.try_charge(held_bytes).unwrap(),
            ));
            let a = Held::new(queued.clone(), health.clone(), None, SPANS_TURN);
            let b = Held::new(queued, health.clone(), None, SPANS_TURN);
            assert!((&a).prepared().is_some(), "made for the first either way");
            if budget.shared() > kept {
                kept = budget.shared();
            }
            copies.push((a, b));
        }
        assert!(kept > 0, "some kept");
        assert!(budget.shared() <= budget.max() / 8, "{}", budget.shared());
        // The second destinations write theirs whole where nothing was kept.
        let whole = copies
            .iter()
            .filter(|(_, b)| b.prepared().is_none())
            .count();
        assert!(whole > 0, "past an eighth, not kept");
        assert_eq!(budget.shared(), 0);
    }
}
