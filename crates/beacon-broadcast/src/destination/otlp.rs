//! `otlp`: any OTLP/HTTP traces endpoint (a collector, or a tool without a preset), with the
//! headers it needs.
//!
//! Source: <https://opentelemetry.io/docs/specs/otlp/#otlphttp> — `POST` of a protobuf
//! `ExportTraceServiceRequest` to the full traces URL (`…/v1/traces`).

use super::{Context, DestinationError, DestinationType, Field, FieldKind, Fields, Target};

/// The `otlp` type.
#[derive(Debug)]
pub struct Otlp;

const FIELDS: [Field; 2] = [
    Field::required(
        "endpoint",
        "OTLP/HTTP traces endpoint",
        FieldKind::Url,
        "Your collector's traces URL, e.g. https://otlp.example.com/v1/traces.",
    ),
    Field::optional(
        "headers",
        "Headers",
        FieldKind::Headers,
        None,
        "One per line, “name: value” (e.g. authorization: Bearer …). Values are stored encrypted and shown redacted.",
    ),
];

impl DestinationType for Otlp {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn label(&self) -> &'static str {
        "OTLP"
    }

    fn docs(&self) -> &'static str {
        "https://opentelemetry.io/docs/specs/otlp/#otlphttp"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let url = f.url("endpoint", None, cx.allow_private)?;
        Ok(Target::otlp(url, f.headers("headers")?))
    }

    fn accepted(&self) -> String {
        "The collector accepted the test span.".to_string()
    }
}

#[cfg(test)]
mod tests {
    use crate::destination::tests::{header, spec};
    use serde_json::json;

    #[test]
    fn sends_its_headers_to_its_endpoint() {
        let s = spec(
            "otlp",
            json!({"endpoint": "https://c.example.com/v1/traces", "headers": {"authorization": "Bearer t0ken"}}),
        )
        .unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://c.example.com/v1/traces"
        );
        assert_eq!(header(&s, "authorization"), Some("Bearer t0ken"));
        assert!(s.endpoint.headers[0].1.is_sensitive());
        assert!(!s.follow_caller_sampling && s.error_events.is_none());
        let e = spec(
            "otlp",
            json!({"endpoint": "https://c.example.com", "headers": {"bad name": "x"}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "headers.bad name");
    }
}
