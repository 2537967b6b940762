//! Failed completions as Sentry error events (SPEC §4.3): an upstream error, timeout,
//! unreachable provider or mid-stream failure becomes an `event` in a Sentry envelope, sent
//! to the DSN's envelope endpoint next to the spans, so outages show in the tenant's Issues
//! and alerts, linked to the trace and the generation span. Client cancels and the client's
//! own 4xx are not failures of the provider and send nothing. Never prompt or completion
//! text: the exception's value is the upstream's message, scrubbed of the destination's
//! secrets.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::record::{CompletionRecord, Outcome};

/// The exception type of a failed completion, or `None` when it is no provider failure.
pub fn exception_type(record: &CompletionRecord) -> Option<&'static str> {
    match &record.outcome {
        Outcome::Timeout => Some("UpstreamTimeout"),
        Outcome::UpstreamError {
            status, error_type, ..
        } => match status {
            // The client's own mistakes (a bad request, a wrong key) are not outages.
            Some(s) if (400..500).contains(s) && !matches!(s, 408 | 429) => None,
            None => Some("ProviderUnreachable"),
            Some(s) if (200..300).contains(s) => {
                // A 2xx whose stream broke (or answered nothing usable).
                let _ = error_type;
                Some("StreamInterrupted")
            }
            Some(_) => Some("UpstreamError"),
        },
        // A limit doing its job is not an incident.
        Outcome::Ok | Outcome::ClientCancelled | Outcome::Shutdown | Outcome::Limited { .. } => {
            None
        }
    }
}

/// `[provider, served-or-requested model, type, status or "none"]`.
pub fn fingerprint(record: &CompletionRecord, kind: &str) -> [String; 4] {
    let status = match &record.outcome {
        Outcome::UpstreamError {
            status: Some(s), ..
        } => s.to_string(),
        _ => "none".to_string(),
    };
    [
        record.provider.clone(),
        record
            .served_model
            .clone()
            .unwrap_or_else(|| record.requested_model.clone()),
        kind.to_string(),
        status,
    ]
}

