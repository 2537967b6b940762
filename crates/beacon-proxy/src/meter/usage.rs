//! Reading token usage out of OpenAI-compatible responses and stream chunks.
//!
//! Providers differ in the details: OpenAI reports cached tokens in
//! `prompt_tokens_details.cached_tokens` and reasoning in
//! `completion_tokens_details.reasoning_tokens`; OpenRouter adds `usage.cost` (USD) and
//! `prompt_tokens_details.cache_write_tokens`; Anthropic-compatible servers use
//! `cache_creation_input_tokens` / `cache_read_input_tokens`.

use beacon_broadcast::record::TokenUsage;
use rust_decimal::Decimal;
use serde_json::Value;

/// Usage as reported by an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportedUsage {
    /// Token counts (`estimated` is false).
    pub tokens: TokenUsage,
    /// The upstream's own cost in USD, when it reports one.
    pub cost: Option<Decimal>,
}

/// Parses a `usage` object; `None` when it is absent, null or has no token counts.
pub fn parse_usage(usage: &Value) -> Option<ReportedUsage> {
    let obj = usage.as_object()?;
    let n = |v: Option<&Value>| v.and_then(as_count);
    let prompt = n(obj.get("prompt_tokens")).or_else(|| n(obj.get("input_tokens")));
    let completion = n(obj.get("completion_tokens")).or_else(|| n(obj.get("output_tokens")));
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    let prompt = prompt.unwrap_or(0);
    let completion = completion.unwrap_or(0);
    let details = obj
        .get("prompt_tokens_details")
        .or_else(|| obj.get("input_tokens_details"));
    let cached = n(details.and_then(|d| d.get("cached_tokens")))
        .or_else(|| n(obj.get("cache_read_input_tokens")))
        .unwrap_or(0);
    let cache_write = n(details.and_then(|d| d.get("cache_write_tokens")))
        .or_else(|| n(details.and_then(|d| d.get("cache_creation_tokens"))))
        .or_else(|| n(obj.get("cache_creation_input_tokens")))
        .unwrap_or(0);
    let reasoning = n(obj
        .get("completion_tokens_details")
        .or_else(|| obj.get("output_tokens_details"))
        .and_then(|d| d.get("reasoning_tokens")))
    .unwrap_or(0);
    let total = n(obj.get("total_tokens")).unwrap_or(prompt + completion);
    let cost = obj.get("cost").and_then(|c| match c {
        Value::Number(num) => num.to_string().parse::<Decimal>().ok(),
        Value::String(s) => s.parse::<Decimal>().ok(),
        _ => None,
    });
    Some(ReportedUsage {
        tokens: TokenUsage {
            prompt_tokens: prompt,
            // Never let details exceed the total they are part of.
            cached_tokens: cached.min(prompt),
            cache_write_tokens: cache_write.min(prompt.saturating_sub(cached)),
            completion_tokens: completion,
            reasoning_tokens: reasoning.min(completion),
            total_tokens: total,
            estimated: false,
        },
        cost: cost.filter(|c| !c.is_sign_negative()),
    })
}

fn as_count(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_usage_with_details() {
        let u = parse_usage(&json!({
            "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 128}
        }))
        .unwrap();
        assert_eq!(u.tokens.prompt_tokens, 1200);
        assert_eq!(u.tokens.cached_tokens, 1024);
        assert_eq!(u.tokens.reasoning_tokens, 128);
        assert_eq!(u.tokens.total_tokens, 1500);
        assert_eq!(u.cost, None);
    }

    #[test]
    fn openrouter_cost_and_cache_writes() {
        let u = parse_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 50},
            "cost": 0.00123
        }))
        .unwrap();
        assert_eq!(u.tokens.cache_write_tokens, 50);
        assert_eq!(u.tokens.total_tokens, 110);
        assert_eq!(u.cost, Some("0.00123".parse().unwrap()));
    }

    #[test]
    fn anthropic_style_fields() {
        let u = parse_usage(&json!({
            "input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 4, "cache_creation_input_tokens": 3
        }))
        .unwrap();
        assert_eq!(
            (u.tokens.cached_tokens, u.tokens.cache_write_tokens),
            (4, 3)
        );
    }

    #[test]
    fn absent_or_null_usage() {
        assert_eq!(parse_usage(&Value::Null), None);
        assert_eq!(parse_usage(&json!({})), None);
        // Inconsistent details are clamped, not trusted.
        let u = parse_usage(&json!({"prompt_tokens": 5, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 50}}))
        .unwrap();
        assert_eq!(u.tokens.cached_tokens, 5);
    }
}
