//! Where a span is built: one completion record → OTLP spans (SPEC §4.1), as a pure
//! function with no I/O. Ids come from an [`IdSource`] so tests are deterministic.
//!
//! ```text
//! [root: trace.trace_name, op gen_ai.invoke_agent]        optional
//!   └─ [function: trace.span_name, op function]            optional
//!        └─ [generation: chat <model>, op gen_ai.chat, kind CLIENT]
//! ```
//! The top emitted span's parent is `trace.parent_span_id` (or the `sentry-trace` /
//! `traceparent` header's span), flagged remote (`0x300`) so Sentry makes it a segment.

pub mod content;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::record::{CompletionRecord, Outcome};

/// Flags of a span whose parent is remote: `HAS_IS_REMOTE | IS_REMOTE`.
pub const REMOTE_PARENT_FLAGS: u32 = 0x300;

/// `trace` keys with a meaning of their own; every other key becomes `trace.metadata.<key>`.
const RESERVED_TRACE_KEYS: [&str; 5] = [
    "trace_id",
    "trace_name",
    "span_name",
    "generation_name",
    "parent_span_id",
];

/// Per-destination settings that change the spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanSettings {
    /// Leave out all prompt and completion text.
    pub privacy_mode: bool,
    /// The destination's sampling rate (recorded when < 1 so Sentry extrapolates).
    pub sampling_rate: f64,
}

/// Source of random trace and span ids.
pub trait IdSource {
    /// A new trace id.
    fn trace_id(&mut self) -> [u8; 16];
    /// A new span id.
    fn span_id(&mut self) -> [u8; 8];
}

/// Random ids (never all zero).
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn trace_id(&mut self) -> [u8; 16] {
        loop {
            let id: [u8; 16] = rand::random();
            if id != [0; 16] {
                return id;
            }
        }
    }
    fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = rand::random();
            if id != [0; 8] {
                return id;
            }
        }
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}
fn i(key: &str, v: u64) -> KeyValue {
    kv(
        key,
        any_value::Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX)),
    )
}
fn f(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}
fn b(key: &str, v: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(v))
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (k, chunk) in text.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[k] = u8::from_str_radix(hex, 16).ok()?;
    }
    (out != [0; N]).then_some(out)
}

/// Trace id, parent span id, and metadata for values that could not be used as ids.
fn resolve_trace(
    record: &CompletionRecord,
    ids: &mut dyn IdSource,
) -> ([u8; 16], Option<[u8; 8]>, Vec<KeyValue>) {
    let trace = record.trace.as_ref();
    let as_text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let body_trace = trace
        .and_then(|t| t.get("trace_id"))
        .filter(|v| !v.is_null())
        .map(as_text);
    let body_parent = trace
        .and_then(|t| t.get("parent_span_id"))
        .filter(|v| !v.is_null())
        .map(as_text);
    let mut metadata = Vec::new();

    let header = record.trace_context.as_ref();
    let (trace_id, from_header) = match &body_trace {
        Some(text) => match parse_hex::<16>(text) {
            Some(id) => (id, false),
            None => {
                metadata.push(s("trace.metadata.trace_id", text.clone()));
                let digest = Sha256::digest(text.as_bytes());
                let mut id = [0u8; 16];
                id.copy_from_slice(&digest[..16]);
                (id, false)
            }
        },
        None => match header.and_then(|h| parse_hex::<16>(&h.trace_id)) {
            Some(id) => (id, true),
            None => (ids.trace_id(), false),
        },
    };
    let parent = match &body_parent {
        Some(text) => match parse_hex::<8>(text) {
            Some(id) => Some(id),
            None => {
                metadata.push(s("trace.metadata.parent_span_id", text.clone()));
                None
            }
        },
        // The header's span belongs to the header's trace: use it only with that trace id.
        None if from_header => header.and_then(|h| parse_hex::<8>(&h.parent_span_id)),
        None => None,
    };
    (trace_id, parent, metadata)
}

fn trace_str<'a>(record: &'a CompletionRecord, key: &str) -> Option<&'a str> {
    record
        .trace
        .as_ref()?
        .get(key)?
        .as_str()
        .filter(|v| !v.is_empty())
}

