//! Token estimation with a real BPE tokenizer, for upstreams that report no usage.
//!
//! Counts follow OpenAI's chat accounting: each message costs its tokens plus a fixed
//! framing overhead, and the reply is primed with three tokens. Text beyond
//! [`MAX_TOKENIZED_BYTES`] is extrapolated from the bytes-per-token ratio of what was
//! tokenized, which bounds the CPU one request can take.

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// Most text tokenized per side of one completion.
pub const MAX_TOKENIZED_BYTES: usize = 1024 * 1024;

const TOKENS_PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

fn encoder(model: &str) -> &'static CoreBPE {
    // gpt-4o, gpt-4.1, gpt-5 and the o-series use o200k_base; older OpenAI models and most
    // other vendors are closer to cl100k_base.
    let m = model.rsplit('/').next().unwrap_or(model);
    let legacy = m.starts_with("gpt-3.5")
        || (m.starts_with("gpt-4") && !m.starts_with("gpt-4o") && !m.starts_with("gpt-4.1"));
    if legacy {
        tiktoken_rs::cl100k_base_singleton()
    } else {
        tiktoken_rs::o200k_base_singleton()
    }
}

/// Tokens in `text`, whose full length was `total_bytes` (≥ `text.len()` when truncated).
pub fn count_text(model: &str, text: &str, total_bytes: usize) -> u64 {
    if text.is_empty() {
        return 0;
    }
    let mut end = text.len().min(MAX_TOKENIZED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let counted = encoder(model).encode_ordinary(&text[..end]).len() as u64;
    let total_bytes = total_bytes.max(text.len());
    if end == total_bytes || end == 0 {
        counted
    } else {
        // Extrapolate at the same bytes-per-token ratio.
        (counted as f64 * total_bytes as f64 / end as f64).ceil() as u64
    }
}

/// Prompt tokens of a `messages` array (as the client sent it).
pub fn count_prompt(model: &str, messages: &Value) -> u64 {
    let mut text = String::new();
    let mut messages_n = 0u64;
    let mut total_bytes = 0usize;
    let mut push = |s: &str, text: &mut String| {
        total_bytes += s.len();
        if text.len() < MAX_TOKENIZED_BYTES {
            text.push_str(s);
            text.push('\n');
        }
    };
    for m in messages.as_array().into_iter().flatten() {
        messages_n += 1;
        if let Some(role) = m.get("role").and_then(Value::as_str) {
            push(role, &mut text);
        }
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            push(name, &mut text);
        }
        match m.get("content") {
            Some(Value::String(s)) => push(s, &mut text),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        push(t, &mut text);
                    }
                }
            }
            _ => {}
        }
        if let Some(calls) = m.get("tool_calls") {
            push(&calls.to_string(), &mut text);
        }
    }
    if messages_n == 0 {
        return 0;
    }
    count_text(model, &text, total_bytes.max(text.len()))
        + messages_n * TOKENS_PER_MESSAGE
        + REPLY_PRIMING
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_with_a_real_tokenizer() {
        // "hello world" is two tokens in both encodings.
        assert_eq!(count_text("gpt-4o", "hello world", 11), 2);
        assert_eq!(count_text("gpt-3.5-turbo", "hello world", 11), 2);
        assert_eq!(count_text("gpt-4o", "", 0), 0);
    }

    #[test]
    fn prompt_counts_include_message_framing() {
        let msgs = json!([{"role": "user", "content": "hello world"}]);
        let n = count_prompt("gpt-4o", &msgs);
        // role (1) + newline + text (2) + newline, + 3 per message + 3 priming
        assert!((8..=12).contains(&n), "{n}");
        let parts = json!([{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]);
        assert_eq!(count_prompt("gpt-4o", &parts), n);
        assert_eq!(count_prompt("gpt-4o", &json!([])), 0);
    }

    #[test]
    fn truncated_text_is_extrapolated() {
        let exact = count_text("gpt-4o", "hello world ", 12);
        let doubled = count_text("gpt-4o", "hello world ", 24);
        assert_eq!(doubled, exact * 2);
    }
}
