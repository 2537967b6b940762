//! An Anthropic request's `system` and `messages` as chat `messages` (system first), for
//! content export and token estimation: text blocks stay text, images become images (a
//! URL source keeps its URL; base64 data is never kept), documents files; an assistant's
//! `tool_use` blocks become tool calls and a user's `tool_result` blocks tool messages;
//! thinking blocks are left out.

use bytes::Bytes;
use serde_json::{json, Value};

/// See the module docs.
pub fn as_messages(system: Option<&Value>, messages: &Value) -> Bytes {
    let mut out: Vec<Value> = Vec::new();
    match system {
        Some(Value::String(text)) => out.push(json!({"role": "system", "content": text})),
        Some(Value::Array(blocks)) => {
            let parts: Vec<Value> = blocks.iter().filter_map(part).collect();
            out.push(json!({"role": "system", "content": parts}));
        }
        _ => {}
    }
    for m in messages.as_array().into_iter().flatten() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let blocks = match m.get("content") {
            Some(Value::String(text)) => {
                out.push(json!({"role": role, "content": text}));
                continue;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => continue,
        };
        let mut parts = Vec::new();
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for b in blocks {
            let s = |k: &str| b.get(k).and_then(Value::as_str);
            match s("type") {
                Some("tool_use") => calls.push(json!({
                    "id": s("id"),
                    "type": "function",
                    "function": {
                        "name": s("name"),
                        "arguments": b.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                    },
                })),
                Some("tool_result") => {
                    let content = match b.get("content") {
                        Some(Value::String(text)) => Value::String(text.clone()),
                        Some(Value::Array(inner)) => {
                            Value::Array(inner.iter().filter_map(part).collect())
                        }
                        _ => Value::Null,
                    };
                    results.push(
                        json!({"role": "tool", "tool_call_id": s("tool_use_id"), "content": content}),
                    );
                }
                _ => parts.extend(part(b)),
            }
        }
        // Tool results answer the previous turn's calls: they come first.
        out.extend(results);
        if !parts.is_empty() || !calls.is_empty() {
            let mut msg = json!({"role": role, "content": parts});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            out.push(msg);
        }
    }
    Bytes::from(Value::Array(out).to_string())
}

/// One content block as a chat content part; `None` for blocks with no content to show.
fn part(b: &Value) -> Option<Value> {
    let s = |k: &str| b.get(k).and_then(Value::as_str);
    Some(match s("type") {
        Some("text") => json!({"type": "text", "text": s("text").unwrap_or_default()}),
        Some("image") => {
            let source = b.get("source");
            let url = source
                .filter(|src| src.get("type").and_then(Value::as_str) == Some("url"))
                .and_then(|src| src.get("url"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            json!({"type": "image_url", "image_url": {"url": url}})
        }
        Some("thinking" | "redacted_thinking") => return None,
        _ => json!({"type": "file"}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_blocks_tool_use_and_tool_results_become_chat_messages() {
        let system = json!([{"type": "text", "text": "Be brief."}]);
        let messages = json!([
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
        ]);
        let v: Value = serde_json::from_slice(&as_messages(Some(&system), &messages)).unwrap();
        assert_eq!(v[0]["role"], "system");
        assert_eq!(v[0]["content"][0]["text"], "Be brief.");
        assert_eq!(
            v[1],
            json!({"role": "user", "content": "Weather in Paris?"})
        );
        assert_eq!(
            v[2]["content"],
            json!([{"type": "text", "text": "Let me check."}])
        );
        assert_eq!(
            v[2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            v[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"})
        );
        // Base64 image data is not kept.
        assert_eq!(v[4]["content"][0]["image_url"]["url"], "");
        assert!(!String::from_utf8_lossy(&as_messages(Some(&system), &messages)).contains("AAAA"));
    }
}
