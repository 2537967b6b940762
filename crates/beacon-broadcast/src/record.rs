//! The completion record (SPEC §3): everything known about one completion, built by the
//! proxy's meter and consumed, off the hot path, by the export pipeline.

use rust_decimal::Decimal;
use serde::Serialize;

/// One completion, produced exactly once for every request that reached routing.
#[derive(Debug, Clone, Serialize)]
pub struct CompletionRecord {
    /// Beacon's request id, also returned to the client as `x-request-id`.
    pub request_id: String,
    /// The API the client called (chat, responses, embeddings, completions, messages).
    pub api: beacon_config::Api,
    /// The tenant that owns the calling key.
    pub tenant_id: String,
    /// Id of the calling key (never the key itself).
    pub key_id: String,
    /// Provider the request was routed to.
    pub provider: String,
    /// Model as the client sent it (e.g. `openai/gpt-4o`).
    pub requested_model: String,
    /// Model as sent upstream (e.g. `gpt-4o`).
    pub upstream_model: String,
    /// Model as the upstream answered, when it answered.
    pub served_model: Option<String>,
    /// The upstream's completion id (`chatcmpl-…`).
    pub response_id: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Sampling parameters of the request.
    pub params: RequestParams,
    /// Token counts.
    pub usage: TokenUsage,
    /// Cost in USD.
    pub cost: Cost,
    /// When things happened.
    pub timings: Timings,
    /// Finish reason of each choice, in order.
    pub finish_reasons: Vec<String>,
    /// How the completion ended.
    pub outcome: Outcome,
    /// The upstream's HTTP status, when a response arrived.
    pub upstream_status: Option<u16>,
    /// Names of the tools the request offered (`tools`), in order.
    pub tool_names: Vec<String>,
    /// Every upstream attempt that failed before the one that served (SPEC §2.2), oldest
    /// first; empty when the first attempt served. The served (or last) attempt is the
    /// record itself: its provider, model and status.
    pub attempts: Vec<Attempt>,
    /// The request's `user` field.
    pub user: Option<String>,
    /// The request's `session_id` (body) or `x-session-id` (header).
    pub session_id: Option<String>,
    /// The request's `trace` object.
    pub trace: Option<serde_json::Map<String, serde_json::Value>>,
    /// Trace context from `sentry-trace` or `traceparent` request headers.
    pub trace_context: Option<TraceContext>,
    /// Prompt and completion text; `None` when every destination is in privacy mode.
    #[serde(skip)]
    pub content: Option<Content>,
    /// Tool calls this completion asked for and tool results its request carried, linked
    /// across completions of a trace on the export path (SPEC §4.5).
    #[serde(skip_serializing_if = "ToolLinks::is_empty")]
    pub tools: ToolLinks,
}

/// Most tool calls or results a record keeps ids of.
pub const MAX_TOOL_LINKS: usize = 64;
/// Longest tool call id or tool name kept, in bytes (longer ids are not linked).
pub const MAX_TOOL_ID_BYTES: usize = 128;

/// How a completion's tool calls and a later request's tool results meet (SPEC §4.5): ids
/// and names only, whatever the privacy mode; arguments and results come from the content.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ToolLinks {
    /// Tool calls the response asked for (id and function name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<ToolCallRef>,
    /// Call ids the request's messages answer (`role: tool` results), in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<String>,
    /// The answered calls an earlier completion of the same trace asked for on this node:
    /// filled on the export path, each a `gen_ai.execute_tool` span.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub executions: Vec<ToolExecution>,
}

impl ToolLinks {
    /// Nothing to link.
    pub fn is_empty(&self) -> bool {
        self.requested.is_empty() && self.answered.is_empty() && self.executions.is_empty()
    }

    fn approx_bytes(&self) -> usize {
        self.requested
            .iter()
            .map(|c| c.id.len() + c.name.len() + 48)
            .chain(self.answered.iter().map(|id| id.len() + 24))
            .chain(
                self.executions
                    .iter()
                    .map(|e| e.call_id.len() + e.name.len() + 56),
            )
            .sum()
    }
}

/// A tool call by id and function name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ToolCallRef {
    /// The call's id (`call_…`, `toolu_…`).
    pub id: String,
    /// The function's name.
    pub name: String,
}

