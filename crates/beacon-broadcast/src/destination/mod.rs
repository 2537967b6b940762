//! Destinations: where a tenant's traces go. Each type lives in one module of this folder —
//! its fields (which are secret), validation, endpoint and headers, wire format, attribute
//! dialect and Test Connection message — and is listed once in [`TYPES`].
//!
//! ```text
//! DestinationConfig { type, fields } ─▶ TYPES[type] ─▶ Fields (known names, types, sizes)
//!     ─▶ DestinationType::build ─▶ Target { endpoint + headers, wire, dialect, error events }
//!     ─▶ DestinationSpec (the pipeline's sink, Test Connection, the admin API's forms)
//! ```
//!
//! The admin API serves [`describe`] at `GET /admin/v1/destination-types`, so the console's
//! forms are drawn from the same field lists; the store keeps a type's fields as one sealed
//! JSON object. Adding a type: one module here implementing [`DestinationType`], its entry
//! in [`TYPES`], its tests.

mod address;
pub mod datadog;
pub mod grafana_cloud;
pub mod honeycomb;
pub mod langfuse;
pub mod langsmith;
pub mod otlp;
pub mod phoenix;
pub mod sentry;
pub mod webhook;

use std::sync::Arc;

use beacon_config::DestinationConfig;
use serde_json::{json, Map, Value};

pub use address::{check_url, is_private_host, is_private_ip};
pub use sentry::{sentry_endpoint_project, Dsn, SENTRY_CLIENT};

/// Every destination type, in the order the console offers them.
pub static TYPES: [&dyn DestinationType; 9] = [
    &sentry::Sentry,
    &otlp::Otlp,
    &langfuse::Langfuse,
    &langsmith::LangSmith,
    &honeycomb::Honeycomb,
    &grafana_cloud::GrafanaCloud,
    &datadog::Datadog,
    &phoenix::Phoenix,
    &webhook::Webhook,
];

/// The type called `name`, if there is one.
pub fn lookup(name: &str) -> Option<&'static dyn DestinationType> {
    TYPES.iter().copied().find(|t| t.name() == name)
}

/// Longest value of one field, in bytes.
pub const MAX_FIELD_BYTES: usize = 4096;
/// Most headers an `otlp` destination may send.
pub const MAX_HEADERS: usize = 32;

/// A destination setting that cannot work, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DestinationError {
    /// `otlp_endpoint`, `dsn`, `endpoint`, `headers.<name>`, ...
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

pub(crate) fn err(field: &str, message: impl Into<String>) -> DestinationError {
    DestinationError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// What a field holds, for validation, redaction and the console's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A URL, checked by [`check_url`] (https, public host); a user part and query values
    /// (`?api_key=…`) are shown redacted.
    Url,
    /// A URL that is itself a credential (a webhook URL with a token in its path): checked
    /// like [`FieldKind::Url`], shown as its scheme and host only.
    SecretUrl,
    /// Plain text, shown as is.
    Text,
    /// A credential: shown redacted, kept when a patch sends the redacted form back.
    Secret,
    /// A Sentry DSN: a URL whose user part is the key (redacted as such).
    Dsn,
    /// Request headers, name → value; the values are secrets.
    Headers,
    /// One of a fixed list.
    Choice(&'static [&'static str]),
}

impl FieldKind {
    fn label(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::SecretUrl => "secret_url",
            Self::Text => "text",
            Self::Secret => "secret",
            Self::Dsn => "dsn",
            Self::Headers => "headers",
            Self::Choice(_) => "choice",
        }
    }

    /// Whether the field's value is (or holds) a credential.
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            Self::Secret | Self::Dsn | Self::Headers | Self::SecretUrl
        )
    }

    /// Whether a change of the field moves the destination to another address.
    fn addresses(self) -> bool {
        matches!(self, Self::Url | Self::SecretUrl | Self::Choice(_))
    }
}

/// One field of a destination type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The key in TOML and JSON.
    pub name: &'static str,
    /// The console's label.
    pub label: &'static str,
    /// What it holds.
    pub kind: FieldKind,
    /// Must be given.
    pub required: bool,
    /// What an absent field means (shown as the form's placeholder).
    pub default: Option<&'static str>,
    /// One line of help: where to copy it from.
    pub help: &'static str,
}

impl Field {
    /// A required field.
    pub const fn required(
        name: &'static str,
        label: &'static str,
        kind: FieldKind,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            label,
            kind,
            required: true,
            default: None,
            help,
        }
    }

    /// An optional field; `default` is what its absence means.
    pub const fn optional(
        name: &'static str,
        label: &'static str,
        kind: FieldKind,
        default: Option<&'static str>,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            label,
            kind,
            required: false,
            default,
            help,
        }
    }
}