/// Attributes every span of the completion carries.
fn common_attributes(record: &CompletionRecord, settings: &SpanSettings) -> Vec<KeyValue> {
    let mut attrs = vec![s("beacon.tenant", record.tenant_id.clone())];
    if let Some(user) = &record.user {
        attrs.push(s("user.id", user.clone()));
    }
    if let Some(session) = &record.session_id {
        attrs.push(s("session.id", session.clone()));
        attrs.push(s("gen_ai.conversation.id", session.clone()));
    }
    if let Some(trace) = &record.trace {
        for (key, value) in trace {
            if RESERVED_TRACE_KEYS.contains(&key.as_str()) || value.is_null() {
                continue;
            }
            let name = format!("trace.metadata.{key}");
            attrs.push(match value {
                Value::String(v) => s(&name, v.clone()),
                Value::Bool(v) => b(&name, *v),
                Value::Number(n) => match n.as_i64() {
                    Some(v) => kv(&name, any_value::Value::IntValue(v)),
                    None => f(&name, n.as_f64().unwrap_or_default()),
                },
                other => s(&name, other.to_string()),
            });
            let sentry_key = match key.as_str() {
                "environment" => Some("sentry.environment"),
                "release" => Some("sentry.release"),
                _ => None,
            };
            if let (Some(sk), Some(v)) = (sentry_key, value.as_str()) {
                attrs.push(s(sk, v));
            }
        }
    }
    if settings.sampling_rate < 1.0 {
        attrs.push(f("sentry.client_sample_rate", settings.sampling_rate));
    }
    attrs
}

fn error_status(record: &CompletionRecord) -> Option<(String, String)> {
    match &record.outcome {
        Outcome::UpstreamError {
            error_type,
            message,
            ..
        } => Some((error_type.clone(), message.clone())),
        Outcome::Timeout => Some(("timeout".into(), "the upstream timeout elapsed".into())),
        Outcome::Ok | Outcome::ClientCancelled => None,
    }
}

fn decimal_f64(d: rust_decimal::Decimal) -> f64 {
    d.try_into().unwrap_or(0.0)
}

/// The generation span's own attributes (SPEC §4.1).
fn generation_attributes(
    record: &CompletionRecord,
    settings: &SpanSettings,
    description: &str,
) -> Vec<KeyValue> {
    let mut a = vec![
        s("sentry.op", "gen_ai.chat"),
        s("gen_ai.operation.name", "chat"),
        s("sentry.description", description),
        s("gen_ai.provider.name", record.provider.clone()),
        s("gen_ai.request.model", record.requested_model.clone()),
        b("gen_ai.request.stream", record.stream),
        b("gen_ai.response.streaming", record.stream),
        s("beacon.outcome", record.outcome.label()),
        s("beacon.request_id", record.request_id.clone()),
    ];
    let failed_without_response =
        error_status(record).is_some() && record.upstream_status.is_none_or(|st| st >= 400);
    if let (Some(model), false) = (&record.served_model, failed_without_response) {
        a.push(s("gen_ai.response.model", model.clone()));
    }
    if let Some(id) = &record.response_id {
        a.push(s("gen_ai.response.id", id.clone()));
    }
    if !record.finish_reasons.is_empty() {
        let values = record
            .finish_reasons
            .iter()
            .map(|r| AnyValue {
                value: Some(any_value::Value::StringValue(r.clone())),
            })
            .collect();
        a.push(kv(
            "gen_ai.response.finish_reasons",
            any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values,
            }),
        ));
    }
    if let (true, Some(first)) = (record.stream, record.timings.first_chunk_us) {
        a.push(f("gen_ai.response.time_to_first_chunk", first as f64 / 1e6));
    }
    let p = &record.params;
    for (key, value) in [
        ("gen_ai.request.temperature", p.temperature),
        ("gen_ai.request.top_p", p.top_p),
        ("gen_ai.request.frequency_penalty", p.frequency_penalty),
        ("gen_ai.request.presence_penalty", p.presence_penalty),
    ] {
        if let Some(v) = value {
            a.push(f(key, v));
        }
    }
    if let Some(v) = p.max_tokens {
        a.push(kv(
            "gen_ai.request.max_tokens",
            any_value::Value::IntValue(v),
        ));
    }
    if let Some(v) = p.seed {
        a.push(kv("gen_ai.request.seed", any_value::Value::IntValue(v)));
    }
    let u = &record.usage;
    a.push(i("gen_ai.usage.input_tokens", u.prompt_tokens));
    if !failed_without_response {
        a.push(i("gen_ai.usage.output_tokens", u.completion_tokens));
    }
    a.push(i("gen_ai.usage.total_tokens", u.total_tokens));
    a.push(i("gen_ai.usage.cache_read.input_tokens", u.cached_tokens));
    a.push(i(
        "gen_ai.usage.cache_creation.input_tokens",
        u.cache_write_tokens,
    ));
    a.push(i(
        "gen_ai.usage.reasoning.output_tokens",
        u.reasoning_tokens,
    ));
    a.push(b("beacon.usage.estimated", u.estimated));
    a.push(f(
        "gen_ai.cost.input_tokens",
        decimal_f64(record.cost.input),
    ));
    a.push(f(
        "gen_ai.cost.output_tokens",
        decimal_f64(record.cost.output),
    ));
    a.push(f(
        "gen_ai.cost.total_tokens",
        decimal_f64(record.cost.total),
    ));
    if let Some(status) = record.upstream_status {
        a.push(i("http.response.status_code", u64::from(status)));
    }
    if let Some((error_type, _)) = error_status(record) {
        a.push(s("error.type", error_type));
    }
    if !settings.privacy_mode {
        if let Some(c) = &record.content {
            let (system, input) = content::input(&c.input_messages);
            if let Some(system) = system {
                a.push(s("gen_ai.system_instructions", system));
            }
            if let Some(input) = input {
                a.push(s("gen_ai.input.messages", input));
            }
            if error_status(record).is_none() || !c.output_text.is_empty() {
                let finish = record.finish_reasons.first().map(String::as_str);
                a.push(s(
                    "gen_ai.output.messages",
                    content::output(&c.output_text, finish),
                ));
            }
        }
    }
    a
}

