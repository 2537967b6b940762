//! Destinations as the admin API and the CLI manage them: validated with the config file's
//! rules, tested before they are saved (SPEC §4.2), and shown with their secrets redacted.
//!
//! ```text
//! JSON body ─▶ RawDestination (field-named errors) ─▶ DestinationConfig ─▶ DestinationSpec
//!   (URL, DSN, project, address guard) ─▶ Test Connection ─ok─▶ Store ─▶ change_version += 1
//!                                                       └─fail─▶ 422 {error, test}, nothing saved
//! ```
//!
//! Destinations declared in the config file are listed too (`"source": "config"`, id
//! `config:<name>`) but are read-only here: the file owns them.

use std::sync::Arc;
use std::time::Duration;

use beacon_broadcast::destination::{self, DestinationError, DestinationSpec};
use beacon_broadcast::sink::http::ExportClient;
use beacon_broadcast::test_connection::{self, TestReport};
use beacon_config::{
    DestinationConfig, FieldError, RawDestination, TenantConfig, MAX_DESTINATIONS_PER_TYPE,
};
use beacon_store::{Store, StoredDestination};
use serde_json::{json, Map, Value};

use crate::error::AdminError;

/// Where a listed destination lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The store: managed through the admin API, the CLI and the console.
    Store,
    /// The config file: read-only here.
    Config,
}

/// A destination as listed: its id, where it lives and its settings (secrets in clear:
/// render it with [`view`]).
#[derive(Debug, Clone)]
pub struct Listed {
    /// `dst_…` for stored destinations, `config:<name>` for declared ones.
    pub id: String,
    /// Where it lives.
    pub source: Source,
    /// Settings.
    pub config: DestinationConfig,
    /// Last change (Unix seconds), for stored ones.
    pub updated_at: Option<i64>,
}

impl From<StoredDestination> for Listed {
    fn from(d: StoredDestination) -> Self {
        Self {
            id: d.id,
            source: Source::Store,
            config: d.config,
            updated_at: Some(d.updated_at),
        }
    }
}

/// Validates, tests, stores and lists destinations.
#[derive(Debug, Clone)]
pub struct Manager {
    store: Store,
    declared: Arc<Vec<TenantConfig>>,
    client: ExportClient,
    allow_private: bool,
    test_timeout: Duration,
    probes: Vec<Duration>,
}