/// A tool run between the completion that asked for it and the request that brought its
/// result back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ToolExecution {
    /// The call's id.
    pub call_id: String,
    /// The function's name.
    pub name: String,
    /// When the asking completion ended (Unix ns): the tool could run from then.
    pub started_unix_nanos: u64,
}

/// Sampling parameters copied from the request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestParams {
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `max_tokens`, or `max_completion_tokens`.
    pub max_tokens: Option<i64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `seed`.
    pub seed: Option<i64>,
    /// `frequency_penalty`.
    pub frequency_penalty: Option<f64>,
    /// `presence_penalty`.
    pub presence_penalty: Option<f64>,
}

/// Token counts in OpenAI's accounting: prompt includes cached and cache-write tokens,
/// completion includes reasoning tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    /// All prompt tokens.
    pub prompt_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_tokens: u64,
    /// All completion tokens.
    pub completion_tokens: u64,
    /// Completion tokens spent on reasoning.
    pub reasoning_tokens: u64,
    /// Prompt plus completion.
    pub total_tokens: u64,
    /// True when Beacon counted with its tokenizer because the upstream reported nothing.
    pub estimated: bool,
}

/// Cost in USD, with the breakdown Sentry needs. An unknown cost serializes as its source
/// alone (`{"source":"unknown"}`), never as zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Prompt side.
    pub input: Decimal,
    /// Completion side.
    pub output: Decimal,
    /// Total.
    pub total: Decimal,
    /// Part of `input` for prompt tokens read from the provider's cache.
    pub cache_read: Decimal,
    /// Part of `input` for prompt tokens written to the provider's cache.
    pub cache_creation: Decimal,
    /// Part of `output` for reasoning tokens.
    pub reasoning: Decimal,
    /// Where the figure came from.
    pub source: CostSource,
}

impl Serialize for Cost {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let known = self.source != CostSource::Unknown;
        let mut st = s.serialize_struct("Cost", if known { 7 } else { 1 })?;
        if known {
            st.serialize_field("input", &self.input)?;
            st.serialize_field("output", &self.output)?;
            st.serialize_field("total", &self.total)?;
            st.serialize_field("cache_read", &self.cache_read)?;
            st.serialize_field("cache_creation", &self.cache_creation)?;
            st.serialize_field("reasoning", &self.reasoning)?;
        }
        st.serialize_field("source", &self.source)?;
        st.end()
    }
}

/// Where a cost came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CostSource {
    /// The upstream reported it (e.g. OpenRouter's `usage.cost`); it wins.
    Upstream,
    /// Computed from Beacon's price table.
    PriceTable,
    /// No price known for the model and none reported: the cost is unknown — not shown to
    /// the client nor exported (never 0).
    #[default]
    Unknown,
    /// The upstream failed before any response: nothing was charged, a known 0.
    NotCharged,
}

/// Timings of one completion. Offsets are microseconds after `received_unix_nanos`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Timings {
    /// Wall-clock time Beacon received the request, in nanoseconds since the Unix epoch.
    pub received_unix_nanos: u64,
    /// Request sent upstream.
    pub upstream_start_us: Option<u64>,
    /// Upstream response headers received.
    pub upstream_headers_us: Option<u64>,
    /// First body byte forwarded to the client (for streams: the first chunk; TTFT).
    pub first_chunk_us: Option<u64>,
    /// Last byte forwarded (or the moment the completion ended otherwise).
    pub last_byte_us: u64,
    /// Time spent inside Beacon: total minus the time spent waiting on the upstream.
    pub gateway_overhead_us: u64,
}

impl Timings {
    /// Total latency in microseconds.
    pub fn total_us(&self) -> u64 {
        self.last_byte_us
    }
}

/// One failed upstream attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The provider tried.
    pub provider: String,
    /// The model sent to it.
    pub model: String,
    /// Its HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why it failed: `http_503`, `connect_error`, `attempt_timeout`, ...
    pub error_type: String,
    /// When it started, in microseconds after the request was received.
    pub start_us: u64,
    /// How long it took, in microseconds.
    pub duration_us: u64,
}

