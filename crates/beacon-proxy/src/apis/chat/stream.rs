//! A chat (or legacy completions) stream: `data: {chunk}` events ending with `data: [DONE]`.
//!
//! Every event is forwarded unchanged, except the usage-only chunk Beacon asked for on the
//! client's behalf (removed when the client did not ask for it; given `usage.cost` when it
//! did). An upstream's own error chunk is forwarded once and becomes the record's error; a
//! stream that finished every choice but omitted `[DONE]` is whole (SPEC §2.3).

use bytes::Bytes;

use super::view::ChunkView;
use crate::apis::{error_fields, Forward, StreamDecoder, Terminal};
use crate::meter::Meter;
use crate::sse::SseEvent;

const DONE: &[u8] = b"data: [DONE]\n\n";

/// See the module docs.
#[derive(Debug)]
pub struct ChatDecoder {
    client_wants_usage: bool,
    model: String,
    /// `chat.completion.chunk` or `text_completion`.
    object: &'static str,
    /// The upstream's own error event (its type and message), already forwarded.
    upstream_error: Option<(String, String)>,
    /// Choice indices seen, and whether each has had its finish reason.
    choices: Vec<(u32, bool)>,
    terminal: Option<Terminal>,
}

impl ChatDecoder {
    /// A decoder for a stream of `model` whose chunks are `object`s.
    pub fn new(client_wants_usage: bool, model: String, object: &'static str) -> Self {
        Self {
            client_wants_usage,
            model,
            object,
            upstream_error: None,
            choices: Vec::new(),
            terminal: None,
        }
    }

    fn track_choices(&mut self, chunk: &ChunkView) {
        for c in chunk.choices.iter().flatten() {
            let finished = c.finish_reason.is_some();
            match self.choices.iter_mut().find(|(i, _)| *i == c.index) {
                Some(slot) => slot.1 |= finished,
                None => self.choices.push((c.index, finished)),
            }
        }
    }

    /// Whether every choice the stream opened has finished (and there was one).
    fn all_choices_finished(&self) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|(_, done)| *done)
    }

    fn outcome(&mut self) -> Terminal {
        match self.upstream_error.take() {
            Some((error_type, message)) => Terminal::Failed {
                error_type,
                message,
            },
            None => Terminal::Ok,
        }
    }
}

/// The usage chunk with `usage.cost` added (USD), as non-streaming responses carry it;
/// `None` when no cost is known or the chunk cannot be rewritten.
fn with_cost(data: &[u8], meter: &Meter) -> Option<Bytes> {
    let cost: f64 = meter.reported_cost()?.try_into().ok()?;
    let mut chunk: serde_json::Value = serde_json::from_slice(data).ok()?;
    chunk
        .get_mut("usage")?
        .as_object_mut()?
        .insert("cost".into(), cost.into());
    Some(Bytes::from(format!("data: {chunk}\n\n")))
}

impl StreamDecoder for ChatDecoder {
    fn on_event(&mut self, ev: &SseEvent, meter: &mut Meter) -> Forward {
        if ev.is_done() {
            self.terminal = Some(self.outcome());
            return Forward::Keep;
        }
        let Some(data) = ev.data.as_deref() else {
            return Forward::Keep;
        };
        let Ok(chunk) = serde_json::from_slice::<ChunkView>(data) else {
            // Not a chunk Beacon can read: the client gets it as it is.
            meter.chunk_forwarded();
            return Forward::Keep;
        };
        super::observe_chunk(&chunk, meter);
        self.track_choices(&chunk);
        if let Some(err) = &chunk.error {
            self.upstream_error = Some(error_fields(err, "upstream_stream_error"));
        }
        if chunk.is_usage_only() {
            if !self.client_wants_usage {
                return Forward::Drop;
            }
            meter.chunk_forwarded();
            return match with_cost(data, meter) {
                Some(bytes) => Forward::Replace(bytes),
                None => Forward::Keep,
            };
        }
        meter.chunk_forwarded();
        Forward::Keep
    }

    fn take_terminal(&mut self) -> Option<Terminal> {
        self.terminal.take()
    }

    fn end_without_terminal(&mut self) -> Option<(Terminal, Bytes)> {
        if self.upstream_error.is_some() {
            // The client has the upstream's error event: end the stream with `[DONE]` alone.
            return Some((self.outcome(), Bytes::from_static(DONE)));
        }
        // Some servers omit `[DONE]`: every choice finished, so the completion is whole;
        // Beacon ends the stream as OpenAI would.
        self.all_choices_finished()
            .then(|| (Terminal::Ok, Bytes::from_static(DONE)))
    }

    fn error_tail(&self, id: &str, error_type: &str, code: &str, message: &str) -> Bytes {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let choice = if self.object == "text_completion" {
            serde_json::json!({"index": 0, "text": "", "finish_reason": "error"})
        } else {
            serde_json::json!({"index": 0, "delta": {}, "finish_reason": "error"})
        };
        let chunk = serde_json::json!({
            "id": id,
            "object": self.object,
            "created": created,
            "model": self.model,
            "choices": [choice],
            "error": {"message": message, "type": error_type, "code": code, "param": null},
        });
        Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n"))
    }
}