/// How a destination's batches are encoded.
#[derive(Clone, PartialEq, Eq)]
pub enum Wire {
    /// An OTLP `ExportTraceServiceRequest`, protobuf, gzipped.
    OtlpProtobuf,
    /// The records as a JSON array, uncompressed, signed with this key (SPEC §4.4 `webhook`).
    SignedJson(Arc<[u8]>),
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtlpProtobuf => f.write_str("OtlpProtobuf"),
            Self::SignedJson(_) => f.write_str("SignedJson([redacted])"),
        }
    }
}

/// Which attribute conventions the spans carry besides OpenTelemetry's `gen_ai.*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// `gen_ai.*` and Sentry's names only.
    #[default]
    GenAi,
    /// Also Langfuse's `langfuse.*` trace and observation attributes.
    Langfuse,
    /// Also OpenInference's (`openinference.span.kind`, `llm.*`, `input.value`, …).
    OpenInference,
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
    /// An endpoint at `url` sending `headers` (their values marked sensitive).
    pub fn new(url: http::Uri, headers: Vec<(http::HeaderName, http::HeaderValue)>) -> Self {
        let headers = headers
            .into_iter()
            .map(|(k, mut v)| {
                v.set_sensitive(true);
                (k, v)
            })
            .collect();
        Self {
            url,
            headers,
            is_sentry: false,
        }
    }

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
        // Short pieces, the scheme words (`Bearer`, `sentry_version`, `7`) and fixed header
        // values of a type (`llmobs`) are not secrets; longest first, so a whole header
        // value is replaced before the token inside it.
        secrets.retain(|s| {
            s.len() >= 6
                && !s.starts_with("sentry_")
                && !s.starts_with("beacon/")
                && !matches!(s.as_str(), "Bearer" | "Sentry" | "Basic" | "llmobs")
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

/// What a type's [`DestinationType::build`] makes of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where batches go.
    pub endpoint: Endpoint,
    /// How they are encoded.
    pub wire: Wire,
    /// Which attribute conventions the spans carry.
    pub dialect: Dialect,
    /// Sentry: where failed completions go as error events (SPEC §4.3).
    pub error_events: Option<Endpoint>,
}

impl Target {
    /// OTLP protobuf to `url` with `headers`, `gen_ai.*` attributes.
    pub fn otlp(url: http::Uri, headers: Vec<(http::HeaderName, http::HeaderValue)>) -> Self {
        Self {
            endpoint: Endpoint::new(url, headers),
            wire: Wire::OtlpProtobuf,
            dialect: Dialect::GenAi,
            error_events: None,
        }
    }
}

/// What a type's build may need besides its fields.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// `broadcast.allow_private_destinations`.
    pub allow_private: bool,
    /// The destination's `error_events` switch (`None`: the type's default).
    pub error_events: Option<bool>,
}

/// One destination type: everything Beacon knows about it.
pub trait DestinationType: Sync {
    /// The `type` value in TOML and JSON.
    fn name(&self) -> &'static str;
    /// The name people know it by.
    fn label(&self) -> &'static str;
    /// Where its ingestion is documented (shown with the console's form).
    fn docs(&self) -> &'static str;
    /// Its fields.
    fn fields(&self) -> &'static [Field];
    /// Validates `fields` (already checked for known names, types and sizes) into where
    /// and how to send.
    fn build(&self, fields: &Fields<'_>, cx: &Context) -> Result<Target, DestinationError>;
    /// Whether its destinations skip completions whose caller's trace is not sampled
    /// unless told otherwise (SPEC §4.5).
    fn follows_caller_by_default(&self) -> bool {
        false
    }
    /// Test Connection's message when the test span was accepted.
    fn accepted(&self) -> String {
        format!("{} accepted the test span.", self.label())
    }
}

/// A destination's fields, checked against its type's list: every name known, every value
/// of its kind's JSON type, no string over [`MAX_FIELD_BYTES`].
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    type_name: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Checks `map` against `ty`'s fields.
    pub fn check(
        ty: &'static dyn DestinationType,
        map: &'a Map<String, Value>,
    ) -> Result<Self, DestinationError> {
        let known = ty.fields();
        for (key, value) in map {
            let Some(field) = known.iter().find(|f| f.name == key) else {
                let names: Vec<&str> = known.iter().map(|f| f.name).collect();
                return Err(err(
                    key,
                    format!(
                        "is not a field of type `{}` (its fields: {})",
                        ty.name(),
                        names.join(", ")
                    ),
                ));
            };
            match (field.kind, value) {
                (_, Value::Null) => {}
                (FieldKind::Headers, Value::Object(headers)) => {
                    if headers.len() > MAX_HEADERS {
                        return Err(err(key, format!("at most {MAX_HEADERS} headers")));
                    }
                    for (name, v) in headers {
                        let path = format!("{key}.{name}");
                        match v {
                            Value::String(s) if s.len() <= MAX_FIELD_BYTES => {}
                            Value::String(_) => {
                                return Err(err(&path, format!("at most {MAX_FIELD_BYTES} bytes")))
                            }
                            _ => return Err(err(&path, "must be a string")),
                        }
                    }
                }
                (FieldKind::Headers, _) => {
                    return Err(err(key, "must be a table of header names to values"))
                }
                (_, Value::String(s)) if s.len() > MAX_FIELD_BYTES => {
                    return Err(err(key, format!("at most {MAX_FIELD_BYTES} bytes")))
                }
                (FieldKind::Choice(options), Value::String(s)) if !options.contains(&s.trim()) => {
                    return Err(err(key, format!("must be one of: {}", options.join(", "))))
                }
                (_, Value::String(_)) => {}
                _ => return Err(err(key, "must be a string")),
            }
        }
        let fields = Self {
            type_name: ty.name(),
            map,
        };
        for f in known.iter().filter(|f| f.required) {
            let present = match map.get(f.name) {
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(Value::Object(o)) => !o.is_empty(),
                _ => false,
            };
            if !present {
                return Err(err(f.name, format!("is required for type `{}`", ty.name())));
            }
        }
        Ok(fields)
    }

