//! Typed views of the parts of a `chat.completion.chunk` and of a `chat.completion` (and of
//! the legacy `text_completion`, whose choices carry `text`) the meter reads; everything
//! else is skipped by the deserializer without being materialized.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

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
    /// True for the extra chunk `stream_options.include_usage` produces, recognised by what
    /// it carries (SPEC §2.3): usage, and no choice with content, a tool call, a role, a
    /// refusal, reasoning or a finish reason. OpenAI and vLLM send `"choices":[]`; LiteLLM
    /// sends `"choices":[{"index":0,"delta":{}}]`.
    pub fn is_usage_only(&self) -> bool {
        self.usage.as_ref().is_some_and(|u| u.is_object())
            && self.choices.iter().flatten().all(|c| {
                c.finish_reason.is_none()
                    && c.delta.as_ref().is_none_or(DeltaView::is_empty)
                    && c.text.as_deref().is_none_or(str::is_empty)
            })
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
    /// The increment of a legacy completion (`/v1/completions`).
    #[serde(default)]
    pub text: Option<String>,
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
    /// `assistant` on a choice's first chunk.
    #[serde(default)]
    pub role: Option<serde::de::IgnoredAny>,
    /// A refusal's text.
    #[serde(default)]
    pub refusal: Option<serde::de::IgnoredAny>,
    /// Reasoning text, as DeepSeek and vLLM name it.
    #[serde(default)]
    pub reasoning_content: Option<serde::de::IgnoredAny>,
    /// Reasoning text, as OpenRouter names it.
    #[serde(default)]
    pub reasoning: Option<serde::de::IgnoredAny>,
}

impl DeltaView {
    /// True when the increment carries nothing a client would read.
    pub fn is_empty(&self) -> bool {
        self.content.as_deref().is_none_or(str::is_empty)
            && self.tool_calls.as_ref().is_none_or(Vec::is_empty)
            && self.role.is_none()
            && self.refusal.is_none()
            && self.reasoning_content.is_none()
            && self.reasoning.is_none()
    }
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

/// A whole non-streaming `chat.completion`, borrowed from the response body: one pass reads
/// what the meter needs and where `usage` lies (for the cost splice). A body whose fields
/// have unexpected types does not fit this view; the handler then falls back to a generic
/// [`serde_json::Value`].
#[derive(Debug, Default, Deserialize)]
pub struct CompletionView<'a> {
    /// `chatcmpl-…`.
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    /// Served model.
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    /// The choices.
    #[serde(default, borrow)]
    pub choices: Option<Vec<CompletionChoice<'a>>>,
    /// The `usage` value as written, `null` included (absent: `None`).
    #[serde(default, borrow, deserialize_with = "raw_including_null")]
    pub usage: Option<&'a RawValue>,
}

fn raw_including_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    crate::apis::raw_including_null(d)
}

/// One choice of a completion.
#[derive(Debug, Default, Deserialize)]
pub struct CompletionChoice<'a> {
    /// Choice index.
    #[serde(default)]
    pub index: Option<u32>,
    /// The assistant message.
    #[serde(default, borrow)]
    pub message: Option<MessageView<'a>>,
    /// The text of a legacy completion (`/v1/completions`).
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    /// Why generation stopped.
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// The assistant message of a choice.
#[derive(Debug, Default, Deserialize)]
pub struct MessageView<'a> {
    /// Text.
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    /// Tool calls.
    #[serde(default, borrow)]
    pub tool_calls: Option<Vec<ToolCallView<'a>>>,
}

/// A tool call of the assistant message.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallView<'a> {
    /// Call id.
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    /// The function called.
    #[serde(default, borrow)]
    pub function: Option<FunctionView<'a>>,
}

/// The function of a tool call.
#[derive(Debug, Default, Deserialize)]
pub struct FunctionView<'a> {
    /// Function name.
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    /// Arguments (JSON text).
    #[serde(default, borrow)]
    pub arguments: Option<Cow<'a, str>>,
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

    #[test]
    fn reads_completions_in_one_pass() {
        let body = r#"{"id":"chatcmpl-9","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"a \"quoted\" word","tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3}}"#;
        let v: CompletionView<'_> = serde_json::from_str(body).unwrap();
        assert_eq!(v.id.as_deref(), Some("chatcmpl-9"));
        let c = &v.choices.as_ref().unwrap()[0];
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        let m = c.message.as_ref().unwrap();
        assert_eq!(m.content.as_deref(), Some("a \"quoted\" word"));
        let call = &m.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.as_ref().unwrap().name.as_deref(), Some("f"));
        assert_eq!(v.usage.unwrap().get(), r#"{"prompt_tokens":3}"#);
        // `null` usage is kept as written (the splice replaces it); absent is None.
        let n: CompletionView<'_> = serde_json::from_str(r#"{"usage":null}"#).unwrap();
        assert_eq!(n.usage.unwrap().get(), "null");
        let a: CompletionView<'_> = serde_json::from_str(r#"{"choices":[]}"#).unwrap();
        assert!(a.usage.is_none());
        // Unexpected types do not fit the view (the handler falls back to a Value).
        assert!(serde_json::from_str::<CompletionView<'_>>(
            r#"{"choices":[{"message":{"content":[{"type":"text"}]}}]}"#
        )
        .is_err());
    }

    fn chunk(json: &str) -> ChunkView {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_usage_chunk_is_recognised_by_what_it_carries() {
        let usage = r#""usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}"#;
        // OpenAI and vLLM.
        assert!(chunk(&format!(r#"{{"choices":[],{usage}}}"#)).is_usage_only());
        // LiteLLM: one choice with an empty delta.
        assert!(chunk(&format!(
            r#"{{"choices":[{{"index":0,"delta":{{}}}}],{usage}}}"#
        ))
        .is_usage_only());
        assert!(chunk(&format!(
            r#"{{"choices":[{{"index":0,"delta":{{"content":"","refusal":null}},"finish_reason":null}}],{usage}}}"#
        ))
        .is_usage_only());
        // Usage riding on a chunk that carries something is not removable.
        for carries in [
            r#"{"index":0,"delta":{"content":"hi"}}"#,
            r#"{"index":0,"delta":{},"finish_reason":"stop"}"#,
            r#"{"index":0,"delta":{"role":"assistant"}}"#,
            r#"{"index":0,"delta":{"reasoning_content":"think"}}"#,
            r#"{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c"}]}}"#,
        ] {
            assert!(
                !chunk(&format!(r#"{{"choices":[{carries}],{usage}}}"#)).is_usage_only(),
                "{carries}"
            );
        }
        assert!(!chunk(r#"{"choices":[],"usage":null}"#).is_usage_only());
    }
}
