//! `langfuse`: Langfuse's OTLP endpoint, with its trace and observation attributes.
//!
//! Sources: <https://langfuse.com/integrations/native/opentelemetry> — traces at
//! `{host}/api/public/otel/v1/traces`, OTLP/HTTP protobuf or JSON (no gRPC),
//! `Authorization: Basic base64(public_key:secret_key)`, `x-langfuse-ingestion-version: 4` for
//! direct exporters, cloud hosts `https://cloud.langfuse.com` (EU, the default),
//! `https://us.cloud.langfuse.com`; `langfuse.*` attributes take precedence over `gen_ai.*`.
//! Its ingestion route (langfuse/langfuse `web/src/pages/api/public/otel/v1/traces`) answers
//! 200 with a JSON body, 401 for a wrong key, 403 for a key without access.

use super::{
    basic_auth, join_path, Context, DestinationError, DestinationType, Dialect, Field, FieldKind,
    Fields, Target,
};

/// The `langfuse` type.
#[derive(Debug)]
pub struct Langfuse;

/// Langfuse Cloud's EU region, its documented default.
pub const DEFAULT_HOST: &str = "https://cloud.langfuse.com";
const TRACES_PATH: &str = "/api/public/otel/v1/traces";

const FIELDS: [Field; 3] = [
    Field::optional(
        "host",
        "Host",
        FieldKind::Url,
        Some(DEFAULT_HOST),
        "https://cloud.langfuse.com (EU), https://us.cloud.langfuse.com (US), or your own",
    ),
    Field::required(
        "public_key",
        "Public key",
        FieldKind::Text,
        "Project settings → API keys: pk-lf-…",
    ),
    Field::required(
        "secret_key",
        "Secret key",
        FieldKind::Secret,
        "Project settings → API keys: sk-lf-…",
    ),
];

impl DestinationType for Langfuse {
    fn name(&self) -> &'static str {
        "langfuse"
    }

    fn label(&self) -> &'static str {
        "Langfuse"
    }

    fn docs(&self) -> &'static str {
        "https://langfuse.com/integrations/native/opentelemetry"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let host = f.url("host", Some(DEFAULT_HOST), cx.allow_private)?;
        // A pasted OTel base (`…/api/public/otel`) is completed, not doubled.
        let url = if host
            .path()
            .trim_end_matches('/')
            .ends_with("/api/public/otel")
        {
            join_path("host", &host, "/v1/traces")?
        } else {
            join_path("host", &host, TRACES_PATH)?
        };
        let auth = basic_auth(
            "secret_key",
            f.required("public_key")?,
            f.required("secret_key")?,
        )?;
        let mut target = Target::otlp(
            url,
            vec![
                (http::header::AUTHORIZATION, auth),
                (
                    http::HeaderName::from_static("x-langfuse-ingestion-version"),
                    http::HeaderValue::from_static("4"),
                ),
            ],
        );
        target.dialect = Dialect::Langfuse;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use crate::destination::tests::{header, spec};
    use crate::destination::Dialect;
    use serde_json::json;

    #[test]
    fn basic_auth_to_the_otel_route_of_the_host() {
        let s = spec(
            "langfuse",
            json!({"public_key": "pk-lf-1", "secret_key": "sk-lf-2"}),
        )
        .unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://cloud.langfuse.com/api/public/otel/v1/traces"
        );
        // base64("pk-lf-1:sk-lf-2")
        assert_eq!(
            header(&s, "authorization"),
            Some("Basic cGstbGYtMTpzay1sZi0y")
        );
        assert_eq!(header(&s, "x-langfuse-ingestion-version"), Some("4"));
        assert_eq!(s.dialect, Dialect::Langfuse);
        for host in [
            "https://lf.example.com/",
            "https://lf.example.com/api/public/otel",
        ] {
            let s = spec(
                "langfuse",
                json!({"host": host, "public_key": "pk", "secret_key": "sk"}),
            )
            .unwrap();
            assert_eq!(
                s.endpoint.url.to_string(),
                "https://lf.example.com/api/public/otel/v1/traces"
            );
        }
        let e = spec("langfuse", json!({"public_key": "pk-lf-1"})).unwrap_err();
        assert_eq!(e.field, "secret_key");
    }
}