    /// The trimmed text of `name`; `None` when absent or empty.
    pub fn text(&self, name: &str) -> Option<&'a str> {
        self.map
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The text of a required field.
    pub fn required(&self, name: &str) -> Result<&'a str, DestinationError> {
        self.text(name)
            .ok_or_else(|| err(name, format!("is required for type `{}`", self.type_name)))
    }

    /// The URL in `name` (or `default` when absent), checked by [`check_url`].
    pub fn url(
        &self,
        name: &str,
        default: Option<&str>,
        allow_private: bool,
    ) -> Result<http::Uri, DestinationError> {
        let text = match (self.text(name), default) {
            (Some(t), _) => t,
            (None, Some(d)) => d,
            (None, None) => self.required(name)?,
        };
        check_url(name, text, allow_private)
    }

    /// The headers table `name` (empty when absent).
    pub fn headers(
        &self,
        name: &str,
    ) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, DestinationError> {
        let Some(Value::Object(table)) = self.map.get(name) else {
            return Ok(Vec::new());
        };
        table
            .iter()
            .map(|(k, v)| {
                let path = format!("{name}.{k}");
                let header = http::HeaderName::try_from(k.as_str())
                    .map_err(|_| err(&path, "invalid header name"))?;
                let value = http::HeaderValue::try_from(v.as_str().unwrap_or_default())
                    .map_err(|_| err(&path, "invalid header value"))?;
                Ok((header, value))
            })
            .collect()
    }
}

/// Checks `config`'s type and fields (names, JSON types, sizes, required ones) without
/// building it: what can be said of a destination before knowing where it runs.
pub fn check_fields(config: &DestinationConfig) -> Result<(), DestinationError> {
    let ty = lookup(&config.type_name).ok_or_else(|| unknown_type(&config.type_name))?;
    Fields::check(ty, &config.fields).map(|_| ())
}

fn unknown_type(name: &str) -> DestinationError {
    let names: Vec<&str> = TYPES.iter().map(|t| t.name()).collect();
    err(
        "type",
        format!(
            "unknown destination type `{name}` (known: {})",
            names.join(", ")
        ),
    )
}

/// A header value made from parts a user typed, naming `field` when it cannot be one.
pub fn header_value(field: &str, value: &str) -> Result<http::HeaderValue, DestinationError> {
    http::HeaderValue::try_from(value).map_err(|_| {
        err(
            field,
            "contains characters a header cannot carry (line breaks or control characters)",
        )
    })
}

/// `Basic base64(user:password)`.
pub fn basic_auth(
    field: &str,
    user: &str,
    password: &str,
) -> Result<http::HeaderValue, DestinationError> {
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    header_value(field, &format!("Basic {token}"))
}