/// How a completion ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The upstream answered 2xx and the response reached the client in full.
    Ok,
    /// The upstream failed: an error status, a broken stream, or no connection.
    UpstreamError {
        /// The upstream's status, when it sent one.
        status: Option<u16>,
        /// Low-cardinality failure kind, e.g. `http_500`, `connect_error`, `stream_interrupted`.
        error_type: String,
        /// Human-readable detail (never contains secrets).
        message: String,
    },
    /// The upstream timeout elapsed.
    Timeout,
    /// The client went away before the response was complete.
    ClientCancelled,
    /// The gateway cut the request at the end of its shutdown grace period (the client got
    /// an error chunk, or a 503).
    Shutdown,
    /// Refused by a key's or tenant's limit (SPEC §5.1) before reaching the upstream.
    Limited {
        /// `rate_limit_exceeded` or `budget_exceeded`.
        code: String,
        /// What was exceeded.
        message: String,
    },
}

impl CompletionRecord {
    /// Approximate heap bytes the record holds (strings, content, metadata): what the
    /// export path's byte budgets count.
    pub fn approx_bytes(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let mut n = std::mem::size_of::<Self>()
            + self.request_id.len()
            + self.tenant_id.len()
            + self.key_id.len()
            + self.provider.len()
            + self.requested_model.len()
            + self.upstream_model.len()
            + opt(&self.served_model)
            + opt(&self.response_id)
            + opt(&self.user)
            + opt(&self.session_id)
            + self
                .finish_reasons
                .iter()
                .chain(&self.tool_names)
                .map(|r| r.len() + 24)
                .sum::<usize>()
            + self
                .attempts
                .iter()
                .map(|a| a.provider.len() + a.model.len() + a.error_type.len() + 64)
                .sum::<usize>()
            + self.tools.approx_bytes();
        if let Outcome::UpstreamError {
            error_type,
            message,
            ..
        } = &self.outcome
        {
            n += error_type.len() + message.len();
        }
        if let Some(trace) = &self.trace {
            n += trace
                .iter()
                .map(|(k, v)| {
                    k.len()
                        + 64
                        + match v {
                            serde_json::Value::String(s) => s.len(),
                            other => other.to_string().len(),
                        }
                })
                .sum::<usize>();
        }
        if let Some(c) = &self.content {
            n += c.input_messages.len()
                + c.tool_definitions.as_ref().map_or(0, bytes::Bytes::len)
                + c.output_text.len()
                + c.output_tool_calls
                    .iter()
                    .map(|t| t.arguments.len() + opt(&t.id) + opt(&t.name) + 64)
                    .sum::<usize>();
        }
        n
    }
}

impl Outcome {
    /// Short label for metrics: `ok`, `upstream_error`, `timeout`, `client_cancelled`,
    /// `shutdown`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::UpstreamError { .. } => "upstream_error",
            Self::Timeout => "timeout",
            Self::ClientCancelled => "client_cancelled",
            Self::Shutdown => "shutdown",
            Self::Limited { .. } => "limited",
        }
    }
}

/// Trace context propagated by the caller in request headers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceContext {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub parent_span_id: String,
    /// The sampled flag, when the header carried one.
    pub sampled: Option<bool>,
    /// The caller's sample rate from `baggage` (`sentry-sample_rate`), when sent.
    pub sample_rate: Option<f64>,
}

/// Prompt and completion text, kept only while some destination may export it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Content {
    /// The request's `messages` array as raw JSON, parsed only by the span builder; at most
    /// `broadcast.max_content_bytes` (the most recent messages that fit).
    pub input_messages: bytes::Bytes,
    /// True when `input_messages` is not the whole request (older messages left out, or the
    /// newest one's text cut).
    pub input_truncated: bool,
    /// Concatenated text of the first choice.
    pub output_text: String,
    /// True when `output_text` was cut at the configured limit.
    pub output_truncated: bool,
    /// The request's tool definitions as JSON (when they fit `max_content_bytes`).
    pub tool_definitions: Option<bytes::Bytes>,
    /// Tool calls of the first choice, assembled from their streamed pieces.
    pub output_tool_calls: Vec<ToolCall>,
}

/// A tool call the model made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_…` id.
    pub id: Option<String>,
    /// Function name.
    pub name: Option<String>,
    /// Arguments as the model wrote them (JSON text, possibly truncated).
    pub arguments: String,
}
