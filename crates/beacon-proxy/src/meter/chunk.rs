//! Typed views of the parts of a `chat.completion.chunk` the meter reads; everything else
//! in the chunk is skipped by the deserializer without being materialized.

use serde::Deserialize;

/// One streamed chunk.
#[derive(Debug, Default, Deserialize)]
pub struct ChunkView {
    /// `chatcmpl-…`.
    #[serde(default)]
    pub id: Option<String>,
    /// Served model.
    #[serde(default)]
    pub model: Option<String>,
    /// Choices in this chunk (empty in the final usage chunk).
    #[serde(default)]
    pub choices: Option<Vec<ChoiceView>>,
    /// Usage: `null` on ordinary chunks, an object on the usage chunk.
    #[serde(default)]
    pub usage: Option<serde_json::Value>,
    /// An error object some providers send mid-stream.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

impl ChunkView {
    /// True for the extra chunk `stream_options.include_usage` produces: usage and no choices.
    pub fn is_usage_only(&self) -> bool {
        self.usage.as_ref().is_some_and(|u| u.is_object())
            && self.choices.as_ref().is_none_or(|c| c.is_empty())
    }
}

/// One choice of a chunk.
#[derive(Debug, Default, Deserialize)]
pub struct ChoiceView {
    /// Choice index.
    #[serde(default)]
    pub index: u32,
    /// The increment.
    #[serde(default)]
    pub delta: Option<DeltaView>,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A choice's increment.
#[derive(Debug, Default, Deserialize)]
pub struct DeltaView {
    /// Text.
    #[serde(default)]
    pub content: Option<String>,
    /// Tool call increments.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A tool call increment.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDelta {
    /// Which tool call of the choice this piece belongs to.
    #[serde(default)]
    pub index: Option<u32>,
    /// Set on the call's first piece.
    #[serde(default)]
    pub id: Option<String>,
    /// The function part.
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

/// A function call increment.
#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta {
    /// Set on the call's first piece.
    #[serde(default)]
    pub name: Option<String>,
    /// Arguments text so far.
    #[serde(default)]
    pub arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openai_chunks() {
        let c: ChunkView = serde_json::from_str(r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#).unwrap();
        assert_eq!(
            c.choices.as_ref().unwrap()[0]
                .delta
                .as_ref()
                .unwrap()
                .content
                .as_deref(),
            Some("Hi")
        );
        assert!(!c.is_usage_only());
        let u: ChunkView = serde_json::from_str(r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#).unwrap();
        assert!(u.is_usage_only());
        let t: ChunkView = serde_json::from_str(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#).unwrap();
        assert!(t.choices.unwrap()[0]
            .delta
            .as_ref()
            .unwrap()
            .tool_calls
            .is_some());
    }
}
