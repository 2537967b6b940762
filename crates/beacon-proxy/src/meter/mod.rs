//! Metering: where a completion is measured and its record emitted.
//!
//! A [`Meter`] is created once a request has been routed. The handler and the streaming
//! body feed it what they see (upstream status, chunks, usage); exactly one call to
//! [`Meter::finish`] builds the [`CompletionRecord`] and hands it to the broadcast queue
//! without waiting. If the meter is dropped unfinished — the client went away, or the
//! handler future was cancelled — `Drop` finishes it as `client_cancelled` (as `shutdown`
//! once the gateway has cut its in-flight requests), with the tokens seen so far.

pub mod estimate;
pub mod pricing;
pub mod stream;
pub mod usage;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use beacon_broadcast::record::{
    Attempt, CompletionRecord, Content, Cost, CostSource, Outcome, RequestParams, Timings,
    TokenUsage, ToolCall, ToolCallRef, ToolLinks, TraceContext, MAX_TOOL_ID_BYTES, MAX_TOOL_LINKS,
};
use beacon_broadcast::RecordSender;
use bytes::Bytes;

use crate::metrics::Metrics;
use pricing::PriceTable;
use usage::ReportedUsage;

/// What the meter needs that is shared by all requests.
#[derive(Debug)]
pub struct MeterShared {
    /// The broadcast hand-off.
    pub sender: RecordSender,
    /// Gateway metrics.
    pub metrics: Arc<Metrics>,
    /// Prices.
    pub prices: PriceTable,
    /// Output text kept per completion, in bytes.
    pub max_content_bytes: usize,
    /// Set when the shutdown grace period ends: a meter dropped unfinished after it was cut
    /// by the gateway, not cancelled by its client.
    pub cut: std::sync::atomic::AtomicBool,
}

/// Request-side facts, fixed once the request is routed.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Beacon's request id.
    pub request_id: String,
    /// The API called.
    pub api: beacon_config::Api,
    /// Calling tenant.
    pub tenant_id: String,
    /// Calling key's id.
    pub key_id: String,
    /// Provider routed to.
    pub provider: String,
    /// Model as the client sent it.
    pub requested_model: String,
    /// Model as sent upstream.
    pub upstream_model: String,
    /// Streaming request.
    pub stream: bool,
    /// Sampling parameters.
    pub params: RequestParams,
    /// `user`.
    pub user: Option<String>,
    /// `session_id` or `x-session-id`.
    pub session_id: Option<String>,
    /// `trace`.
    pub trace: Option<serde_json::Map<String, serde_json::Value>>,
    /// Trace context from headers.
    pub trace_context: Option<TraceContext>,
    /// The prompt as a chat `messages` array (for content export and estimation).
    pub messages: Bytes,
    /// Names of the tools the request offered.
    pub tool_names: Vec<String>,
    /// Call ids the request's `role: tool` messages answer.
    pub answered_tool_calls: Vec<String>,
    /// The request's `tools` as sent.
    pub tool_definitions: Option<Bytes>,
    /// Whether some destination may export content (not every one is in privacy mode).
    pub keep_content: bool,
}

/// Usage and cost as finally accounted, returned by [`Meter::finish`].
#[derive(Debug, Clone, Copy)]
pub struct Accounted {
    /// Token counts (reported or estimated).
    pub usage: TokenUsage,
    /// Cost.
    pub cost: Cost,
}

/// The per-request measuring state. See the module docs.
#[derive(Debug)]
pub struct Meter {
    info: Option<RequestInfo>,
    shared: Arc<MeterShared>,
    received: Instant,
    received_wall: SystemTime,
    upstream_start: Option<Instant>,
    upstream_headers: Option<Instant>,
    upstream_done: Option<Instant>,
    first_chunk: Option<Instant>,
    upstream_status: Option<u16>,
    attempts: Vec<Attempt>,
    reported: Option<ReportedUsage>,
    served_model: Option<String>,
    response_id: Option<String>,
    finish_reasons: Vec<(u32, String)>,
    output: String,
    output_bytes: usize,
    tool_calls: Vec<(u32, ToolCall)>,
    tool_bytes: usize,
    /// An estimate made ahead of [`Meter::finish`] (see [`Meter::estimate_off_loop`]).
    estimated: Option<TokenUsage>,
    /// The request's place in its key's and tenant's limits, settled with the real usage
    /// and cost when the record is accounted (SPEC §5.1).
    admission: Option<crate::limits::Admission>,
}

