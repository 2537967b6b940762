//! Prompt and completion text in OpenTelemetry GenAI form: `gen_ai.system_instructions`,
//! `gen_ai.input.messages` and `gen_ai.output.messages`, as JSON strings. Binary parts and
//! data URLs are replaced by placeholders so no payload carries images or audio.

use serde_json::{json, Map, Value};

/// Placeholder for an inline image.
pub const IMAGE_PLACEHOLDER: &str = "[image data omitted]";
/// Placeholder for inline audio or files.
pub const BINARY_PLACEHOLDER: &str = "[binary data omitted]";

/// `(system_instructions, input_messages)` from the request's raw `messages` array.
pub fn input(messages_json: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(Value::Array(messages)) = serde_json::from_slice::<Value>(messages_json) else {
        return (None, None);
    };
    let mut system = Vec::new();
    let mut input = Vec::new();
    for m in &messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let mut parts = content_parts(m.get("content"));
        if role == "system" || role == "developer" {
            system.extend(parts);
            continue;
        }
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                parts.push(json!({
                    "type": "tool_call",
                    "id": c.get("id"),
                    "name": c.pointer("/function/name"),
                    "arguments": c.pointer("/function/arguments"),
                }));
            }
        }
        if role == "tool" {
            let response: Vec<Value> = parts
                .drain(..)
                .map(|p| p.get("content").cloned().unwrap_or(p))
                .collect();
            parts.push(json!({"type": "tool_call_response", "id": m.get("tool_call_id"), "response": response}));
        }
        let mut msg = Map::new();
        msg.insert("role".into(), json!(role));
        msg.insert("parts".into(), Value::Array(parts));
        if let Some(name) = m.get("name") {
            msg.insert("name".into(), name.clone());
        }
        input.push(Value::Object(msg));
    }
    let system = (!system.is_empty()).then(|| Value::Array(system).to_string());
    let input = (!input.is_empty()).then(|| Value::Array(input).to_string());
    (system, input)
}

/// `gen_ai.output.messages` for the first choice.
pub fn output(text: &str, finish_reason: Option<&str>) -> String {
    json!([{
        "role": "assistant",
        "parts": [{"type": "text", "content": text}],
        "finish_reason": finish_reason.unwrap_or(""),
    }])
    .to_string()
}

fn content_parts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![json!({"type": "text", "content": s})],
        Some(Value::Array(parts)) => parts.iter().map(part).collect(),
        _ => Vec::new(),
    }
}

fn part(p: &Value) -> Value {
    match p.get("type").and_then(Value::as_str) {
        Some("text") => {
            json!({"type": "text", "content": p.get("text").cloned().unwrap_or(Value::Null)})
        }
        Some("image_url") => {
            let url = p
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if url.starts_with("data:") || url.is_empty() {
                json!({"type": "image", "content": IMAGE_PLACEHOLDER})
            } else {
                json!({"type": "uri", "modality": "image", "uri": url})
            }
        }
        Some("input_audio") => json!({"type": "audio", "content": BINARY_PLACEHOLDER}),
        Some("file") => json!({"type": "file", "content": BINARY_PLACEHOLDER}),
        Some(other) => json!({"type": other, "content": BINARY_PLACEHOLDER}),
        None => json!({"type": "text", "content": p.to_string()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_system_and_replaces_binary_parts() {
        let msgs = json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}
        ]);
        let (system, input) = input(msgs.to_string().as_bytes());
        let system: Value = serde_json::from_str(&system.unwrap()).unwrap();
        assert_eq!(system, json!([{"type": "text", "content": "Be brief."}]));
        let input = input.unwrap();
        assert!(
            !input.contains("iVBORw0KGgo") && !input.contains("UklGRg"),
            "{input}"
        );
        let v: Value = serde_json::from_str(&input).unwrap();
        assert_eq!(v[0]["parts"][1]["content"], IMAGE_PLACEHOLDER);
        assert_eq!(v[0]["parts"][2]["uri"], "https://example.com/cat.png");
        assert_eq!(v[1]["parts"][0]["type"], "tool_call");
        assert_eq!(v[2]["parts"][0]["type"], "tool_call_response");
        assert_eq!(v[2]["parts"][0]["response"], json!(["42"]));
    }

    #[test]
    fn output_messages() {
        let v: Value = serde_json::from_str(&output("Hi", Some("stop"))).unwrap();
        assert_eq!(v[0]["parts"][0]["content"], "Hi");
        assert_eq!(v[0]["finish_reason"], "stop");
        assert_eq!(input(b"not json"), (None, None));
    }
}
