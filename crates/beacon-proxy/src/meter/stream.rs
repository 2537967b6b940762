//! The metered streaming body: upstream SSE in, client SSE out, measured on the way.
//!
//! Each upstream frame is parsed as it arrives and the events it completes are forwarded
//! at once, in one frame, unchanged — except the usage-only chunk Beacon asked for on the
//! client's behalf, which is removed when the client did not ask for it. Only the bytes of
//! an incomplete event are held back. Upstream failures after the first byte end the stream
//! with an OpenAI-style error chunk and `[DONE]`; the body itself never errors.
//!
//! Three clocks bound a stream: the whole-request deadline, the idle timeout between two
//! upstream frames (a stalled upstream is cut, not waited on until the deadline), and the
//! gateway's shutdown cut at the end of the grace period (outcome `shutdown`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use beacon_broadcast::record::Outcome;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::chunk::ChunkView;
use super::Meter;
use crate::sse::{SseEvent, SseParser};

enum State {
    Streaming,
    /// A final error chunk to send, then end.
    Tail(Bytes),
    Done,
}

/// The clocks that bound one stream.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// End of the whole-request upstream timeout.
    pub deadline: Instant,
    /// The whole-request timeout in seconds, for the error message.
    pub timeout_secs: u64,
    /// Longest silence between two upstream frames.
    pub idle_timeout: Duration,
    /// The gateway's shutdown cut.
    pub cut: CancellationToken,
}

/// See the module docs.
pub struct MeteredSse {
    upstream: Incoming,
    parser: SseParser,
    events: Vec<SseEvent>,
    meter: Meter,
    client_wants_usage: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout_secs: u64,
    /// Fires `idle_timeout` after the last upstream frame; re-armed lazily (only when it
    /// fires early), so a chunk costs a clock read, not a timer update.
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    last_frame: Instant,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    state: State,
    saw_done: bool,
    /// The upstream's own error event (its type and message), already forwarded.
    upstream_error: Option<(String, String)>,
    /// Choice indices seen, and whether each has had its finish reason.
    choices: Vec<(u32, bool)>,
    model: String,
}

impl MeteredSse {
    /// Wraps `upstream`, bounded by `limits`.
    pub fn new(
        upstream: Incoming,
        meter: Meter,
        client_wants_usage: bool,
        limits: StreamLimits,
        model: String,
    ) -> Self {
        let now = Instant::now();
        Self {
            upstream,
            parser: SseParser::new(),
            events: Vec::new(),
            meter,
            client_wants_usage,
            deadline: Box::pin(tokio::time::sleep_until(limits.deadline)),
            timeout_secs: limits.timeout_secs,
            idle: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            idle_timeout: limits.idle_timeout,
            last_frame: now,
            cut: Box::pin(limits.cut.cancelled_owned()),
            state: State::Streaming,
            saw_done: false,
            upstream_error: None,
            choices: Vec::new(),
            model,
        }
    }

    /// Whether every choice the stream opened has finished (and there was one).
    fn all_choices_finished(&self) -> bool {
        !self.choices.is_empty() && self.choices.iter().all(|(_, done)| *done)
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

    /// The usage chunk with `usage.cost` added (USD), as non-streaming responses carry it;
    /// unchanged when no cost is known or the chunk cannot be rewritten.
    fn with_cost(&self, ev: &SseEvent) -> Option<Bytes> {
        let cost: f64 = self.meter.reported_cost()?.try_into().ok()?;
        let data = ev.data.as_deref()?;
        let mut chunk: serde_json::Value = serde_json::from_slice(data).ok()?;
        chunk
            .get_mut("usage")?
            .as_object_mut()?
            .insert("cost".into(), cost.into());
        Some(Bytes::from(format!("data: {chunk}\n\n")))
    }

    /// The upstream ended (or broke) after its own error event: the client has that event,
    /// so the stream ends with `[DONE]` alone, and the record carries the upstream's error.
    fn end_after_upstream_error(&mut self, error_type: String, message: String) -> State {
        self.meter.upstream_done();
        let status = self.meter.upstream_status;
        self.meter
            .finish(upstream_error(status, &error_type, message));
        State::Tail(Bytes::from_static(b"data: [DONE]\n\n"))
    }

    /// Handles one upstream data frame; returns the bytes to forward (possibly empty).
    fn on_data(&mut self, data: &[u8]) -> Result<Bytes, String> {
        self.parser
            .push(data, &mut self.events)
            .map_err(|e| e.to_string())?;
        let mut out = BytesMut::new();
        let mut forwarded_data = false;
        // Taken out for the loop (and put back, keeping its allocation), so the loop body
        // can use `self`.
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            let mut keep = true;
            if ev.is_done() {
                self.saw_done = true;
            } else if let Some(data) = ev.data.as_deref() {
                let mut rewritten = None;
                if let Ok(chunk) = serde_json::from_slice::<ChunkView>(data) {
                    self.meter.observe_chunk(&chunk);
                    self.track_choices(&chunk);
                    if let Some(err) = &chunk.error {
                        let field = |k: &str| err.get(k).and_then(|m| m.as_str());
                        let message = field("message")
                            .or_else(|| err.as_str())
                            .unwrap_or("the upstream reported an error mid-stream");
                        let error_type = field("type")
                            .or_else(|| field("code"))
                            .unwrap_or("upstream_stream_error");
                        self.upstream_error = Some((error_type.to_string(), message.to_string()));
                    }
                    let usage_only = chunk.is_usage_only();
                    keep = self.client_wants_usage || !usage_only;
                    if keep && usage_only {
                        rewritten = self.with_cost(&ev);
                    }
                }
                forwarded_data |= keep;
                if keep {
                    match rewritten {
                        Some(bytes) => out.extend_from_slice(&bytes),
                        None => out.extend_from_slice(&ev.raw),
                    }
                }
                continue;
            }
            if keep {
                out.extend_from_slice(&ev.raw);
            }
        }
        self.events = events;
        if forwarded_data {
            self.meter.chunk_forwarded();
        }
        if self.saw_done {
            self.meter.upstream_done();
            let outcome = match self.upstream_error.take() {
                Some((error_type, message)) => {
                    upstream_error(self.meter.upstream_status, &error_type, message)
                }
                None => Outcome::Ok,
            };
            self.meter.finish(outcome);
        }
        Ok(out.freeze())
    }

