//! Destinations: validated from their settings into what a sink needs — the URL to POST
//! to, the headers to send, and the export policy (privacy, sampling, key allowlist).
//!
//! Sentry destinations need both the OTLP traces endpoint and the DSN: the endpoint path must
//! be `/api/<project>/integration/otlp/v1/traces`, the DSN's last path segment is the same
//! project, and the DSN's public key authenticates (`X-Sentry-Auth`).

use std::net::IpAddr;

use beacon_config::{DestinationConfig, DestinationKind};

/// `sentry_client` value of `X-Sentry-Auth`.
pub const SENTRY_CLIENT: &str = concat!("beacon/", env!("CARGO_PKG_VERSION"));

/// A destination setting that cannot work, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DestinationError {
    /// `otlp_endpoint`, `dsn`, `endpoint`, `headers.<name>`, ...
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> DestinationError {
    DestinationError {
        field: field.to_string(),
        message: message.into(),
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

/// Checks a destination URL: `https://` to a public host, unless private destinations are
/// allowed. Hostnames are checked as written here; resolution-time checks happen on connect.
pub fn check_url(
    field: &str,
    url: &str,
    allow_private: bool,
) -> Result<http::Uri, DestinationError> {
    let uri: http::Uri = url.trim().parse().map_err(|_| err(field, "is not a URL"))?;
    let host = uri.host().ok_or_else(|| err(field, "has no host"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_private => {}
        Some("http") => {
            return Err(err(
                field,
                "must use https:// (http:// needs broadcast.allow_private_destinations)",
            ))
        }
        _ => return Err(err(field, "must be an https:// URL")),
    }
    if !allow_private && is_private_host(host) {
        return Err(err(
            field,
            "points to a loopback or private address (needs broadcast.allow_private_destinations)",
        ));
    }
    Ok(uri)
}

/// True for `localhost` and loopback, private, link-local, unspecified or unique-local IPs.
pub fn is_private_host(host: &str) -> bool {
    let h = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if h == "localhost"
        || h.ends_with(".localhost")
        || h.ends_with(".internal")
        || h.ends_with(".local")
    {
        return true;
    }
    match h.parse::<IpAddr>() {
        Ok(ip) => is_private_ip(ip),
        Err(_) => false,
    }
}

/// True for addresses a multi-tenant gateway must not be made to call.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv6 forms that carry an IPv4 address: mapped (::ffff:a.b.c.d), compatible
            // (::a.b.c.d, the ::/96 block — `[::127.0.0.1]`), NAT64 (64:ff9b::/96) and
            // 6to4 (2002:AABB:CCDD::/48): each is judged by the IPv4 address inside.
            let embedded = if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                Some(std::net::Ipv4Addr::new(a, b, c, d))
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0; 6] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                Some(std::net::Ipv4Addr::new(a, b, c, d))
            } else {
                v6.to_ipv4_mapped()
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated, still routed by some)
                || embedded.is_some_and(|v4| is_private_ip(IpAddr::V4(v4)))
        }
    }
}

/// Where and how a destination's batches are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The traces URL.
    pub url: http::Uri,
    /// Headers sent with every export (auth included).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Sentry (affects Test Connection and error decoding).
    pub is_sentry: bool,
}

impl Endpoint {
    /// The secrets this endpoint sends: every header value, the tokens inside them
    /// (`Bearer <token>`, Sentry's `sentry_key=<key>`), and query parameter values.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        for (_, v) in &self.headers {
            let Ok(v) = v.to_str() else { continue };
            secrets.push(v.to_string());
            for part in v.split([' ', ',', '=']) {
                secrets.push(part.trim().to_string());
            }
        }
        if let Some(query) = self.url.query() {
            for pair in query.split('&') {
                if let Some((_, value)) = pair.split_once('=') {
                    secrets.push(value.to_string());
                }
            }
        }
        if let Some((userinfo, _)) = self
            .url
            .authority()
            .and_then(|a| a.as_str().rsplit_once('@'))
        {
            secrets.push(userinfo.to_string());
            secrets.extend(userinfo.split(':').map(String::from));
        }
        // Short pieces and the scheme words (`Bearer`, `sentry_version`, `7`) are not
        // secrets; longest first, so a whole header value is replaced before the token
        // inside it.
        secrets.retain(|s| {
            s.len() >= 6
                && !s.starts_with("sentry_")
                && !s.starts_with("beacon/")
                && !matches!(s.as_str(), "Bearer" | "Sentry" | "Basic")
        });
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        secrets
    }

    /// `text` (a destination's error reply, say, which may echo the request's headers) with
    /// every secret of this endpoint replaced by `[redacted]`, fit for a log line or the
    /// stats' `last_error`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secrets() {
            if out.contains(&secret) {
                out = out.replace(&secret, "[redacted]");
            }
        }
        out
    }
}

