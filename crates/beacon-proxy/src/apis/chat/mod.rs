//! OpenAI chat completions (`POST /v1/chat/completions`): `messages` in, `chat.completion`
//! or `chat.completion.chunk` events out. Legacy completions (`apis::completions`) share
//! the response side.

pub mod stream;
pub mod view;

use beacon_broadcast::record::RequestParams;
use beacon_config::Api;
use bytes::Bytes;

use super::{str_of, Observed, WireApi};
use crate::error::{ErrorShape, ProxyError};
use crate::meter::usage;
use crate::meter::{Accounted, Meter};
use crate::request::{invalid, ClientRequest, Fields, ParseContext, Parts};
use view::{ChunkView, CompletionView};

/// `POST /v1/chat/completions`.
#[derive(Debug)]
pub struct Chat;

impl WireApi for Chat {
    const API: Api = Api::Chat;
    const PATH: &'static str = "/chat/completions";
    const SHAPE: ErrorShape = ErrorShape::OpenAi;
    type Decoder = stream::ChatDecoder;

    fn parse<'a>(body: &'a [u8], cx: &ParseContext<'_>) -> Result<ClientRequest<'a>, ProxyError> {
        parse(body, cx)
    }

    fn decoder(request: &ClientRequest<'_>) -> Self::Decoder {
        stream::ChatDecoder::new(
            request.client_wants_usage,
            request.model.clone(),
            "chat.completion.chunk",
        )
    }

    fn observe<'t>(body: &'t str, meter: &mut Meter) -> Option<Observed<'t>> {
        observe_completion(body, meter)
    }

    fn estimated_usage(acc: &Accounted, cost: Option<f64>) -> serde_json::Value {
        openai_estimated_usage(acc, cost)
    }
}

/// Parses a chat completion request.
pub fn parse<'a>(body: &'a [u8], cx: &ParseContext<'_>) -> Result<ClientRequest<'a>, ProxyError> {
    let fields = Fields::parse(body)?;
    let model = fields.model()?;
    let messages = match fields.get("messages") {
        Some(raw) if raw.get().trim_start().starts_with('[') => raw,
        Some(_) => return Err(invalid("messages", "`messages` must be an array")),
        None => return Err(invalid("messages", "`messages` is required")),
    };
    let stream = fields.stream()?;
    let client_wants_usage = fields.include_usage()?;
    let user = fields.user()?;
    let params = openai_params(&fields);
    ClientRequest::new(
        Parts {
            model,
            stream,
            client_wants_usage,
            user,
            params,
            // A copy sized to the messages: a view would pin the whole request buffer (often
            // the client connection's read buffer) for as long as the completion runs — and,
            // when content is exported, until its record is sent.
            input: Bytes::copy_from_slice(messages.get().as_bytes()),
            strip: &[],
            request_usage: true,
            fields,
        },
        cx,
    )
}

/// The sampling parameters of an OpenAI request.
pub fn openai_params(fields: &Fields<'_>) -> RequestParams {
    RequestParams {
        temperature: fields.num("temperature"),
        max_tokens: fields
            .int("max_tokens")
            .or_else(|| fields.int("max_completion_tokens"))
            .or_else(|| fields.int("max_output_tokens")),
        top_p: fields.num("top_p"),
        seed: fields.int("seed"),
        frequency_penalty: fields.num("frequency_penalty"),
        presence_penalty: fields.num("presence_penalty"),
    }
}

