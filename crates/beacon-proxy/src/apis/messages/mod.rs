//! Anthropic Messages (`POST /v1/messages`), native: `system` and `messages` of content
//! blocks in; a `message`, or its event stream (`message_start`, `content_block_*`,
//! `message_delta`, `message_stop`, `ping`, `error`), out. Usage is `message_start.usage`
//! (`input_tokens`, `cache_read_input_tokens`, `cache_creation_input_tokens`) and the last
//! `message_delta.usage.output_tokens`; the record's input tokens *include* the cached and
//! cache-write tokens (Anthropic counts them apart). Errors have Anthropic's shape. The
//! user is Beacon's `user` extension (removed before forwarding) or `metadata.user_id`.

pub mod input;
pub mod stream;

use beacon_broadcast::record::{RequestParams, TokenUsage};
use beacon_config::Api;
use rust_decimal::Decimal;
use serde_json::Value;

use super::{str_of, Observed, WireApi};
use crate::error::{ErrorShape, ProxyError};
use crate::meter::usage::ReportedUsage;
use crate::meter::{Accounted, Meter};
use crate::request::{invalid, user_value, ClientRequest, Fields, ParseContext, Parts};

/// `POST /v1/messages`.
#[derive(Debug)]
pub struct Messages;

impl WireApi for Messages {
    const API: Api = Api::Messages;
    const PATH: &'static str = "/messages";
    const SHAPE: ErrorShape = ErrorShape::Anthropic;
    const FORWARDED_HEADERS: &'static [&'static str] = &["anthropic-version", "anthropic-beta"];
    type Decoder = stream::MessagesDecoder;

    fn parse<'a>(body: &'a [u8], cx: &ParseContext<'_>) -> Result<ClientRequest<'a>, ProxyError> {
        let fields = Fields::parse(body)?;
        let model = fields.model()?;
        let messages = match fields.strict("messages")? {
            Some(v @ Value::Array(_)) => v,
            Some(_) => return Err(invalid("messages", "`messages` must be an array")),
            None => return Err(invalid("messages", "`messages` is required")),
        };
        let system = match fields.strict("system")? {
            v @ (None | Some(Value::String(_) | Value::Array(_))) => v,
            Some(_) => {
                return Err(invalid(
                    "system",
                    "`system` must be a string or an array of text blocks",
                ))
            }
        };
        let stream = fields.stream()?;
        let user = match fields.user()? {
            Some(user) => Some(user),
            None => match fields
                .lenient("metadata")
                .as_ref()
                .and_then(|m| m.get("user_id"))
            {
                Some(Value::String(id)) => user_value(id.clone())?,
                _ => None,
            },
        };
        let params = RequestParams {
            temperature: fields.num("temperature"),
            max_tokens: fields.int("max_tokens"),
            top_p: fields.num("top_p"),
            ..RequestParams::default()
        };
        ClientRequest::new(
            Parts {
                model,
                stream,
                client_wants_usage: false,
                user,
                params,
                input: input::as_messages(system.as_ref(), &messages),
                // `user` is Beacon's extension here: Anthropic defines no such field.
                strip: &["user"],
                request_usage: false,
                fields,
            },
            cx,
        )
    }

    fn decoder(_request: &ClientRequest<'_>) -> Self::Decoder {
        stream::MessagesDecoder::default()
    }

    fn observe<'t>(body: &'t str, meter: &mut Meter) -> Option<Observed<'t>> {
        let message: Value = serde_json::from_str(body).ok()?;
        if str_of(message.get("type")) != Some("message") && message.get("content").is_none() {
            return None;
        }
        meter.set_response(str_of(message.get("id")), str_of(message.get("model")));
        if let Some(u) = message.get("usage") {
            let mut usage = AnthropicUsage::default();
            usage.read(u);
            if let Some(r) = usage.reported() {
                meter.set_usage(r);
            }
        }
        let blocks = message.get("content").and_then(Value::as_array);
        for (n, block) in blocks.into_iter().flatten().enumerate() {
            match str_of(block.get("type")) {
                Some("text") => {
                    if let Some(text) = str_of(block.get("text")) {
                        meter.output_text(text);
                    }
                }
                Some("tool_use") => {
                    let arguments = block.get("input").map(Value::to_string);
                    meter.tool_call_piece(
                        n as u32,
                        str_of(block.get("id")),
                        str_of(block.get("name")),
                        arguments.as_deref(),
                    );
                }
                _ => {}
            }
        }
        if let Some(reason) = str_of(message.get("stop_reason")) {
            meter.finish_reason(0, reason);
        }
        Observed::locate(body)
    }

    fn estimated_usage(acc: &Accounted, cost: Option<f64>) -> Value {
        super::estimated(
            serde_json::json!({
                "input_tokens": acc.usage.prompt_tokens,
                "output_tokens": acc.usage.completion_tokens,
            }),
            cost,
        )
    }
}

/// Anthropic's usage counters as they accumulate over a stream (`message_start`, then
/// `message_delta`s whose counts are cumulative).
#[derive(Debug, Default, Clone, Copy)]
pub struct AnthropicUsage {
    input: Option<u64>,
    cache_read: u64,
    cache_creation: u64,
    output: Option<u64>,
    cost: Option<Decimal>,
}

impl AnthropicUsage {
    /// Takes the counts present in `usage` (absent ones keep their value).
    pub fn read(&mut self, usage: &Value) {
        let n = |k: &str| usage.get(k).and_then(Value::as_u64);
        if let Some(v) = n("input_tokens") {
            self.input = Some(v);
        }
        if let Some(v) = n("cache_read_input_tokens") {
            self.cache_read = v;
        }
        if let Some(v) = n("cache_creation_input_tokens") {
            self.cache_creation = v;
        }
        if let Some(v) = n("output_tokens") {
            self.output = Some(v);
        }
        if let Some(c) = usage
            .get("cost")
            .and_then(|c| c.to_string().parse::<Decimal>().ok())
        {
            self.cost = Some(c).filter(|c| !c.is_sign_negative());
        }
    }

    /// The usage in Beacon's terms: input tokens include cache reads and writes.
    pub fn reported(&self) -> Option<ReportedUsage> {
        if self.input.is_none() && self.output.is_none() {
            return None;
        }
        let prompt = self.input.unwrap_or(0) + self.cache_read + self.cache_creation;
        let completion = self.output.unwrap_or(0);
        Some(ReportedUsage {
            tokens: TokenUsage {
                prompt_tokens: prompt,
                cached_tokens: self.cache_read,
                cache_write_tokens: self.cache_creation,
                completion_tokens: completion,
                reasoning_tokens: 0,
                total_tokens: prompt + completion,
                estimated: false,
            },
            cost: self.cost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_tokens_include_cache_reads_and_writes() {
        let mut u = AnthropicUsage::default();
        u.read(
            &serde_json::json!({"input_tokens": 10, "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20, "output_tokens": 1}),
        );
        u.read(&serde_json::json!({"output_tokens": 42}));
        let r = u.reported().unwrap().tokens;
        assert_eq!(
            (r.prompt_tokens, r.cached_tokens, r.cache_write_tokens),
            (130, 100, 20)
        );
        assert_eq!((r.completion_tokens, r.total_tokens), (42, 172));
        assert!(AnthropicUsage::default().reported().is_none());
    }
}