    fn fail(&mut self, outcome: Outcome, code: &str, message: &str) -> State {
        if self.saw_done {
            // The client already has a complete stream; what fails after `[DONE]` is moot.
            return State::Done;
        }
        // The chunk's id: the upstream's completion id, else Beacon's request id — taken
        // before `finish`, which consumes the request's facts.
        let id = match self.meter.response_id.as_deref() {
            Some(id) => id.to_owned(),
            None => self.meter.request_id().to_owned(),
        };
        let error_type = match outcome {
            Outcome::Shutdown => "server_error",
            _ => "upstream_error",
        };
        self.meter.upstream_done();
        self.meter.finish(outcome);
        State::Tail(error_tail(&id, &self.model, error_type, code, message))
    }

    /// Whether the upstream has been silent for the idle timeout (re-arming the timer when
    /// a frame arrived since it was set).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_frame + self.idle_timeout;
            if due <= Instant::now() {
                return true;
            }
            self.idle.as_mut().reset(due);
        }
    }
}

fn upstream_error(status: Option<u16>, error_type: &str, message: String) -> Outcome {
    Outcome::UpstreamError {
        status,
        error_type: error_type.to_string(),
        message,
    }
}

/// The chunk that ends a failed stream, followed by `[DONE]`.
pub fn error_tail(id: &str, model: &str, error_type: &str, code: &str, message: &str) -> Bytes {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let chunk = serde_json::json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "error"}],
        "error": {"message": message, "type": error_type, "code": code, "param": null},
    });
    Bytes::from(format!("data: {chunk}\n\ndata: [DONE]\n\n"))
}

impl Body for MeteredSse {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, State::Streaming) {
                State::Done => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                State::Tail(bytes) => {
                    this.state = State::Done;
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                State::Streaming => {}
            }
            if this.cut.as_mut().poll(cx).is_ready() {
                let msg = "The gateway is shutting down and ended this stream; retry the request.";
                this.state = this.fail(Outcome::Shutdown, "gateway_shutdown", msg);
                continue;
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                let msg = format!(
                    "The upstream provider did not finish within {} seconds.",
                    this.timeout_secs
                );
                this.state = this.fail(Outcome::Timeout, "upstream_timeout", &msg);
                continue;
            }
            if this.idle_expired(cx) {
                let msg = format!(
                    "The upstream provider sent nothing for {} seconds mid-stream.",
                    this.idle_timeout.as_secs_f64()
                );
                let outcome = upstream_error(
                    this.meter.upstream_status,
                    "upstream_idle_timeout",
                    msg.clone(),
                );
                this.state = this.fail(outcome, "upstream_idle_timeout", &msg);
                continue;
            }
            match ready!(Pin::new(&mut this.upstream).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    this.last_frame = Instant::now();
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match this.on_data(&data) {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        Err(msg) => {
                            let outcome = upstream_error(
                                this.meter.upstream_status,
                                "invalid_stream",
                                msg.clone(),
                            );
                            this.state = this.fail(outcome, "upstream_invalid_stream", &msg);
                        }
                    }
                }
                Some(Err(_)) if this.upstream_error.is_some() && !this.saw_done => {
                    if let Some((error_type, message)) = this.upstream_error.take() {
                        this.state = this.end_after_upstream_error(error_type, message);
                    }
                }
                Some(Err(e)) => {
                    let msg = format!("The upstream connection failed mid-stream: {e}");
                    let outcome = upstream_error(
                        this.meter.upstream_status,
                        "stream_interrupted",
                        msg.clone(),
                    );
                    this.state = this.fail(outcome, "upstream_stream_interrupted", &msg);
                }
                None => {
                    if this.saw_done {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    let _ = this.parser.take_remainder();
                    if let Some((error_type, message)) = this.upstream_error.take() {
                        this.state = this.end_after_upstream_error(error_type, message);
                        continue;
                    }
                    if this.all_choices_finished() {
                        // Some servers omit `[DONE]`: every choice finished, so the
                        // completion is whole; Beacon ends the stream as OpenAI would.
                        this.meter.upstream_done();
                        this.meter.finish(Outcome::Ok);
                        this.saw_done = true;
                        this.state = State::Tail(Bytes::from_static(b"data: [DONE]\n\n"));
                        continue;
                    }
                    let msg = "The upstream stream ended before [DONE].".to_string();
                    let outcome =
                        upstream_error(this.meter.upstream_status, "stream_truncated", msg.clone());
                    this.state = this.fail(outcome, "upstream_stream_truncated", &msg);
                }
            }
        }
    }
}
