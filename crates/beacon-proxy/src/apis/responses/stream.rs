//! A Responses stream: typed events (`event: <type>` and `data: {"type": <type>, ...}`),
//! each forwarded as it arrives. The first `response.output_*` event is the first chunk;
//! text comes from `response.output_text.delta` (and refusals), function calls from
//! `response.output_item.added` and their argument deltas; `response.completed`,
//! `response.incomplete` and `response.failed` carry the usage and end the stream. An
//! `error` event is the upstream's error, forwarded once.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::apis::{end_after_error, Forward, StreamDecoder, Terminal};
use crate::meter::Meter;
use crate::sse::SseEvent;

/// The parts of an event the meter reads.
#[derive(Debug, Deserialize)]
struct EventView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    sequence_number: Option<u64>,
    #[serde(default)]
    output_index: Option<u32>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default)]
    item: Option<Value>,
    #[serde(default)]
    response: Option<Value>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct ResponsesDecoder {
    last_sequence: Option<u64>,
    /// Output indices of function calls whose arguments arrived as deltas.
    streamed_arguments: Vec<u32>,
    upstream_error: Option<(String, String)>,
    terminal: Option<Terminal>,
}

impl StreamDecoder for ResponsesDecoder {
    fn on_event(&mut self, ev: &SseEvent, meter: &mut Meter) -> Forward {
        let Some(data) = ev.data.as_deref() else {
            return Forward::Keep;
        };
        let Ok(e) = serde_json::from_slice::<EventView<'_>>(data) else {
            return Forward::Keep;
        };
        if e.sequence_number.is_some() {
            self.last_sequence = e.sequence_number;
        }
        if e.kind.starts_with("response.output_") {
            meter.chunk_forwarded();
        }
        let index = e.output_index.unwrap_or(0);
        match e.kind.as_ref() {
            "response.created" | "response.in_progress" | "response.queued" => {
                if let Some(r) = &e.response {
                    let s = |k: &str| r.get(k).and_then(Value::as_str);
                    meter.set_response(s("id"), s("model"));
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(text) = &e.delta {
                    meter.output_text(text);
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                let item = e.item.as_ref();
                let s = |k: &str| item.and_then(|i| i.get(k)).and_then(Value::as_str);
                if s("type") == Some("function_call") {
                    // The arguments come as deltas; a server that sends none gives them whole
                    // on `done`.
                    let arguments = (e.kind == "response.output_item.done"
                        && !self.streamed_arguments.contains(&index))
                    .then(|| s("arguments"))
                    .flatten();
                    meter.tool_call_piece(index, s("call_id"), s("name"), arguments);
                }
            }
            "response.function_call_arguments.delta" => {
                if !self.streamed_arguments.contains(&index) {
                    self.streamed_arguments.push(index);
                }
                meter.tool_call_piece(index, None, None, e.delta.as_deref());
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(r) = &e.response {
                    super::observe_response(r, meter, false);
                }
                self.terminal = Some(if e.kind == "response.failed" {
                    let err = e.response.as_ref().and_then(|r| r.get("error"));
                    let s = |k: &str| err.and_then(|x| x.get(k)).and_then(Value::as_str);
                    Terminal::Failed {
                        error_type: s("code").unwrap_or("response_failed").to_string(),
                        message: s("message")
                            .unwrap_or("the upstream reported the response failed")
                            .to_string(),
                    }
                } else {
                    Terminal::Ok
                });
            }
            "error" => {
                self.upstream_error = Some((
                    e.code
                        .as_deref()
                        .unwrap_or("upstream_stream_error")
                        .to_string(),
                    e.message
                        .as_deref()
                        .unwrap_or("the upstream reported an error mid-stream")
                        .to_string(),
                ));
            }
            _ => {}
        }
        Forward::Keep
    }

    fn take_terminal(&mut self) -> Option<Terminal> {
        self.terminal.take()
    }

    fn end_without_terminal(&mut self) -> Option<(Terminal, Bytes)> {
        end_after_error(&mut self.upstream_error)
    }

    fn error_tail(&self, _id: &str, _error_type: &str, code: &str, message: &str) -> Bytes {
        let event = serde_json::json!({
            "type": "error",
            "code": code,
            "message": message,
            "param": null,
            "sequence_number": self.last_sequence.map_or(0, |n| n + 1),
        });
        Bytes::from(format!("event: error\ndata: {event}\n\n"))
    }
}
