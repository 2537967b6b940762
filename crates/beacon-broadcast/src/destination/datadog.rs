//! `datadog`: Datadog's agentless OTLP traces intake, marked for LLM Observability.
//!
//! Sources: <https://docs.datadoghq.com/llm_observability/instrumentation/otel_instrumentation/>
//! and <https://docs.datadoghq.com/opentelemetry/setup/otlp_ingest/traces/> — `POST` to
//! `https://otlp.<site>/v1/traces` (http/protobuf), headers `dd-api-key: <key>` and
//! `dd-otlp-source: llmobs`; success is `202 Accepted`, 403 a key or site refused, 413 a
//! payload over 3.2 MB. The intake URL has moved between documentation versions, so it can
//! be given (`endpoint`).

use super::{
    header_value, Context, DestinationError, DestinationType, Field, FieldKind, Fields, Target,
};

/// The `datadog` type.
#[derive(Debug)]
pub struct Datadog;

/// Datadog sites with an OTLP intake (DataDog/documentation `regions.config.js`).
pub const SITES: [&str; 6] = [
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
];

const FIELDS: [Field; 3] = [
    Field::optional(
        "site",
        "Site",
        FieldKind::Choice(&SITES),
        Some("datadoghq.com"),
        "The site in your Datadog URL (app.datadoghq.eu → datadoghq.eu)",
    ),
    Field::required(
        "api_key",
        "API key",
        FieldKind::Secret,
        "Organization settings → API Keys",
    ),
    Field::optional(
        "endpoint",
        "Intake URL",
        FieldKind::Url,
        None,
        "Default https://otlp.<site>/v1/traces",
    ),
];

impl DestinationType for Datadog {
    fn name(&self) -> &'static str {
        "datadog"
    }

    fn label(&self) -> &'static str {
        "Datadog LLM Observability"
    }

    fn docs(&self) -> &'static str {
        "https://docs.datadoghq.com/llm_observability/instrumentation/otel_instrumentation/"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let site = f.text("site").unwrap_or(SITES[0]);
        let derived = format!("https://otlp.{site}/v1/traces");
        let url = f.url("endpoint", Some(&derived), cx.allow_private)?;
        let headers = vec![
            (
                http::HeaderName::from_static("dd-api-key"),
                header_value("api_key", f.required("api_key")?)?,
            ),
            (
                http::HeaderName::from_static("dd-otlp-source"),
                http::HeaderValue::from_static("llmobs"),
            ),
        ];
        Ok(Target::otlp(url, headers))
    }
}

#[cfg(test)]
mod tests {
    use crate::destination::tests::{header, spec};
    use serde_json::json;

    #[test]
    fn intake_derived_from_the_site() {
        let s = spec("datadog", json!({"api_key": "0123abcd"})).unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://otlp.datadoghq.com/v1/traces"
        );
        assert_eq!(header(&s, "dd-api-key"), Some("0123abcd"));
        assert_eq!(header(&s, "dd-otlp-source"), Some("llmobs"));
        let s = spec("datadog", json!({"api_key": "k", "site": "datadoghq.eu"})).unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://otlp.datadoghq.eu/v1/traces"
        );
        let s = spec(
            "datadog",
            json!({"api_key": "k", "endpoint": "https://trace.agent.datadoghq.com/v1/traces"}),
        )
        .unwrap();
        assert_eq!(s.endpoint.url.host(), Some("trace.agent.datadoghq.com"));
        // The key is scrubbed from what the intake echoes, the fixed source tag is not.
        assert_eq!(
            s.endpoint.scrub("403 for key k and source llmobs"),
            "403 for key k and source llmobs"
        );
    }
}
