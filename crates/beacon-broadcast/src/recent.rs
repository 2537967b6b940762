//! Recent completions: the last records this node exported, what happened to each at each
//! destination, and the spans each destination received — read back from the very bytes that
//! were sent. The console's Recent completions view and `beacon demo` show them.
//!
//! Bounded three ways: at most [`CAPACITY`] records are kept (the oldest leave first), at most
//! one record per [`MIN_INTERVAL`] is tracked (at saturation the view is a sample, and the
//! export path spends nothing on the others), and the spans kept for one destination are
//! at most [`MAX_SPAN_BYTES`] of encoded protobuf (larger ones are shown as omitted).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
use prost::Message;
use serde_json::{json, Map, Value};

use crate::record::CompletionRecord;
use crate::stats::DropReason;

/// Records kept.
pub const CAPACITY: usize = 100;
/// At most one record per this interval is tracked.
pub const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);
/// Encoded span bytes kept per destination and record.
pub const MAX_SPAN_BYTES: usize = 256 * 1024;

/// The last records of this node. Cheap to share.
#[derive(Debug)]
pub struct Recent {
    ring: Mutex<VecDeque<Arc<Entry>>>,
    started: Instant,
    /// When the last record was tracked, in microseconds after `started` (+1; 0 = never).
    last_tracked_us: AtomicU64,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            ring: Mutex::new(VecDeque::with_capacity(CAPACITY)),
            started: Instant::now(),
            last_tracked_us: AtomicU64::new(0),
        }
    }
}

/// One tracked record and its deliveries.
#[derive(Debug)]
pub struct Entry {
    /// The tenant the record belongs to.
    pub tenant_id: String,
    /// The request id.
    pub request_id: String,
    /// The record, without its content (the spans carry what was exported of it).
    record: CompletionRecord,
    deliveries: Mutex<Vec<Delivery>>,
}

#[derive(Debug)]
struct Delivery {
    destination_id: String,
    name: String,
    state: State,
    /// The record's encoded span messages as sent, decoded only when viewed.
    spans: Option<Spans>,
}

#[derive(Debug)]
enum Spans {
    Kept(Vec<u8>),
    TooLarge(usize),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Pending,
    Exported,
    Dropped(DropReason),
}

/// One destination's copy of a tracked record: where its outcome is written.
#[derive(Debug, Clone)]
pub struct Slot {
    entry: Arc<Entry>,
    index: usize,
}

impl Recent {
    /// Tracks `record` unless another was tracked less than [`MIN_INTERVAL`] ago.
    pub fn track(&self, record: &CompletionRecord) -> Option<Arc<Entry>> {
        let now = self.started.elapsed().as_micros() as u64 + 1;
        let last = self.last_tracked_us.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < MIN_INTERVAL.as_micros() as u64 {
            return None;
        }
        self.last_tracked_us.store(now, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            tenant_id: record.tenant_id.clone(),
            request_id: record.request_id.clone(),
            record: {
                // Everything but the text: the export path spends a few allocations on a
                // tracked record, and serializes it only when someone looks.
                let mut r = record.clone();
                r.content = None;
                r
            },
            deliveries: Mutex::new(Vec::new()),
        });
        if let Ok(mut ring) = self.ring.lock() {
            if ring.len() >= CAPACITY {
                ring.pop_front();
            }
            ring.push_back(entry.clone());
        }
        Some(entry)
    }

    /// The tenant's tracked records, newest first, without spans.
    pub fn list(&self, tenant: &str) -> Vec<Value> {
        let ring = match self.ring.lock() {
            Ok(r) => r.iter().rev().cloned().collect::<Vec<_>>(),
            Err(_) => return Vec::new(),
        };
        ring.iter()
            .filter(|e| e.tenant_id == tenant)
            .map(|e| e.view(false))
            .collect()
    }

    /// One tracked record of the tenant with every destination's spans.
    pub fn get(&self, tenant: &str, request_id: &str) -> Option<Value> {
        let entry = self.ring.lock().ok().and_then(|r| {
            r.iter()
                .rev()
                .find(|e| e.tenant_id == tenant && e.request_id == request_id)
                .cloned()
        })?;
        Some(entry.view(true))
    }
}