impl Manager {
    /// A manager over `store`; `declared` are the config file's tenants (their destinations
    /// are listed read-only); tests use `client` and refuse private addresses unless
    /// `allow_private`.
    pub fn new(
        store: Store,
        declared: Vec<TenantConfig>,
        client: ExportClient,
        allow_private: bool,
        test_timeout: Duration,
    ) -> Self {
        Self {
            store,
            declared: Arc::new(declared),
            client,
            allow_private,
            test_timeout,
            probes: test_connection::SENTRY_PROBE_DELAYS.to_vec(),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn declared(&self, tenant: &str) -> &[DestinationConfig] {
        self.declared
            .iter()
            .find(|t| t.id == tenant)
            .map(|t| t.broadcast.destinations.as_slice())
            .unwrap_or_default()
    }

    /// Checks what can be checked without sending anything: URLs, the DSN, the project ids,
    /// the address guard.
    pub fn spec(
        &self,
        tenant: &str,
        config: &DestinationConfig,
    ) -> Result<DestinationSpec, AdminError> {
        DestinationSpec::new(tenant, config, self.allow_private)
            .map_err(|DestinationError { field, message }| AdminError::field(field, message))
    }

    /// Test Connection: one real test span; the report never contains a secret.
    pub async fn test(
        &self,
        tenant: &str,
        config: &DestinationConfig,
    ) -> Result<TestReport, AdminError> {
        let spec = self.spec(tenant, config)?;
        let mut report =
            test_connection::run(&spec, &self.client, self.test_timeout, &self.probes).await;
        report.message = scrub(&report.message, config);
        tracing::info!(
            tenant,
            destination = %config.name,
            ok = report.ok,
            status = report.status,
            latency_ms = report.latency_ms,
            "test connection: {}",
            report.message
        );
        Ok(report)
    }

    /// A tenant's destinations: stored ones, then those the config file declares.
    pub async fn list(&self, tenant: &str) -> Result<Vec<Listed>, AdminError> {
        let mut all: Vec<Listed> = self
            .store
            .list_destinations(tenant)
            .await?
            .into_iter()
            .map(Listed::from)
            .collect();
        all.extend(self.declared(tenant).iter().map(|c| Listed {
            id: format!("config:{}", c.name),
            source: Source::Config,
            config: c.clone(),
            updated_at: None,
        }));
        Ok(all)
    }

    /// One destination.
    pub async fn get(&self, tenant: &str, id: &str) -> Result<Listed, AdminError> {
        if let Some(name) = id.strip_prefix("config:") {
            return self
                .declared(tenant)
                .iter()
                .find(|c| c.name == name)
                .map(|c| Listed {
                    id: id.to_string(),
                    source: Source::Config,
                    config: c.clone(),
                    updated_at: None,
                })
                .ok_or_else(|| AdminError::NotFound(format!("destination `{id}`")));
        }
        Ok(self.store.get_destination(tenant, id).await?.into())
    }

    /// Creates a destination from the admin API's JSON body: saved only when its test passes.
    pub async fn create(
        &self,
        tenant: &str,
        body: Value,
    ) -> Result<(StoredDestination, TestReport), AdminError> {
        let config = parse(body)?;
        self.spec(tenant, &config)?;
        self.store.require_secret_key()?;
        let existing = self.list(tenant).await?;
        let same_type = existing
            .iter()
            .filter(|d| d.config.type_name == config.type_name)
            .count();
        if same_type >= MAX_DESTINATIONS_PER_TYPE {
            return Err(AdminError::Conflict(format!(
                "This tenant already has {MAX_DESTINATIONS_PER_TYPE} destinations of type `{}`, the most it may have.",
                config.type_name
            )));
        }
        if existing.iter().any(|d| d.config.name == config.name) {
            return Err(AdminError::Conflict(format!(
                "A destination named `{}` already exists.",
                config.name
            )));
        }
        let report = self.test(tenant, &config).await?;
        if !report.ok {
            return Err(AdminError::TestFailed(report));
        }
        let stored = self.store.create_destination(tenant, &config).await?;
        tracing::info!(tenant, destination = %stored.id, name = %config.name, kind = %config.type_name, "destination created");
        Ok((stored, report))
    }

    /// The settings `patch` would give a stored destination: fields absent from `patch` keep
    /// their value, and a secret sent back in its redacted form keeps the stored one.
    async fn patched(
        &self,
        tenant: &str,
        id: &str,
        patch: Value,
    ) -> Result<(Listed, DestinationConfig), AdminError> {
        let current = self.get(tenant, id).await?;
        if current.source == Source::Config {
            return Err(read_only(id));
        }
        let Value::Object(patch) = patch else {
            return Err(AdminError::InvalidJson(
                "expected a JSON object with the fields to change".into(),
            ));
        };
        destination::secrets_stay_with_their_address(
            &current.config.type_name,
            &current.config.fields,
            &patch,
        )
        .map_err(|DestinationError { field, message }| AdminError::field(field, message))?;
        let mut merged = fields(&current.config, false);
        for (key, value) in patch {
            match key.as_str() {
                "id" | "source" | "updated_at" | "stats" | "test" => {
                    return Err(AdminError::field(key, "cannot be changed"))
                }
                "type" if value.as_str() != Some(current.config.type_name.as_str()) => {
                    return Err(AdminError::field(
                        "type",
                        "cannot be changed: create a new destination of the other type",
                    ))
                }
                _ => {
                    let value = destination::keep_redacted(
                        &current.config.type_name,
                        &key,
                        value,
                        &current.config.fields,
                    );
                    merged.insert(key, value);
                }
            }
        }
        let config = parse(Value::Object(merged))?;
        Ok((current, config))
    }

    /// Tests what a stored destination would be with `patch` applied, saving nothing.
    pub async fn test_patched(
        &self,
        tenant: &str,
        id: &str,
        patch: Value,
    ) -> Result<TestReport, AdminError> {
        let (_, config) = self.patched(tenant, id, patch).await?;
        self.test(tenant, &config).await
    }

    /// Changes a stored destination (see [`Manager::test_patched`] for how `patch` applies).
    /// A change of endpoint, DSN or headers is tested first and saved only if the test
    /// passes; the report is returned then.
    pub async fn update(
        &self,
        tenant: &str,
        id: &str,
        patch: Value,
    ) -> Result<(StoredDestination, Option<TestReport>), AdminError> {
        let (current, config) = self.patched(tenant, id, patch).await?;
        if config.name != current.config.name {
            let existing = self.list(tenant).await?;
            if existing.iter().any(|d| d.config.name == config.name) {
                return Err(AdminError::Conflict(format!(
                    "A destination named `{}` already exists.",
                    config.name
                )));
            }
        }
        self.spec(tenant, &config)?;
        self.store.require_secret_key()?;
        let report = if (&config.type_name, &config.fields)
            == (&current.config.type_name, &current.config.fields)
        {
            None
        } else {
            let report = self.test(tenant, &config).await?;
            if !report.ok {
                return Err(AdminError::TestFailed(report));
            }
            Some(report)
        };
        let stored = self.store.update_destination(tenant, id, &config).await?;
        tracing::info!(tenant, destination = %id, name = %config.name, retested = report.is_some(), "destination changed");
        Ok((stored, report))
    }

    /// Deletes a stored destination.
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<(), AdminError> {
        if id.starts_with("config:") {
            self.get(tenant, id).await?;
            return Err(read_only(id));
        }
        self.store.delete_destination(tenant, id).await?;
        tracing::info!(tenant, destination = %id, "destination deleted");
        Ok(())
    }
}

fn read_only(id: &str) -> AdminError {
    AdminError::Conflict(format!(
        "Destination `{id}` is declared in the config file: change it there."
    ))
}

/// Parses and validates a destination given as JSON, naming the fields at fault.
pub fn parse(body: Value) -> Result<DestinationConfig, AdminError> {
    if !body.is_object() {
        return Err(AdminError::InvalidJson(
            "expected a JSON object describing the destination".into(),
        ));
    }
    let raw: RawDestination = serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde reports missing and unknown fields at the object itself: take the name
        // from the message (`missing field `dsn``).
        let field = if path == "." {
            message
                .split('`')
                .nth(1)
                .map_or_else(|| "body".to_string(), String::from)
        } else {
            path
        };
        AdminError::Invalid(vec![FieldError::new(field, message)])
    })?;
    let config = beacon_config::destination_from_raw(raw).map_err(AdminError::Invalid)?;
    destination::check_fields(&config)
        .map_err(|DestinationError { field, message }| AdminError::field(field, message))?;
    Ok(config)
}