/// A destination ready for the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationSpec {
    /// Stable identity: the store's id, or `config:<name>` for a destination declared in the
    /// config file. Sampling hashes it, so a rename does not reshuffle which sessions are kept.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Display name (also the metrics label).
    pub name: String,
    /// Disabled destinations receive nothing.
    pub enabled: bool,
    /// Where to send.
    pub endpoint: Endpoint,
    /// No prompt or completion text.
    pub privacy_mode: bool,
    /// Fraction exported.
    pub sampling_rate: f64,
    /// Completions whose caller's trace is not sampled are skipped (`sampled_out`).
    pub follow_caller_sampling: bool,
    /// Sentry: where failed completions go as error events (SPEC §4.3), when switched on.
    pub error_events: Option<Endpoint>,
    /// Key ids (or names) whose completions are exported; empty = all.
    pub api_keys: Vec<String>,
}

impl DestinationSpec {
    /// Validates `config` for `tenant_id`.
    pub fn new(
        tenant_id: &str,
        config: &DestinationConfig,
        allow_private: bool,
    ) -> Result<Self, DestinationError> {
        let mut error_events = None;
        let endpoint = match &config.kind {
            DestinationKind::Sentry { otlp_endpoint, dsn } => {
                let url = check_url("otlp_endpoint", otlp_endpoint, allow_private)?;
                let parsed = Dsn::parse(dsn)?;
                check_url("dsn", dsn, allow_private)?;
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
                let auth = http::HeaderValue::try_from(parsed.auth_header())
                    .map_err(|_| err("dsn", "invalid public key"))?;
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
                error_events = config.error_events.unwrap_or(true).then(|| Endpoint {
                    url: envelope,
                    headers: vec![(http::HeaderName::from_static("x-sentry-auth"), auth.clone())],
                    is_sentry: true,
                });
                Endpoint {
                    url,
                    headers: vec![(http::HeaderName::from_static("x-sentry-auth"), auth)],
                    is_sentry: true,
                }
            }
            DestinationKind::Otlp { endpoint, headers } => {
                let url = check_url("endpoint", endpoint, allow_private)?;
                let mut hs = Vec::new();
                for (k, v) in headers {
                    let name = http::HeaderName::try_from(k.as_str())
                        .map_err(|_| err(&format!("headers.{k}"), "invalid header name"))?;
                    let mut value = http::HeaderValue::try_from(v.as_str())
                        .map_err(|_| err(&format!("headers.{k}"), "invalid header value"))?;
                    value.set_sensitive(true);
                    hs.push((name, value));
                }
                Endpoint {
                    url,
                    headers: hs,
                    is_sentry: false,
                }
            }
        };
        // Sentry destinations follow the caller by default (SPEC §4.5): an app that dropped
        // its trace should not find orphan gateway spans in it.
        let follow_caller_sampling = config.follow_caller_sampling.unwrap_or(endpoint.is_sentry);
        Ok(Self {
            id: config
                .id
                .clone()
                .unwrap_or_else(|| format!("config:{}", config.name)),
            tenant_id: tenant_id.to_string(),
            name: config.name.clone(),
            enabled: config.enabled,
            endpoint,
            privacy_mode: config.privacy_mode,
            sampling_rate: config.sampling_rate,
            follow_caller_sampling,
            error_events,
            api_keys: config.api_keys.clone(),
        })
    }

