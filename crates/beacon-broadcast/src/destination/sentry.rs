//! `sentry`: Sentry's OTLP traces endpoint, authenticated by the DSN's public key; failed
//! completions also go to the DSN's envelope endpoint as error events (SPEC §4.3).
//!
//! Source: <https://docs.sentry.io/concepts/otlp/> — the endpoint path is
//! `/api/<project>/integration/otlp/v1/traces` and the DSN's last path segment is the same
//! project; the key goes in `X-Sentry-Auth` (`sentry_key=…, sentry_version=7`).

use super::{
    check_url, err, Context, DestinationError, DestinationType, Dialect, Endpoint, Field,
    FieldKind, Fields, Target, Wire,
};

/// `sentry_client` value of `X-Sentry-Auth`, and the export's `user-agent`.
pub const SENTRY_CLIENT: &str = concat!("beacon/", env!("CARGO_PKG_VERSION"));

/// The `sentry` type.
#[derive(Debug)]
pub struct Sentry;

const FIELDS: [Field; 2] = [
    Field::required(
        "otlp_endpoint",
        "OTLP Traces Endpoint",
        FieldKind::Url,
        "In Sentry: Settings › Projects › your project › Client Keys (DSN) › OpenTelemetry: “OTLP Traces Endpoint” (…/api/<project id>/integration/otlp/v1/traces).",
    ),
    Field::required(
        "dsn",
        "Sentry DSN",
        FieldKind::Dsn,
        "Same page, “DSN” (https://<public key>@o….ingest.sentry.io/<project id>). Beacon sends only its public key.",
    ),
];

impl DestinationType for Sentry {
    fn name(&self) -> &'static str {
        "sentry"
    }

    fn label(&self) -> &'static str {
        "Sentry"
    }

    fn docs(&self) -> &'static str {
        "https://docs.sentry.io/concepts/otlp/"
    }

    fn fields(&self) -> &'static [Field] {
        &FIELDS
    }

    fn build(&self, f: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError> {
        let url = f.url("otlp_endpoint", None, cx.allow_private)?;
        let dsn = f.required("dsn")?;
        let parsed = Dsn::parse(dsn)?;
        check_url("dsn", dsn, cx.allow_private)?;
        let endpoint_project = sentry_endpoint_project(&url)?;
        if endpoint_project != parsed.project_id {
            return Err(err(
                "dsn",
                format!(
                    "project id {} does not match the OTLP endpoint's project {endpoint_project}: copy both from the same Sentry project",
                    parsed.project_id
                ),
            ));
        }
        let mut auth = http::HeaderValue::try_from(parsed.auth_header())
            .map_err(|_| err("dsn", "invalid public key"))?;
        auth.set_sensitive(true);
        let headers = vec![(http::HeaderName::from_static("x-sentry-auth"), auth)];
        // The DSN's envelope endpoint, on the traces endpoint's scheme and host.
        let envelope = format!(
            "{}://{}/api/{}/envelope/",
            url.scheme_str().unwrap_or("https"),
            url.authority().map_or(parsed.host.as_str(), |a| a.as_str()),
            parsed.project_id
        );
        let envelope: http::Uri = envelope
            .parse()
            .map_err(|_| err("dsn", "no envelope endpoint can be made from it"))?;
        let error_events = cx.error_events.unwrap_or(true).then(|| Endpoint {
            url: envelope,
            headers: headers.clone(),
            is_sentry: true,
        });
        Ok(Target {
            endpoint: Endpoint {
                url,
                headers,
                is_sentry: true,
            },
            wire: Wire::OtlpProtobuf,
            dialect: Dialect::GenAi,
            error_events,
        })
    }

    /// An app that dropped its trace should not find orphan gateway spans in it (SPEC §4.5).
    fn follows_caller_by_default(&self) -> bool {
        true
    }

    fn accepted(&self) -> String {
        format!(
            "Sentry accepted the test span: a transaction `{}` (op {}) is now in your project.",
            crate::test_connection::TEST_SPAN_NAME,
            crate::test_connection::TEST_SPAN_OP
        )
    }
}

/// A parsed Sentry DSN: `https://<public key>[:<secret>]@<host>/<path…>/<project id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The public key (the only credential Beacon sends).
    pub public_key: String,
    /// Host (and port) of the ingestion endpoint.
    pub host: String,
    /// Numeric project id.
    pub project_id: String,
}

