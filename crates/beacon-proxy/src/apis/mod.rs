//! One module per wire format a client speaks through Beacon (SPEC §2.1). Each owns
//! everything about its API — the route's request (required fields, where the prompt is,
//! what is removed before forwarding), its non-streaming response and its stream events —
//! and reduces them to neutral observations the [`Meter`] consumes (ids, text, tool calls,
//! finish reasons, usage). The pipeline in `handlers::metered` is the same for all of them.
//!
//! Adding an API is one folder here: a type implementing [`WireApi`] (and, for streams, a
//! [`StreamDecoder`]), plus its route in `App::handle`.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod messages;
pub mod responses;

use beacon_config::Api;
use bytes::Bytes;
use serde_json::value::RawValue;

use crate::error::{ErrorShape, ProxyError};
use crate::meter::{Accounted, Meter};
use crate::request::{ClientRequest, ParseContext};
use crate::sse::SseEvent;

/// One API's wire format, as the metered pipeline needs it.
pub trait WireApi: Send + Sync + 'static {
    /// Which API (the record's `api`, the span's operation).
    const API: Api;
    /// The path appended to a provider's `base_url`.
    const PATH: &'static str;
    /// The shape of this route's errors.
    const SHAPE: ErrorShape;
    /// Client request headers forwarded upstream as they are (e.g. `anthropic-version`).
    const FORWARDED_HEADERS: &'static [&'static str] = &[];
    /// Reads one stream.
    type Decoder: StreamDecoder;

    /// Parses and validates a client body.
    fn parse<'a>(body: &'a [u8], cx: &ParseContext<'_>) -> Result<ClientRequest<'a>, ProxyError>;

    /// The decoder for a stream of `request`.
    fn decoder(request: &ClientRequest<'_>) -> Self::Decoder;

    /// Reads a complete (non-streaming) response body into `meter`; `None` when it is not
    /// this API's response (the pipeline then answers 502).
    fn observe<'t>(body: &'t str, meter: &mut Meter) -> Option<Observed<'t>>;

    /// Beacon's estimate as this API's `usage` object, marked `"estimated": true` (with
    /// `cost` when known), for a response whose upstream reported none.
    fn estimated_usage(acc: &Accounted, cost: Option<f64>) -> serde_json::Value;
}

/// Where a complete response keeps its usage, for adding `usage.cost` without
/// re-serializing the body.
#[derive(Debug, Default)]
pub struct Observed<'t> {
    /// The top-level `usage` value as written (`None` when absent).
    pub usage_raw: Option<&'t RawValue>,
    /// That value parsed, when it is an object.
    pub usage: Option<serde_json::Value>,
}

impl<'t> Observed<'t> {
    /// Reads where `usage` is in `body` (a JSON object); `None` when `body` is not one.
    pub fn locate(body: &'t str) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Top<'a> {
            #[serde(borrow, default, deserialize_with = "raw_including_null")]
            usage: Option<&'a RawValue>,
        }
        let top: Top<'t> = serde_json::from_str(body).ok()?;
        let usage = top
            .usage
            .filter(|u| u.get().starts_with('{'))
            .and_then(|u| serde_json::from_str(u.get()).ok());
        Some(Self {
            usage_raw: top.usage,
            usage,
        })
    }
}

/// Deserializes a value as raw JSON, `null` included (absent stays `None`).
pub fn raw_including_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

/// What to do with one upstream event.
#[derive(Debug)]
pub enum Forward {
    /// Forward it unchanged.
    Keep,
    /// Remove it (e.g. the usage chunk Beacon asked for on the client's behalf).
    Drop,
    /// Forward these bytes instead (e.g. the usage chunk with `cost` added).
    Replace(Bytes),
}

/// How a stream ended, as its API says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    /// The completion is whole.
    Ok,
    /// The upstream reported an error, already forwarded to the client: its type and message.
    Failed {
        /// The upstream's error type.
        error_type: String,
        /// The upstream's message.
        message: String,
    },
}

/// Reads one API's event stream as it passes; see `meter::stream::MeteredSse`, which owns
/// the clocks, the forwarding and the meter's single finish.
pub trait StreamDecoder: Send + Unpin + 'static {
    /// Reads one event into `meter` (and calls `meter.chunk_forwarded()` for an event that
    /// carries output); says what to forward.
    fn on_event(&mut self, event: &SseEvent, meter: &mut Meter) -> Forward;

    /// The stream's terminal event has been read (`[DONE]`, `response.completed`,
    /// `message_stop`, ...): how it ended. Taken once.
    fn take_terminal(&mut self) -> Option<Terminal>;

    /// The upstream ended, or broke, without a terminal event: `Some` when the stream is a
    /// whole completion anyway or ended after the upstream's own error event (the outcome),
    /// with the bytes that end it properly for the client (e.g. chat's `[DONE]`).
    fn end_without_terminal(&mut self) -> Option<(Terminal, Bytes)>;

    /// The events that end a stream Beacon has to cut (timeout, upstream failure, shutdown),
    /// in this API's error form. `id` is the response id, else Beacon's request id.
    fn error_tail(&self, id: &str, error_type: &str, code: &str, message: &str) -> Bytes;
}

/// The error type and message of an upstream error object, as OpenAI and Anthropic shape
/// it (`{"message","type","code"}`); a bare string is a message.
pub fn error_fields(err: &serde_json::Value, default_type: &str) -> (String, String) {
    let field = |k: &str| err.get(k).and_then(|m| m.as_str());
    let message = field("message")
        .or_else(|| err.as_str())
        .unwrap_or("the upstream reported an error mid-stream");
    let error_type = field("type")
        .or_else(|| field("code"))
        .unwrap_or(default_type);
    (error_type.to_string(), message.to_string())
}

/// A `usage` object Beacon made itself (the upstream reported none): `fields` in the API's
/// own names, marked `"estimated": true`, with `cost` when the model has a price.
pub fn estimated(mut fields: serde_json::Value, cost: Option<f64>) -> serde_json::Value {
    if let Some(u) = fields.as_object_mut() {
        u.insert("estimated".into(), true.into());
        if let Some(cost) = cost {
            u.insert("cost".into(), cost.into());
        }
    }
    fields
}

/// The end of a stream that stopped after the upstream's own error event (already
/// forwarded): that error is the outcome, and nothing is added for the client. `None` when
/// no error event came.
pub fn end_after_error(upstream_error: &mut Option<(String, String)>) -> Option<(Terminal, Bytes)> {
    let (error_type, message) = upstream_error.take()?;
    Some((
        Terminal::Failed {
            error_type,
            message,
        },
        Bytes::new(),
    ))
}

/// The string a JSON value holds, if it is one.
pub(crate) fn str_of(v: Option<&serde_json::Value>) -> Option<&str> {
    v.and_then(serde_json::Value::as_str)
}
