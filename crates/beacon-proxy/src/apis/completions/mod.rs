//! Legacy completions (`POST /v1/completions`): a `prompt` in, `text_completion` objects (or
//! their stream, framed like chat's) out; metered as chat.

use beacon_config::Api;
use bytes::Bytes;
use serde_json::Value;

use super::chat::stream::ChatDecoder;
use super::chat::{observe_completion, openai_estimated_usage, openai_params};
use super::{Observed, WireApi};
use crate::error::{ErrorShape, ProxyError};
use crate::meter::{Accounted, Meter};
use crate::request::{invalid, ClientRequest, Fields, ParseContext, Parts};

/// `POST /v1/completions`.
#[derive(Debug)]
pub struct Completions;

impl WireApi for Completions {
    const API: Api = Api::Completions;
    const PATH: &'static str = "/completions";
    const SHAPE: ErrorShape = ErrorShape::OpenAi;
    type Decoder = ChatDecoder;

    fn parse<'a>(body: &'a [u8], cx: &ParseContext<'_>) -> Result<ClientRequest<'a>, ProxyError> {
        let fields = Fields::parse(body)?;
        let model = fields.model()?;
        let prompt = match fields.strict("prompt")? {
            Some(v @ (Value::String(_) | Value::Array(_))) => v,
            Some(_) => return Err(invalid("prompt", "`prompt` must be a string or an array")),
            None => return Err(invalid("prompt", "`prompt` is required")),
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
                input: texts_as_messages(&prompt),
                strip: &[],
                request_usage: true,
                fields,
            },
            cx,
        )
    }

    fn decoder(request: &ClientRequest<'_>) -> Self::Decoder {
        ChatDecoder::new(
            request.client_wants_usage,
            request.model.clone(),
            "text_completion",
        )
    }

    fn observe<'t>(body: &'t str, meter: &mut Meter) -> Option<Observed<'t>> {
        observe_completion(body, meter)
    }

    fn estimated_usage(acc: &Accounted, cost: Option<f64>) -> serde_json::Value {
        openai_estimated_usage(acc, cost)
    }
}

/// A prompt or embeddings input — a string, a list of strings, or token ids — as chat
/// `messages`: one user message per text (token ids kept as their JSON).
pub fn texts_as_messages(input: &Value) -> Bytes {
    let text = |v: &Value| match v {
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    };
    let messages: Vec<Value> = match input {
        Value::Array(items) if items.iter().any(|i| !i.is_number()) => items
            .iter()
            .map(|i| serde_json::json!({"role": "user", "content": text(i)}))
            .collect(),
        other => vec![serde_json::json!({"role": "user", "content": text(other)})],
    };
    Bytes::from(Value::Array(messages).to_string())
}
