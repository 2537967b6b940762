//! A Responses request's `instructions` and `input` as chat `messages` (system first), for
//! content export and token estimation: message items keep their role and parts
//! (`input_text`/`output_text` as text, `input_image` as an image, files as files);
//! `function_call` items become assistant tool calls and `function_call_output` items tool
//! messages; other items (reasoning, references) are left out.

use bytes::Bytes;
use serde_json::{json, Value};

/// See the module docs.
pub fn as_messages(instructions: Option<&Value>, input: Option<&Value>) -> Bytes {
    let mut out: Vec<Value> = Vec::new();
    if let Some(Value::String(text)) = instructions {
        out.push(json!({"role": "system", "content": text}));
    }
    match input {
        Some(Value::String(text)) => out.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(m) = item_as_message(item) {
                    out.push(m);
                }
            }
        }
        _ => {}
    }
    Bytes::from(Value::Array(out).to_string())
}

fn item_as_message(item: &Value) -> Option<Value> {
    let s = |k: &str| item.get(k).and_then(Value::as_str);
    match s("type") {
        None | Some("message") => {
            let role = s("role").unwrap_or("user");
            let content = match item.get("content") {
                Some(Value::String(text)) => Value::String(text.clone()),
                Some(Value::Array(parts)) => Value::Array(parts.iter().map(part).collect()),
                _ => Value::Null,
            };
            Some(json!({"role": role, "content": content}))
        }
        Some("function_call") => Some(json!({
            "role": "assistant",
            "tool_calls": [{
                "id": s("call_id"),
                "type": "function",
                "function": {"name": s("name"), "arguments": s("arguments")},
            }],
        })),
        Some("function_call_output") => {
            let output = match item.get("output") {
                Some(Value::String(text)) => Value::String(text.clone()),
                Some(other) => Value::String(other.to_string()),
                None => Value::Null,
            };
            Some(json!({"role": "tool", "tool_call_id": s("call_id"), "content": output}))
        }
        _ => None,
    }
}

fn part(p: &Value) -> Value {
    let s = |k: &str| p.get(k).and_then(Value::as_str);
    match s("type") {
        Some("input_text" | "output_text" | "text") => {
            json!({"type": "text", "text": s("text").unwrap_or_default()})
        }
        Some("refusal") => json!({"type": "text", "text": s("refusal").unwrap_or_default()}),
        Some("input_image") => json!({
            "type": "image_url",
            "image_url": {"url": s("image_url").unwrap_or_default()},
        }),
        Some("input_audio") => json!({"type": "input_audio"}),
        _ => json!({"type": "file"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_string_input_and_items_become_chat_messages() {
        let m = as_messages(Some(&json!("Be brief.")), Some(&json!("Hi")));
        let v: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(
            v,
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
        );
        let items = json!([
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                         {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
            {"type": "reasoning", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        ]);
        let v: Value = serde_json::from_slice(&as_messages(None, Some(&items))).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 3);
        assert_eq!(
            v[0]["content"][0],
            json!({"type": "text", "text": "weather?"})
        );
        assert_eq!(v[0]["content"][1]["type"], "image_url");
        assert_eq!(v[1]["tool_calls"][0]["function"]["name"], "get_weather");
        assert_eq!(
            v[2],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"})
        );
    }
}
