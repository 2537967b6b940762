//! Incremental Server-Sent Events parser (WHATWG `text/event-stream` framing).
//!
//! Bytes arrive in arbitrary pieces; the parser returns each complete event with its raw
//! bytes (forwarded unchanged) and its joined `data` lines (inspected by the meter).
//! Lines end in `\n`, `\r\n` or `\r`; an empty line ends an event; lines starting with `:`
//! are comments. Only bytes of the one incomplete event are held back.

use bytes::{Bytes, BytesMut};

/// Largest incomplete event the parser holds before giving up (protects memory from an
/// upstream that never terminates an event).
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event's bytes exactly as received, terminator included.
    pub raw: Bytes,
    /// `data` lines joined with `\n`; `None` for comment-only events.
    pub data: Option<Vec<u8>>,
    /// The `event` field, when present.
    pub event: Option<String>,
}

impl SseEvent {
    /// True for the OpenAI stream terminator `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.as_deref().map(<[u8]>::trim_ascii) == Some(b"[DONE]")
    }
}

/// The parser exceeded [`MAX_EVENT_BYTES`] without seeing an event terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event larger than {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, incomplete event.
    buf: BytesMut,
    /// Where the next unscanned line starts in `buf`.
    line_start: usize,
    /// Bytes before this offset are known to hold no line terminator after `line_start`.
    scanned: usize,
    /// `data` of the current event so far.
    data: Option<Vec<u8>>,
    event: Option<String>,
}

impl SseParser {
    /// Creates an empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; pushes every event they complete onto `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), EventTooLarge> {
        self.buf.extend_from_slice(chunk);
        loop {
            let from = self.scanned.max(self.line_start);
            let rest = &self.buf[from..];
            let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                // Remember how far we looked so a long line is not rescanned on every push.
                self.scanned = self.buf.len();
                break;
            };
            let line_end = from + pos;
            let term_len = if self.buf[line_end] == b'\r' {
                match self.buf.get(line_end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A trailing `\r` may be the first half of `\r\n`: wait for the next byte.
                    None => {
                        self.scanned = line_end;
                        break;
                    }
                }
            } else {
                1
            };
            let next = line_end + term_len;
            if line_end == self.line_start {
                // Empty line: the event is complete.
                let raw = self.buf.split_to(next).freeze();
                self.line_start = 0;
                self.scanned = 0;
                out.push(SseEvent {
                    raw,
                    data: self.data.take(),
                    event: self.event.take(),
                });
                continue;
            }
            let line = &self.buf[self.line_start..line_end];
            if line[0] != b':' {
                let (field, value) = match line.iter().position(|&b| b == b':') {
                    Some(i) => {
                        let v = &line[i + 1..];
                        (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                    }
                    None => (line, &b""[..]),
                };
                match field {
                    b"data" => {
                        let data = self.data.get_or_insert_with(Vec::new);
                        if !data.is_empty() {
                            data.push(b'\n');
                        }
                        data.extend_from_slice(value);
                    }
                    b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
                    _ => {}
                }
            }
            self.line_start = next;
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(())
    }

    /// Bytes of an incomplete event still held (forwarded as-is when the stream ends).
    pub fn take_remainder(&mut self) -> Bytes {
        self.line_start = 0;
        self.scanned = 0;
        self.data = None;
        self.event = None;
        self.buf.split().freeze()
    }

    /// True when no partial event is held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b": keep-alive\n\ndata: {\"a\":1}\n\nevent: x\r\ndata: line1\r\ndata: line2\r\n\r\ndata:nospace\r\rdata: [DONE]\n\n";

    fn parse_in_pieces(input: &[u8], sizes: impl Fn(usize) -> usize) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut i = 0;
        let mut n = 0;
        while i < input.len() {
            let len = sizes(n).clamp(1, input.len() - i);
            p.push(&input[i..i + len], &mut out).unwrap();
            i += len;
            n += 1;
        }
        assert!(p.is_empty(), "leftover {:?}", p.take_remainder());
        out
    }

    fn check(events: &[SseEvent]) {
        assert_eq!(events.len(), 5);
        assert_eq!(events[0].data, None);
        assert_eq!(&events[0].raw[..], b": keep-alive\n\n");
        assert_eq!(events[1].data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(events[2].data.as_deref(), Some(&b"line1\nline2"[..]));
        assert_eq!(events[2].event.as_deref(), Some("x"));
        assert_eq!(events[3].data.as_deref(), Some(&b"nospace"[..]));
        assert!(events[4].is_done());
        let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(joined, STREAM, "raw bytes are forwarded unchanged");
    }

    #[test]
    fn whole_input() {
        check(&parse_in_pieces(STREAM, |_| usize::MAX));
    }

    #[test]
    fn every_split_point() {
        for split in 1..STREAM.len() {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            p.push(&STREAM[..split], &mut out).unwrap();
            p.push(&STREAM[split..], &mut out).unwrap();
            check(&out);
        }
    }

    #[test]
    fn byte_by_byte_and_uneven_pieces() {
        check(&parse_in_pieces(STREAM, |_| 1));
        check(&parse_in_pieces(STREAM, |n| n % 7 + 1));
    }

    #[test]
    fn incomplete_event_is_held_back() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: {\"partial\"", &mut out).unwrap();
        assert!(out.is_empty());
        p.push(b":true}\n", &mut out).unwrap();
        assert!(out.is_empty(), "a single newline does not end an event");
        p.push(b"\n", &mut out).unwrap();
        assert_eq!(out[0].data.as_deref(), Some(&b"{\"partial\":true}"[..]));
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(p.push(&big, &mut out), Err(EventTooLarge));
    }
}
