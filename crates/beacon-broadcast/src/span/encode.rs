//! Where a span is encoded: completion records → one OTLP `ExportTraceServiceRequest` in
//! protobuf, written straight to bytes ([`wire`]) with the same attributes the prost
//! messages of [`build_spans`] carry. Each span is written in two parts — the part every
//! destination shares (leading fields and [`shared_attributes`]), which several destinations
//! of one record take from one [`Prepared`], and the destination's own
//! ([`destination_attributes`], status, flags) — in field order, so the bytes equal prost's.

use super::*;

/// A record to encode, and its content converted once for every destination when that can
/// be shared ([`crate::ingress::Queued::converted`]).
pub trait Source {
    /// The record.
    fn record(&self) -> &CompletionRecord;
    /// Its prompt and answer, converted (`None`: the encoder converts them itself). Asked
    /// each time the record is encoded, only by a destination that sends content.
    fn converted(&self) -> Option<std::sync::Arc<content::Converted>> {
        None
    }
    /// The record's id seed ([`SeededIds`]); `None`: ids come from the encoder's source.
    fn id_seed(&self) -> Option<IdSeed> {
        None
    }
    /// The record's spans as far as every destination shares them, written once for all
    /// of them ([`crate::ingress::Queued::prepared`]); `None`: the encoder writes them.
    /// Asked each time the record is encoded (again after a batch is split).
    fn prepared(&self) -> Option<std::sync::Arc<Prepared>> {
        None
    }
}

/// A span's leading fields (1–8) and the attributes every destination shares.
fn shared_part(
    w: &mut wire::Writer,
    record: &CompletionRecord,
    plan: &Plan<'_>,
    sp: &PlannedSpan<'_>,
) {
    w.bytes(1, &plan.trace_id);
    w.bytes(2, &sp.span_id);
    if let Some(parent) = sp.parent {
        w.bytes(4, &parent);
    }
    w.string(5, &sp.name);
    w.uint(6, kind(sp.role) as u64);
    w.fixed64(7, sp.start);
    w.fixed64(8, sp.end);
    shared_attributes(
        record,
        &plan.id_metadata,
        sp,
        &mut wire::WireAttrs { w, field: 9 },
    );
}

/// The rest of a span after [`shared_part`]: the destination's own attributes, then the
/// status (15) and flags (16) — fields in number order, as the prost encoding has them.
fn destination_part(
    w: &mut wire::Writer,
    record: &CompletionRecord,
    settings: &SpanSettings,
    role: Role,
    flags: u32,
    converted: Option<&content::Converted>,
) {
    destination_attributes(
        record,
        settings,
        role,
        converted,
        &mut wire::WireAttrs {
            w: &mut *w,
            field: 9,
        },
    );
    if let Some((code, message)) = span_status(record, role) {
        w.message(15, 1, |w| {
            w.string(2, message);
            w.uint(3, code as u64);
        });
    }
    w.fixed32(16, flags);
}

/// A record's spans as far as every destination shares them: each span's leading fields
/// and shared attributes, written once, with what each destination's encoder needs to
/// finish it. Ids come from the record's seed, so they are the same wherever made.
#[derive(Debug)]
pub struct Prepared {
    trace_id: [u8; 16],
    generation_span_id: [u8; 8],
    /// Every span's shared part, back to back.
    pub(super) bytes: Vec<u8>,
    pub(super) spans: Vec<PreparedSpan>,
}

#[derive(Debug)]
pub(super) struct PreparedSpan {
    bytes: std::ops::Range<usize>,
    role: Role,
    flags: u32,
}

impl Prepared {
    /// The shared part of `record`'s spans, ids drawn from `ids`.
    pub fn of(record: &CompletionRecord, ids: &mut dyn IdSource) -> Self {
        thread_local! {
            /// Where the parts are written before being copied out at their exact size: a
            /// buffer sized by guess grew (the generation span's part is over 1 KiB), then
            /// shrank to be kept — two reallocations and two copies per record.
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let plan = plan(record, ids);
        SCRATCH.with(|scratch| {
            let mut w = wire::Writer {
                buf: scratch.take(),
            };
            w.buf.clear();
            let spans = plan
                .spans
                .iter()
                .map(|sp| {
                    let start = w.buf.len();
                    shared_part(&mut w, record, &plan, sp);
                    PreparedSpan {
                        bytes: start..w.buf.len(),
                        role: sp.role,
                        flags: sp.flags,
                    }
                })
                .collect();
            let bytes = w.buf.to_vec();
            // Kept for the next record unless a rare huge one made it large.
            if w.buf.capacity() <= 64 * 1024 {
                scratch.replace(w.buf);
            }
            Self {
                trace_id: plan.trace_id,
                generation_span_id: plan.generation_span_id(),
                bytes,
                spans,
            }
        })
    }

    /// Bytes it holds (what it is charged against the export path's budget).
    pub fn bytes(&self) -> usize {
        self.bytes.capacity()
            + self.spans.capacity() * std::mem::size_of::<PreparedSpan>()
            + std::mem::size_of::<Self>()
    }
}

impl Source for &CompletionRecord {
    fn record(&self) -> &CompletionRecord {
        self
    }
}

/// Like [`encode_export`], as two parts to be sent back to back — the request's leading
/// bytes, then the spans — so the (large) span bytes are never copied to be prefixed.
pub fn encode_export_parts<'a>(
    records: impl IntoIterator<Item = &'a CompletionRecord>,
    settings: &SpanSettings,
    ids: &mut dyn IdSource,
) -> (Vec<u8>, Vec<u8>) {
    encode_export_parts_with(records, settings, ids, None)
}

