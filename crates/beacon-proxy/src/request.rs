//! Where a chat request is parsed: the client's JSON body is split into top-level fields
//! whose values stay raw (never materialized as a DOM), Beacon's extensions are validated
//! and removed, and the upstream body is written back with the model rewritten.

use std::borrow::Cow;
use std::fmt;

use beacon_broadcast::record::RequestParams;
use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::error::ProxyError;

/// Longest `user` accepted.
pub const MAX_USER_LEN: usize = 128;
/// Longest `session_id` accepted.
pub const MAX_SESSION_ID_LEN: usize = 256;

/// A validated chat completion request.
#[derive(Debug)]
pub struct ChatRequest<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// `model` as the client sent it.
    pub model: String,
    /// `stream`.
    pub stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    pub client_wants_usage: bool,
    /// `user`.
    pub user: Option<String>,
    /// `session_id` from the body, else the `x-session-id` header.
    pub session_id: Option<String>,
    /// `trace`.
    pub trace: Option<serde_json::Map<String, Value>>,
    /// Sampling parameters, for the record.
    pub params: RequestParams,
    /// The raw `messages` array.
    pub messages: &'a RawValue,
}

/// Top-level fields in order, values raw. Later duplicates replace earlier ones.
struct RawFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFields<'de>;
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
                Ok(RawFields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> ProxyError {
    ProxyError::InvalidField {
        param,
        message: message.into(),
    }
}

impl<'a> ChatRequest<'a> {
    /// Parses and validates `body`. `session_header` is the `x-session-id` header.
    pub fn parse(body: &'a [u8], session_header: Option<&str>) -> Result<Self, ProxyError> {
        let trimmed = body.trim_ascii_start();
        if trimmed.first() != Some(&b'{') {
            return Err(ProxyError::InvalidJson(if trimmed.is_empty() {
                "the body is empty; expected a JSON object".into()
            } else {
                "expected a JSON object".into()
            }));
        }
        let RawFields(fields) = serde_json::from_slice::<RawFields<'a>>(body)
            .map_err(|e| ProxyError::InvalidJson(e.to_string()))?;
        let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
        let value = |k: &str| -> Option<Value> {
            get(k)
                .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
                .filter(|v| !v.is_null())
        };

        let model = match value("model") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            Some(Value::String(_)) | None => return Err(invalid("model", "`model` is required")),
            Some(_) => return Err(invalid("model", "`model` must be a string")),
        };
        let messages = match get("messages") {
            Some(raw) if raw.get().trim_start().starts_with('[') => raw,
            Some(_) => return Err(invalid("messages", "`messages` must be an array")),
            None => return Err(invalid("messages", "`messages` is required")),
        };
        let stream = match value("stream") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(invalid("stream", "`stream` must be a boolean")),
        };
        let client_wants_usage = match value("stream_options") {
            None => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid(
                        "stream_options",
                        "`stream_options.include_usage` must be a boolean",
                    ))
                }
            },
            Some(_) => {
                return Err(invalid(
                    "stream_options",
                    "`stream_options` must be an object",
                ))
            }
        };
        let user = match value("user") {
            None => None,
            Some(Value::String(s)) if s.chars().count() <= MAX_USER_LEN => Some(s),
            Some(Value::String(_)) => {
                return Err(invalid(
                    "user",
                    format!("`user` must be at most {MAX_USER_LEN} characters"),
                ))
            }
            Some(_) => return Err(invalid("user", "`user` must be a string")),
        };
        let session_id = match value("session_id") {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_SESSION_ID_LEN => {
                Some(s)
            }
            Some(Value::String(_)) => {
                return Err(invalid(
                    "session_id",
                    format!("`session_id` must be 1 to {MAX_SESSION_ID_LEN} characters"),
                ))
            }
            Some(_) => return Err(invalid("session_id", "`session_id` must be a string")),
            None => match session_header {
                Some(h) if !h.is_empty() && h.chars().count() <= MAX_SESSION_ID_LEN => {
                    Some(h.to_string())
                }
                Some(_) => {
                    return Err(invalid(
                        "session_id",
                        format!(
                            "the x-session-id header must be 1 to {MAX_SESSION_ID_LEN} characters"
                        ),
                    ))
                }
                None => None,
            },
        };
        let trace = match value("trace") {
            None => None,
            Some(Value::Object(o)) => Some(o),
            Some(_) => return Err(invalid("trace", "`trace` must be a JSON object")),
        };
        let num = |k: &str| value(k).and_then(|v| v.as_f64());
        let int = |k: &str| value(k).and_then(|v| v.as_i64());
        let params = RequestParams {
            temperature: num("temperature"),
            max_tokens: int("max_tokens").or_else(|| int("max_completion_tokens")),
            top_p: num("top_p"),
            seed: int("seed"),
            frequency_penalty: num("frequency_penalty"),
            presence_penalty: num("presence_penalty"),
        };
        Ok(Self {
            fields,
            model,
            stream,
            client_wants_usage,
            user,
            session_id,
            trace,
            params,
            messages,
        })
    }

    /// The body sent upstream: the client's fields in order, with `model` replaced,
    /// Beacon's extensions (`session_id`, `trace`) removed and, for streams, usage requested.
    pub fn upstream_body(&self, upstream_model: &str) -> Bytes {
        let size: usize = self
            .fields
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
        for (k, v) in &self.fields {
            match k.as_ref() {
                "session_id" | "trace" => continue,
                "stream_options" if self.stream => continue,
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
        if self.stream {
            // Keep the client's other stream options; force include_usage so every stream is
            // metered (the usage chunk is removed again if the client did not ask for it).
            let mut opts = self
                .fields
                .iter()
                .find(|(k, _)| k == "stream_options")
                .and_then(|(_, v)| {
                    serde_json::from_str::<serde_json::Map<String, Value>>(v.get()).ok()
                })
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

    fn parse(body: &str) -> Result<ChatRequest<'_>, ProxyError> {
        ChatRequest::parse(body.as_bytes(), None)
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
        let r = ChatRequest::parse(br#"{"model":"m","messages":[]}"#, Some("hdr")).unwrap();
        assert_eq!(r.session_id.as_deref(), Some("hdr"));
        let r = ChatRequest::parse(
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
}