impl Meter {
    /// Holds the request's place in its limits until the record is accounted.
    pub fn hold(&mut self, admission: crate::limits::Admission) {
        self.admission = Some(admission);
    }

    /// Starts metering a routed request received at `received`.
    pub fn new(
        info: RequestInfo,
        shared: Arc<MeterShared>,
        received: Instant,
        received_wall: SystemTime,
    ) -> Self {
        Self {
            info: Some(info),
            shared,
            received,
            received_wall,
            upstream_start: None,
            upstream_headers: None,
            upstream_done: None,
            first_chunk: None,
            upstream_status: None,
            admission: None,
            attempts: Vec::new(),
            reported: None,
            served_model: None,
            response_id: None,
            finish_reasons: Vec::new(),
            output: String::new(),
            output_bytes: 0,
            tool_calls: Vec::new(),
            tool_bytes: 0,
            estimated: None,
        }
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        self.info.as_ref().map_or("", |i| i.request_id.as_str())
    }

    /// The request is being sent upstream now.
    pub fn upstream_started(&mut self) {
        self.upstream_start = Some(Instant::now());
    }

    /// An attempt failed and another follows (SPEC §2.2): it is kept for the record, and
    /// the next attempt goes to `next` (provider, model). Timings of the failed attempt's
    /// response are cleared.
    pub fn attempt_failed(
        &mut self,
        status: Option<u16>,
        error_type: &str,
        started: Instant,
        next: (&str, &str),
    ) {
        let Some(info) = self.info.as_mut() else {
            return;
        };
        let now = Instant::now();
        let us = |t: Instant| {
            u64::try_from(t.saturating_duration_since(self.received).as_micros())
                .unwrap_or(u64::MAX)
        };
        self.attempts.push(Attempt {
            provider: std::mem::replace(&mut info.provider, next.0.to_string()),
            model: std::mem::replace(&mut info.upstream_model, next.1.to_string()),
            status,
            error_type: error_type.to_string(),
            start_us: us(started),
            duration_us: u64::try_from(now.saturating_duration_since(started).as_micros())
                .unwrap_or(u64::MAX),
        });
        self.upstream_headers = None;
        self.upstream_status = None;
        self.upstream_done = None;
    }

    /// Attempts made so far (the current one included).
    pub fn attempt_count(&self) -> usize {
        self.attempts.len() + 1
    }

    /// The upstream's response headers arrived.
    pub fn upstream_headers(&mut self, status: u16) {
        self.upstream_headers = Some(Instant::now());
        self.upstream_status = Some(status);
    }

    /// The upstream body has ended (or failed).
    pub fn upstream_done(&mut self) {
        self.upstream_done.get_or_insert_with(Instant::now);
    }

    /// An event carrying output is being forwarded to the client (the first one is the
    /// time to first chunk).
    pub fn chunk_forwarded(&mut self) {
        self.first_chunk.get_or_insert_with(Instant::now);
    }

    /// The response's id and served model, as the upstream names them (the first ones
    /// seen are kept).
    pub fn set_response(&mut self, id: Option<&str>, model: Option<&str>) {
        if self.response_id.is_none() {
            self.response_id = id.map(String::from);
        }
        if self.served_model.is_none() {
            self.served_model = model.map(String::from);
        }
    }

    /// The usage the upstream reported (the latest report replaces earlier ones).
    pub fn set_usage(&mut self, usage: ReportedUsage) {
        self.reported = Some(usage);
    }

    /// The usage reported so far.
    pub fn reported_usage(&self) -> Option<ReportedUsage> {
        self.reported
    }

    /// The upstream's response id, once seen.
    pub fn response_id(&self) -> Option<&str> {
        self.response_id.as_deref()
    }

    /// The upstream's HTTP status, once its headers arrived.
    pub fn upstream_status(&self) -> Option<u16> {
        self.upstream_status
    }

    /// Why output `index` (a choice, or the only output) stopped.
    pub fn finish_reason(&mut self, index: u32, reason: &str) {
        match self.finish_reasons.iter_mut().find(|(i, _)| *i == index) {
            Some(slot) => slot.1 = reason.to_string(),
            None => self.finish_reasons.push((index, reason.to_string())),
        }
    }

