//! The metered streaming body: upstream SSE in, client SSE out, measured on the way, for
//! every API (its `StreamDecoder` reads the events; this body owns the clocks, the
//! forwarding and the one place the stream's record is finished).
//!
//! Each upstream frame is parsed as it arrives and the events it completes are forwarded
//! at once, in one frame, unchanged unless the decoder rewrites or removes one. Only the
//! bytes of an incomplete event are held back. Upstream failures after the first byte end
//! the stream with the API's error event; the body itself never errors.
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

use super::Meter;
use crate::apis::{Forward, StreamDecoder, Terminal};
use crate::sse::{SseEvent, SseParser};

enum State {
    Streaming,
    /// Bytes that end the stream, then the end.
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
pub struct MeteredSse<D> {
    upstream: Incoming,
    parser: SseParser,
    events: Vec<SseEvent>,
    meter: Meter,
    decoder: D,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout_secs: u64,
    /// Fires `idle_timeout` after the last upstream frame; re-armed lazily (only when it
    /// fires early), so a chunk costs a clock read, not a timer update.
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    last_frame: Instant,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    state: State,
    /// The stream's terminal event was read and its record finished.
    ended: bool,
    /// A frame read ahead, handled before the upstream is polled again.
    first: Option<Bytes>,
}

impl<D: StreamDecoder> MeteredSse<D> {
    /// Wraps `upstream`, read by `decoder`, bounded by `limits`; `first` is a frame already
    /// read from it (a stream that could still fail over is read up to its first frame).
    pub fn new(
        upstream: Incoming,
        first: Option<Bytes>,
        meter: Meter,
        decoder: D,
        limits: StreamLimits,
    ) -> Self {
        let now = Instant::now();
        Self {
            upstream,
            parser: SseParser::new(),
            events: Vec::new(),
            meter,
            decoder,
            deadline: Box::pin(tokio::time::sleep_until(limits.deadline)),
            timeout_secs: limits.timeout_secs,
            idle: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            idle_timeout: limits.idle_timeout,
            last_frame: now,
            cut: Box::pin(limits.cut.cancelled_owned()),
            state: State::Streaming,
            ended: false,
            first,
        }
    }

    /// The one place a stream's record is finished.
    fn finish(&mut self, outcome: Outcome) {
        self.ended = true;
        self.meter.upstream_done();
        self.meter.finish(outcome);
    }

    fn finish_as(&mut self, terminal: Terminal) {
        let outcome = match terminal {
            Terminal::Ok => Outcome::Ok,
            Terminal::Failed {
                error_type,
                message,
            } => upstream_error(self.meter.upstream_status(), &error_type, message),
        };
        self.finish(outcome);
    }

    /// Handles one upstream data frame; returns the bytes to forward (possibly empty).
    fn on_data(&mut self, data: &[u8]) -> Result<Bytes, String> {
        self.parser
            .push(data, &mut self.events)
            .map_err(|e| e.to_string())?;
        let mut out = BytesMut::new();
        // Taken out for the loop (and put back, keeping its allocation), so the loop body
        // can use `self`.
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            match self.decoder.on_event(&ev, &mut self.meter) {
                Forward::Keep => out.extend_from_slice(&ev.raw),
                Forward::Replace(bytes) => out.extend_from_slice(&bytes),
                Forward::Drop => {}
            }
        }
        self.events = events;
        if let Some(terminal) = self.decoder.take_terminal() {
            if !self.ended {
                self.finish_as(terminal);
            }
        }
        Ok(out.freeze())
    }

    /// Ends a stream Beacon has to cut, with the API's error event.
    fn fail(&mut self, outcome: Outcome, code: &str, message: &str) -> State {
        if self.ended {
            // The client already has a complete stream; what fails after its end is moot.
            return State::Done;
        }
        // The event's id: the upstream's response id, else Beacon's request id — taken
        // before `finish`, which consumes the request's facts.
        let id = match self.meter.response_id() {
            Some(id) => id.to_owned(),
            None => self.meter.request_id().to_owned(),
        };
        let error_type = match outcome {
            Outcome::Shutdown => "server_error",
            _ => "upstream_error",
        };
        let tail = self.decoder.error_tail(&id, error_type, code, message);
        self.finish(outcome);
        State::Tail(tail)
    }

    /// The upstream ended, or broke, without its terminal event.
    fn end_early(&mut self, broke: Option<String>) -> State {
        let _ = self.parser.take_remainder();
        if let Some((terminal, tail)) = self.decoder.end_without_terminal() {
            let upstream_failed = matches!(terminal, Terminal::Failed { .. });
            // A break is only excused after the upstream's own error event.
            if broke.is_none() || upstream_failed {
                self.finish_as(terminal);
                return if tail.is_empty() {
                    State::Done
                } else {
                    State::Tail(tail)
                };
            }
        }
        let (error_type, code, msg) = match broke {
            Some(e) => (
                "stream_interrupted",
                "upstream_stream_interrupted",
                format!("The upstream connection failed mid-stream: {e}"),
            ),
            None => (
                "stream_truncated",
                "upstream_stream_truncated",
                "The upstream stream ended before its final event.".to_string(),
            ),
        };
        let outcome = upstream_error(self.meter.upstream_status(), error_type, msg.clone());
        self.fail(outcome, code, &msg)
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

impl<D: StreamDecoder + Unpin> Body for MeteredSse<D> {
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
            if let Some(data) = this.first.take() {
                match this.on_data(&data) {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                    Err(msg) => {
                        let outcome = upstream_error(
                            this.meter.upstream_status(),
                            "invalid_stream",
                            msg.clone(),
                        );
                        this.state = this.fail(outcome, "upstream_invalid_stream", &msg);
                        continue;
                    }
                }
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
                    this.meter.upstream_status(),
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
                                this.meter.upstream_status(),
                                "invalid_stream",
                                msg.clone(),
                            );
                            this.state = this.fail(outcome, "upstream_invalid_stream", &msg);
                        }
                    }
                }
                Some(Err(_)) if this.ended => this.state = State::Done,
                Some(Err(e)) => this.state = this.end_early(Some(e.to_string())),
                None if this.ended => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                None => this.state = this.end_early(None),
            }
        }
    }
}
