//! Embeddings (`POST /v1/embeddings`): `input` texts in, vectors out. Metered by
//! `usage.prompt_tokens` at the input price; the content kept is the input texts, never the
//! vectors. There is no stream.

use beacon_config::Api;
use serde_json::Value;

use super::chat::stream::ChatDecoder;
use super::completions::texts_as_messages;
use super::{Observed, WireApi};
use crate::error::{ErrorShape, ProxyError};
use crate::meter::{usage, Accounted, Meter};
use crate::request::{invalid, ClientRequest, Fields, ParseContext, Parts};

/// `POST /v1/embeddings`.
#[derive(Debug)]
pub struct Embeddings;

impl WireApi for Embeddings {
    const API: Api = Api::Embeddings;
    const PATH: &'static str = "/embeddings";
    const SHAPE: ErrorShape = ErrorShape::OpenAi;
    /// Never used: embeddings do not stream.
    type Decoder = ChatDecoder;

    fn parse<'a>(body: &'a [u8], cx: &ParseContext<'_>) -> Result<ClientRequest<'a>, ProxyError> {
        let fields = Fields::parse(body)?;
        let model = fields.model()?;
        let input = match fields.strict("input")? {
            Some(v @ (Value::String(_) | Value::Array(_))) => v,
            Some(_) => return Err(invalid("input", "`input` must be a string or an array")),
            None => return Err(invalid("input", "`input` is required")),
        };
        let user = fields.user()?;
        ClientRequest::new(
            Parts {
                model,
                stream: false,
                client_wants_usage: false,
                user,
                params: Default::default(),
                input: texts_as_messages(&input),
                strip: &[],
                request_usage: false,
                fields,
            },
            cx,
        )
    }

    fn decoder(request: &ClientRequest<'_>) -> Self::Decoder {
        ChatDecoder::new(false, request.model.clone(), "list")
    }

    fn observe<'t>(body: &'t str, meter: &mut Meter) -> Option<Observed<'t>> {
        #[derive(serde::Deserialize)]
        struct View<'a> {
            #[serde(borrow, default)]
            model: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            data: Option<serde::de::IgnoredAny>,
        }
        let view: View<'t> = serde_json::from_str(body).ok()?;
        view.data?;
        meter.set_response(None, view.model.as_deref());
        let observed = Observed::locate(body)?;
        if let Some(u) = observed.usage.as_ref().and_then(usage::parse_usage) {
            meter.set_usage(u);
        }
        Some(observed)
    }

    fn estimated_usage(acc: &Accounted, cost: Option<f64>) -> serde_json::Value {
        super::estimated(
            serde_json::json!({
                "prompt_tokens": acc.usage.prompt_tokens,
                "total_tokens": acc.usage.prompt_tokens,
            }),
            cost,
        )
    }
}