impl Dsn {
    /// Parses a DSN.
    pub fn parse(dsn: &str) -> Result<Self, DestinationError> {
        let uri: http::Uri = dsn.trim().parse().map_err(|_| {
            err(
                "dsn",
                "is not a URL (expected https://<key>@<host>/<project>)",
            )
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(err("dsn", "must start with https://"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| err("dsn", "has no host"))?
            .as_str();
        let (userinfo, host) = authority.rsplit_once('@').ok_or_else(|| {
            err(
                "dsn",
                "has no public key (expected https://<key>@<host>/<project>)",
            )
        })?;
        let public_key = userinfo.split(':').next().unwrap_or_default();
        if public_key.is_empty() || !public_key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err(
                "dsn",
                "the public key before `@` must be letters and digits",
            ));
        }
        let project_id = uri
            .path()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        if project_id.is_empty() || !project_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                "dsn",
                "must end with the numeric project id (…/<project>)",
            ));
        }
        Ok(Self {
            public_key: public_key.to_string(),
            host: host.to_string(),
            project_id: project_id.to_string(),
        })
    }

    /// The `X-Sentry-Auth` header value.
    pub fn auth_header(&self) -> String {
        format!(
            "Sentry sentry_key={}, sentry_version=7, sentry_client={SENTRY_CLIENT}",
            self.public_key
        )
    }
}

/// The project id in a Sentry OTLP traces endpoint path.
pub fn sentry_endpoint_project(endpoint: &http::Uri) -> Result<String, DestinationError> {
    let path = endpoint.path();
    let rest = path
        .strip_suffix("/integration/otlp/v1/traces")
        .ok_or_else(|| {
            err(
                "otlp_endpoint",
                "path must end with /api/<project>/integration/otlp/v1/traces",
            )
        })?;
    let (prefix, project) = rest
        .rsplit_once('/')
        .ok_or_else(|| err("otlp_endpoint", "path has no project id"))?;
    if !prefix.ends_with("/api")
        || project.is_empty()
        || !project.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err(
            "otlp_endpoint",
            "path must be /api/<numeric project>/integration/otlp/v1/traces",
        ));
    }
    Ok(project.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::tests::spec;
    use serde_json::json;

    const EP: &str = "https://o123.ingest.us.sentry.io/api/456/integration/otlp/v1/traces";
    const DSN: &str = "https://abc123@o123.ingest.us.sentry.io/456";

    #[test]
    fn parses_dsns() {
        let d = Dsn::parse(DSN).unwrap();
        assert_eq!(
            (
                d.public_key.as_str(),
                d.host.as_str(),
                d.project_id.as_str()
            ),
            ("abc123", "o123.ingest.us.sentry.io", "456")
        );
        assert_eq!(
            Dsn::parse("https://k:secret@host/prefix/9")
                .unwrap()
                .project_id,
            "9"
        );
        assert_eq!(
            d.auth_header(),
            format!(
                "Sentry sentry_key=abc123, sentry_version=7, sentry_client=beacon/{}",
                env!("CARGO_PKG_VERSION")
            )
        );
        for bad in [
            "",
            "nope",
            "https://host/456",
            "https://k@host/",
            "https://k@host/abc",
            "ftp://k@host/1",
            "https://@host/1",
        ] {
            assert!(Dsn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cross_validation_and_error_events() {
        let s = spec("sentry", json!({"otlp_endpoint": EP, "dsn": DSN})).unwrap();
        assert_eq!(s.endpoint.headers[0].0, "x-sentry-auth");
        assert!(s.endpoint.is_sentry && s.follow_caller_sampling);
        assert_eq!(
            s.error_events.unwrap().url.to_string(),
            "https://o123.ingest.us.sentry.io/api/456/envelope/"
        );
        let e = spec(
            "sentry",
            json!({"otlp_endpoint": EP, "dsn": "https://abc123@o123.ingest.us.sentry.io/789"}),
        )
        .unwrap_err();
        assert_eq!(e.field, "dsn");
        assert!(
            e.message.contains("789") && e.message.contains("456"),
            "{e}"
        );
        let e = spec(
            "sentry",
            json!({"otlp_endpoint": "https://o1.ingest.sentry.io/api/456/envelope/", "dsn": DSN}),
        )
        .unwrap_err();
        assert_eq!(e.field, "otlp_endpoint");
        let e = spec("sentry", json!({"otlp_endpoint": EP, "dsn": "not a dsn"})).unwrap_err();
        assert_eq!(e.field, "dsn");
        let e = spec("sentry", json!({"otlp_endpoint": EP})).unwrap_err();
        assert_eq!(e.field, "dsn");
    }

    #[test]
    fn private_sentry_needs_the_switch() {
        let mut c = crate::destination::tests::config(
            "sentry",
            json!({"otlp_endpoint": "http://127.0.0.1:9/api/456/integration/otlp/v1/traces",
                "dsn": "http://abc123@127.0.0.1:9/456"}),
        );
        let e = crate::destination::DestinationSpec::new("t", &c, false).unwrap_err();
        assert_eq!(e.field, "otlp_endpoint");
        assert!(crate::destination::DestinationSpec::new("t", &c, true).is_ok());
        c.error_events = Some(false);
        let s = crate::destination::DestinationSpec::new("t", &c, true).unwrap();
        assert!(s.error_events.is_none());
    }
}