impl Entry {
    /// Adds a destination the record is offered to (or skipped at), returning its slot.
    pub fn add(self: &Arc<Self>, destination_id: &str, name: &str) -> Slot {
        let mut d = match self.deliveries.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        };
        d.push(Delivery {
            destination_id: destination_id.to_string(),
            name: name.to_string(),
            state: State::Pending,
            spans: None,
        });
        Slot {
            entry: self.clone(),
            index: d.len() - 1,
        }
    }

    fn view(&self, with_spans: bool) -> Value {
        let destinations: Vec<Value> = self
            .deliveries
            .lock()
            .map(|d| {
                d.iter()
                    .map(|d| {
                        let (state, reason) = match d.state {
                            State::Pending => ("pending", None),
                            State::Exported => ("exported", None),
                            State::Dropped(r) => ("dropped", Some(r.as_str())),
                        };
                        let mut v = json!({
                            "id": d.destination_id,
                            "name": d.name,
                            "state": state,
                            "reason": reason,
                        });
                        if with_spans {
                            v["spans"] = match &d.spans {
                                Some(Spans::Kept(bytes)) => decode(bytes),
                                Some(Spans::TooLarge(n)) => json!({ "omitted": format!("{n} bytes of spans, more than the {MAX_SPAN_BYTES} kept") }),
                                None => Value::Null,
                            };
                        }
                        v
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "request_id": self.request_id,
            "record": serde_json::to_value(&self.record).unwrap_or(Value::Null),
            "destinations": destinations,
        })
    }
}

impl Slot {
    /// Marks the record delivered, keeping the spans that went out (the record's encoded
    /// span messages).
    pub fn exported(&self, spans: Option<Vec<u8>>) {
        let kept = spans.map(|bytes| {
            if bytes.len() > MAX_SPAN_BYTES {
                Spans::TooLarge(bytes.len())
            } else {
                Spans::Kept(bytes)
            }
        });
        self.set(State::Exported, kept);
    }

    /// Marks the record not delivered, with the reason.
    pub fn dropped(&self, reason: DropReason) {
        self.set(State::Dropped(reason), None);
    }

    /// Whether the outcome is still unknown.
    pub fn pending(&self) -> bool {
        self.entry
            .deliveries
            .lock()
            .map(|d| d.get(self.index).is_some_and(|d| d.state == State::Pending))
            .unwrap_or(false)
    }

    fn set(&self, state: State, spans: Option<Spans>) {
        if let Ok(mut d) = self.entry.deliveries.lock() {
            if let Some(d) = d.get_mut(self.index) {
                d.state = state;
                if spans.is_some() {
                    d.spans = spans;
                }
            }
        }
    }
}

/// The encoded span messages (ScopeSpans field 2, repeated) as JSON, or why not.
fn decode(bytes: &[u8]) -> Value {
    match ScopeSpans::decode(bytes) {
        Ok(scope) => Value::Array(
            scope
                .spans
                .iter()
                .map(|s| {
                    let attributes: Map<String, Value> = s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), any(kv.value.as_ref())))
                        .collect();
                    json!({
                        "name": s.name,
                        "trace_id": hex::encode(&s.trace_id),
                        "span_id": hex::encode(&s.span_id),
                        "parent_span_id": (!s.parent_span_id.is_empty()).then(|| hex::encode(&s.parent_span_id)),
                        "kind": s.kind,
                        "start_time_unix_nano": s.start_time_unix_nano,
                        "end_time_unix_nano": s.end_time_unix_nano,
                        "status": s.status.as_ref().map(|st| json!({"code": st.code, "message": st.message})),
                        "attributes": attributes,
                    })
                })
                .collect(),
        ),
        Err(e) => json!({ "omitted": format!("the spans could not be read back: {e}") }),
    }
}

fn any(v: Option<&AnyValue>) -> Value {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(|v| any(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(l)) => Value::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), any(kv.value.as_ref())))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        // Beacon writes no other kind of value.
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{encode_export_parts_with, Exported, SpanSettings};

    struct Seq(u8);
    impl crate::span::IdSource for Seq {
        fn trace_id(&mut self) -> [u8; 16] {
            self.0 += 1;
            [self.0; 16]
        }
        fn span_id(&mut self) -> [u8; 8] {
            self.0 += 1;
            [self.0; 8]
        }
    }

    #[test]
    fn keeps_the_last_records_and_reads_back_each_ones_spans() {
        let recent = Recent::default();
        let a = crate::ingress::tests::record("acme");
        let entry = recent.track(&a).expect("the first record is tracked");
        assert!(
            recent.track(&a).is_none(),
            "a second record within the interval is not"
        );
        let slot = entry.add("dst_1", "sentry");
        let skipped = entry.add("dst_2", "otlp");
        skipped.dropped(DropReason::SampledOut);
        assert!(slot.pending());

        // Two records in one batch: the slot's spans are the first record's only.
        let mut other = crate::ingress::tests::record("acme");
        other.requested_model = "openai/other-model".into();
        let mut exported: Vec<Exported> = Vec::new();
        let (_, spans) = encode_export_parts_with(
            [&a, &other],
            &SpanSettings {
                privacy_mode: false,
                sampling_rate: 1.0,
                dialect: Default::default(),
            },
            &mut Seq(0),
            Some(&mut exported),
        );
        assert_eq!(exported.len(), 2);
        slot.exported(spans.get(exported[0].spans.clone()).map(<[u8]>::to_vec));
        assert!(!slot.pending());

        let view = recent.get("acme", &a.request_id).unwrap();
        assert_eq!(view["destinations"][0]["state"], "exported");
        assert_eq!(view["destinations"][1]["state"], "dropped");
        assert_eq!(view["destinations"][1]["reason"], "sampled_out");
        let spans = view["destinations"][0]["spans"].as_array().unwrap();
        assert!(!spans.is_empty());
        assert!(spans
            .iter()
            .all(|s| s["trace_id"] == hex::encode(exported[0].trace_id)));
        let generation = spans
            .iter()
            .find(|s| s["span_id"] == hex::encode(exported[0].generation_span_id))
            .expect("the generation span");
        assert_eq!(
            generation["attributes"]["gen_ai.request.model"],
            a.requested_model.as_str()
        );
        assert!(recent.get("other-tenant", &a.request_id).is_none());
        assert_eq!(recent.list("acme").len(), 1);
        assert!(recent.list("other-tenant").is_empty());
    }

    #[test]
    fn the_ring_keeps_at_most_its_capacity() {
        let recent = Recent::default();
        for _ in 0..CAPACITY + 5 {
            recent.last_tracked_us.store(0, Ordering::Relaxed);
            assert!(recent
                .track(&crate::ingress::tests::record("acme"))
                .is_some());
        }
        assert_eq!(recent.list("acme").len(), CAPACITY);
    }
}
