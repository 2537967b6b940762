//! `grafana_cloud`: Grafana Cloud's OTLP gateway.
//!
//! Sources: <https://grafana.com/docs/grafana-cloud/send-data/otlp/send-data-otlp/> and its
//! learning hub — the stack's OpenTelemetry card gives the endpoint
//! `https://otlp-gateway-<zone>.grafana.net/otlp` (traces at `…/otlp/v1/traces`), the
//! numeric instance id (the Basic auth user) and an access policy token with `traces:write`
//! (the password); wrong credentials answer 401 (grafana/otel-checker).

use super::{
    basic_auth, err, join_path, Context, DestinationError, DestinationType, Field, FieldKind,
    Fields, Target,
};

/// The `grafana_cloud` type.
#[derive(Debug)]
pub struct GrafanaCloud;

const FIELDS: [Field; 3] = [
    Field::required(
        "otlp_endpoint",
        "OTLP endpoint",
        FieldKind::Url,
        "Stack → OpenTelemetry card: https://otlp-gateway-<zone>.grafana.net/otlp",
    ),
    Field::required(
        "instance_id",
        "Instance ID",
        FieldKind::Text,
        "The numeric instance ID on the same card",
    ),
    Field::required(
        "token",
        "Access policy token",
        FieldKind::Secret,
        "A token with the traces:write scope: glc_…",
    ),
];

impl DestinationType for GrafanaCloud {
    fn name(&self) -> &'static str {
        "grafana_cloud"
    }

    fn label(&self) -> &'static str {
        "Grafana Cloud"
    }

    fn docs(&self) -> &'static str {
        "https://grafana.com/docs/grafana-cloud/send-data/otlp/send-data-otlp/"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let endpoint = f.url("otlp_endpoint", None, cx.allow_private)?;
        let path = endpoint.path().trim_end_matches('/');
        if !(path.ends_with("/otlp") || path.ends_with("/otlp/v1/traces")) {
            return Err(err(
                "otlp_endpoint",
                "must be the OTLP endpoint from the stack's OpenTelemetry card, ending in /otlp",
            ));
        }
        let url = join_path("otlp_endpoint", &endpoint, "/v1/traces")?;
        let instance = f.required("instance_id")?;
        if !instance.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("instance_id", "must be the numeric instance ID"));
        }
        let auth = basic_auth("token", instance, f.required("token")?)?;
        Ok(Target::otlp(url, vec![(http::header::AUTHORIZATION, auth)]))
    }
}

#[cfg(test)]
mod tests {
    use crate::destination::tests::{header, spec};
    use serde_json::json;

    #[test]
    fn basic_auth_with_the_instance_id() {
        let s = spec(
            "grafana_cloud",
            json!({"otlp_endpoint": "https://otlp-gateway-prod-eu-west-0.grafana.net/otlp",
                "instance_id": "123456", "token": "glc_abc"}),
        )
        .unwrap();
        assert_eq!(
            s.endpoint.url.to_string(),
            "https://otlp-gateway-prod-eu-west-0.grafana.net/otlp/v1/traces"
        );
        // base64("123456:glc_abc")
        assert_eq!(
            header(&s, "authorization"),
            Some("Basic MTIzNDU2OmdsY19hYmM=")
        );
        let e = spec(
            "grafana_cloud",
            json!({"otlp_endpoint": "https://x.grafana.net/tempo", "instance_id": "1", "token": "t"}),
        )
        .unwrap_err();
        assert_eq!(e.field, "otlp_endpoint");
        let e = spec(
            "grafana_cloud",
            json!({"otlp_endpoint": "https://x.grafana.net/otlp", "instance_id": "stack-1", "token": "t"}),
        )
        .unwrap_err();
        assert_eq!(e.field, "instance_id");
    }
}