/// `base` with `suffix` appended to its path (once: a URL already ending with it is kept).
pub fn join_path(
    field: &str,
    base: &http::Uri,
    suffix: &str,
) -> Result<http::Uri, DestinationError> {
    let path = base.path().trim_end_matches('/');
    // Already there (a trailing slash dropped: some intakes answer 404 to it), or appended.
    let suffix = if path.ends_with(suffix) { "" } else { suffix };
    let mut parts = base.clone().into_parts();
    let query = base.query().map(|q| format!("?{q}")).unwrap_or_default();
    parts.path_and_query = Some(
        format!("{path}{suffix}{query}")
            .parse()
            .map_err(|_| err(field, "is not a valid base URL"))?,
    );
    http::Uri::from_parts(parts).map_err(|_| err(field, "is not a valid base URL"))
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
    /// Its type's `type` value.
    pub type_name: &'static str,
    /// Disabled destinations receive nothing.
    pub enabled: bool,
    /// Where to send.
    pub endpoint: Endpoint,
    /// How batches are encoded.
    pub wire: Wire,
    /// Which attribute conventions the spans carry.
    pub dialect: Dialect,
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
    /// Whether its spans carry a record's prompt and answer (an OTLP destination not in
    /// privacy mode): its copy of a record has a turn at the shared conversion.
    pub fn encodes_content(&self) -> bool {
        self.encodes_spans() && !self.privacy_mode
    }

    /// Whether it sends spans (OTLP): its copy of a record has a turn at the spans' shared
    /// part.
    pub fn encodes_spans(&self) -> bool {
        matches!(self.wire, Wire::OtlpProtobuf)
    }

    /// Validates `config` for `tenant_id`.
    pub fn new(
        tenant_id: &str,
        config: &DestinationConfig,
        allow_private: bool,
    ) -> Result<Self, DestinationError> {
        let ty = lookup(&config.type_name).ok_or_else(|| unknown_type(&config.type_name))?;
        let fields = Fields::check(ty, &config.fields)?;
        let target = ty.build(
            &fields,
            &Context {
                allow_private,
                error_events: config.error_events,
            },
        )?;
        let follow_caller_sampling = config
            .follow_caller_sampling
            .unwrap_or_else(|| ty.follows_caller_by_default());
        Ok(Self {
            id: config
                .id
                .clone()
                .unwrap_or_else(|| format!("config:{}", config.name)),
            tenant_id: tenant_id.to_string(),
            name: config.name.clone(),
            type_name: ty.name(),
            enabled: config.enabled,
            endpoint: target.endpoint,
            wire: target.wire,
            dialect: target.dialect,
            privacy_mode: config.privacy_mode,
            sampling_rate: config.sampling_rate,
            follow_caller_sampling,
            error_events: target.error_events,
            api_keys: config.api_keys.clone(),
        })
    }

    /// Whether completions made with `key_id` go to this destination.
    pub fn accepts_key(&self, key_id: &str) -> bool {
        self.api_keys.is_empty() || self.api_keys.iter().any(|k| k == key_id)
    }

    /// Test Connection's message when the test was accepted.
    pub fn accepted_message(&self) -> String {
        lookup(self.type_name).map_or_else(
            || "The destination accepted the test span.".to_string(),
            |t| t.accepted(),
        )
    }
}

/// Every type with its fields, as the admin API serves it for the console's forms.
pub fn describe() -> Value {
    Value::Array(
        TYPES
            .iter()
            .map(|t| {
                let fields: Vec<Value> = t
                    .fields()
                    .iter()
                    .map(|f| {
                        let mut field = json!({
                            "name": f.name,
                            "label": f.label,
                            "kind": f.kind.label(),
                            "secret": f.kind.is_secret(),
                            "required": f.required,
                            "default": f.default,
                            "help": f.help,
                        });
                        if let FieldKind::Choice(options) = f.kind {
                            field["options"] = json!(options);
                        }
                        field
                    })
                    .collect();
                json!({
                    "type": t.name(),
                    "label": t.label(),
                    "docs": t.docs(),
                    "fields": fields,
                    "error_events": t.name() == "sentry",
                    "follow_caller_sampling": t.follows_caller_by_default(),
                })
            })
            .collect(),
    )
}

/// A secret as shown: its first four characters and an ellipsis.
pub fn redact(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    if secret.chars().count() <= 4 {
        "…".to_string()
    } else {
        format!("{shown}…")
    }
}

/// A DSN with its public key redacted: `https://abc1…@o1.ingest.sentry.io/2`.
pub fn redact_dsn(dsn: &str) -> String {
    match dsn.split_once("://").and_then(|(scheme, rest)| {
        rest.rsplit_once('@')
            .map(|(userinfo, host)| (scheme, userinfo, host))
    }) {
        Some((scheme, userinfo, host)) => format!("{scheme}://{}@{host}", redact(userinfo)),
        None => redact(dsn),
    }
}

/// The kind of `type_name`'s field `name`; an unknown type's or field's values are treated
/// as secrets, so nothing unknown is ever shown in clear.
fn kind_of(type_name: &str, name: &str) -> FieldKind {
    lookup(type_name)
        .and_then(|t| t.fields().iter().find(|f| f.name == name))
        .map_or(FieldKind::Secret, |f| f.kind)
}

