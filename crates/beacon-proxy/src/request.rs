//! Where a client request is parsed, for every API: the JSON body is split into top-level
//! fields whose values stay raw (never materialized as a DOM), the fields Beacon acts on
//! (`model`, `stream`, and its extensions `user`, `session_id`, `trace`) are read strictly
//! and validated, and the upstream body is written back with the model rewritten and the
//! extensions removed. What differs per API (required fields, where the prompt is, which
//! fields the upstream defines itself) lives in that API's module under `apis/`.

use std::borrow::Cow;
use std::fmt;

use beacon_broadcast::record::RequestParams;
use beacon_config::MetadataLimits;
use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::ProxyError;

/// Longest `user` accepted.
pub const MAX_USER_LEN: usize = 128;
/// Longest `session_id` accepted.
pub const MAX_SESSION_ID_LEN: usize = 256;
/// Most fallback models accepted in a request's `models` list.
pub const MAX_FALLBACK_MODELS: usize = 8;
/// Deepest nesting accepted in a field Beacon reads (`trace`, `stream`, `user`, ...).
pub const MAX_EXTENSION_DEPTH: usize = 32;
/// Key added to a kept `trace` when keys were dropped over the count or size limit; its
/// value is how many.
pub const DROPPED_KEYS: &str = "beacon.dropped_keys";

/// What parsing needs besides the body.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'h> {
    /// The `x-session-id` header, when sent.
    pub session_header: Option<&'h str>,
    /// Bounds on the `trace` metadata kept for the record.
    pub limits: &'h MetadataLimits,
}

