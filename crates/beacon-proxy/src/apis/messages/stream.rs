//! An Anthropic Messages stream, each event forwarded as it arrives: `message_start` (ids,
//! input usage), `content_block_start` / `content_block_delta` (text, tool use and its
//! `input_json_delta`s; the first one is the first chunk), `message_delta` (stop reason,
//! cumulative output tokens), `message_stop` (the end), `ping`, and `error` (the
//! upstream's error, forwarded once).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::AnthropicUsage;
use crate::apis::{end_after_error, error_fields, Forward, StreamDecoder, Terminal};
use crate::meter::Meter;
use crate::sse::SseEvent;

#[derive(Debug, Deserialize)]
struct EventView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    content_block: Option<Value>,
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct DeltaView<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct MessagesDecoder {
    usage: AnthropicUsage,
    upstream_error: Option<(String, String)>,
    terminal: Option<Terminal>,
}

impl MessagesDecoder {
    fn read_usage(&mut self, usage: Option<&Value>, meter: &mut Meter) {
        if let Some(u) = usage {
            self.usage.read(u);
            if let Some(r) = self.usage.reported() {
                meter.set_usage(r);
            }
        }
    }
}

impl StreamDecoder for MessagesDecoder {
    fn on_event(&mut self, ev: &SseEvent, meter: &mut Meter) -> Forward {
        let Some(data) = ev.data.as_deref() else {
            return Forward::Keep;
        };
        let Ok(e) = serde_json::from_slice::<EventView<'_>>(data) else {
            return Forward::Keep;
        };
        let index = e.index.unwrap_or(0);
        match e.kind.as_ref() {
            "message_start" => {
                let m = e.message.as_ref();
                let s = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_str);
                meter.set_response(s("id"), s("model"));
                self.read_usage(m.and_then(|m| m.get("usage")), meter);
            }
            "content_block_start" => {
                meter.chunk_forwarded();
                let b = e.content_block.as_ref();
                let s = |k: &str| b.and_then(|b| b.get(k)).and_then(Value::as_str);
                match s("type") {
                    Some("tool_use") => meter.tool_call_piece(index, s("id"), s("name"), None),
                    Some("text") => meter.output_text(s("text").unwrap_or_default()),
                    _ => {}
                }
            }
            "content_block_delta" => {
                meter.chunk_forwarded();
                if let Some(d) = &e.delta {
                    match d.kind.as_deref() {
                        Some("text_delta") => {
                            meter.output_text(d.text.as_deref().unwrap_or_default())
                        }
                        Some("input_json_delta") => {
                            meter.tool_call_piece(index, None, None, d.partial_json.as_deref())
                        }
                        _ => {}
                    }
                }
            }
            "message_delta" => {
                if let Some(reason) = e.delta.as_ref().and_then(|d| d.stop_reason.as_deref()) {
                    meter.finish_reason(0, reason);
                }
                self.read_usage(e.usage.as_ref(), meter);
            }
            "message_stop" => {
                self.terminal = Some(match self.upstream_error.take() {
                    Some((error_type, message)) => Terminal::Failed {
                        error_type,
                        message,
                    },
                    None => Terminal::Ok,
                });
            }
            "error" => {
                let err = e.error.unwrap_or(Value::Null);
                self.upstream_error = Some(error_fields(&err, "upstream_stream_error"));
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

    fn error_tail(&self, _id: &str, error_type: &str, _code: &str, message: &str) -> Bytes {
        let kind = if error_type == "server_error" {
            "overloaded_error"
        } else {
            "api_error"
        };
        let event = serde_json::json!({
            "type": "error",
            "error": {"type": kind, "message": message},
        });
        Bytes::from(format!("event: error\ndata: {event}\n\n"))
    }
}
