//! `honeycomb`: Honeycomb's OTLP/HTTP endpoint.
//!
//! Sources: <https://docs.honeycomb.io/send-data/opentelemetry/> — OTLP over HTTP/protobuf
//! at `https://api.honeycomb.io` (EU: `https://api.eu1.honeycomb.io`), traces at `/v1/traces`,
//! `x-honeycomb-team: <API key>`; `x-honeycomb-dataset` is needed by Honeycomb Classic keys
//! (environment keys route by `service.name`), as honeycombio/honeycomb-opentelemetry-go
//! does; its Classic-key test (32 hex digits, or 64 characters `hc?ic_…`) is used here.
//! <https://docs.honeycomb.io/api/errors/>: 401 for a missing or invalid key.

use super::{
    err, header_value, join_path, Context, DestinationError, DestinationType, Field, FieldKind,
    Fields, Target,
};

/// The `honeycomb` type.
#[derive(Debug)]
pub struct Honeycomb;

/// Honeycomb's US API host.
pub const DEFAULT_ENDPOINT: &str = "https://api.honeycomb.io";

const FIELDS: [Field; 3] = [
    Field::required(
        "api_key",
        "API key",
        FieldKind::Secret,
        "Environment settings → API Keys: an ingest key",
    ),
    Field::optional(
        "dataset",
        "Dataset",
        FieldKind::Text,
        None,
        "Needed with a Honeycomb Classic key; environment keys use the service name",
    ),
    Field::optional(
        "endpoint",
        "API host",
        FieldKind::Url,
        Some(DEFAULT_ENDPOINT),
        "https://api.eu1.honeycomb.io for the EU region",
    ),
];

/// A Honeycomb Classic key: 32 hex digits, or a 64-character `hc?ic_` ingest key.
pub fn is_classic_key(key: &str) -> bool {
    let b = key.as_bytes();
    (b.len() == 32
        && b.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)))
        || (b.len() == 64
            && b.starts_with(b"hc")
            && b[2].is_ascii_lowercase()
            && &b[3..6] == b"ic_"
            && b[6..]
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
}

impl DestinationType for Honeycomb {
    fn name(&self) -> &'static str {
        "honeycomb"
    }

    fn label(&self) -> &'static str {
        "Honeycomb"
    }

    fn docs(&self) -> &'static str {
        "https://docs.honeycomb.io/send-data/opentelemetry/"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let endpoint = f.url("endpoint", Some(DEFAULT_ENDPOINT), cx.allow_private)?;
        let url = join_path("endpoint", &endpoint, "/v1/traces")?;
        let key = f.required("api_key")?;
        let dataset = f.text("dataset");
        if dataset.is_none() && is_classic_key(key) {
            return Err(err(
                "dataset",
                "is required with a Honeycomb Classic key (environment keys do not need it)",
            ));
        }
        let mut headers = vec![(
            http::HeaderName::from_static("x-honeycomb-team"),
            header_value("api_key", key)?,
        )];
        if let Some(dataset) = dataset {
            headers.push((
                http::HeaderName::from_static("x-honeycomb-dataset"),
                header_value("dataset", dataset)?,
            ));
        }
        Ok(Target::otlp(url, headers))
    }
}

#[cfg(test)]
mod tests {
    use super::is_classic_key;
    use crate::destination::tests::{header, spec};
    use serde_json::json;

    #[test]
    fn team_and_dataset_headers_and_classic_keys() {
        let s = spec(
            "honeycomb",
            json!({"api_key": "hcaik_env_key", "dataset": "llm"}),
        )
        .unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://api.honeycomb.io/v1/traces"
        );
        assert_eq!(header(&s, "x-honeycomb-team"), Some("hcaik_env_key"));
        assert_eq!(header(&s, "x-honeycomb-dataset"), Some("llm"));
        let s = spec(
            "honeycomb",
            json!({"api_key": "k1", "endpoint": "https://api.eu1.honeycomb.io"}),
        )
        .unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://api.eu1.honeycomb.io/v1/traces"
        );
        assert_eq!(header(&s, "x-honeycomb-dataset"), None);
        let classic = "0123456789abcdef0123456789abcdef";
        assert!(is_classic_key(classic));
        assert!(is_classic_key(&format!("hcxic_{}", "a".repeat(58))));
        assert!(!is_classic_key("hcaik_01234"));
        let e = spec("honeycomb", json!({"api_key": classic})).unwrap_err();
        assert_eq!(e.field, "dataset");
    }
}