/// A validated client request of any API, in the neutral form the pipeline and the meter
/// use; built by an API module's `parse`.
#[derive(Debug)]
pub struct ClientRequest<'a> {
    fields: Fields<'a>,
    /// `model` as the client sent it.
    pub model: String,
    /// `stream`.
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`; chat and
    /// completions only).
    pub client_wants_usage: bool,
    /// `user` (or the API's own user field).
    pub user: Option<String>,
    /// `session_id` from the body, else the `x-session-id` header.
    pub session_id: Option<String>,
    /// `trace`.
    pub trace: Option<serde_json::Map<String, Value>>,
    /// Sampling parameters, for the record.
    pub params: RequestParams,
    /// Names of the tools offered in `tools` (chat's `function.name`, or `name` as the
    /// Responses and Anthropic APIs put it).
    pub tool_names: Vec<String>,
    /// The `tools` array as sent, for content export.
    pub tool_definitions: Option<Bytes>,
    /// The body's `models` list (OpenRouter's field): fallback models, in order, after
    /// `model`. Consumed by Beacon, never forwarded.
    pub models: Vec<String>,
    /// The prompt as a chat `messages` array (system first), for content export and token
    /// estimation: the client's own `messages` for chat, a conversion for other APIs.
    pub input: Bytes,
    /// Fields removed before the body goes upstream.
    strip: &'static [&'static str],
    /// Streams ask the upstream for usage with `stream_options.include_usage` (chat and
    /// completions; the usage chunk is removed again when the client did not ask for it).
    request_usage: bool,
}

/// Top-level fields of a JSON object in order, values raw. Later duplicates replace
/// earlier ones.
#[derive(Debug)]
pub struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(16);
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    match fields.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = v,
                        None => fields.push((k, v)),
                    }
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// A 400 naming `param`.
pub fn invalid(param: &'static str, message: impl Into<String>) -> ProxyError {
    ProxyError::InvalidField {
        param,
        message: message.into(),
    }
}

impl<'a> Fields<'a> {
    /// Splits `body`, which must be a JSON object, into its top-level fields.
    pub fn parse(body: &'a [u8]) -> Result<Self, ProxyError> {
        let trimmed = body.trim_ascii_start();
        if trimmed.first() != Some(&b'{') {
            return Err(ProxyError::InvalidJson(if trimmed.is_empty() {
                "the body is empty; expected a JSON object".into()
            } else {
                "expected a JSON object".into()
            }));
        }
        serde_json::from_slice::<Fields<'a>>(body)
            .map_err(|e| ProxyError::InvalidJson(e.to_string()))
    }

    /// The raw value of field `k`.
    pub fn get(&self, k: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| *v)
    }

    /// Field `k` parsed leniently: absent when it cannot be parsed or is null (sampling
    /// parameters are forwarded as sent and the upstream judges them).
    pub fn lenient(&self, k: &str) -> Option<Value> {
        self.get(k)
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
            .filter(|v| !v.is_null())
    }

    /// Field `k` parsed strictly, for a field that changes what Beacon does: a value that
    /// cannot be parsed, or is nested deeper than [`MAX_EXTENSION_DEPTH`], is a 400 naming
    /// it, never silently absent. Null is absent.
    pub fn strict(&self, k: &'static str) -> Result<Option<Value>, ProxyError> {
        let Some(raw) = self.get(k) else {
            return Ok(None);
        };
        if nesting_depth(raw.get().as_bytes()) > MAX_EXTENSION_DEPTH {
            return Err(invalid(
                k,
                format!("`{k}` is nested deeper than {MAX_EXTENSION_DEPTH} levels"),
            ));
        }
        match serde_json::from_str::<Value>(raw.get()) {
            Ok(Value::Null) => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(e) => Err(invalid(k, format!("`{k}` could not be read: {e}"))),
        }
    }

    /// The required `model`, a non-empty string.
    pub fn model(&self) -> Result<String, ProxyError> {
        match self.strict("model")? {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(Value::String(_)) | None => Err(invalid("model", "`model` is required")),
            Some(_) => Err(invalid("model", "`model` must be a string")),
        }
    }

    /// `stream`, a boolean (false when absent).
    pub fn stream(&self) -> Result<bool, ProxyError> {
        match self.strict("stream")? {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(_) => Err(invalid("stream", "`stream` must be a boolean")),
        }
    }

    /// `stream_options.include_usage` (chat and completions).
    pub fn include_usage(&self) -> Result<bool, ProxyError> {
        match self.strict("stream_options")? {
            None => Ok(false),
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(invalid(
                    "stream_options",
                    "`stream_options.include_usage` must be a boolean",
                )),
            },
            Some(_) => Err(invalid(
                "stream_options",
                "`stream_options` must be an object",
            )),
        }
    }

    /// The `user` extension (a string of at most [`MAX_USER_LEN`] characters).
    pub fn user(&self) -> Result<Option<String>, ProxyError> {
        match self.strict("user")? {
            None => Ok(None),
            Some(Value::String(s)) => user_value(s),
            Some(_) => Err(invalid("user", "`user` must be a string")),
        }
    }

    /// `session_id` from the body, else from the `x-session-id` header.
    pub fn session_id(&self, header: Option<&str>) -> Result<Option<String>, ProxyError> {
        match self.strict("session_id")? {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_SESSION_ID_LEN => {
                Ok(Some(s))
            }
            Some(Value::String(_)) => Err(invalid(
                "session_id",
                format!("`session_id` must be 1 to {MAX_SESSION_ID_LEN} characters"),
            )),
            Some(_) => Err(invalid("session_id", "`session_id` must be a string")),
            None => match header {
                Some(h) if !h.is_empty() && h.chars().count() <= MAX_SESSION_ID_LEN => {
                    Ok(Some(h.to_string()))
                }
                Some(_) => Err(invalid(
                    "session_id",
                    format!("the x-session-id header must be 1 to {MAX_SESSION_ID_LEN} characters"),
                )),
                None => Ok(None),
            },
        }
    }

    /// The `trace` extension, bounded by `limits`.
    pub fn trace(
        &self,
        limits: &MetadataLimits,
    ) -> Result<Option<serde_json::Map<String, Value>>, ProxyError> {
        match self.strict("trace")? {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(limit_metadata(o, limits))),
            Some(_) => Err(invalid("trace", "`trace` must be a JSON object")),
        }
    }

    /// The `models` list: at most [`MAX_FALLBACK_MODELS`] non-empty strings.
    pub fn models(&self) -> Result<Vec<String>, ProxyError> {
        let list = match self.strict("models")? {
            None => return Ok(Vec::new()),
            Some(Value::Array(list)) => list,
            Some(_) => {
                return Err(invalid(
                    "models",
                    "`models` must be an array of model names",
                ))
            }
        };
        if list.len() > MAX_FALLBACK_MODELS {
            return Err(invalid(
                "models",
                format!("`models` lists at most {MAX_FALLBACK_MODELS} models"),
            ));
        }
        list.into_iter()
            .map(|m| match m {
                Value::String(s) if !s.trim().is_empty() && s.len() <= 256 => Ok(s),
                _ => Err(invalid(
                    "models",
                    "`models` must be an array of model names (strings of 1 to 256 bytes)",
                )),
            })
            .collect()
    }

    /// A number field, leniently.
    pub fn num(&self, k: &str) -> Option<f64> {
        self.lenient(k).and_then(|v| v.as_f64())
    }

    /// An integer field, leniently.
    pub fn int(&self, k: &str) -> Option<i64> {
        self.lenient(k).and_then(|v| v.as_i64())
    }
}

/// A user id as read from any API's user field.
pub fn user_value(s: String) -> Result<Option<String>, ProxyError> {
    if s.chars().count() <= MAX_USER_LEN {
        Ok(Some(s))
    } else {
        Err(invalid(
            "user",
            format!("`user` must be at most {MAX_USER_LEN} characters"),
        ))
    }
}

/// How an API module builds its [`ClientRequest`].
#[derive(Debug)]
pub struct Parts<'a> {
    /// The body's fields.
    pub fields: Fields<'a>,
    /// `model`.
    pub model: String,
    /// `stream`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// The user.
    pub user: Option<String>,
    /// Sampling parameters.
    pub params: RequestParams,
    /// The prompt in chat `messages` form.
    pub input: Bytes,
    /// Fields removed before forwarding (besides `session_id` and `trace`, always removed).
    pub strip: &'static [&'static str],
    /// Whether streams ask for usage with `stream_options.include_usage`.
    pub request_usage: bool,
}

impl<'a> ClientRequest<'a> {
    /// Completes an API module's parse with the extensions every API shares (`session_id`
    /// and `trace`).
    pub fn new(parts: Parts<'a>, cx: &ParseContext<'_>) -> Result<Self, ProxyError> {
        let session_id = parts.fields.session_id(cx.session_header)?;
        let trace = parts.fields.trace(cx.limits)?;
        let models = parts.fields.models()?;
        let (tool_names, tool_definitions) = match parts.fields.get("tools") {
            Some(raw) if raw.get().starts_with('[') => {
                let names = serde_json::from_str::<Vec<Value>>(raw.get())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|t| {
                        t.get("function")
                            .and_then(|f| f.get("name"))
                            .or_else(|| t.get("name"))
                            .and_then(Value::as_str)
                            .map(|n| n.chars().take(128).collect::<String>())
                    })
                    .take(128)
                    .collect();
                (names, Some(Bytes::copy_from_slice(raw.get().as_bytes())))
            }
            _ => (Vec::new(), None),
        };
        Ok(Self {
            model: parts.model,
            stream: parts.stream,
            client_wants_usage: parts.client_wants_usage,
            user: parts.user,
            session_id,
            trace,
            params: parts.params,
            tool_names,
            tool_definitions,
            models,
            input: parts.input,
            strip: parts.strip,
            request_usage: parts.request_usage,
            fields: parts.fields,
        })
    }

    /// The raw value of a top-level field of the client's body.
    pub fn field(&self, k: &str) -> Option<&'a RawValue> {
        self.fields.get(k)
    }

    /// The body sent upstream: the client's fields in order, with `model` replaced,
    /// Beacon's extensions removed and, for streams of APIs that need it, usage requested.
    pub fn upstream_body(&self, upstream_model: &str) -> Bytes {
        let ask_usage = self.stream && self.request_usage;
        let size: usize = self
            .fields
            .0
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + upstream_model.len() + 48);
        out.push(b'{');
        let mut first = true;
        let mut sep = |out: &mut Vec<u8>| {
            if !first {
                out.push(b',');
            }
            first = false;
        };
        for (k, v) in &self.fields.0 {
            match k.as_ref() {
                "session_id" | "trace" | "models" => continue,
                "stream_options" if ask_usage => continue,
                k if self.strip.contains(&k) => continue,
                _ => {}
            }
            sep(&mut out);
            write_key(&mut out, k);
            if k == "model" {
                write_str(&mut out, upstream_model);
            } else {
                out.extend_from_slice(v.get().as_bytes());
            }
        }
        if ask_usage {
            // Keep the client's other stream options; force include_usage so every stream is
            // metered (the usage chunk is removed again if the client did not ask for it).
            let mut opts = self
                .fields
                .get("stream_options")
                .and_then(|v| serde_json::from_str::<serde_json::Map<String, Value>>(v.get()).ok())
                .unwrap_or_default();
            opts.insert("include_usage".into(), Value::Bool(true));
            sep(&mut out);
            write_key(&mut out, "stream_options");
            out.extend_from_slice(Value::Object(opts).to_string().as_bytes());
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// The call ids that a chat `messages` array's `role: tool` messages answer, in order (at
/// most [`MAX_TOOL_LINKS`], ids longer than [`MAX_TOOL_ID_BYTES`] left out). A prompt without
/// the key `"tool_call_id"` is not parsed (one vectorised search).
///
/// [`MAX_TOOL_LINKS`]: beacon_broadcast::record::MAX_TOOL_LINKS
/// [`MAX_TOOL_ID_BYTES`]: beacon_broadcast::record::MAX_TOOL_ID_BYTES
pub fn answered_tool_calls(messages: &[u8]) -> Vec<String> {
    use beacon_broadcast::record::{MAX_TOOL_ID_BYTES, MAX_TOOL_LINKS};
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow, default)]
        role: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        tool_call_id: Option<Cow<'a, str>>,
    }
    if memchr::memmem::find(messages, b"\"tool_call_id\"").is_none() {
        return Vec::new();
    }
    let Ok(list) = serde_json::from_slice::<Vec<Message<'_>>>(messages) else {
        return Vec::new();
    };
    list.into_iter()
        .filter(|m| m.role.as_deref() == Some("tool"))
        .filter_map(|m| m.tool_call_id)
        .filter(|id| !id.is_empty() && id.len() <= MAX_TOOL_ID_BYTES)
        .map(Cow::into_owned)
        .take(MAX_TOOL_LINKS)
        .collect()
}

/// The deepest nesting of arrays and objects in a JSON text (strings skipped), counted
/// without recursion, so any depth is measured safely.
pub fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Bounds a client's `trace` object by bytes before it is kept in a record (and copied into
/// every span of the completion): a value longer than `limits.value_bytes` (strings as text,
/// objects and arrays as their JSON) is cut, and `<key>.truncated = true` is added; once
/// keys and values reach `limits.total_bytes`, later values are cut to what is left; keys past
/// `limits.keys`, or whose name alone does not fit, are dropped and counted in
/// [`DROPPED_KEYS`].
pub fn limit_metadata(
    trace: serde_json::Map<String, Value>,
    limits: &MetadataLimits,
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let mut used = 0usize;
    let (mut kept, mut dropped) = (0usize, 0u64);
    for (key, value) in trace {
        if kept >= limits.keys || key.len() > limits.value_bytes {
            dropped += 1;
            continue;
        }
        let room = limits.total_bytes.saturating_sub(used + key.len());
        if room == 0 {
            dropped += 1;
            continue;
        }
        let max = limits.value_bytes.min(room);
        let (value, cut) = match value {
            Value::String(text) if text.len() > max => (Value::String(cut_str(&text, max)), true),
            v @ (Value::Array(_) | Value::Object(_)) => {
                let json = v.to_string();
                if json.len() > max {
                    (Value::String(cut_str(&json, max)), true)
                } else {
                    (v, false)
                }
            }
            v => (v, false),
        };
        used += key.len() + value_bytes(&value);
        kept += 1;
        if cut {
            out.insert(format!("{key}.truncated"), Value::Bool(true));
        }
        out.insert(key, value);
    }
    if dropped > 0 {
        out.insert(DROPPED_KEYS.into(), Value::from(dropped));
    }
    out
}

fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        other => other.to_string().len(),
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut_str(text: &str, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_key(out: &mut Vec<u8>, k: &str) {
    write_str(out, k);
    out.push(b':');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a chat request (the API whose parse exercises every shared reader).
    pub(crate) fn chat<'a>(
        body: &'a [u8],
        header: Option<&str>,
    ) -> Result<ClientRequest<'a>, ProxyError> {
        let limits = Box::leak(Box::new(MetadataLimits::default()));
        crate::apis::chat::parse(
            body,
            &ParseContext {
                session_header: header,
                limits,
            },
        )
    }

    fn parse(body: &str) -> Result<ClientRequest<'_>, ProxyError> {
        chat(body.as_bytes(), None)
    }

    fn param_of(body: &str) -> Option<&'static str> {
        match parse(body) {
            Err(ProxyError::InvalidField { param, .. }) => Some(param),
            _ => None,
        }
    }

    #[test]
    fn extensions_are_removed_and_model_rewritten() {
        let body = r#"{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi \"there\""}],"temperature":0.7,"user":"u1","session_id":"s1","trace":{"trace_name":"agent","env":"prod"},"seed":42}"#;
        let r = parse(body).unwrap();
        assert_eq!(r.model, "openai/gpt-4o");
        assert_eq!(r.user.as_deref(), Some("u1"));
        assert_eq!(r.session_id.as_deref(), Some("s1"));
        assert_eq!(r.trace.as_ref().unwrap()["trace_name"], "agent");
        assert_eq!(r.params.temperature, Some(0.7));
        assert_eq!(r.params.seed, Some(42));
        let up: Value = serde_json::from_slice(&r.upstream_body("gpt-4o")).unwrap();
        assert_eq!(up["model"], "gpt-4o");
        assert_eq!(up["user"], "u1");
        assert!(up.get("session_id").is_none() && up.get("trace").is_none());
        assert_eq!(up["messages"][0]["content"], "hi \"there\"");
        assert!(up.get("stream_options").is_none());
    }

    #[test]
    fn raw_values_are_forwarded_byte_for_byte() {
        let body = r#"{"model":"m","messages":[],"temperature":1.00000000000000000001,"logit_bias":{"50256":-100}}"#;
        let up = parse(body).unwrap().upstream_body("m");
        let s = std::str::from_utf8(&up).unwrap();
        assert!(s.contains("1.00000000000000000001"), "{s}");
    }

    #[test]
    fn streams_request_usage_and_keep_other_options() {
        let r = parse(r#"{"model":"m","messages":[],"stream":true}"#).unwrap();
        assert!(r.stream && !r.client_wants_usage);
        let up: Value = serde_json::from_slice(&r.upstream_body("m")).unwrap();
        assert_eq!(up["stream_options"]["include_usage"], true);
        let r = parse(r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true,"x":1}}"#).unwrap();
        assert!(r.client_wants_usage);
        let up: Value = serde_json::from_slice(&r.upstream_body("m")).unwrap();
        assert_eq!(
            up["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
        // Non-stream requests keep stream_options untouched.
        let r = parse(r#"{"model":"m","messages":[],"stream_options":{"include_usage":false}}"#)
            .unwrap();
        let up: Value = serde_json::from_slice(&r.upstream_body("m")).unwrap();
        assert_eq!(up["stream_options"]["include_usage"], false);
    }

    #[test]
    fn session_header_is_used_when_the_body_has_none() {
        let r = chat(br#"{"model":"m","messages":[]}"#, Some("hdr")).unwrap();
        assert_eq!(r.session_id.as_deref(), Some("hdr"));
        let r = chat(
            br#"{"model":"m","messages":[],"session_id":"body"}"#,
            Some("hdr"),
        )
        .unwrap();
        assert_eq!(r.session_id.as_deref(), Some("body"));
    }

    #[test]
    fn bad_inputs_name_the_field() {
        assert!(matches!(
            parse("{not json"),
            Err(ProxyError::InvalidJson(_))
        ));
        assert!(matches!(parse("[1,2]"), Err(ProxyError::InvalidJson(_))));
        assert!(matches!(parse(""), Err(ProxyError::InvalidJson(_))));
        assert!(matches!(
            parse(r#"{"model":"m","messages":[]} trailing"#),
            Err(ProxyError::InvalidJson(_))
        ));
        assert_eq!(param_of(r#"{"messages":[]}"#), Some("model"));
        assert_eq!(param_of(r#"{"model":5,"messages":[]}"#), Some("model"));
        assert_eq!(param_of(r#"{"model":"m"}"#), Some("messages"));
        assert_eq!(
            param_of(r#"{"model":"m","messages":"hi"}"#),
            Some("messages")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[],"stream":"yes"}"#),
            Some("stream")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[],"user":7}"#),
            Some("user")
        );
        let long_user = format!(
            r#"{{"model":"m","messages":[],"user":"{}"}}"#,
            "u".repeat(129)
        );
        assert_eq!(param_of(&long_user), Some("user"));
        assert_eq!(
            param_of(r#"{"model":"m","messages":[],"session_id":1}"#),
            Some("session_id")
        );
        let long = format!(
            r#"{{"model":"m","messages":[],"session_id":"{}"}}"#,
            "s".repeat(257)
        );
        assert_eq!(param_of(&long), Some("session_id"));
        assert_eq!(
            param_of(r#"{"model":"m","messages":[],"trace":"x"}"#),
            Some("trace")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[],"trace":[1]}"#),
            Some("trace")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[],"stream_options":1}"#),
            Some("stream_options")
        );
    }

    #[test]
    fn unreadable_extensions_are_rejected_not_dropped() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        let deep_obj = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        // Past serde_json's own recursion limit (128) and past Beacon's (32).
        for (field, value) in [
            ("trace", format!(r#"{{"x":{}}}"#, deep(200))),
            ("trace", format!(r#"{{"x":{}}}"#, deep_obj(40))),
            ("stream", deep(200)),
            ("user", deep(40)),
            ("session_id", deep(40)),
            ("stream_options", deep_obj(40)),
        ] {
            let body = format!(r#"{{"model":"m","messages":[],"{field}":{value}}}"#);
            assert_eq!(param_of(&body), Some(field), "{field} {}", &value[..20]);
        }
        // A lone surrogate cannot be read as text.
        for field in ["trace", "user", "session_id"] {
            let value = if field == "trace" {
                r#"{"k":"\ud800"}"#
            } else {
                r#""\udc00x""#
            };
            let body = format!(r#"{{"model":"m","messages":[],"{field}":{value}}}"#);
            assert_eq!(param_of(&body), Some(field), "{field}");
        }
        // Nesting up to the limit is fine.
        let ok = format!(
            r#"{{"model":"m","messages":[],"trace":{{"x":{}}}}}"#,
            deep(31)
        );
        assert!(parse(&ok).unwrap().trace.is_some());
    }

    #[test]
    fn nesting_depth_skips_strings() {
        assert_eq!(nesting_depth(br#"{"a":"[[[{{{","b":[1,[2]]}"#), 3);
        assert_eq!(nesting_depth(br#""\"[[""#), 0);
        assert_eq!(nesting_depth(b"[[[]]]"), 3);
    }

    #[test]
    fn metadata_is_bounded_by_bytes_and_keys() {
        let limits = MetadataLimits {
            value_bytes: 10,
            total_bytes: 40,
            keys: 4,
        };
        let trace: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"a":"0123456789abcdef","b":{"k":"0123456789"},"c":7,"d":"é0123456789"}"#,
        )
        .unwrap();
        let out = limit_metadata(trace, &limits);
        assert_eq!(out["a"], "0123456789");
        assert_eq!(out["a.truncated"], true);
        assert_eq!(
            out["b"], r#"{"k":"0123"#,
            "objects are cut as their JSON text"
        );
        assert_eq!(out["b.truncated"], true);
        assert_eq!(out["c"], 7);
        assert!(out.get("c.truncated").is_none());
        // 40 bytes in all: a(1+10) b(1+10) c(1+8) leaves 9, minus the key: 8 bytes of `d`,
        // cut at a character boundary.
        assert_eq!(out["d"], "é012345");
        assert_eq!(out["d.truncated"], true);
        let many: serde_json::Map<String, Value> =
            (0..10).map(|i| (format!("k{i}"), Value::from(i))).collect();
        let out = limit_metadata(many, &limits);
        assert_eq!(out[DROPPED_KEYS], 6);
        assert_eq!(out.len(), 5);
        // A 9.8 MB value is kept as its first `value_bytes`.
        let huge: serde_json::Map<String, Value> =
            [("blob".to_string(), Value::String("x".repeat(9_800_000)))]
                .into_iter()
                .collect();
        let out = limit_metadata(huge, &MetadataLimits::default());
        assert_eq!(
            out["blob"].as_str().unwrap().len(),
            MetadataLimits::default().value_bytes
        );
    }
}