    /// Text of the first output, kept up to `max_content_bytes` (counted beyond).
    pub fn output_text(&mut self, text: &str) {
        self.output_bytes += text.len();
        let room = self
            .shared
            .max_content_bytes
            .saturating_sub(self.output.len() + self.tool_bytes);
        if room >= text.len() {
            self.output.push_str(text);
        } else if room > 0 {
            let mut end = room;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            self.output.push_str(&text[..end]);
        }
    }

    /// Adds a piece of tool call `index` of the first choice (streams send the id and name
    /// once, then the arguments in pieces).
    pub fn tool_call_piece(
        &mut self,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) {
        let slot = match self.tool_calls.iter().position(|(i, _)| *i == index) {
            Some(p) => p,
            None => {
                self.tool_calls.push((index, ToolCall::default()));
                self.tool_calls.len() - 1
            }
        };
        let call = &mut self.tool_calls[slot].1;
        if let Some(id) = id {
            call.id = Some(id.to_string());
        }
        if let Some(name) = name {
            call.name = Some(name.to_string());
        }
        if let Some(args) = arguments {
            self.output_bytes += args.len();
            let room = self
                .shared
                .max_content_bytes
                .saturating_sub(self.output.len() + self.tool_bytes);
            let mut end = args.len().min(room);
            while !args.is_char_boundary(end) {
                end -= 1;
            }
            call.arguments.push_str(&args[..end]);
            self.tool_bytes += end;
        }
    }