/// The destination's fields under their TOML names; secrets redacted when `redacted`.
pub fn fields(config: &DestinationConfig, redacted: bool) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), config.type_name.clone().into());
    m.insert("name".into(), config.name.clone().into());
    m.insert("enabled".into(), config.enabled.into());
    if redacted {
        m.extend(destination::redacted_fields(
            &config.type_name,
            &config.fields,
        ));
    } else {
        m.extend(config.fields.clone());
    }
    m.insert("privacy_mode".into(), config.privacy_mode.into());
    m.insert(
        "follow_caller_sampling".into(),
        config.follow_caller_sampling.into(),
    );
    m.insert("error_events".into(), config.error_events.into());
    m.insert("sampling_rate".into(), config.sampling_rate.into());
    m.insert("api_keys".into(), json!(config.api_keys));
    m
}

/// The JSON view of a listed destination, secrets redacted.
pub fn view(d: &Listed) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), d.id.clone().into());
    m.insert(
        "source".into(),
        match d.source {
            Source::Store => "store",
            Source::Config => "config",
        }
        .into(),
    );
    m.extend(fields(&d.config, true));
    m.insert("updated_at".into(), d.updated_at.into());
    m
}

/// Removes every secret of `config` from a message meant for a client or a log line.
pub fn scrub(message: &str, config: &DestinationConfig) -> String {
    let mut out = message.to_string();
    for s in destination::secret_values(&config.type_name, &config.fields) {
        out = out.replace(s.as_str(), &destination::redact(&s));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "https://abc123def456@o1.ingest.sentry.io/456";

    fn sentry() -> DestinationConfig {
        parse(json!({
            "type": "sentry",
            "name": "Sentry",
            "otlp_endpoint": "https://o1.ingest.sentry.io/api/456/integration/otlp/v1/traces",
            "dsn": DSN,
        }))
        .unwrap()
    }

    #[test]
    fn fields_are_named_in_errors() {
        let e = parse(json!({"type": "sentry", "name": "x", "dsn": DSN})).unwrap_err();
        assert!(e.to_string().contains("otlp_endpoint"), "{e}");
        let e = parse(json!({"type": "sentry", "name": "x", "sampling_rate": "high"})).unwrap_err();
        let AdminError::Invalid(f) = e else { panic!() };
        assert_eq!(f[0].field, "sampling_rate");
        let e = parse(json!({"type": "sentry", "name": "x", "colour": 1})).unwrap_err();
        let AdminError::Invalid(f) = e else { panic!() };
        assert_eq!(f[0].field, "colour");
        let e = parse(json!({"name": "x"})).unwrap_err();
        let AdminError::Invalid(f) = e else { panic!() };
        assert_eq!(f[0].field, "type");
        let e = parse(json!({"type": "otlp", "name": "x", "endpoint": "https://a.example/v1/traces", "sampling_rate": 2})).unwrap_err();
        let AdminError::Invalid(f) = e else { panic!() };
        assert_eq!(f[0].field, "sampling_rate");
        assert!(matches!(parse(json!([1])), Err(AdminError::InvalidJson(_))));
    }

    #[test]
    fn views_redact_secrets() {
        let c = sentry();
        let shown = Value::Object(fields(&c, true)).to_string();
        assert!(!shown.contains("abc123def456"), "{shown}");
        assert!(
            shown.contains("https://abc1…@o1.ingest.sentry.io/456"),
            "{shown}"
        );
        let otlp = parse(
            json!({"type": "otlp", "name": "t", "endpoint": "https://a.example/v1/traces",
                                "headers": {"authorization": "Bearer sekret-token-1"}}),
        )
        .unwrap();
        let shown = Value::Object(fields(&otlp, true)).to_string();
        assert!(
            !shown.contains("sekret-token-1") && shown.contains("authorization"),
            "{shown}"
        );
    }

    #[test]
    fn redacted_secrets_sent_back_mean_unchanged() {
        let c = sentry();
        let v = destination::keep_redacted(
            "sentry",
            "dsn",
            Value::String(destination::redact_dsn(DSN)),
            &c.fields,
        );
        assert_eq!(v, Value::String(DSN.into()));
        let v = destination::keep_redacted(
            "sentry",
            "dsn",
            Value::String("https://new1@o1.ingest.sentry.io/456".into()),
            &c.fields,
        );
        assert_eq!(
            v,
            Value::String("https://new1@o1.ingest.sentry.io/456".into())
        );
    }

    #[tokio::test]
    async fn without_a_secret_key_nothing_is_tested_or_saved() {
        let dir = std::env::temp_dir().join(format!("beacon-admin-nokey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("n.db").display());
        let store = Store::open(&url, beacon_store::SecretBox::new(None).unwrap())
            .await
            .unwrap();
        store.create_tenant("acme", "Acme").await.unwrap();
        let client = beacon_broadcast::sink::http::client(Duration::from_secs(1), true).unwrap();
        let manager = Manager::new(store.clone(), vec![], client, true, Duration::from_secs(1));
        // The endpoint does not exist: reaching the test would fail differently.
        let body = json!({"type": "sentry", "name": "S",
            "otlp_endpoint": "http://127.0.0.1:9/api/1/integration/otlp/v1/traces",
            "dsn": "http://abcdef@127.0.0.1:9/1"});
        let e = manager.create("acme", body).await.unwrap_err();
        assert!(e.to_string().contains("BEACON_SECRET_KEY"), "{e}");
        assert_eq!(e.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(store.list_destinations("acme").await.unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scrub_removes_keys_from_messages() {
        let c = sentry();
        let m = scrub(&format!("HTTP 403: bad key abc123def456 for {DSN}"), &c);
        assert!(!m.contains("abc123def456"), "{m}");
    }
}
