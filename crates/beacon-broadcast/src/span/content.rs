//! Prompt and completion text in OpenTelemetry GenAI form: `gen_ai.system_instructions`,
//! `gen_ai.input.messages` and `gen_ai.output.messages`, as JSON strings. Binary parts and
//! data URLs are replaced by placeholders so no payload carries images or audio.
//!
//! The request's messages are read with borrowed, typed views and their string values are
//! copied into the output still JSON-escaped (`RawValue`), so converting a prompt costs one
//! scan and one copy, with no JSON tree built.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Placeholder for an inline image.
pub const IMAGE_PLACEHOLDER: &str = "[image data omitted]";
/// Placeholder for inline audio or files.
pub const BINARY_PLACEHOLDER: &str = "[binary data omitted]";

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    tool_call_id: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    image_url: Option<ImageUrl<'a>>,
}

#[derive(Deserialize)]
struct ImageUrl<'a> {
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
}

/// JSON text being built, from `&str` pieces only (the request's raw JSON values, literals,
/// and strings escaped in place), so it never needs validating as UTF-8 again.
struct Buf(String);

impl Buf {
    fn with_capacity(n: usize) -> Self {
        Self(String::with_capacity(n))
    }

    fn push_str(&mut self, s: &str) {
        self.0.push_str(s);
    }

    fn push(&mut self, c: char) {
        self.0.push(c);
    }

    fn into_string(self) -> String {
        self.0
    }
}