    /// Finishes the completion with `outcome`: accounts usage and cost, emits the record.
    /// Only the first call has an effect; later calls return `None`. So does a call whose
    /// token estimate is too large for the event loop: that record is accounted and
    /// submitted on the estimator thread (callers that need the usage back make the
    /// estimate first, with [`Meter::estimate_off_loop`]).
    pub fn finish(&mut self, outcome: Outcome) -> Option<Accounted> {
        let info = self.info.take()?;
        let now = Instant::now();
        let us = |t: Instant| {
            u64::try_from(t.saturating_duration_since(self.received).as_micros())
                .unwrap_or(u64::MAX)
        };

        let failed_without_response = matches!(
            outcome,
            Outcome::UpstreamError { .. }
                | Outcome::Timeout
                | Outcome::Shutdown
                | Outcome::Limited { .. }
        ) && self.upstream_status.is_none_or(|s| s >= 400);
        // Usage now, or an estimate too large for the event loop, finished on the estimator
        // thread (the record is submitted from there).
        let (usage, later) = match (self.reported, self.estimated.take()) {
            (Some(r), _) => (r.tokens, None),
            (None, _) if failed_without_response => (TokenUsage::default(), None),
            (None, Some(estimated)) => (estimated, None),
            (None, None) => {
                let input = self.estimate_input(&info);
                if input.is_small() {
                    self.shared
                        .metrics
                        .observe_estimate(estimate::Method::Tokenizer);
                    (input.run(), None)
                } else {
                    (TokenUsage::default(), Some(input))
                }
            }
        };
        let reported_cost = self.reported.and_then(|r| r.cost);
        let no_cost = failed_without_response && self.reported.is_none();

        let total_us = us(now);
        let upstream_us = match (self.upstream_start, self.upstream_done.or(Some(now))) {
            (Some(start), Some(done)) => {
                u64::try_from(done.saturating_duration_since(start).as_micros()).unwrap_or(0)
            }
            _ => 0,
        };
        let timings = Timings {
            received_unix_nanos: self
                .received_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            upstream_start_us: self.upstream_start.map(us),
            upstream_headers_us: self.upstream_headers.map(us),
            first_chunk_us: self.first_chunk.map(us),
            last_byte_us: total_us,
            gateway_overhead_us: total_us.saturating_sub(upstream_us),
        };
        let mut finish_reasons = std::mem::take(&mut self.finish_reasons);
        finish_reasons.sort_by_key(|(i, _)| *i);
        let bounded = info
            .keep_content
            .then(|| bounded_messages(&info.messages, self.shared.max_content_bytes));
        // Before the output is taken: what was seen against what is kept.
        let output_truncated = self.output_bytes > self.output.len() + self.tool_bytes;
        // The calls asked for, by id and name, whatever the privacy mode: a later request's
        // tool results are linked to them on the export path (SPEC §4.5).
        let requested_tools: Vec<ToolCallRef> = self
            .tool_calls
            .iter()
            .filter_map(|(_, c)| {
                let id = c.id.as_deref().filter(|id| id.len() <= MAX_TOOL_ID_BYTES)?;
                let name = c.name.as_deref().unwrap_or_default();
                let mut end = name.len().min(MAX_TOOL_ID_BYTES);
                while !name.is_char_boundary(end) {
                    end -= 1;
                }
                Some(ToolCallRef {
                    id: id.to_string(),
                    name: name[..end].to_string(),
                })
            })
            .take(MAX_TOOL_LINKS)
            .collect();
        let content = bounded.map(|(input_messages, input_truncated)| Content {
            // Its own exact-size copy (see apis::chat::parse), or a smaller one: no request
            // buffer is pinned while the record waits for export, and no more than
            // `max_content_bytes` of prompt is kept.
            input_messages,
            input_truncated,
            // Definitions are kept when they fit the content limit (the names always are).
            tool_definitions: info
                .tool_definitions
                .clone()
                .filter(|d| d.len() <= self.shared.max_content_bytes),
            output_text: {
                let mut text = std::mem::take(&mut self.output);
                text.shrink_to_fit();
                text
            },
            output_truncated,
            output_tool_calls: std::mem::take(&mut self.tool_calls)
                .into_iter()
                .map(|(_, c)| c)
                .collect(),
        });
        let mut record = CompletionRecord {
            request_id: info.request_id,
            api: info.api,
            tenant_id: info.tenant_id,
            key_id: info.key_id,
            provider: info.provider,
            requested_model: info.requested_model,
            upstream_model: info.upstream_model,
            served_model: self.served_model.take(),
            response_id: self.response_id.take(),
            stream: info.stream,
            params: info.params,
            usage,
            cost: Cost::default(),
            timings,
            finish_reasons: finish_reasons.into_iter().map(|(_, r)| r).collect(),
            outcome,
            upstream_status: self.upstream_status,
            attempts: std::mem::take(&mut self.attempts),
            tool_names: info.tool_names,
            tools: ToolLinks {
                requested: requested_tools,
                answered: info.answered_tool_calls,
                executions: Vec::new(),
            },
            user: info.user,
            session_id: info.session_id,
            trace: info.trace,
            trace_context: info.trace_context,
            content,
        };
        let mut admission = self.admission.take();
        match later {
            None => {
                let cost = account(&self.shared, &mut record, usage, reported_cost, no_cost);
                settle(admission.as_mut(), &usage, &cost, &record);
                emit(&self.shared, record);
                Some(Accounted { usage, cost })
            }
            Some(input) => {
                let shared = self.shared.clone();
                estimate::spawn(input, move |usage, method| {
                    shared.metrics.observe_estimate(method);
                    let cost = account(&shared, &mut record, usage, reported_cost, no_cost);
                    settle(admission.as_mut(), &usage, &cost, &record);
                    emit(&shared, record);
                });
                None
            }
        }
    }

    /// The cost of the usage the upstream has reported so far (what [`Meter::finish`] will
    /// charge for it), in USD; `None` before any usage, or when nothing prices the model.
    pub fn reported_cost(&self) -> Option<rust_decimal::Decimal> {
        let info = self.info.as_ref()?;
        let reported = self.reported?;
        let price = self.shared.prices.lookup(
            &info.provider,
            &info.upstream_model,
            self.served_model.as_deref(),
        );
        if price.is_none() && reported.cost.is_none() {
            return None;
        }
        Some(pricing::cost(&reported.tokens, price, reported.cost).total)
    }

    /// Makes the estimate [`Meter::finish`] will need, when the upstream reported no usage,
    /// on the estimator thread if it is large: for a caller that needs the accounted usage
    /// back (the non-streaming handler) and can await it.
    pub async fn estimate_off_loop(&mut self) {
        let Some(info) = self.info.as_ref() else {
            return;
        };
        if self.reported.is_some() || self.estimated.is_some() {
            return;
        }
        let input = self.estimate_input(info);
        let (usage, method) = estimate::off_loop(input).await;
        self.shared.metrics.observe_estimate(method);
        self.estimated = Some(usage);
    }

