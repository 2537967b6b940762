//! Where a span is built: one completion record → OTLP spans (SPEC §4.1), as a pure
//! function with no I/O. Ids come from the record's own seed ([`SeededIds`]: the same in
//! every destination), or from an [`IdSource`] given to the encoder (tests, deterministic).
//!
//! ```text
//! [root: trace.trace_name, op gen_ai.invoke_agent]        optional
//!   └─ [function: trace.span_name, op function]            optional
//!        ├─ [execute_tool <name>, op gen_ai.execute_tool]   per tool result linked (§4.5)
//!        └─ [generation: chat <model>, op gen_ai.chat, kind CLIENT]
//!             └─ [attempt <provider>/<model>]               per failed attempt (§2.2)
//! ```
//! The top emitted span's parent is `trace.parent_span_id` (or the `sentry-trace` /
//! `traceparent` header's span), flagged remote (`0x300`) so Sentry makes it a segment.

pub mod content;
mod dialect;
mod encode;

pub use encode::{
    encode_export, encode_export_parts, encode_export_parts_sized, encode_export_parts_with,
    Exported, Prepared, Source,
};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::record::{CompletionRecord, CostSource, Outcome};
use beacon_config::Api;

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
    /// The attribute conventions the destination reads besides `gen_ai.*` ([`dialect`]).
    pub dialect: crate::destination::Dialect,
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

thread_local! {
    /// IDs need to be unique and unpredictable enough to never collide, not secret: a small
    /// fast generator per thread, seeded from the OS, as OpenTelemetry's SDKs do (the
    /// thread-local ChaCha generator took a sixth of a span's encoding time).
    static ID_RNG: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::make_rng());
}

fn random_id<const N: usize>() -> [u8; N] {
    use rand::RngExt;
    loop {
        let id: [u8; N] = ID_RNG.with(|r| r.borrow_mut().random());
        if id != [0; N] {
            return id;
        }
    }
}

impl IdSource for RandomIds {
    fn trace_id(&mut self) -> [u8; 16] {
        random_id()
    }
    fn span_id(&mut self) -> [u8; 8] {
        random_id()
    }
}

/// A record's id seed: 256 random bits, so the 128-bit trace ids drawn from it are as
/// unlikely to collide as independent random ones.
pub type IdSeed = [u8; 32];

/// A new seed for [`SeededIds`]: drawn once per record when it enters the export path.
pub fn id_seed() -> IdSeed {
    random_id()
}

/// Ids drawn from a record's own seed: every destination that encodes the record (and a
/// batch encoded again after a split) draws the same ids in the same order, so one
/// completion has one trace id and one set of span ids in every tool it is sent to — the
/// ids a user copies from Sentry find the same trace in Langfuse.
#[derive(Debug, Clone)]
pub struct SeededIds(rand::rngs::Xoshiro256PlusPlus);

impl SeededIds {
    /// The ids of the record whose seed is `seed`.
    pub fn new(seed: IdSeed) -> Self {
        Self(rand::SeedableRng::from_seed(seed))
    }

    fn draw<const N: usize>(&mut self) -> [u8; N] {
        use rand::RngExt;
        loop {
            let id: [u8; N] = self.0.random();
            if id != [0; N] {
                return id;
            }
        }
    }
}

/// The trace id and generation span id (zeros if it has none) the record whose seed is
/// `seed` has in every OTLP destination: what a webhook delivery carries to link to them.
pub fn record_ids(record: &CompletionRecord, seed: IdSeed) -> ([u8; 16], [u8; 8]) {
    let plan = plan(record, &mut SeededIds::new(seed));
    (plan.trace_id, plan.generation_span_id())
}

impl IdSource for SeededIds {
    fn trace_id(&mut self) -> [u8; 16] {
        self.draw()
    }
    fn span_id(&mut self) -> [u8; 8] {
        self.draw()
    }
}

