//! `webhook`: the records as a JSON array, POSTed to any URL, signed.
//!
//! The signature follows GitHub's webhook scheme (github/docs "Validating webhook
//! deliveries"): `X-Beacon-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, keyed
//! with the secret>`, so GitHub-style verifiers work unchanged. `X-Beacon-Delivery` (one id
//! per batch, the same on its retries) lets a receiver deduplicate; `X-Beacon-Timestamp`
//! (Unix seconds, when the batch was first sent) is informational: like GitHub's, the
//! signature covers the body only, so neither header can prove freshness — a receiver that
//! must refuse replays keeps the delivery ids it has seen. The body is uncompressed JSON,
//! privacy mode honoured (SPEC §4.4).

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use super::{
    err, Context, DestinationError, DestinationType, Dialect, Endpoint, Field, FieldKind, Fields,
    Target, Wire,
};
use crate::record::CompletionRecord;

/// The `webhook` type.
#[derive(Debug)]
pub struct Webhook;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-beacon-signature";
/// When the delivery was made (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-beacon-timestamp";
/// One id per delivery (the same on its retries).
pub const DELIVERY_HEADER: &str = "x-beacon-delivery";

const FIELDS: [Field; 2] = [
    Field::required(
        "url",
        "URL",
        FieldKind::SecretUrl,
        "Where the records are POSTed as a JSON array",
    ),
    Field::required(
        "secret",
        "Signing secret",
        FieldKind::Secret,
        "At least 16 characters; verify X-Beacon-Signature: sha256=<HMAC-SHA256 of the body>",
    ),
];

impl DestinationType for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn label(&self) -> &'static str {
        "Webhook (signed JSON)"
    }

    fn docs(&self) -> &'static str {
        "https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let url = f.url("url", None, cx.allow_private)?;
        let secret = f.required("secret")?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(err(
                "secret",
                format!("must be at least {MIN_SECRET_BYTES} characters"),
            ));
        }
        Ok(Target {
            endpoint: Endpoint::new(url, Vec::new()),
            wire: Wire::SignedJson(Arc::from(secret.as_bytes())),
            dialect: Dialect::GenAi,
            error_events: None,
        })
    }

    fn accepted(&self) -> String {
        "The webhook accepted a signed test delivery.".to_string()
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The headers of one delivery of `body`: its signature, the time and a new delivery id.
pub fn delivery_headers(secret: &[u8], body: &[u8]) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    [
        (SIGNATURE_HEADER, signature(secret, body)),
        (TIMESTAMP_HEADER, timestamp.to_string()),
        (DELIVERY_HEADER, hex::encode(rand::random::<[u8; 16]>())),
    ]
    .into_iter()
    .filter_map(|(k, v)| {
        Some((
            http::HeaderName::from_static(k),
            http::HeaderValue::try_from(v).ok()?,
        ))
    })
    .collect()
}

/// One record as the webhook sends it: the completion record (SPEC §3); `ids`, the trace
/// id and generation span id its spans have in the OTLP destinations (as `trace_id` and
/// `span_id`, hex), so a receiver can link to them; and, unless privacy mode, its prompt
/// and completion text.
pub fn record_json(
    record: &CompletionRecord,
    ids: Option<([u8; 16], [u8; 8])>,
    privacy_mode: bool,
) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
    if let (Some((trace_id, span_id)), Value::Object(m)) = (ids, &mut v) {
        m.insert("trace_id".into(), hex::encode(trace_id).into());
        m.insert("span_id".into(), hex::encode(span_id).into());
    }
    if let (false, Some(c), Value::Object(m)) = (privacy_mode, &record.content, &mut v) {
        let mut content = Map::new();
        let messages = serde_json::from_slice::<Value>(&c.input_messages).unwrap_or(Value::Null);
        content.insert("input_messages".into(), messages);
        content.insert("input_truncated".into(), c.input_truncated.into());
        content.insert("output_text".into(), c.output_text.clone().into());
        content.insert("output_truncated".into(), c.output_truncated.into());
        if !c.output_tool_calls.is_empty() {
            let calls: Vec<Value> = c
                .output_tool_calls
                .iter()
                .map(|t| serde_json::json!({"id": t.id, "name": t.name, "arguments": t.arguments}))
                .collect();
            content.insert("output_tool_calls".into(), calls.into());
        }
        m.insert("content".into(), Value::Object(content));
    }
    v
}

/// The body of one delivery: `records` (each with its span ids, [`record_json`]) as a JSON
/// array.
pub fn body<'a>(
    records: impl IntoIterator<Item = (&'a CompletionRecord, Option<([u8; 16], [u8; 8])>)>,
    privacy_mode: bool,
) -> Vec<u8> {
    let items: Vec<Value> = records
        .into_iter()
        .map(|(r, ids)| record_json(r, ids, privacy_mode))
        .collect();
    serde_json::to_vec(&items).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::tests::spec;
    use serde_json::json;

    #[test]
    fn signature_matches_githubs_test_vector() {
        // github/docs, "Validating webhook deliveries": secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn needs_a_url_and_a_long_enough_secret() {
        let s = spec(
            "webhook",
            json!({"url": "https://hooks.example.com/beacon", "secret": "0123456789abcdef"}),
        )
        .unwrap();
        assert!(matches!(s.wire, Wire::SignedJson(ref k) if &k[..] == b"0123456789abcdef"));
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
        let e = spec(
            "webhook",
            json!({"url": "https://hooks.example.com", "secret": "short"}),
        )
        .unwrap_err();
        assert_eq!(e.field, "secret");
        let e = spec("webhook", json!({"secret": "0123456789abcdef"})).unwrap_err();
        assert_eq!(e.field, "url");
    }

    #[test]
    fn a_delivery_carries_each_records_span_ids_and_content_unless_private() {
        let r = crate::span::tests::record();
        let ids = crate::span::record_ids(&r, [7; 32]);
        assert_eq!(
            ids,
            crate::span::record_ids(&r, [7; 32]),
            "the record's own ids"
        );
        for privacy_mode in [false, true] {
            let body = body([(&r, Some(ids)), (&r, None)], privacy_mode);
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v[0]["trace_id"], hex::encode(ids.0));
            assert_eq!(v[0]["span_id"], hex::encode(ids.1));
            assert_eq!(v[0]["request_id"], r.request_id.as_str());
            assert!(v[1].get("trace_id").is_none());
            assert_eq!(v[0].get("content").is_some(), !privacy_mode, "{v}");
            assert_eq!(
                String::from_utf8_lossy(&body).contains("SECRET-PROMPT"),
                !privacy_mode
            );
        }
    }
}