/// A URL with its user part and query values redacted (`https://…@host/path?key=…`).
fn redact_url(url: &str) -> String {
    let (rest, query) = match url.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (url, None),
    };
    let mut out = match rest.split_once("://") {
        Some((scheme, after)) => match after.split_once('/') {
            Some((authority, path)) => format!("{scheme}://{}/{path}", redact_authority(authority)),
            None => format!("{scheme}://{}", redact_authority(after)),
        },
        None => rest.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) => format!("{k}=…"),
                None => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

fn redact_authority(authority: &str) -> String {
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => authority.to_string(),
    }
}

/// A secret URL as shown: scheme and host only.
fn redact_secret_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, after)) => {
            let authority = after.split(['/', '?']).next().unwrap_or_default();
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}/…")
        }
        None => redact(url),
    }
}

fn redact_value(kind: FieldKind, value: &Value) -> Value {
    match (kind, value) {
        (FieldKind::Dsn, Value::String(s)) => Value::String(redact_dsn(s)),
        (FieldKind::Url, Value::String(s)) => Value::String(redact_url(s)),
        (FieldKind::SecretUrl, Value::String(s)) => Value::String(redact_secret_url(s)),
        (FieldKind::Headers, Value::Object(h)) => Value::Object(
            h.iter()
                .map(|(k, v)| (k.clone(), redact_value(FieldKind::Secret, v)))
                .collect(),
        ),
        (FieldKind::Secret | FieldKind::Headers, Value::String(s)) => Value::String(redact(s)),
        (_, Value::Null) => Value::Null,
        (FieldKind::Secret | FieldKind::Headers | FieldKind::SecretUrl | FieldKind::Dsn, _) => {
            Value::String("…".into())
        }
        (_, v) => v.clone(),
    }
}

/// A destination's fields as shown: every secret redacted.
pub fn redacted_fields(type_name: &str, fields: &Map<String, Value>) -> Map<String, Value> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), redact_value(kind_of(type_name, k), v)))
        .collect()
}

/// A patched field: a secret sent back in the redacted form it was shown in means
/// "unchanged" (the console and API clients send back what they were shown).
pub fn keep_redacted(
    type_name: &str,
    name: &str,
    value: Value,
    current: &Map<String, Value>,
) -> Value {
    let kind = kind_of(type_name, name);
    let Some(old) = current.get(name) else {
        return value;
    };
    match (kind, value, old) {
        (FieldKind::Headers, Value::Object(new), Value::Object(old)) => Value::Object(
            new.into_iter()
                .map(|(k, v)| match (old.get(&k), v) {
                    (Some(Value::String(o)), Value::String(s)) if s == redact(o) => {
                        (k, Value::String(o.clone()))
                    }
                    (_, v) => (k, v),
                })
                .collect(),
        ),
        // A secret, or a URL whose credentials were shown redacted, sent back as shown.
        (k, v, old) if (k.is_secret() || k == FieldKind::Url) && v == redact_value(k, old) => {
            old.clone()
        }
        (_, v, _) => v,
    }
}