/// Receives attributes as they are produced: collected as prost `KeyValue`s by
/// [`build_spans`], or written straight to protobuf bytes by [`encode_export`].
pub trait Attrs {
    /// A string attribute.
    fn str(&mut self, key: &str, value: &str);
    /// An integer attribute.
    fn int(&mut self, key: &str, value: i64);
    /// A double attribute.
    fn double(&mut self, key: &str, value: f64);
    /// A boolean attribute.
    fn bool(&mut self, key: &str, value: bool);
    /// An array of strings.
    fn str_array(&mut self, key: &str, values: &[String]);
    /// A count (saturating into i64).
    fn count(&mut self, key: &str, value: u64) {
        self.int(key, i64::try_from(value).unwrap_or(i64::MAX));
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

impl Attrs for Vec<KeyValue> {
    fn str(&mut self, key: &str, value: &str) {
        self.push(kv(key, any_value::Value::StringValue(value.to_string())));
    }
    fn int(&mut self, key: &str, value: i64) {
        self.push(kv(key, any_value::Value::IntValue(value)));
    }
    fn double(&mut self, key: &str, value: f64) {
        self.push(kv(key, any_value::Value::DoubleValue(value)));
    }
    fn bool(&mut self, key: &str, value: bool) {
        self.push(kv(key, any_value::Value::BoolValue(value)));
    }
    fn str_array(&mut self, key: &str, values: &[String]) {
        let values = values
            .iter()
            .map(|v| AnyValue {
                value: Some(any_value::Value::StringValue(v.clone())),
            })
            .collect();
        self.push(kv(
            key,
            any_value::Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                values,
            }),
        ));
    }
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

/// Trace id, parent span id, and metadata for `trace` values that could not be used as ids.
type ResolvedTrace = ([u8; 16], Option<[u8; 8]>, Vec<(&'static str, String)>);

/// Resolves the trace id and parent of a completion's spans.
fn resolve_trace(record: &CompletionRecord, ids: &mut dyn IdSource) -> ResolvedTrace {
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
    let (trace_id, from_header) = match body_trace {
        Some(text) => match parse_hex::<16>(&text) {
            Some(id) => (id, false),
            None => {
                let digest = Sha256::digest(text.as_bytes());
                let mut id = [0u8; 16];
                id.copy_from_slice(&digest[..16]);
                metadata.push(("trace.metadata.trace_id", text));
                (id, false)
            }
        },
        None => match header.and_then(|h| parse_hex::<16>(&h.trace_id)) {
            Some(id) => (id, true),
            None => (ids.trace_id(), false),
        },
    };
    let parent = match body_parent {
        Some(text) => match parse_hex::<8>(&text) {
            Some(id) => Some(id),
            None => {
                metadata.push(("trace.metadata.parent_span_id", text));
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

/// Attributes every span of the completion carries, the same for every destination.
fn common_attributes(
    record: &CompletionRecord,
    id_metadata: &[(&'static str, String)],
    a: &mut impl Attrs,
) {
    a.str("beacon.tenant", &record.tenant_id);
    if let Some(user) = &record.user {
        a.str("user.id", user);
    }
    if let Some(session) = &record.session_id {
        a.str("session.id", session);
        a.str("gen_ai.conversation.id", session);
    }
    if let Some(trace) = &record.trace {
        for (key, value) in trace {
            if RESERVED_TRACE_KEYS.contains(&key.as_str()) || value.is_null() {
                continue;
            }
            let name = format!("trace.metadata.{key}");
            match value {
                Value::String(v) => a.str(&name, v),
                Value::Bool(v) => a.bool(&name, *v),
                Value::Number(n) => match n.as_i64() {
                    Some(v) => a.int(&name, v),
                    None => a.double(&name, n.as_f64().unwrap_or_default()),
                },
                other => a.str(&name, &other.to_string()),
            }
            let sentry_key = match key.as_str() {
                "environment" => Some("sentry.environment"),
                "release" => Some("sentry.release"),
                _ => None,
            };
            if let (Some(sk), Some(v)) = (sentry_key, value.as_str()) {
                a.str(sk, v);
            }
        }
    }
    for (k, v) in id_metadata {
        a.str(k, v);
    }
}

/// The probability a span of the record was kept: the caller's own sample rate (its
/// `baggage`) times the destination's, so Sentry extrapolates counts correctly (SPEC §4.5).
fn sample_rate(record: &CompletionRecord, settings: &SpanSettings, a: &mut impl Attrs) {
    let caller_rate = record
        .trace_context
        .as_ref()
        .and_then(|t| t.sample_rate)
        .unwrap_or(1.0);
    let rate = settings.sampling_rate * caller_rate;
    if rate < 1.0 {
        a.double("sentry.client_sample_rate", rate);
    }
}

fn error_status(record: &CompletionRecord) -> Option<(&str, &str)> {
    match &record.outcome {
        Outcome::UpstreamError {
            error_type,
            message,
            ..
        } => Some((error_type, message)),
        Outcome::Timeout => Some(("timeout", "the upstream timeout elapsed")),
        Outcome::Shutdown => Some((
            "gateway_shutdown",
            "the gateway shut down before the completion finished",
        )),
        Outcome::Limited { code, message } => Some((code, message)),
        Outcome::Ok | Outcome::ClientCancelled => None,
    }
}

/// A cost as a float. Its mantissa and a power of ten are both exact as `f64` for every
/// amount a price table produces (|mantissa| < 2⁵³, scale ≤ 22), so one division rounds
/// once, correctly — and costs a fraction of `rust_decimal`'s general conversion, which was
/// 1 % of the process at saturation with two destinations.
fn decimal_f64(d: rust_decimal::Decimal) -> f64 {
    const EXACT: u64 = 1 << 53;
    // The powers of ten exact as `f64` (a table: `powi` is a library call).
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    // Through i64: converting an i128 to f64 is a library call too.
    match (i64::try_from(d.mantissa()), POW10.get(d.scale() as usize)) {
        (Ok(mantissa), Some(power)) if mantissa.unsigned_abs() < EXACT => mantissa as f64 / power,
        _ => d.try_into().unwrap_or(0.0),
    }
}

/// `(sentry.op, gen_ai.operation.name)` of a completion of `api` (SPEC §2.1): Anthropic
/// Messages are chat.
fn operation(api: Api) -> (&'static str, &'static str) {
    match api {
        Api::Chat | Api::Messages => ("gen_ai.chat", "chat"),
        Api::Responses => ("gen_ai.responses", "responses"),
        Api::Embeddings => ("gen_ai.embeddings", "embeddings"),
        Api::Completions => ("gen_ai.text_completion", "text_completion"),
    }
}

/// The generation span's own attributes (SPEC §4.1) that are the same for every
/// destination.
fn generation_attributes(record: &CompletionRecord, description: &str, a: &mut impl Attrs) {
    let (op, operation) = operation(record.api);
    a.str("sentry.op", op);
    a.str("gen_ai.operation.name", operation);
    a.str("sentry.description", description);
    a.str("gen_ai.provider.name", &record.provider);
    a.str("gen_ai.request.model", &record.requested_model);
    a.bool("gen_ai.request.stream", record.stream);
    a.bool("gen_ai.response.streaming", record.stream);
    a.str("beacon.outcome", record.outcome.label());
    a.str("beacon.request_id", &record.request_id);
    let failed_without_response =
        error_status(record).is_some() && record.upstream_status.is_none_or(|st| st >= 400);
    if let (Some(model), false) = (&record.served_model, failed_without_response) {
        a.str("gen_ai.response.model", model);
    }
    if let Some(id) = &record.response_id {
        a.str("gen_ai.response.id", id);
    }
    // A string, as Sentry types it: the reason when every choice has the same one, else
    // the reasons as a JSON array string (Relay keeps an array attribute's value, but its
    // schema and the UI read a string).
    if let Some(first) = record.finish_reasons.first() {
        if record.finish_reasons.iter().all(|r| r == first) {
            a.str("gen_ai.response.finish_reasons", first);
        } else {
            let list = Value::from(record.finish_reasons.clone()).to_string();
            a.str("gen_ai.response.finish_reasons", &list);
        }
    }
    // Under an agent (trace.trace_name), the chat span names it too (SPEC §4.5).
    if let Some(agent) = trace_str(record, "trace_name") {
        a.str("gen_ai.agent.name", agent);
    }
    if let (true, Some(first)) = (record.stream, record.timings.first_chunk_us) {
        a.double("gen_ai.response.time_to_first_chunk", first as f64 / 1e6);
    }
    let p = &record.params;
    for (key, value) in [
        ("gen_ai.request.temperature", p.temperature),
        ("gen_ai.request.top_p", p.top_p),
        ("gen_ai.request.frequency_penalty", p.frequency_penalty),
        ("gen_ai.request.presence_penalty", p.presence_penalty),
    ] {
        if let Some(v) = value {
            a.double(key, v);
        }
    }
    if let Some(v) = p.max_tokens {
        a.int("gen_ai.request.max_tokens", v);
    }
    if let Some(v) = p.seed {
        a.int("gen_ai.request.seed", v);
    }
    let u = &record.usage;
    a.count("gen_ai.usage.input_tokens", u.prompt_tokens);
    if !failed_without_response {
        a.count("gen_ai.usage.output_tokens", u.completion_tokens);
    }
    a.count("gen_ai.usage.total_tokens", u.total_tokens);
    a.count("gen_ai.usage.cache_read.input_tokens", u.cached_tokens);
    a.count(
        "gen_ai.usage.cache_creation.input_tokens",
        u.cache_write_tokens,
    );
    a.count("gen_ai.usage.reasoning.output_tokens", u.reasoning_tokens);
    a.bool("beacon.usage.estimated", u.estimated);
    // No price for the model: no cost attributes at all, rather than 0 (SPEC §2.3).
    if record.cost.source != CostSource::Unknown {
        a.double("gen_ai.cost.input_tokens", decimal_f64(record.cost.input));
        a.double("gen_ai.cost.output_tokens", decimal_f64(record.cost.output));
        a.double("gen_ai.cost.total_tokens", decimal_f64(record.cost.total));
        // Sentry's newer breakdown names (SPEC §4.5): parts of the input and output above.
        let c = &record.cost;
        a.double(
            "gen_ai.cost.cache_read.input_tokens",
            decimal_f64(c.cache_read),
        );
        a.double(
            "gen_ai.cost.cache_creation.input_tokens",
            decimal_f64(c.cache_creation),
        );
        a.double(
            "gen_ai.cost.reasoning.output_tokens",
            decimal_f64(c.reasoning),
        );
    }
    if let Some(status) = record.upstream_status {
        a.int("http.response.status_code", i64::from(status));
    }
    if let Some((error_type, _)) = error_status(record) {
        a.str("error.type", error_type);
    }
}

/// The generation span's attributes that depend on the destination: its dialect's, and
/// what privacy mode leaves out or changes (SPEC §4.1, §4.5).
fn generation_destination_attributes(
    record: &CompletionRecord,
    settings: &SpanSettings,
    converted: Option<&content::Converted>,
    a: &mut impl Attrs,
) {
    // Tools offered and called (SPEC §4.5): definitions and arguments are content, so
    // privacy mode keeps names (and call ids) only.
    if !record.tool_names.is_empty() {
        let definitions = record
            .content
            .as_ref()
            .and_then(|c| c.tool_definitions.as_ref())
            .filter(|_| !settings.privacy_mode)
            .and_then(|d| std::str::from_utf8(d).ok());
        match definitions {
            Some(json) => a.str("gen_ai.request.available_tools", json),
            None => a.str(
                "gen_ai.request.available_tools",
                &Value::from(record.tool_names.clone()).to_string(),
            ),
        }
    }
    if let Some(calls) = record
        .content
        .as_ref()
        .map(|c| &c.output_tool_calls)
        .filter(|c| !c.is_empty())
    {
        let list: Vec<Value> = calls
            .iter()
            .map(|t| {
                let mut call = serde_json::json!({"id": t.id, "name": t.name, "type": "function"});
                if !settings.privacy_mode {
                    call["arguments"] = Value::from(t.arguments.as_str());
                }
                call
            })
            .collect();
        a.str("gen_ai.response.tool_calls", &Value::from(list).to_string());
    }
    dialect::kind(settings.dialect, dialect::Kind::Generation, record, a);
    dialect::generation(settings.dialect, record, a);
    if !settings.privacy_mode {
        if let Some(c) = &record.content {
            let made;
            let converted = match converted {
                Some(done) => Some(done),
                None => {
                    made = content::Converted::of(record);
                    made.as_ref()
                }
            };
            if let Some(conv) = converted {
                if let Some(system) = &conv.system {
                    a.str("gen_ai.system_instructions", system);
                }
                // The prompt and the answer are sent once, under the names the destination
                // reads: a dialect's own (which those tools read instead of gen_ai's — a
                // second copy would only be stored as metadata, and compressed and sent twice).
                if let Some(input) = &conv.input {
                    dialect::input(settings.dialect, input, a);
                }
                if let Some(messages) = &conv.output {
                    dialect::output(
                        settings.dialect,
                        messages,
                        &c.output_text,
                        &c.output_tool_calls,
                        a,
                    );
                }
            }
            if c.input_truncated || c.output_truncated {
                a.bool("beacon.content.truncated", true);
            }
        }
    }
}

/// Which span of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Agent,
    Function,
    Generation,
    /// A failed upstream attempt (its index in `record.attempts`), a child of the generation.
    Attempt(usize),
    /// A tool run whose result this request brought (its index in
    /// `record.tools.executions`), a sibling of the generation.
    Tool(usize),
}

/// One span before its attributes are produced.
struct PlannedSpan<'r> {
    name: std::borrow::Cow<'r, str>,
    role: Role,
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    flags: u32,
    start: u64,
    end: u64,
}

/// Everything about a completion's spans except the attributes.
struct Plan<'r> {
    trace_id: [u8; 16],
    id_metadata: Vec<(&'static str, String)>,
    spans: Vec<PlannedSpan<'r>>,
}

impl Plan<'_> {
    /// The generation span's id (zeros if it has none).
    fn generation_span_id(&self) -> [u8; 8] {
        self.spans
            .iter()
            .find(|s| s.role == Role::Generation)
            .map_or([0; 8], |s| s.span_id)
    }
}

/// A span's status: its code and message (SPEC §4.1, §2.2, §4.5).
fn span_status(record: &CompletionRecord, role: Role) -> Option<(i32, &str)> {
    match role {
        Role::Agent | Role::Function | Role::Generation => match error_status(record) {
            Some((_, message)) => Some((status::StatusCode::Error as i32, message)),
            None if matches!(record.outcome, Outcome::Ok) => {
                Some((status::StatusCode::Ok as i32, ""))
            }
            None => None,
        },
        Role::Tool(_) => Some((status::StatusCode::Ok as i32, "")),
        Role::Attempt(i) => Some((
            status::StatusCode::Error as i32,
            record.attempts.get(i).map_or("", |a| a.error_type.as_str()),
        )),
    }
}

fn plan<'r>(record: &'r CompletionRecord, ids: &mut dyn IdSource) -> Plan<'r> {
    let (trace_id, parent, id_metadata) = resolve_trace(record, ids);
    let start = record.timings.received_unix_nanos;
    let end = start.saturating_add(record.timings.last_byte_us.saturating_mul(1000));
    let mut chain: Vec<(std::borrow::Cow<'r, str>, Role)> = Vec::with_capacity(3);
    if let Some(name) = trace_str(record, "trace_name") {
        chain.push((name.into(), Role::Agent));
    }
    if let Some(name) = trace_str(record, "span_name") {
        chain.push((name.into(), Role::Function));
    }
    let generation_name = match trace_str(record, "generation_name") {
        Some(n) => n.into(),
        None => {
            // `chat gpt-4o`, joined by hand: `format!` costs more than the rest of the plan.
            let op = operation(record.api).1;
            let mut name = String::with_capacity(op.len() + 1 + record.requested_model.len());
            name.push_str(op);
            name.push(' ');
            name.push_str(&record.requested_model);
            name.into()
        }
    };
    chain.push((generation_name, Role::Generation));
    let mut spans = Vec::with_capacity(chain.len());
    let mut parent_id = parent;
    for (depth, (name, role)) in chain.into_iter().enumerate() {
        let span_id = ids.span_id();
        let flags = if depth == 0 && parent.is_some() {
            REMOTE_PARENT_FLAGS
        } else {
            0
        };
        spans.push(PlannedSpan {
            name,
            role,
            span_id,
            parent: parent_id,
            flags,
            start,
            end,
        });
        parent_id = Some(span_id);
    }
    // Tool runs (SPEC §4.5): beside the generation, under its parent, from the end of the
    // completion that asked for the call to the arrival of its result.
    if let Some(generation) = spans.last() {
        let (parent, flags) = (generation.parent, generation.flags);
        for (i, run) in record.tools.executions.iter().enumerate() {
            spans.push(PlannedSpan {
                name: format!("execute_tool {}", run.name).into(),
                role: Role::Tool(i),
                span_id: ids.span_id(),
                parent,
                flags,
                start: run.started_unix_nanos.min(start),
                end: start,
            });
        }
    }
    // Failed attempts (SPEC §2.2): children of the generation span, timed as they ran.
    for (i, attempt) in record.attempts.iter().enumerate() {
        let at = start.saturating_add(attempt.start_us.saturating_mul(1000));
        spans.push(PlannedSpan {
            name: format!("attempt {}/{}", attempt.provider, attempt.model).into(),
            role: Role::Attempt(i),
            span_id: ids.span_id(),
            parent: parent_id,
            flags: 0,
            start: at,
            end: at.saturating_add(attempt.duration_us.saturating_mul(1000)),
        });
    }
    Plan {
        trace_id,
        id_metadata,
        spans,
    }
}

/// A span's attributes: those every destination gets, then its own.
fn span_attributes(
    record: &CompletionRecord,
    settings: &SpanSettings,
    plan: &Plan<'_>,
    span: &PlannedSpan<'_>,
    converted: Option<&content::Converted>,
    a: &mut impl Attrs,
) {
    shared_attributes(record, &plan.id_metadata, span, a);
    destination_attributes(record, settings, span.role, converted, a);
}

/// The attributes of a span that do not depend on the destination's settings: written
/// once per record for every destination ([`Prepared`]), so they come first.
fn shared_attributes(
    record: &CompletionRecord,
    id_metadata: &[(&'static str, String)],
    span: &PlannedSpan<'_>,
    a: &mut impl Attrs,
) {
    match span.role {
        Role::Agent => {
            a.str("sentry.op", "gen_ai.invoke_agent");
            a.str("gen_ai.operation.name", "invoke_agent");
            a.str("gen_ai.agent.name", &span.name);
            a.str("sentry.description", &span.name);
        }
        Role::Function => {
            a.str("sentry.op", "function");
            a.str("sentry.description", &span.name);
        }
        Role::Generation => generation_attributes(record, &span.name, a),
        Role::Tool(i) => {
            if let Some(run) = record.tools.executions.get(i) {
                a.str("sentry.op", "gen_ai.execute_tool");
                a.str("gen_ai.operation.name", "execute_tool");
                a.str("sentry.description", &span.name);
                a.str("gen_ai.tool.name", &run.name);
                a.str("gen_ai.tool.type", "function");
                a.str("gen_ai.tool.call.id", &run.call_id);
                if let Some(agent) = trace_str(record, "trace_name") {
                    a.str("gen_ai.agent.name", agent);
                }
            }
        }
        Role::Attempt(i) => {
            if let Some(attempt) = record.attempts.get(i) {
                a.str("sentry.op", "http.client");
                a.str("sentry.description", &span.name);
                a.str("gen_ai.provider.name", &attempt.provider);
                a.str("gen_ai.request.model", &attempt.model);
                if let Some(status) = attempt.status {
                    a.int("http.response.status_code", i64::from(status));
                }
                a.str("error.type", &attempt.error_type);
                a.int("beacon.attempt", i as i64 + 1);
                a.str("beacon.request_id", &record.request_id);
            }
        }
    }
    common_attributes(record, id_metadata, a);
}

/// The attributes of a span that depend on the destination: its dialect's, its sampling
/// rate, and the content privacy mode leaves out.
fn destination_attributes(
    record: &CompletionRecord,
    settings: &SpanSettings,
    role: Role,
    converted: Option<&content::Converted>,
    a: &mut impl Attrs,
) {
    match role {
        Role::Agent => dialect::kind(settings.dialect, dialect::Kind::Agent, record, a),
        Role::Function => dialect::kind(settings.dialect, dialect::Kind::Function, record, a),
        Role::Generation => generation_destination_attributes(record, settings, converted, a),
        Role::Tool(i) => {
            if let Some(run) = record.tools.executions.get(i) {
                dialect::kind(settings.dialect, dialect::Kind::Tool, record, a);
                let (mut arguments, mut result) = (None, None);
                if let (false, Some(c)) = (settings.privacy_mode, &record.content) {
                    (arguments, result) = content::tool_run(&c.input_messages, &run.call_id);
                    if let Some(arguments) = &arguments {
                        a.str("gen_ai.tool.call.arguments", arguments);
                    }
                    if let Some(result) = &result {
                        a.str("gen_ai.tool.call.result", result);
                    }
                }
                dialect::tool(
                    settings.dialect,
                    &run.name,
                    arguments.as_deref(),
                    result.as_deref(),
                    a,
                );
            }
        }
        Role::Attempt(_) => dialect::kind(settings.dialect, dialect::Kind::Attempt, record, a),
    }
    sample_rate(record, settings, a);
    dialect::common(settings.dialect, record, a);
}

fn kind(role: Role) -> span::SpanKind {
    match role {
        Role::Generation | Role::Attempt(_) => span::SpanKind::Client,
        Role::Agent | Role::Function | Role::Tool(_) => span::SpanKind::Internal,
    }
}

/// Builds the spans of one completion for one destination, top span first.
pub fn build_spans(
    record: &CompletionRecord,
    settings: &SpanSettings,
    ids: &mut dyn IdSource,
) -> Vec<Span> {
    let plan = plan(record, ids);
    plan.spans
        .iter()
        .map(|sp| {
            let mut attributes: Vec<KeyValue> = Vec::with_capacity(48);
            span_attributes(record, settings, &plan, sp, None, &mut attributes);
            Span {
                trace_id: plan.trace_id.to_vec(),
                span_id: sp.span_id.to_vec(),
                parent_span_id: sp.parent.map(|p| p.to_vec()).unwrap_or_default(),
                flags: sp.flags,
                name: sp.name.to_string(),
                kind: kind(sp.role) as i32,
                start_time_unix_nano: sp.start,
                end_time_unix_nano: sp.end,
                attributes,
                status: span_status(record, sp.role).map(|(code, message)| Status {
                    message: message.to_string(),
                    code,
                }),
                ..Default::default()
            }
        })
        .collect()
}

const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn resource_attributes(a: &mut impl Attrs) {
    a.str("service.name", "beacon");
    a.str("service.version", SERVICE_VERSION);
    a.str("telemetry.sdk.language", "rust");
    a.str("telemetry.sdk.name", "beacon");
}

/// Resource attributes of every export (never the gateway's own deployment environment).
pub fn resource() -> Resource {
    let mut attributes = Vec::with_capacity(4);
    resource_attributes(&mut attributes);
    Resource {
        attributes,
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
                    version: SERVICE_VERSION.into(),
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
mod decimal_tests {
    use super::decimal_f64;
    use rust_decimal::Decimal;

    #[test]
    fn costs_convert_as_rust_decimal_does() {
        for text in [
            "0",
            "0.000575",
            "0.000025",
            "2.5",
            "-1.25",
            "123456.789012",
            "0.0000000001",
            "79228162514264337593543950335",
            "0.1",
            "1e-20",
        ] {
            let d: Decimal = text
                .parse()
                .or_else(|_| Decimal::from_scientific(text))
                .unwrap();
            let general: f64 = d.try_into().unwrap();
            assert_eq!(decimal_f64(d), general, "{text}");
        }
    }
}

pub mod wire;

#[cfg(test)]
pub(crate) mod tests;