    fn estimate_input(&self, info: &RequestInfo) -> estimate::Input {
        let model = self.served_model.as_deref().unwrap_or(&info.upstream_model);
        let mut output = self.output.clone();
        for (_, call) in &self.tool_calls {
            output.push_str(call.name.as_deref().unwrap_or_default());
            output.push_str(&call.arguments);
        }
        estimate::Input {
            model: model.to_owned(),
            messages: info.messages.clone(),
            output,
            output_bytes: self.output_bytes,
        }
    }
}

/// Counts the real tokens and cost against the request's limits.
fn settle(
    admission: Option<&mut crate::limits::Admission>,
    usage: &TokenUsage,
    cost: &Cost,
    record: &CompletionRecord,
) {
    if let Some(a) = admission {
        let t = &record.timings;
        let ended_ms = t.received_unix_nanos / 1_000_000 + t.last_byte_us / 1_000;
        a.settle(usage.total_tokens, micros_ceil(cost.total), ended_ms);
    }
}

/// A cost in millionths of a USD, rounded up (a budget never under-counts); 0 for none.
/// Integer arithmetic on the decimal's parts: this runs once per limited request.
fn micros_ceil(usd: rust_decimal::Decimal) -> u64 {
    // A decimal's scale is at most 28.
    const POW10: [u128; 29] = {
        let mut t = [1u128; 29];
        let mut i = 1;
        while i < 29 {
            t[i] = t[i - 1] * 10;
            i += 1;
        }
        t
    };
    if usd.is_sign_negative() || usd.is_zero() {
        return 0;
    }
    let m = usd.mantissa().unsigned_abs();
    let scale = usd.scale() as usize;
    let micros = if scale <= 6 {
        m.saturating_mul(POW10[6 - scale])
    } else {
        match POW10.get(scale - 6) {
            Some(&p) => m.div_ceil(p),
            None => u128::MAX,
        }
    };
    u64::try_from(micros).unwrap_or(u64::MAX)
}

/// Sets the record's usage and its cost (none for a request that failed before any
/// response); returns the cost.
fn account(
    shared: &MeterShared,
    record: &mut CompletionRecord,
    usage: TokenUsage,
    reported_cost: Option<rust_decimal::Decimal>,
    no_cost: bool,
) -> Cost {
    let cost = if no_cost {
        Cost {
            source: CostSource::NotCharged,
            ..Cost::default()
        }
    } else {
        let price = shared.prices.lookup(
            &record.provider,
            &record.upstream_model,
            record.served_model.as_deref(),
        );
        pricing::cost(&usage, price, reported_cost)
    };
    record.usage = usage;
    record.cost = cost;
    cost
}

/// Counts the finished record in the metrics and hands it to the broadcast queue.
fn emit(shared: &MeterShared, record: CompletionRecord) {
    shared.metrics.observe_record(&record);
    tracing::debug!(
        request_id = %record.request_id,
        tenant = %record.tenant_id,
        outcome = record.outcome.label(),
        prompt_tokens = record.usage.prompt_tokens,
        completion_tokens = record.usage.completion_tokens,
        estimated = record.usage.estimated,
        "completion finished"
    );
    shared.sender.submit(record);
}

/// The request's `messages` as kept in a record, at most `max` bytes of JSON: all of them
/// when they fit; else the most recent messages that fit; and when not even the newest one
/// fits, that message with every string in it cut to an equal share of `max`. Returns the
/// JSON and whether anything was left out.
pub fn bounded_messages(messages: &Bytes, max: usize) -> (Bytes, bool) {
    if messages.len() <= max {
        return (messages.clone(), false);
    }
    let Ok(list) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(messages) else {
        return (Bytes::from_static(b"[]"), true);
    };
    let budget = max.saturating_sub(2);
    let mut used = 0usize;
    let mut first_kept = list.len();
    for (i, m) in list.iter().enumerate().rev() {
        let cost = m.get().len() + usize::from(used > 0);
        if used + cost > budget {
            break;
        }
        used += cost;
        first_kept = i;
    }
    if first_kept < list.len() {
        let mut out = Vec::with_capacity(used + 2);
        out.push(b'[');
        for (n, m) in list[first_kept..].iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(m.get().as_bytes());
        }
        out.push(b']');
        return (Bytes::from(out), true);
    }
    // Not even the newest message fits: keep it with its strings cut.
    let Some(last) = list.last() else {
        return (Bytes::from_static(b"[]"), true);
    };
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(last.get()) else {
        return (Bytes::from_static(b"[]"), true);
    };
    let strings = count_strings(&value).max(1);
    // Room for the message's keys and punctuation, then an equal share per string.
    let share = budget.saturating_sub(256) / strings;
    cut_strings(&mut value, share);
    let mut out = Vec::with_capacity(max);
    out.push(b'[');
    if serde_json::to_writer(&mut out, &value).is_err() || out.len() + 1 > max {
        return (Bytes::from_static(b"[]"), true);
    }
    out.push(b']');
    (Bytes::from(out), true)
}

