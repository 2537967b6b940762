//! `langsmith`: LangSmith's OTel endpoint.
//!
//! Source: <https://docs.langchain.com/langsmith/trace-with-opentelemetry> — traces at
//! `https://api.smith.langchain.com/otel/v1/traces` (EU: `eu.api.smith.langchain.com`;
//! self-hosted: `<host>/api/v1/otel/v1/traces`), `x-api-key: <key>`, optional
//! `Langsmith-Project: <project>`; the endpoint answers 200 and builds runs in the
//! background, reading `gen_ai.*` (`gen_ai.operation.name`, `gen_ai.usage.*`,
//! `gen_ai.request.*`, `gen_ai.input.messages`/`gen_ai.output.messages`).

use super::{
    header_value, join_path, Context, DestinationError, DestinationType, Field, FieldKind, Fields,
    Target,
};

/// The `langsmith` type.
#[derive(Debug)]
pub struct LangSmith;

/// LangSmith Cloud's (US) OTel traces endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://api.smith.langchain.com/otel/v1/traces";

const FIELDS: [Field; 3] = [
    Field::required(
        "api_key",
        "API key",
        FieldKind::Secret,
        "Settings → API Keys: lsv2_…",
    ),
    Field::optional(
        "project",
        "Project",
        FieldKind::Text,
        Some("default"),
        "The tracing project runs go to",
    ),
    Field::optional(
        "endpoint",
        "OTel endpoint",
        FieldKind::Url,
        Some(DEFAULT_ENDPOINT),
        "https://eu.api.smith.langchain.com/otel/v1/traces for the EU region",
    ),
];

impl DestinationType for LangSmith {
    fn name(&self) -> &'static str {
        "langsmith"
    }

    fn label(&self) -> &'static str {
        "LangSmith"
    }

    fn docs(&self) -> &'static str {
        "https://docs.langchain.com/langsmith/trace-with-opentelemetry"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let endpoint = f.url("endpoint", Some(DEFAULT_ENDPOINT), cx.allow_private)?;
        let url = join_path("endpoint", &endpoint, "/v1/traces")?;
        let mut headers = vec![(
            http::HeaderName::from_static("x-api-key"),
            header_value("api_key", f.required("api_key")?)?,
        )];
        if let Some(project) = f.text("project") {
            headers.push((
                http::HeaderName::from_static("langsmith-project"),
                header_value("project", project)?,
            ));
        }
        Ok(Target::otlp(url, headers))
    }
}

#[cfg(test)]
mod tests {
    use crate::destination::tests::{header, spec};
    use serde_json::json;

    #[test]
    fn api_key_and_project_headers() {
        let s = spec(
            "langsmith",
            json!({"api_key": "lsv2_pt_x", "project": "prod"}),
        )
        .unwrap();
        assert_eq!(s.endpoint.url.to_string(), super::DEFAULT_ENDPOINT);
        assert_eq!(header(&s, "x-api-key"), Some("lsv2_pt_x"));
        assert_eq!(header(&s, "langsmith-project"), Some("prod"));
        let s = spec(
            "langsmith",
            json!({"api_key": "k", "endpoint": "https://eu.api.smith.langchain.com/otel"}),
        )
        .unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://eu.api.smith.langchain.com/otel/v1/traces"
        );
        assert_eq!(header(&s, "langsmith-project"), None);
        let e = spec("langsmith", json!({"api_key": "k", "project": "a\nb"})).unwrap_err();
        assert_eq!(e.field, "project");
    }
}