/// The envelope (header, item header, event; newline-separated) for `record`'s failure,
/// linked to the generation span `span_id` of trace `trace_id`.
pub fn envelope(
    record: &CompletionRecord,
    kind: &str,
    trace_id: &[u8; 16],
    span_id: &[u8; 8],
    scrub: &dyn Fn(&str) -> String,
) -> Vec<u8> {
    let event_id = uuid_hex();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let message = match &record.outcome {
        Outcome::UpstreamError { message, .. } => scrub(message),
        Outcome::Timeout => "The upstream provider did not answer in time.".to_string(),
        _ => String::new(),
    };
    let status = match &record.outcome {
        Outcome::UpstreamError {
            status: Some(s), ..
        } => Value::from(s.to_string()),
        _ => Value::from("none"),
    };
    let model = record
        .served_model
        .clone()
        .unwrap_or_else(|| record.requested_model.clone());
    let trace_str = |key: &str| {
        record
            .trace
            .as_ref()
            .and_then(|t| t.get(key))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let mut event = json!({
        "event_id": event_id,
        "timestamp": now,
        "platform": "other",
        "level": "error",
        "logger": "beacon",
        "exception": {"values": [{"type": kind, "value": message}]},
        "fingerprint": fingerprint(record, kind),
        "tags": {
            "provider": record.provider,
            "model": model,
            "http.status_code": status,
            "beacon.tenant": record.tenant_id,
            "beacon.request_id": record.request_id,
        },
        "contexts": {"trace": {
            "trace_id": hex::encode(trace_id),
            "span_id": hex::encode(span_id),
            "op": "gen_ai.chat",
        }},
    });
    if let Some(env) = trace_str("environment") {
        event["environment"] = Value::from(env);
    }
    if let Some(release) = trace_str("release") {
        event["release"] = Value::from(release);
    }
    if let Some(user) = &record.user {
        event["user"] = json!({"id": user});
    }
    let body = event.to_string();
    let mut out = Vec::with_capacity(body.len() + 128);
    out.extend_from_slice(json!({"event_id": event_id}).to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(
        json!({"type": "event", "length": body.len(), "content_type": "application/json"})
            .to_string()
            .as_bytes(),
    );
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
    out
}

fn uuid_hex() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Most fingerprints remembered per destination (older windows are forgotten first).
const MAX_FINGERPRINTS: usize = 10_000;

/// At most `per_minute` events per fingerprint per minute, per destination.
#[derive(Debug)]
pub struct Dedupe {
    per_minute: u32,
    seen: HashMap<[String; 4], (Instant, u32)>,
}

impl Dedupe {
    /// A limiter allowing `per_minute` events per fingerprint.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            seen: HashMap::new(),
        }
    }

    /// Whether an event with `fingerprint` may be sent at `now` (and counts it).
    pub fn allow(&mut self, fingerprint: &[String; 4], now: Instant) -> bool {
        const WINDOW: Duration = Duration::from_secs(60);
        if self.seen.len() >= MAX_FINGERPRINTS {
            self.seen
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
        }
        match self.seen.get_mut(fingerprint) {
            Some((start, n)) if now.saturating_duration_since(*start) < WINDOW => {
                if *n >= self.per_minute {
                    return false;
                }
                *n += 1;
                true
            }
            Some(slot) => {
                *slot = (now, 1);
                true
            }
            None => {
                if self.seen.len() < MAX_FINGERPRINTS {
                    self.seen.insert(fingerprint.clone(), (now, 1));
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::tests::record;

    fn failed(status: Option<u16>, error_type: &str) -> CompletionRecord {
        let mut r = record();
        r.outcome = Outcome::UpstreamError {
            status,
            error_type: error_type.into(),
            message: "The server had an error; key sk-secret-123".into(),
        };
        r
    }

    #[test]
    fn which_failures_become_events() {
        assert_eq!(
            exception_type(&failed(Some(500), "http_500")),
            Some("UpstreamError")
        );
        assert_eq!(
            exception_type(&failed(Some(429), "http_429")),
            Some("UpstreamError")
        );
        assert_eq!(
            exception_type(&failed(None, "connect_error")),
            Some("ProviderUnreachable")
        );
        assert_eq!(
            exception_type(&failed(Some(200), "stream_interrupted")),
            Some("StreamInterrupted")
        );
        assert_eq!(exception_type(&failed(Some(400), "http_400")), None);
        assert_eq!(exception_type(&failed(Some(401), "http_401")), None);
        let mut r = record();
        r.outcome = Outcome::Timeout;
        assert_eq!(exception_type(&r), Some("UpstreamTimeout"));
        r.outcome = Outcome::ClientCancelled;
        assert_eq!(exception_type(&r), None);
        r.outcome = Outcome::Ok;
        assert_eq!(exception_type(&r), None);
    }

    #[test]
    fn the_envelope_links_the_trace_and_keeps_text_and_secrets_out() {
        let r = failed(Some(503), "http_503");
        let scrub = |s: &str| s.replace("sk-secret-123", "[redacted]");
        let bytes = envelope(&r, "UpstreamError", &[1; 16], &[2; 8], &scrub);
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        let item: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(item["type"], "event");
        assert_eq!(item["length"], lines[2].len());
        let event: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(event["exception"]["values"][0]["type"], "UpstreamError");
        assert_eq!(
            event["fingerprint"],
            json!(["openai", "gpt-4o-2024-08-06", "UpstreamError", "503"])
        );
        assert_eq!(
            event["contexts"]["trace"]["trace_id"],
            hex::encode([1u8; 16])
        );
        assert_eq!(event["contexts"]["trace"]["span_id"], hex::encode([2u8; 8]));
        assert_eq!(event["tags"]["beacon.tenant"], "acme");
        assert!(!text.contains("sk-secret-123"));
        // No prompt or completion text, whatever the record holds.
        let content = r.content.as_ref().unwrap();
        assert!(!text.contains(&content.output_text));
        assert!(!text.contains("Be brief") && !text.contains("Hello"));
    }

    #[test]
    fn one_event_per_fingerprint_per_minute() {
        let mut d = Dedupe::new(1);
        let f = fingerprint(&failed(Some(500), "http_500"), "UpstreamError");
        let t = Instant::now();
        assert!(d.allow(&f, t));
        assert!(!d.allow(&f, t + Duration::from_secs(59)));
        assert!(d.allow(&f, t + Duration::from_secs(61)));
        let other = fingerprint(&failed(Some(502), "http_502"), "UpstreamError");
        assert!(d.allow(&other, t));
        let mut three = Dedupe::new(3);
        assert_eq!((0..5).filter(|_| three.allow(&f, t)).count(), 3);
    }
}