/// Reads a complete `chat.completion` (or legacy `text_completion`) into `meter`: one typed
/// pass over the body (only `usage` is parsed further); a body whose fields have unexpected
/// types is read generically instead.
pub fn observe_completion<'t>(text: &'t str, meter: &mut Meter) -> Option<Observed<'t>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    match serde_json::from_str::<CompletionView<'t>>(text) {
        Ok(v) => {
            let usage = v
                .usage
                .filter(|u| u.get().starts_with('{'))
                .and_then(|u| serde_json::from_str::<serde_json::Value>(u.get()).ok());
            meter.set_response(v.id.as_deref(), v.model.as_deref());
            if let Some(u) = usage.as_ref().and_then(usage::parse_usage) {
                meter.set_usage(u);
            }
            for (i, choice) in v.choices.iter().flatten().enumerate() {
                let index = choice.index.unwrap_or(i as u32);
                if let Some(reason) = &choice.finish_reason {
                    meter.finish_reason(index, reason);
                }
                if index != 0 {
                    continue;
                }
                let message = choice.message.as_ref();
                if let Some(text) = message.and_then(|m| m.content.as_deref()) {
                    meter.output_text(text);
                }
                if let Some(text) = choice.text.as_deref() {
                    meter.output_text(text);
                }
                let calls = message.and_then(|m| m.tool_calls.as_ref());
                for (n, c) in calls.into_iter().flatten().enumerate() {
                    let f = c.function.as_ref();
                    meter.tool_call_piece(
                        n as u32,
                        c.id.as_deref(),
                        f.and_then(|f| f.name.as_deref()),
                        f.and_then(|f| f.arguments.as_deref()),
                    );
                }
            }
            Some(Observed {
                usage_raw: v.usage,
                usage,
            })
        }
        Err(_) => {
            let json: serde_json::Value = serde_json::from_str(text).ok()?;
            observe_generic(&json, meter);
            Observed::locate(text)
        }
    }
}

/// A complete response that did not fit the typed view (fields of unexpected types).
fn observe_generic(v: &serde_json::Value, meter: &mut Meter) {
    meter.set_response(str_of(v.get("id")), str_of(v.get("model")));
    if let Some(u) = v.get("usage").and_then(usage::parse_usage) {
        meter.set_usage(u);
    }
    let choices = v.get("choices").and_then(|c| c.as_array());
    for (i, choice) in choices.into_iter().flatten().enumerate() {
        let index = choice
            .get("index")
            .and_then(|x| x.as_u64())
            .unwrap_or(i as u64) as u32;
        if let Some(reason) = str_of(choice.get("finish_reason")) {
            meter.finish_reason(index, reason);
        }
        if index != 0 {
            continue;
        }
        let msg = choice.get("message");
        if let Some(text) =
            str_of(msg.and_then(|m| m.get("content"))).or(str_of(choice.get("text")))
        {
            meter.output_text(text);
        }
        let calls = msg
            .and_then(|m| m.get("tool_calls"))
            .and_then(|c| c.as_array());
        for (n, call) in calls.into_iter().flatten().enumerate() {
            let f = call.get("function");
            meter.tool_call_piece(
                n as u32,
                str_of(call.get("id")),
                str_of(f.and_then(|f| f.get("name"))),
                str_of(f.and_then(|f| f.get("arguments"))),
            );
        }
    }
}

/// Reads one streamed chunk into `meter` (first choice's text and tool calls, every
/// choice's finish reason, ids, usage).
pub fn observe_chunk(c: &ChunkView, meter: &mut Meter) {
    meter.set_response(c.id.as_deref(), c.model.as_deref());
    if let Some(u) = c.usage.as_ref().and_then(usage::parse_usage) {
        meter.set_usage(u);
    }
    for choice in c.choices.iter().flatten() {
        if let Some(reason) = &choice.finish_reason {
            meter.finish_reason(choice.index, reason);
        }
        if choice.index != 0 {
            continue;
        }
        if let Some(text) = &choice.text {
            meter.output_text(text);
        }
        let Some(delta) = &choice.delta else { continue };
        if let Some(text) = &delta.content {
            meter.output_text(text);
        }
        for (n, call) in delta.tool_calls.iter().flatten().enumerate() {
            let f = call.function.as_ref();
            meter.tool_call_piece(
                call.index.unwrap_or(n as u32),
                call.id.as_deref(),
                f.and_then(|f| f.name.as_deref()),
                f.and_then(|f| f.arguments.as_deref()),
            );
        }
    }
}

/// Beacon's accounted usage as an OpenAI `usage` object, marked `"estimated": true` (with
/// `cost` when the model has a price).
pub fn openai_estimated_usage(acc: &Accounted, cost: Option<f64>) -> serde_json::Value {
    super::estimated(
        serde_json::json!({
            "prompt_tokens": acc.usage.prompt_tokens,
            "completion_tokens": acc.usage.completion_tokens,
            "total_tokens": acc.usage.total_tokens,
        }),
        cost,
    )
}