/// Builds the spans of one completion for one destination, top span first.
pub fn build_spans(
    record: &CompletionRecord,
    settings: &SpanSettings,
    ids: &mut dyn IdSource,
) -> Vec<Span> {
    let (trace_id, parent, mut id_metadata) = resolve_trace(record, ids);
    let start = record.timings.received_unix_nanos;
    let end = start.saturating_add(record.timings.last_byte_us.saturating_mul(1000));
    let mut common = common_attributes(record, settings);
    common.append(&mut id_metadata);
    let status = match error_status(record) {
        Some((_, message)) => Some(Status {
            message,
            code: status::StatusCode::Error as i32,
        }),
        None if matches!(record.outcome, Outcome::Ok) => Some(Status {
            message: String::new(),
            code: status::StatusCode::Ok as i32,
        }),
        None => None,
    };

    let generation_name = trace_str(record, "generation_name")
        .map(str::to_string)
        .unwrap_or_else(|| format!("chat {}", record.requested_model));
    let mut chain: Vec<(String, span::SpanKind, Vec<KeyValue>)> = Vec::with_capacity(3);
    if let Some(name) = trace_str(record, "trace_name") {
        chain.push((
            name.to_string(),
            span::SpanKind::Internal,
            vec![
                s("sentry.op", "gen_ai.invoke_agent"),
                s("gen_ai.operation.name", "invoke_agent"),
                s("gen_ai.agent.name", name),
                s("sentry.description", name),
            ],
        ));
    }
    if let Some(name) = trace_str(record, "span_name") {
        chain.push((
            name.to_string(),
            span::SpanKind::Internal,
            vec![s("sentry.op", "function"), s("sentry.description", name)],
        ));
    }
    let gen_attrs = generation_attributes(record, settings, &generation_name);
    chain.push((generation_name, span::SpanKind::Client, gen_attrs));

    let mut spans = Vec::with_capacity(chain.len());
    let mut parent_id: Option<[u8; 8]> = parent;
    for (depth, (name, kind, mut attributes)) in chain.into_iter().enumerate() {
        let span_id = ids.span_id();
        attributes.extend(common.iter().cloned());
        let flags = if depth == 0 && parent.is_some() {
            REMOTE_PARENT_FLAGS
        } else {
            0
        };
        spans.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags,
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status: status.clone(),
            ..Default::default()
        });
        parent_id = Some(span_id);
    }
    spans
}

/// Resource attributes of every export (never the gateway's own deployment environment).
pub fn resource() -> Resource {
    Resource {
        attributes: vec![
            s("service.name", "beacon"),
            s("service.version", env!("CARGO_PKG_VERSION")),
            s("telemetry.sdk.language", "rust"),
            s("telemetry.sdk.name", "beacon"),
        ],
        ..Default::default()
    }
}

/// Wraps spans into one export request.
pub fn export_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "beacon".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests;