    /// Whether completions made with `key_id` go to this destination.
    pub fn accepts_key(&self, key_id: &str) -> bool {
        self.api_keys.is_empty() || self.api_keys.iter().any(|k| k == key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "https://o123.ingest.us.sentry.io/api/456/integration/otlp/v1/traces";
    const DSN: &str = "https://abc123@o123.ingest.us.sentry.io/456";

    fn otlp(endpoint: &str) -> DestinationConfig {
        DestinationConfig {
            kind: DestinationKind::Otlp {
                endpoint: endpoint.into(),
                headers: vec![],
            },
            ..sentry(EP, DSN)
        }
    }

    fn sentry(endpoint: &str, dsn: &str) -> DestinationConfig {
        DestinationConfig {
            id: None,
            name: "s".into(),
            enabled: true,
            kind: DestinationKind::Sentry {
                otlp_endpoint: endpoint.into(),
                dsn: dsn.into(),
            },
            privacy_mode: false,
            follow_caller_sampling: None,
            error_events: None,
            sampling_rate: 1.0,
            api_keys: vec![],
        }
    }

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
    fn sentry_destination_cross_validation() {
        let spec = DestinationSpec::new("t", &sentry(EP, DSN), false).unwrap();
        assert_eq!(spec.endpoint.headers[0].0, "x-sentry-auth");
        assert!(spec.endpoint.is_sentry);

        let e = DestinationSpec::new(
            "t",
            &sentry(EP, "https://abc123@o123.ingest.us.sentry.io/789"),
            false,
        )
        .unwrap_err();
        assert_eq!(e.field, "dsn");
        assert!(
            e.message.contains("789") && e.message.contains("456"),
            "{e}"
        );

        let e = DestinationSpec::new(
            "t",
            &sentry("https://o1.ingest.sentry.io/api/456/envelope/", DSN),
            false,
        )
        .unwrap_err();
        assert_eq!(e.field, "otlp_endpoint");
        let e = DestinationSpec::new("t", &sentry(EP, "not a dsn"), false).unwrap_err();
        assert_eq!(e.field, "dsn");
    }

    #[test]
    fn private_destinations_need_the_switch() {
        let local = "http://127.0.0.1:9/api/456/integration/otlp/v1/traces";
        let dsn = "http://abc123@127.0.0.1:9/456";
        assert_eq!(
            DestinationSpec::new("t", &sentry(local, dsn), false)
                .unwrap_err()
                .field,
            "otlp_endpoint"
        );
        assert!(DestinationSpec::new("t", &sentry(local, dsn), true).is_ok());
        for host in [
            "localhost",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "[::1]",
            "[fd00::1]",
            "100.64.0.1",
            "0.0.0.0",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_private_host(host), "{host}");
        }
        for host in ["o1.ingest.sentry.io", "8.8.8.8", "[2001:4860::1]"] {
            assert!(!is_private_host(host), "{host}");
        }
        assert!(check_url("endpoint", "http://collector.example.com/v1/traces", false).is_err());
        assert!(check_url("endpoint", "https://collector.example.com/v1/traces", false).is_ok());
    }

    #[test]
    fn ipv6_forms_of_private_ipv4_addresses_are_private() {
        for host in [
            "[::127.0.0.1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:10.0.0.1]",
            "[::10.1.2.3]",
            "[64:ff9b::169.254.169.254]",
            "[2002:7f00:1::]",
            "[2002:a9fe:a9fe::1]",
            "[fec0::1]",
            "[::]",
            "[::1]",
        ] {
            assert!(is_private_host(host), "{host}");
        }
        for host in [
            "[::8.8.8.8]",
            "[64:ff9b::8.8.8.8]",
            "[2002:0808:0808::]",
            "[2606:4700::1111]",
        ] {
            assert!(!is_private_host(host), "{host}");
        }
        let e = DestinationSpec::new("t", &otlp("https://[::127.0.0.1]:4318/v1/traces"), false);
        assert!(e.is_err(), "{e:?}");
    }

    #[test]
    fn endpoint_scrub_removes_every_secret_it_sends() {
        let mut c = otlp("https://collector.example.com/v1/traces?api_key=qs-secret-12345");
        if let DestinationKind::Otlp { headers, .. } = &mut c.kind {
            headers.push(("authorization".into(), "Bearer tok-secret-abcdef".into()));
            headers.push(("x-api-key".into(), "hdr-secret-987654".into()));
        }
        let spec = DestinationSpec::new("t", &c, false).unwrap();
        let echoed = "HTTP 400: bad request; headers: {authorization: Bearer tok-secret-abcdef, x-api-key: hdr-secret-987654} url ?api_key=qs-secret-12345";
        let clean = spec.endpoint.scrub(echoed);
        for secret in ["tok-secret-abcdef", "hdr-secret-987654", "qs-secret-12345"] {
            assert!(!clean.contains(secret), "{clean}");
        }
        assert!(clean.contains("HTTP 400: bad request"), "{clean}");
        let sentry = DestinationSpec::new("t", &sentry(EP, DSN), false).unwrap();
        let key = DSN.split("//").nth(1).unwrap().split('@').next().unwrap();
        let echoed = format!("403: X-Sentry-Auth: Sentry sentry_key={key}, sentry_version=7");
        assert!(!sentry.endpoint.scrub(&echoed).contains(key));
    }

    #[test]
    fn key_allowlist() {
        let mut c = sentry(EP, DSN);
        let spec = DestinationSpec::new("t", &c, false).unwrap();
        assert!(spec.accepts_key("key_any"));
        c.api_keys = vec!["key_a".into()];
        let spec = DestinationSpec::new("t", &c, false).unwrap();
        assert!(spec.accepts_key("key_a") && !spec.accepts_key("key_b"));
    }
}
