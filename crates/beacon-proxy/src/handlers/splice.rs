//! Adds Beacon's cost to a non-streaming completion without re-serializing it: the
//! upstream's bytes go to the client unchanged (key order, number formats, unknown fields),
//! with `"cost"` inserted into `usage` (or the upstream's own `cost` replaced, when an
//! explicit `[pricing]` entry charged otherwise) — or, when the upstream reported no usage,
//! Beacon's estimate appended as `usage` with `"estimated": true`. An unknown cost (no price
//! for the model) adds nothing: no cost is shown rather than 0.

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Spans<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

/// Where `inner` lies within `outer` (both from the same buffer).
fn offset(outer: &str, inner: &str) -> Option<usize> {
    (inner.as_ptr() as usize)
        .checked_sub(outer.as_ptr() as usize)
        .filter(|o| o + inner.len() <= outer.len())
}

/// `body` with `"cost": cost` in its `usage` object, or the JSON object `estimate()` returns
/// as `usage` when it has none. `None` when the body is not a JSON object this can edit (the
/// caller then falls back to re-serializing).
pub fn add_cost(
    body: &str,
    cost: Option<f64>,
    estimate: impl FnOnce() -> String,
) -> Option<String> {
    let spans: Spans<'_> = serde_json::from_str(body).ok()?;
    let parsed = match spans.usage {
        Some(u) if u.get().trim_start().starts_with('{') => {
            Some(serde_json::from_str::<serde_json::Value>(u.get()).ok()?)
        }
        _ => None,
    };
    add_cost_at(body, spans.usage, parsed.as_ref(), cost, estimate)
}

/// [`add_cost`] for a body already read: `usage` is its `usage` value as written (borrowed
/// from `body`; `None` when absent) and `parsed` that value parsed, when it is an object.
pub fn add_cost_at(
    body: &str,
    usage: Option<&RawValue>,
    parsed: Option<&serde_json::Value>,
    cost: Option<f64>,
    estimate: impl FnOnce() -> String,
) -> Option<String> {
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let mut out = String::with_capacity(body.len() + 128);
    match usage.map(RawValue::get) {
        Some(usage) if usage.trim_start().starts_with('{') => {
            let start = offset(body, usage)?;
            let end = start + usage.trim_end().len();
            let parsed = parsed?.as_object()?;
            let Some(cost) = cost else {
                // No price: nothing to add (an upstream's own figure, if any, stays).
                return Some(body.to_string());
            };
            if let Some(theirs) = parsed.get("cost") {
                if theirs.as_f64() == Some(cost) {
                    // The upstream's own cost, which is the one Beacon accounted: keep it.
                    return Some(body.to_string());
                }
                // An explicit price charged otherwise: the client sees what was charged.
                let fields: std::collections::HashMap<&str, &RawValue> =
                    serde_json::from_str(usage).ok()?;
                let raw = fields.get("cost")?.get();
                let at = offset(body, raw)?;
                out.push_str(&body[..at]);
                out.push_str(&serde_json::to_string(&cost).ok()?);
                out.push_str(&body[at + raw.len()..]);
                return Some(out);
            }
            let cost = serde_json::to_string(&cost).ok()?;
            let close = start + usage[..end - start].rfind('}')?;
            out.push_str(&body[..close]);
            if !parsed.is_empty() {
                out.push(',');
            }
            out.push_str("\"cost\":");
            out.push_str(&cost);
            out.push_str(&body[close..]);
        }
        Some(null) if null.trim() == "null" => {
            let start = offset(body, null)?;
            out.push_str(&body[..start]);
            out.push_str(&estimate());
            out.push_str(&body[start + null.len()..]);
        }
        Some(_) => return None,
        None => {
            let close = body.trim_end().rfind('}')?;
            let before = body[..close].trim_end();
            out.push_str(&body[..close]);
            if !before.ends_with('{') {
                out.push(',');
            }
            out.push_str("\"usage\":");
            out.push_str(&estimate());
            out.push_str(&body[close..]);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const EST: &str =
        r#"{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"cost":0.5,"estimated":true}"#;

    fn check(body: &str) -> Value {
        let out = add_cost(body, Some(0.25), || EST.to_string()).unwrap();
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    fn cost_goes_into_usage_and_everything_else_is_kept_byte_for_byte() {
        let body =
            r#"{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":2},"z":1e-7,"a":[1]}"#;
        let out = add_cost(body, Some(0.25), || EST.to_string()).unwrap();
        assert_eq!(
            out,
            r#"{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":2,"cost":0.25},"z":1e-7,"a":[1]}"#
        );
        assert_eq!(check(r#"{"usage": { } }"#)["usage"], json!({"cost": 0.25}));
        assert_eq!(check("{\"usage\" : {\"a\":1}\n}\n")["usage"]["cost"], 0.25);
    }

    #[test]
    fn an_upstream_cost_is_kept_unless_an_explicit_price_charged_otherwise() {
        let body = r#"{"usage":{"prompt_tokens":1,"cost":0.9},"x":1}"#;
        assert_eq!(add_cost(body, Some(0.9), || EST.to_string()).unwrap(), body);
        assert_eq!(
            add_cost(body, Some(0.25), || EST.to_string()).unwrap(),
            r#"{"usage":{"prompt_tokens":1,"cost":0.25},"x":1}"#
        );
    }

    #[test]
    fn an_unknown_cost_adds_nothing() {
        let body = r#"{"id":"x","usage":{"prompt_tokens":1}}"#;
        assert_eq!(add_cost(body, None, || EST.to_string()).unwrap(), body);
    }

    #[test]
    fn missing_or_null_usage_gets_the_estimate() {
        assert_eq!(check(r#"{"id":"x"}"#)["usage"]["estimated"], true);
        assert_eq!(
            check(r#"{"id":"x","usage":null}"#)["usage"]["total_tokens"],
            5
        );
        assert_eq!(check("{}")["usage"]["cost"], 0.5);
        assert_eq!(check("{ \"a\": {\"b\": 1} }")["a"]["b"], 1);
    }

    #[test]
    fn what_it_cannot_edit_is_refused() {
        assert!(add_cost(r#"{"usage":[1]}"#, Some(0.1), || EST.to_string()).is_none());
        assert!(add_cost("[1]", Some(0.1), || EST.to_string()).is_none());
        assert!(add_cost("not json", Some(0.1), || EST.to_string()).is_none());
    }
}
