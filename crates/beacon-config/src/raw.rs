//! The config file as written: serde structs with defaults, before validation.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file. Unknown keys are errors, so a typo never silently does nothing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub broadcast: RawBroadcast,
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    #[serde(default)]
    pub pricing: BTreeMap<String, RawPrice>,
    #[serde(default)]
    pub tenants: Vec<RawTenant>,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub models: Vec<RawModel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub max_attempts: Option<i64>,
    pub deadline_secs: Option<f64>,
    pub attempt_timeout_secs: Option<f64>,
    pub max_retry_after_secs: Option<f64>,
    pub retry_backoff_secs: Option<f64>,
    pub cooldown_failures: Option<i64>,
    pub cooldown_secs: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    #[serde(default)]
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub provider: String,
    pub model: String,
    pub weight: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_body_bytes: Option<i64>,
    pub upstream_timeout_secs: Option<f64>,
    pub connect_timeout_secs: Option<f64>,
    pub shutdown_grace_secs: Option<f64>,
    pub workers: Option<i64>,
    pub header_read_timeout_secs: Option<f64>,
    pub body_read_timeout_secs: Option<f64>,
    pub idle_timeout_secs: Option<f64>,
    pub upstream_idle_timeout_secs: Option<f64>,
    pub max_connections: Option<i64>,
    pub drain_delay_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<String>,
    pub max_failed_auth: Option<i64>,
    pub failed_auth_window_secs: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<String>,
    pub usage_retention_days: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroadcast {
    pub allow_private_destinations: Option<bool>,
    pub queue_capacity: Option<i64>,
    pub record_log: Option<String>,
    pub shutdown_deadline_secs: Option<f64>,
    pub max_content_bytes: Option<i64>,
    pub destination_queue_capacity: Option<i64>,
    pub max_batch_records: Option<i64>,
    pub flush_interval_secs: Option<f64>,
    pub export_timeout_secs: Option<f64>,
    pub queue_max_bytes: Option<i64>,
    pub destination_queue_max_bytes: Option<i64>,
    pub max_metadata_value_bytes: Option<i64>,
    pub max_metadata_bytes: Option<i64>,
    pub max_metadata_keys: Option<i64>,
    pub error_events_per_minute: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub name: String,
    pub base_url: String,
    pub api_key: Option<String>,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub apis: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input: f64,
    pub output: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
    pub reasoning: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub broadcast: RawTenantBroadcast,
    #[serde(default)]
    pub limits: crate::limits::RawLimits,
    #[serde(default)]
    pub key_limits: BTreeMap<String, crate::limits::RawLimits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenantBroadcast {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub destinations: Vec<RawDestination>,
}

/// One destination as written in TOML (`[[tenants.broadcast.destinations]]`) or sent as JSON
/// to the admin API, before validation: a table whose common keys (`type`, `name`,
/// `enabled`, `privacy_mode`, `sampling_rate`, …) are read by the config and whose other
/// keys belong to the destination type (`dsn`, `endpoint`, `api_key`, …), checked by that
/// type's module in `beacon_broadcast::destination`.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct RawDestination(pub serde_json::Map<String, serde_json::Value>);
