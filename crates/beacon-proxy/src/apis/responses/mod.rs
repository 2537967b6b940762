//! OpenAI Responses (`POST /v1/responses`): `input` (a string or a list of items) and
//! `instructions` in; a `response` object, or its typed event stream, out. Usage is
//! `input_tokens` (+ cached) and `output_tokens` (+ reasoning), on the response and, in a
//! stream, on `response.completed` / `response.incomplete` / `response.failed`; chat's
//! `stream_options` is never added.

pub mod input;
pub mod stream;

use beacon_config::Api;
use serde_json::Value;

use super::chat::openai_params;
use super::{str_of, Observed, WireApi};
use crate::error::{ErrorShape, ProxyError};
use crate::meter::{usage, Accounted, Meter};
use crate::request::{invalid, ClientRequest, Fields, ParseContext, Parts};

/// `POST /v1/responses`.
#[derive(Debug)]
pub struct Responses;

impl WireApi for Responses {
    const API: Api = Api::Responses;
    const PATH: &'static str = "/responses";
    const SHAPE: ErrorShape = ErrorShape::OpenAi;
    type Decoder = stream::ResponsesDecoder;

    fn parse<'a>(body: &'a [u8], cx: &ParseContext<'_>) -> Result<ClientRequest<'a>, ProxyError> {
        let fields = Fields::parse(body)?;
        let model = fields.model()?;
        let input = match fields.strict("input")? {
            v @ (None | Some(Value::String(_) | Value::Array(_))) => v,
            Some(_) => {
                return Err(invalid(
                    "input",
                    "`input` must be a string or an array of input items",
                ))
            }
        };
        let instructions = match fields.strict("instructions")? {
            v @ (None | Some(Value::String(_))) => v,
            Some(_) => return Err(invalid("instructions", "`instructions` must be a string")),
        };
        let stream = fields.stream()?;
        let user = fields.user()?;
        let params = openai_params(&fields);
        ClientRequest::new(
            Parts {
                model,
                stream,
                client_wants_usage: false,
                user,
                params,
                input: input::as_messages(instructions.as_ref(), input.as_ref()),
                strip: &[],
                request_usage: false,
                fields,
            },
            cx,
        )
    }

    fn decoder(_request: &ClientRequest<'_>) -> Self::Decoder {
        stream::ResponsesDecoder::default()
    }

    fn observe<'t>(body: &'t str, meter: &mut Meter) -> Option<Observed<'t>> {
        let response: Value = serde_json::from_str(body).ok()?;
        if response.get("output").is_none()
            && response.get("object").and_then(Value::as_str) != Some("response")
        {
            return None;
        }
        observe_response(&response, meter, true);
        Observed::locate(body)
    }

    fn estimated_usage(acc: &Accounted, cost: Option<f64>) -> Value {
        super::estimated(
            serde_json::json!({
                "input_tokens": acc.usage.prompt_tokens,
                "output_tokens": acc.usage.completion_tokens,
                "total_tokens": acc.usage.total_tokens,
            }),
            cost,
        )
    }
}

/// Reads a `response` object into `meter`: ids, usage, the finish reason, and — when
/// `with_output` (a complete response; a stream has sent it as deltas) — its text and
/// function calls.
pub fn observe_response(response: &Value, meter: &mut Meter, with_output: bool) {
    meter.set_response(str_of(response.get("id")), str_of(response.get("model")));
    if let Some(u) = response.get("usage").and_then(usage::parse_usage) {
        meter.set_usage(u);
    }
    let output = response.get("output").and_then(Value::as_array);
    let mut calls = false;
    for (n, item) in output.into_iter().flatten().enumerate() {
        match str_of(item.get("type")) {
            Some("function_call") => {
                calls = true;
                if with_output {
                    meter.tool_call_piece(
                        n as u32,
                        str_of(item.get("call_id")),
                        str_of(item.get("name")),
                        str_of(item.get("arguments")),
                    );
                }
            }
            Some("message") if with_output => {
                let parts = item.get("content").and_then(Value::as_array);
                for part in parts.into_iter().flatten() {
                    if let Some(text) = str_of(part.get("text")).or(str_of(part.get("refusal"))) {
                        meter.output_text(text);
                    }
                }
            }
            _ => {}
        }
    }
    let reason = match str_of(response.get("status")) {
        Some("completed") if calls => Some("tool_calls"),
        Some("completed") => Some("stop"),
        Some("incomplete") => Some(
            str_of(
                response
                    .get("incomplete_details")
                    .and_then(|d| d.get("reason")),
            )
            .unwrap_or("incomplete"),
        ),
        Some("failed") => Some("error"),
        Some("cancelled") => Some("cancelled"),
        _ => None,
    };
    if let Some(reason) = reason {
        meter.finish_reason(0, reason);
    }
}