fn count_strings(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(_) => 1,
        serde_json::Value::Array(a) => a.iter().map(count_strings).sum(),
        serde_json::Value::Object(o) => o.values().map(count_strings).sum(),
        _ => 0,
    }
}

fn cut_strings(v: &mut serde_json::Value, max: usize) {
    match v {
        serde_json::Value::String(s) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| cut_strings(x, max)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| cut_strings(x, max)),
        _ => {}
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.info.is_some() {
            let outcome = if self.shared.cut.load(std::sync::atomic::Ordering::Relaxed) {
                Outcome::Shutdown
            } else {
                Outcome::ClientCancelled
            };
            self.finish(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn costs_become_micro_usd_rounded_up() {
        use rust_decimal::Decimal;
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(super::micros_ceil(d("0")), 0);
        assert_eq!(super::micros_ceil(d("-1.5")), 0);
        assert_eq!(super::micros_ceil(d("1")), 1_000_000);
        assert_eq!(super::micros_ceil(d("0.000001")), 1);
        assert_eq!(super::micros_ceil(d("0.0000010000001")), 2);
        assert_eq!(super::micros_ceil(d("0.00123")), 1_230);
        assert_eq!(super::micros_ceil(d("12.3456789")), 12_345_679);
        assert_eq!(
            super::micros_ceil(d("0.5000000000000000000000000000")),
            500_000
        );
        assert_eq!(super::micros_ceil(Decimal::MAX), u64::MAX);
        // The same as the decimal arithmetic it replaces.
        for s in [
            "0.0000025",
            "3.1415926535897932384626433",
            "0.000000000000000000000000001",
        ] {
            use rust_decimal::prelude::ToPrimitive;
            let v = d(s);
            let want = (v * Decimal::from(1_000_000u32)).ceil().to_u64().unwrap();
            assert_eq!(super::micros_ceil(v), want, "{s}");
        }
    }

    use super::*;

    #[test]
    fn messages_that_fit_are_kept_whole() {
        let m = Bytes::from_static(br#"[{"role":"user","content":"hi"}]"#);
        assert_eq!(bounded_messages(&m, 1024), (m.clone(), false));
    }

    #[test]
    fn the_most_recent_messages_that_fit_are_kept() {
        let old = "o".repeat(500);
        let m = serde_json::json!([
            {"role": "system", "content": old},
            {"role": "user", "content": "first"},
            {"role": "user", "content": "second"},
        ])
        .to_string();
        let (kept, cut) = bounded_messages(&Bytes::from(m), 120);
        assert!(cut);
        let v: serde_json::Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[1]["content"], "second");
        assert!(kept.len() <= 120);
    }

    #[test]
    fn a_single_huge_message_has_its_text_cut_and_stays_valid_json() {
        let m = serde_json::json!([{"role": "user", "content": [
            {"type": "text", "text": "é".repeat(400_000)},
            {"type": "text", "text": "x".repeat(10)},
        ]}])
        .to_string();
        let (kept, cut) = bounded_messages(&Bytes::from(m), 4096);
        assert!(cut);
        assert!(kept.len() <= 4096, "{}", kept.len());
        let v: serde_json::Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(v[0]["role"], "user");
        assert!(v[0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("éé"));
    }

    #[test]
    fn unreadable_messages_are_dropped() {
        let m = Bytes::from(vec![b'['; 5000]);
        assert_eq!(bounded_messages(&m, 100), (Bytes::from_static(b"[]"), true));
    }
}