/// A change that moves a stored destination to another address must bring its secrets again:
/// a stored secret is only ever sent where it was saved to be sent. When `patch` changes a
/// URL (or a choice that decides it, like Datadog's site), every secret the destination has
/// must be in `patch`, newly entered — not left out, not the redacted form it was shown in.
/// Otherwise a caller who can only see redacted secrets could test (or save) the
/// destination against a server of theirs and read the real ones there.
pub fn secrets_stay_with_their_address(
    type_name: &str,
    current: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), DestinationError> {
    let Some(ty) = lookup(type_name) else {
        return Ok(());
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let moved = ty.fields().iter().any(|f| {
        let (Some(new), old) = (patch.get(f.name), current.get(f.name)) else {
            return false;
        };
        let shown = old.map(|o| redact_value(f.kind, o));
        f.kind.addresses() && text(Some(new)) != text(old) && Some(new) != shown.as_ref()
    });
    if !moved {
        return Ok(());
    }
    for f in ty.fields().iter().filter(|f| f.kind.is_secret()) {
        let Some(old) = current.get(f.name).filter(|v| !v.is_null()) else {
            continue;
        };
        let again = match (patch.get(f.name), old) {
            (None, _) => false,
            (Some(Value::Object(new)), Value::Object(old)) => new.iter().all(|(k, v)| {
                old.get(k)
                    .is_none_or(|o| *v != redact_value(FieldKind::Secret, o))
            }),
            (Some(new), old) => *new != redact_value(f.kind, old),
        };
        if !again {
            return Err(err(
                f.name,
                "enter it again: the destination's address changed, and a stored secret is only sent to the address it was saved with",
            ));
        }
    }
    Ok(())
}

/// Every secret value among `fields` (and the parts of a DSN), longest first: what must
/// never reach a client or a log line.
pub fn secret_values(type_name: &str, fields: &Map<String, Value>) -> Vec<String> {
    let mut secrets = Vec::new();
    for (k, v) in fields {
        let kind = kind_of(type_name, k);
        if !kind.is_secret() {
            continue;
        }
        match v {
            Value::String(s) => {
                secrets.push(s.clone());
                if kind == FieldKind::Dsn {
                    if let Some((_, rest)) = s.split_once("://") {
                        if let Some((userinfo, _)) = rest.rsplit_once('@') {
                            secrets.push(userinfo.to_string());
                            secrets.extend(userinfo.split(':').map(String::from));
                        }
                    }
                }
            }
            Value::Object(h) => {
                secrets.extend(h.values().filter_map(Value::as_str).map(String::from));
            }
            _ => {}
        }
    }
    secrets.retain(|s| s.len() >= 4);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A destination of `type_name` with `fields` (a JSON object).
    pub(crate) fn config(type_name: &str, fields: Value) -> DestinationConfig {
        DestinationConfig {
            id: None,
            name: "d".into(),
            enabled: true,
            type_name: type_name.into(),
            fields: match fields {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            privacy_mode: false,
            follow_caller_sampling: None,
            error_events: None,
            sampling_rate: 1.0,
            api_keys: vec![],
        }
    }

    /// The spec of `type_name` with `fields`, public addresses only.
    pub(crate) fn spec(
        type_name: &str,
        fields: Value,
    ) -> Result<DestinationSpec, DestinationError> {
        DestinationSpec::new("t", &config(type_name, fields), false)
    }

    #[test]
    fn only_otlp_destinations_outside_privacy_mode_encode_content() {
        let otlp = || spec("otlp", json!({"endpoint": "https://collector.example.com"})).unwrap();
        assert!(otlp().encodes_content());
        let private = DestinationSpec {
            privacy_mode: true,
            ..otlp()
        };
        assert!(!private.encodes_content());
        let webhook = spec(
            "webhook",
            json!({"url": "https://hooks.example.com/beacon", "secret": "0123456789abcdef"}),
        )
        .unwrap();
        assert!(
            !webhook.encodes_content(),
            "its JSON carries the raw record"
        );
    }

    /// The value of header `name`.
    pub(crate) fn header<'s>(spec: &'s DestinationSpec, name: &str) -> Option<&'s str> {
        spec.endpoint
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn unknown_types_and_fields_are_errors_naming_the_field() {
        let e = spec("splunk", json!({})).unwrap_err();
        assert_eq!(e.field, "type");
        assert!(
            e.message.contains("langfuse") && e.message.contains("webhook"),
            "{e}"
        );
        let e = spec(
            "otlp",
            json!({"endpoint": "https://c.example.com/v1/traces", "colour": "red"}),
        )
        .unwrap_err();
        assert_eq!(e.field, "colour");
        let e = spec("otlp", json!({"endpoint": 7})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("endpoint", "must be a string")
        );
        let e = spec("otlp", json!({"endpoint": ""})).unwrap_err();
        assert_eq!(e.field, "endpoint");
        let e = spec(
            "otlp",
            json!({"endpoint": "https://c.example.com/v1/traces", "headers": {"x-a": 1}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "headers.x-a");
        let e = spec(
            "otlp",
            json!({"endpoint": "https://c.example.com/v1/traces", "headers": "x"}),
        )
        .unwrap_err();
        assert_eq!(e.field, "headers");
        let long = "a".repeat(MAX_FIELD_BYTES + 1);
        let e = spec("langsmith", json!({"api_key": long})).unwrap_err();
        assert_eq!(e.field, "api_key");
        let e = spec("datadog", json!({"api_key": "k", "site": "example.com"})).unwrap_err();
        assert_eq!(e.field, "site");
    }

    #[test]
    fn every_type_refuses_plain_http_to_a_public_host_naming_its_url_field() {
        for t in TYPES {
            let mut fields = Map::new();
            let mut url_field = None;
            for f in t.fields() {
                let value = match f.kind {
                    FieldKind::Url | FieldKind::SecretUrl => {
                        url_field.get_or_insert(f.name);
                        "http://collector.example.com/api/1/integration/otlp/v1/traces/otlp"
                    }
                    FieldKind::Dsn => "https://abc123@collector.example.com/1",
                    FieldKind::Choice(o) => o[0],
                    FieldKind::Headers => continue,
                    _ => "1234567890",
                };
                fields.insert(f.name.into(), value.into());
            }
            let Some(url_field) = url_field else { continue };
            let e = spec(t.name(), Value::Object(fields)).unwrap_err();
            assert_eq!(e.field, url_field, "{}: {e}", t.name());
            assert!(e.message.contains("https"), "{}: {e}", t.name());
        }
    }

    #[test]
    fn every_type_is_described_with_its_secrets_marked() {
        let d = describe();
        let types = d.as_array().unwrap();
        assert_eq!(types.len(), TYPES.len());
        for t in types {
            let fields = t["fields"].as_array().unwrap();
            assert!(!fields.is_empty(), "{t}");
            assert!(t["docs"].as_str().unwrap().starts_with("https://"), "{t}");
        }
        let langfuse = types.iter().find(|t| t["type"] == "langfuse").unwrap();
        let secret: Vec<&str> = langfuse["fields"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["secret"] == true)
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(secret, ["secret_key"]);
        let datadog = types.iter().find(|t| t["type"] == "datadog").unwrap();
        assert_eq!(datadog["fields"][0]["options"][0], "datadoghq.com");
    }

    #[test]
    fn redaction_shows_no_secret_and_a_redacted_patch_keeps_the_secret() {
        let fields = json!({"host": "https://cloud.langfuse.com", "public_key": "pk-lf-1234",
            "secret_key": "sk-lf-abcdefgh"});
        let fields = fields.as_object().unwrap();
        let shown = redacted_fields("langfuse", fields);
        assert_eq!(shown["secret_key"], "sk-l…");
        assert_eq!(shown["public_key"], "pk-lf-1234");
        assert_eq!(
            keep_redacted("langfuse", "secret_key", json!("sk-l…"), fields),
            "sk-lf-abcdefgh"
        );
        assert_eq!(
            keep_redacted("langfuse", "secret_key", json!("sk-new-key"), fields),
            "sk-new-key"
        );
        assert_eq!(secret_values("langfuse", fields), ["sk-lf-abcdefgh"]);
        // An unknown type's values are all secrets.
        assert_eq!(redacted_fields("gone", fields)["host"], "http…");
        let headers = json!({"endpoint": "https://c.example.com", "headers": {"authorization": "Bearer abcdef"}});
        let headers = headers.as_object().unwrap();
        let shown = redacted_fields("otlp", headers);
        assert_eq!(shown["headers"]["authorization"], "Bear…");
        assert_eq!(
            keep_redacted(
                "otlp",
                "headers",
                json!({"authorization": "Bear…", "x-b": "new"}),
                headers
            ),
            json!({"authorization": "Bearer abcdef", "x-b": "new"})
        );
    }

    #[test]
    fn urls_are_shown_without_their_credentials() {
        assert_eq!(
            redact_url("https://user:pass@c.example.com/v1/traces?api_key=k1&x=2"),
            "https://…@c.example.com/v1/traces?api_key=…&x=…"
        );
        assert_eq!(
            redact_url("https://c.example.com/v1/traces"),
            "https://c.example.com/v1/traces"
        );
        assert_eq!(
            redact_secret_url("https://hooks.slack.com/services/T0/B0/secret-token"),
            "https://hooks.slack.com/…"
        );
        let fields = json!({"url": "https://hooks.example.com/t/secret-token", "secret": "0123456789abcdef"});
        let fields = fields.as_object().unwrap();
        let shown = redacted_fields("webhook", fields);
        assert_eq!(shown["url"], "https://hooks.example.com/…");
        assert!(!Value::Object(shown.clone())
            .to_string()
            .contains("secret-token"));
        // Sent back as shown: unchanged, not a move; a new URL is a move.
        assert_eq!(
            keep_redacted("webhook", "url", shown["url"].clone(), fields),
            fields["url"]
        );
        let patch = |v: Value| v.as_object().unwrap().clone();
        assert!(secrets_stay_with_their_address(
            "webhook",
            fields,
            &patch(json!({"url": "https://hooks.example.com/…", "secret": "0123…"}))
        )
        .is_ok());
        assert_eq!(
            secrets_stay_with_their_address(
                "webhook",
                fields,
                &patch(json!({"url": "https://evil.example.com/x"}))
            )
            .unwrap_err()
            .field,
            "secret"
        );
        let otlp = json!({"endpoint": "https://c.example.com/v1/traces?api_key=k-123456"});
        let otlp = otlp.as_object().unwrap();
        let shown = redacted_fields("otlp", otlp);
        assert_eq!(
            shown["endpoint"],
            "https://c.example.com/v1/traces?api_key=…"
        );
        assert_eq!(
            keep_redacted("otlp", "endpoint", shown["endpoint"].clone(), otlp),
            otlp["endpoint"]
        );
    }

    #[test]
    fn a_moved_destination_needs_its_secrets_again() {
        let current = json!({"host": "https://cloud.langfuse.com", "public_key": "pk-1",
            "secret_key": "sk-lf-secret"});
        let current = current.as_object().unwrap();
        let patch = |v: Value| v.as_object().unwrap().clone();
        // Same address: a redacted secret is kept.
        assert!(secrets_stay_with_their_address(
            "langfuse",
            current,
            &patch(json!({"public_key": "pk-2", "secret_key": "sk-l…"}))
        )
        .is_ok());
        // A new address with the secret left out or sent back redacted: refused, named.
        for p in [
            json!({"host": "https://evil.example.com"}),
            json!({"host": "https://evil.example.com", "secret_key": "sk-l…"}),
        ] {
            let e = secrets_stay_with_their_address("langfuse", current, &patch(p)).unwrap_err();
            assert_eq!(e.field, "secret_key");
        }
        // A new address with the secret entered again: fine.
        assert!(secrets_stay_with_their_address(
            "langfuse",
            current,
            &patch(json!({"host": "https://lf.example.com", "secret_key": "sk-new"}))
        )
        .is_ok());
        // Datadog's site decides its address; OTLP headers count as secrets.
        let dd = json!({"site": "datadoghq.com", "api_key": "dd-key-123"});
        assert!(secrets_stay_with_their_address(
            "datadog",
            dd.as_object().unwrap(),
            &patch(json!({"site": "datadoghq.eu"}))
        )
        .is_err());
        let otlp = json!({"endpoint": "https://c.example.com", "headers": {"authorization": "Bearer abcdef"}});
        assert_eq!(secrets_stay_with_their_address("otlp", otlp.as_object().unwrap(),
            &patch(json!({"endpoint": "https://evil.example.com", "headers": {"authorization": "Bear…"}})))
            .unwrap_err().field, "headers");
        assert!(secrets_stay_with_their_address("otlp", otlp.as_object().unwrap(),
            &patch(json!({"endpoint": "https://d.example.com", "headers": {"authorization": "Bearer new"}}))).is_ok());
    }

    #[test]
    fn endpoint_scrub_removes_every_secret_it_sends() {
        let s = spec(
            "otlp",
            json!({"endpoint": "https://collector.example.com/v1/traces?api_key=qs-secret-12345",
                "headers": {"authorization": "Bearer tok-secret-abcdef", "x-api-key": "hdr-secret-987654"}}),
        )
        .unwrap();
        let echoed = "HTTP 400: bad request; headers: {authorization: Bearer tok-secret-abcdef, x-api-key: hdr-secret-987654} url ?api_key=qs-secret-12345";
        let clean = s.endpoint.scrub(echoed);
        for secret in ["tok-secret-abcdef", "hdr-secret-987654", "qs-secret-12345"] {
            assert!(!clean.contains(secret), "{clean}");
        }
        assert!(clean.contains("HTTP 400: bad request"), "{clean}");
        let langfuse = spec(
            "langfuse",
            json!({"public_key": "pk-lf-1", "secret_key": "sk-lf-secret-99"}),
        )
        .unwrap();
        let basic = header(&langfuse, "authorization").unwrap().to_string();
        assert!(!langfuse
            .endpoint
            .scrub(&format!("401: {basic}"))
            .contains(&basic[6..]));
    }

    #[test]
    fn key_allowlist() {
        let mut c = config(
            "otlp",
            json!({"endpoint": "https://c.example.com/v1/traces"}),
        );
        let s = DestinationSpec::new("t", &c, false).unwrap();
        assert!(s.accepts_key("key_any"));
        c.api_keys = vec!["key_a".into()];
        let s = DestinationSpec::new("t", &c, false).unwrap();
        assert!(s.accepts_key("key_a") && !s.accepts_key("key_b"));
    }

    #[test]
    fn paths_are_joined_once() {
        let base: http::Uri = "https://h.example.com/otlp/".parse().unwrap();
        assert_eq!(
            join_path("f", &base, "/v1/traces").unwrap().to_string(),
            "https://h.example.com/otlp/v1/traces"
        );
        let full: http::Uri = "https://h.example.com/otlp/v1/traces".parse().unwrap();
        assert_eq!(join_path("f", &full, "/v1/traces").unwrap(), full);
        let slash: http::Uri = "https://h.example.com/otlp/v1/traces/".parse().unwrap();
        assert_eq!(join_path("f", &slash, "/v1/traces").unwrap(), full);
        let bare: http::Uri = "https://h.example.com".parse().unwrap();
        assert_eq!(
            join_path("f", &bare, "/v1/traces").unwrap().to_string(),
            "https://h.example.com/v1/traces"
        );
    }
}
