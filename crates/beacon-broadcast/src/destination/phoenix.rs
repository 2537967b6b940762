//! `phoenix`: Arize Phoenix, with OpenInference attributes.
//!
//! Sources: Arize-ai/phoenix `src/phoenix/server/api/routers/v1/traces.py` — `POST
//! {base}/v1/traces`, `Content-Type: application/x-protobuf` only (OTLP/JSON is refused with
//! 415), gzip accepted, 200 on success, 401 "Invalid token" when authentication is on;
//! `phoenix-otel` sends `authorization: Bearer <PHOENIX_API_KEY>`; the project is chosen by
//! `x-project-name`. Attribute names: Arize-ai/openinference `spec/semantic_conventions.md`.

use super::{
    header_value, join_path, Context, DestinationError, DestinationType, Dialect, Field, FieldKind,
    Fields, Target,
};

/// The `phoenix` type.
#[derive(Debug)]
pub struct Phoenix;

const FIELDS: [Field; 3] = [
    Field::required(
        "endpoint",
        "Phoenix URL",
        FieldKind::Url,
        "The base URL (https://app.phoenix.arize.com/s/<space>, or your own); /v1/traces is appended",
    ),
    Field::optional(
        "api_key",
        "API key",
        FieldKind::Secret,
        None,
        "Settings → API Keys (when authentication is on)",
    ),
    Field::optional(
        "project",
        "Project",
        FieldKind::Text,
        Some("default"),
        "The Phoenix project traces go to",
    ),
];

impl DestinationType for Phoenix {
    fn name(&self) -> &'static str {
        "phoenix"
    }

    fn label(&self) -> &'static str {
        "Arize Phoenix"
    }

    fn docs(&self) -> &'static str {
        "https://arize.com/docs/phoenix/tracing/how-to-tracing/setup-tracing"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let base = f.url("endpoint", None, cx.allow_private)?;
        let url = join_path("endpoint", &base, "/v1/traces")?;
        let mut headers = Vec::new();
        if let Some(key) = f.text("api_key") {
            headers.push((
                http::header::AUTHORIZATION,
                header_value("api_key", &format!("Bearer {key}"))?,
            ));
        }
        if let Some(project) = f.text("project") {
            headers.push((
                http::HeaderName::from_static("x-project-name"),
                header_value("project", project)?,
            ));
        }
        let mut target = Target::otlp(url, headers);
        target.dialect = Dialect::OpenInference;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use crate::destination::tests::{header, spec};
    use crate::destination::Dialect;
    use serde_json::json;

    #[test]
    fn bearer_key_and_project_and_the_openinference_dialect() {
        let s = spec(
            "phoenix",
            json!({"endpoint": "https://app.phoenix.arize.com/s/acme", "api_key": "px-key", "project": "llm"}),
        )
        .unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://app.phoenix.arize.com/s/acme/v1/traces"
        );
        assert_eq!(header(&s, "authorization"), Some("Bearer px-key"));
        assert_eq!(header(&s, "x-project-name"), Some("llm"));
        assert_eq!(s.dialect, Dialect::OpenInference);
        let s = spec(
            "phoenix",
            json!({"endpoint": "https://phoenix.example.com"}),
        )
        .unwrap();
        assert!(s.endpoint.headers.is_empty());
    }
}