fn raw_or_null(out: &mut Buf, v: Option<&RawValue>) {
    out.push_str(v.map_or("null", RawValue::get));
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it. Runs of bytes that need no
/// escape (nearly all of a text) are found 16 bytes at a time and copied whole; each byte
/// that does is written by serde_json's formatter.
fn push_str_json(out: &mut Buf, s: &str) {
    use serde_json::ser::{CharEscape, CompactFormatter, Formatter};
    let bytes = s.as_bytes();
    out.0.reserve(bytes.len() + 2);
    out.0.push('"');
    let mut at = 0;
    while at < bytes.len() {
        let run = plain_run(&bytes[at..]);
        // A run ends at an ASCII byte or at the end: always a character boundary.
        out.0.push_str(s.get(at..at + run).unwrap_or_default());
        at += run;
        let Some(&byte) = bytes.get(at) else { break };
        let escape = match byte {
            b'"' => CharEscape::Quote,
            b'\\' => CharEscape::ReverseSolidus,
            b'\x08' => CharEscape::Backspace,
            b'\x0c' => CharEscape::FormFeed,
            b'\n' => CharEscape::LineFeed,
            b'\r' => CharEscape::CarriageReturn,
            b'\t' => CharEscape::Tab,
            other => CharEscape::AsciiControl(other),
        };
        // At most six ASCII bytes (`\u001f`); writing to a slice with room cannot fail.
        let mut escaped = [0u8; 8];
        let mut rest = &mut escaped[..];
        let _ = CompactFormatter.write_char_escape(&mut rest, escape);
        let written = 8 - rest.len();
        out.0
            .push_str(std::str::from_utf8(&escaped[..written]).unwrap_or_default());
        at += 1;
    }
    out.0.push('"');
}

/// Whether JSON needs `byte` escaped in a string: a control character, `"` or `\`.
const fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// How many leading bytes of `bytes` need no escape. Whole 16-byte blocks are tested
/// without an early exit, which the compiler turns into vector compares.
fn plain_run(bytes: &[u8]) -> usize {
    let mut n = 0;
    for block in bytes.chunks_exact(16) {
        if block.iter().fold(false, |any, &b| any | needs_escape(b)) {
            break;
        }
        n += 16;
    }
    n + bytes[n..]
        .iter()
        .position(|&b| needs_escape(b))
        .unwrap_or(bytes.len() - n)
}

/// Appends the GenAI parts of one message's `content` (each preceded by a comma when
/// `out` already holds parts, as tracked by `first`).
fn parts(out: &mut Buf, content: Option<&RawValue>, first: &mut bool) {
    let Some(raw) = content else { return };
    let text = raw.get().trim_start();
    let mut sep = |out: &mut Buf| {
        if !*first {
            out.push(',');
        }
        *first = false;
    };
    if text.starts_with('"') {
        sep(out);
        out.push_str(r#"{"type":"text","content":"#);
        out.push_str(raw.get());
        out.push('}');
    } else if text.starts_with('[') {
        let Ok(list) = serde_json::from_str::<Vec<Part<'_>>>(raw.get()) else {
            return;
        };
        for p in list {
            sep(out);
            match p.kind.as_deref() {
                Some("text") | None => {
                    out.push_str(r#"{"type":"text","content":"#);
                    raw_or_null(out, p.text);
                    out.push('}');
                }
                Some("image_url") => {
                    let url = p.image_url.and_then(|u| u.url).unwrap_or_default();
                    if url.is_empty() || url.starts_with("data:") {
                        out.push_str(r#"{"type":"image","content":""#);
                        out.push_str(IMAGE_PLACEHOLDER);
                        out.push_str("\"}");
                    } else {
                        out.push_str(r#"{"type":"uri","modality":"image","uri":"#);
                        push_str_json(out, &url);
                        out.push('}');
                    }
                }
                Some(other) => {
                    let kind = match other {
                        "input_audio" => "audio",
                        "file" => "file",
                        other => other,
                    };
                    out.push_str(r#"{"type":"#);
                    push_str_json(out, kind);
                    out.push_str(r#","content":""#);
                    out.push_str(BINARY_PLACEHOLDER);
                    out.push_str("\"}");
                }
            }
        }
    }
}

/// A record's prompt and answer as spans carry them: the same for every destination that
/// sends content (a dialect only names them differently), so converted once per record when
/// several destinations need them ([`crate::ingress::Queued::converted`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Converted {
    /// `gen_ai.system_instructions`.
    pub system: Option<String>,
    /// `gen_ai.input.messages`.
    pub input: Option<String>,
    /// `gen_ai.output.messages`; `None` when the span carries no answer (embeddings, or a
    /// failure before any output).
    pub output: Option<String>,
}

impl Converted {
    /// The conversion of `record`'s content (`None` when it captured none).
    pub fn of(record: &crate::record::CompletionRecord) -> Option<Self> {
        let c = record.content.as_ref()?;
        let (system, input) = input(&c.input_messages);
        // Embeddings have no output messages (never the vectors).
        let output = (record.api != beacon_config::Api::Embeddings
            && (super::error_status(record).is_none()
                || !c.output_text.is_empty()
                || !c.output_tool_calls.is_empty()))
        .then(|| {
            let finish = record.finish_reasons.first().map(String::as_str);
            output(&c.output_text, &c.output_tool_calls, finish)
        });
        Some(Self {
            system,
            input,
            output,
        })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        [&self.system, &self.input, &self.output]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::capacity))
            .sum::<usize>()
            + std::mem::size_of::<Self>()
    }
}

/// `(system_instructions, input_messages)` from the request's raw `messages` array.
pub fn input(messages_json: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(messages) = serde_json::from_slice::<Vec<Message<'_>>>(messages_json) else {
        return (None, None);
    };
    let mut system = Buf::with_capacity(64);
    system.push('[');
    let mut system_first = true;
    let mut input = Buf::with_capacity(messages_json.len() + 64 * messages.len());
    input.push('[');
    let mut any_input = false;
    for m in &messages {
        let role = m.role.as_deref().unwrap_or("user");
        if role == "system" || role == "developer" {
            parts(&mut system, m.content, &mut system_first);
            continue;
        }
        if any_input {
            input.push(',');
        }
        any_input = true;
        input.push_str(r#"{"role":"#);
        push_str_json(&mut input, role);
        input.push_str(r#","parts":["#);
        let mut first = true;
        if role == "tool" {
            input.push_str(r#"{"type":"tool_call_response","id":"#);
            raw_or_null(&mut input, m.tool_call_id);
            input.push_str(r#","response":"#);
            raw_or_null(&mut input, m.content);
            input.push('}');
            first = false;
        } else {
            parts(&mut input, m.content, &mut first);
        }
        for call in m.tool_calls.iter().flatten() {
            if !first {
                input.push(',');
            }
            first = false;
            let f = call.function.as_ref();
            input.push_str(r#"{"type":"tool_call","id":"#);
            raw_or_null(&mut input, call.id);
            input.push_str(r#","name":"#);
            raw_or_null(&mut input, f.and_then(|f| f.name));
            input.push_str(r#","arguments":"#);
            raw_or_null(&mut input, f.and_then(|f| f.arguments));
            input.push('}');
        }
        input.push(']');
        if let Some(name) = m.name {
            input.push_str(r#","name":"#);
            input.push_str(name.get());
        }
        input.push('}');
    }
    input.push(']');
    system.push(']');
    (
        (!system_first).then(|| system.into_string()),
        any_input.then(|| input.into_string()),
    )
}

/// The arguments and the result of tool call `call_id` as a request's `messages` carry them
/// (the assistant message that made the call, the `role: tool` message answering it), as
/// `gen_ai.tool.call.arguments` and `gen_ai.tool.call.result` (SPEC §4.5): text as is, a
/// result made of parts as their JSON (binary parts replaced by placeholders).
pub fn tool_run(messages_json: &[u8], call_id: &str) -> (Option<String>, Option<String>) {
    let Ok(messages) = serde_json::from_slice::<Vec<Message<'_>>>(messages_json) else {
        return (None, None);
    };
    let is_id = |raw: Option<&RawValue>| {
        raw.and_then(|r| serde_json::from_str::<Cow<'_, str>>(r.get()).ok())
            .is_some_and(|id| id == call_id)
    };
    let text = |raw: &RawValue| match serde_json::from_str::<Cow<'_, str>>(raw.get()) {
        Ok(s) => s.into_owned(),
        Err(_) => {
            let mut out = Buf::with_capacity(raw.get().len() + 2);
            out.push('[');
            parts(&mut out, Some(raw), &mut true);
            out.push(']');
            out.into_string()
        }
    };
    let mut arguments = None;
    let mut result = None;
    for m in &messages {
        if m.role.as_deref() == Some("tool") && is_id(m.tool_call_id) {
            result = m.content.map(text);
        }
        for call in m.tool_calls.iter().flatten() {
            if is_id(call.id) {
                arguments = call.function.as_ref().and_then(|f| f.arguments).map(text);
            }
        }
    }
    (arguments, result)
}

/// `gen_ai.output.messages` for the first choice: its text and its tool calls.
pub fn output(
    text: &str,
    tool_calls: &[crate::record::ToolCall],
    finish_reason: Option<&str>,
) -> String {
    let mut out = Buf::with_capacity(text.len() + 96);
    out.push_str(r#"[{"role":"assistant","parts":["#);
    let mut first = true;
    if !text.is_empty() || tool_calls.is_empty() {
        out.push_str(r#"{"type":"text","content":"#);
        push_str_json(&mut out, text);
        out.push('}');
        first = false;
    }
    for call in tool_calls {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(r#"{"type":"tool_call","id":"#);
        push_opt_json(&mut out, call.id.as_deref());
        out.push_str(r#","name":"#);
        push_opt_json(&mut out, call.name.as_deref());
        out.push_str(r#","arguments":"#);
        push_str_json(&mut out, &call.arguments);
        out.push('}');
    }
    out.push_str(r#"],"finish_reason":"#);
    push_str_json(&mut out, finish_reason.unwrap_or(""));
    out.push_str("}]");
    out.into_string()
}

fn push_opt_json(out: &mut Buf, s: Option<&str>) {
    match s {
        Some(s) => push_str_json(out, s),
        None => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn strings_are_escaped_exactly_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        cases.extend(
            [
                "",
                "plain",
                "Sunlight is scattered by the molecules of the atmosphere.",
                "line one\nline \"two\"\tand a \\ backslash\r\n",
                "\u{7f}\u{1f}\u{0}é日本語🙂\u{2028}",
            ]
            .map(String::from),
        );
        // An escape at every position around the 16-byte blocks, in ASCII and in text
        // with multi-byte characters.
        for len in [15, 16, 17, 31, 32, 33, 48] {
            for at in 0..len {
                for (plain, special) in [('a', '"'), ('é', '\n'), ('x', '\u{1}')] {
                    let mut text: String = std::iter::repeat_n(plain, len).collect();
                    let byte = text.char_indices().nth(at).map_or(0, |(i, _)| i);
                    text.insert(byte, special);
                    cases.push(text);
                }
            }
        }
        for case in cases {
            let mut out = Buf::with_capacity(0);
            push_str_json(&mut out, &case);
            assert_eq!(
                out.into_string(),
                serde_json::to_string(&case).unwrap(),
                "{case:?}"
            );
        }
    }

    #[test]
    fn splits_system_and_replaces_binary_parts() {
        let msgs = json!([
            {"role": "system", "content": "Be \"brief\"."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
            ], "name": "alice"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ]);
        let (system, input) = input(msgs.to_string().as_bytes());
        let system: Value = serde_json::from_str(&system.unwrap()).unwrap();
        assert_eq!(
            system,
            json!([{"type": "text", "content": "Be \"brief\"."}])
        );
        let input = input.unwrap();
        assert!(
            !input.contains("iVBORw0KGgo") && !input.contains("UklGRg"),
            "{input}"
        );
        let v: Value = serde_json::from_str(&input).unwrap();
        assert_eq!(v[0]["role"], "user");
        assert_eq!(v[0]["name"], "alice");
        assert_eq!(
            v[0]["parts"][0],
            json!({"type": "text", "content": "What is this?"})
        );
        assert_eq!(v[0]["parts"][1]["content"], IMAGE_PLACEHOLDER);
        assert_eq!(v[0]["parts"][2]["uri"], "https://example.com/cat.png");
        assert_eq!(
            v[0]["parts"][3],
            json!({"type": "audio", "content": BINARY_PLACEHOLDER})
        );
        assert_eq!(
            v[1]["parts"],
            json!([{"type": "tool_call", "id": "c1", "name": "f", "arguments": "{}"}])
        );
        assert_eq!(
            v[2]["parts"],
            json!([{"type": "tool_call_response", "id": "c1", "response": "42"}])
        );
    }

    #[test]
    fn output_messages_and_bad_input() {
        let v: Value = serde_json::from_str(&output("Hi \"you\"\n", &[], Some("stop"))).unwrap();
        assert_eq!(v[0]["parts"][0]["content"], "Hi \"you\"\n");
        assert_eq!(v[0]["finish_reason"], "stop");
        let call = crate::record::ToolCall {
            id: Some("call_1".into()),
            name: Some("get_weather".into()),
            arguments: "{\"city\":\"Paris\"}".into(),
        };
        let v: Value = serde_json::from_str(&output("", &[call], Some("tool_calls"))).unwrap();
        assert_eq!(
            v[0]["parts"],
            json!([{"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}])
        );
        assert_eq!(v[0]["finish_reason"], "tool_calls");
        assert_eq!(input(b"not json"), (None, None));
        assert_eq!(input(b"[]"), (None, None));
        let (s, i) = input(br#"[{"role":"system","content":"x"}]"#);
        assert!(s.is_some() && i.is_none());
    }
}