/// Where one record's spans are in an export: what links to them (Sentry error events, the
/// Recent completions view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The trace id of the record's spans.
    pub trace_id: [u8; 16],
    /// The generation span's id (zeros if it has none).
    pub generation_span_id: [u8; 8],
    /// The record's span messages within the spans part.
    pub spans: std::ops::Range<usize>,
}

/// [`encode_export_parts`], also pushing where each record's spans are onto `exported` (in
/// record order).
pub fn encode_export_parts_with<'a>(
    records: impl IntoIterator<Item = &'a CompletionRecord>,
    settings: &SpanSettings,
    ids: &mut dyn IdSource,
    exported: Option<&mut Vec<Exported>>,
) -> (Vec<u8>, Vec<u8>) {
    encode_export_parts_sized(records, settings, ids, exported, 4096)
}

/// [`encode_export_parts_with`] into a spans buffer of `capacity` bytes to begin with: a
/// batch's size known from the last one, its spans are written once instead of copied each
/// time a small buffer doubles.
pub fn encode_export_parts_sized(
    records: impl IntoIterator<Item = impl Source>,
    settings: &SpanSettings,
    ids: &mut dyn IdSource,
    mut exported: Option<&mut Vec<Exported>>,
    capacity: usize,
) -> (Vec<u8>, Vec<u8>) {
    use wire::{WireAttrs, Writer};
    // Spans first, into their own buffer; the three wrappers around them are written after,
    // when their lengths are known, so the (large) span bytes are never moved.
    let mut spans = Writer::with_capacity(capacity);
    for source in records {
        let record = source.record();
        let converted = if settings.privacy_mode {
            None
        } else {
            source.converted()
        };
        let converted = converted.as_deref();
        let start = spans.buf.len();
        let (trace_id, generation_span_id) = match source.prepared() {
            // Written once for every destination: only this destination's part is new.
            Some(prepared) => {
                for sp in &prepared.spans {
                    spans.message(2, 2, |w| {
                        w.buf.extend_from_slice(&prepared.bytes[sp.bytes.clone()]);
                        destination_part(w, record, settings, sp.role, sp.flags, converted);
                    });
                }
                (prepared.trace_id, prepared.generation_span_id)
            }
            None => {
                let mut seeded = source.id_seed().map(SeededIds::new);
                let plan = match seeded.as_mut() {
                    Some(own) => plan(record, own),
                    None => plan(record, &mut *ids),
                };
                for sp in &plan.spans {
                    spans.message(2, 2, |w| {
                        shared_part(w, record, &plan, sp);
                        destination_part(w, record, settings, sp.role, sp.flags, converted);
                    });
                }
                (plan.trace_id, plan.generation_span_id())
            }
        };
        if let Some(out) = exported.as_deref_mut() {
            out.push(Exported {
                trace_id,
                generation_span_id,
                spans: start..spans.buf.len(),
            });
        }
    }
    let mut head = Writer::with_capacity(256);
    let mut resource = Writer::with_capacity(128);
    resource_attributes(&mut WireAttrs {
        w: &mut resource,
        field: 1,
    });
    let mut scope = Writer::with_capacity(32);
    scope.string(1, "beacon");
    scope.string(2, SERVICE_VERSION);
    // ScopeSpans = scope (1) + spans (2 …); ResourceSpans = resource (1) + scope_spans (2).
    let scope_field = 1 + varint_size(scope.buf.len()) + scope.buf.len();
    let scope_spans_len = scope_field + spans.buf.len();
    let resource_field = 1 + varint_size(resource.buf.len()) + resource.buf.len();
    let resource_spans_len = resource_field + 1 + varint_size(scope_spans_len) + scope_spans_len;
    head.len_prefix(1, resource_spans_len);
    head.bytes(1, &resource.buf);
    head.len_prefix(2, scope_spans_len);
    head.bytes(1, &scope.buf);
    (head.buf, spans.buf)
}

/// Encodes the spans of `records` as one `ExportTraceServiceRequest`, straight to protobuf.
/// Produces the same bytes as `export_request(build_spans(...)).encode_to_vec()`, several
/// times faster.
pub fn encode_export<'a>(
    records: impl IntoIterator<Item = &'a CompletionRecord>,
    settings: &SpanSettings,
    ids: &mut dyn IdSource,
) -> Vec<u8> {
    let (mut head, spans) = encode_export_parts(records, settings, ids);
    head.extend_from_slice(&spans);
    head
}

fn varint_size(n: usize) -> usize {
    wire::varint_len(n as u64)
}
