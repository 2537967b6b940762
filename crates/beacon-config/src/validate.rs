//! `RawConfig` → `Config`: every check, every error naming its field, all errors at once.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::raw::{RawConfig, RawDestination, RawPrice};
use crate::{
    AdminConfig, AliasTarget, Api, ApiKeyConfig, ApiSet, BroadcastConfig, Config,
    DestinationConfig, FieldError, Limits, MetadataLimits, ModelAlias, Price, ProviderConfig,
    ProviderKind, RoutingConfig, ServerConfig, StoreConfig, TenantBroadcastConfig, TenantConfig,
    MAX_DESTINATIONS_PER_TYPE,
};

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub fn validate(raw: RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut errs = Vec::new();

    let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match SocketAddr::from_str(listen_text) {
        Ok(a) => a,
        Err(_) => {
            errs.push(FieldError::new(
                "server.listen",
                format!("`{listen_text}` is not an address like 127.0.0.1:8080"),
            ));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }
    };
    let server = ServerConfig {
        listen,
        max_body_bytes: positive_int(
            raw.server.max_body_bytes,
            10 * 1024 * 1024,
            "server.max_body_bytes",
            &mut errs,
        ),
        upstream_timeout: secs(
            raw.server.upstream_timeout_secs,
            600.0,
            "server.upstream_timeout_secs",
            &mut errs,
        ),
        connect_timeout: secs(
            raw.server.connect_timeout_secs,
            10.0,
            "server.connect_timeout_secs",
            &mut errs,
        ),
        shutdown_grace: secs(
            raw.server.shutdown_grace_secs,
            30.0,
            "server.shutdown_grace_secs",
            &mut errs,
        ),
        workers: match raw.server.workers {
            None | Some(0) => std::thread::available_parallelism().map_or(1, usize::from),
            Some(n @ 1..=1024) => usize::try_from(n).unwrap_or(1),
            Some(_) => {
                errs.push(FieldError::new(
                    "server.workers",
                    "must be between 0 (one per CPU) and 1024",
                ));
                1
            }
        },
        header_read_timeout: secs(
            raw.server.header_read_timeout_secs,
            30.0,
            "server.header_read_timeout_secs",
            &mut errs,
        ),
        body_read_timeout: secs(
            raw.server.body_read_timeout_secs,
            30.0,
            "server.body_read_timeout_secs",
            &mut errs,
        ),
        idle_timeout: secs(
            raw.server.idle_timeout_secs,
            30.0,
            "server.idle_timeout_secs",
            &mut errs,
        ),
        upstream_idle_timeout: secs(
            raw.server.upstream_idle_timeout_secs,
            300.0,
            "server.upstream_idle_timeout_secs",
            &mut errs,
        ),
        max_connections: positive_int(
            raw.server.max_connections,
            10_000,
            "server.max_connections",
            &mut errs,
        ),
        drain_delay: secs_or_zero(
            raw.server.drain_delay_secs,
            5.0,
            "server.drain_delay_secs",
            &mut errs,
        ),
    };

    let admin = AdminConfig {
        max_failed_auth: u32::try_from(positive_int(
            raw.admin.max_failed_auth,
            10,
            "admin.max_failed_auth",
            &mut errs,
        ))
        .unwrap_or(u32::MAX),
        failed_auth_window: secs(
            raw.admin.failed_auth_window_secs,
            60.0,
            "admin.failed_auth_window_secs",
            &mut errs,
        ),
        token: match raw.admin.token {
            Some(t) if t.len() < 16 => {
                errs.push(FieldError::new(
                    "admin.token",
                    "must be at least 16 characters (use a random secret)",
                ));
                None
            }
            other => other,
        },
    };

    let url = raw
        .store
        .url
        .unwrap_or_else(|| "sqlite://beacon.db".to_string());
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        errs.push(FieldError::new(
            "store.url",
            "must start with sqlite:// or postgres://",
        ));
    }
    let usage_retention_days = match raw.store.usage_retention_days {
        None => 90,
        Some(d) if (1..=36_500).contains(&d) => d as u32,
        Some(_) => {
            errs.push(FieldError::new(
                "store.usage_retention_days",
                "must be a number of days from 1 to 36500",
            ));
            90
        }
    };
    let store = StoreConfig {
        url,
        usage_retention_days,
    };

    let broadcast = BroadcastConfig {
        allow_private_destinations: raw.broadcast.allow_private_destinations.unwrap_or(false),
        queue_capacity: positive_int(
            raw.broadcast.queue_capacity,
            8192,
            "broadcast.queue_capacity",
            &mut errs,
        ),
        record_log: raw
            .broadcast
            .record_log
            .filter(|p| !p.is_empty())
            .map(Into::into),
        shutdown_deadline: secs(
            raw.broadcast.shutdown_deadline_secs,
            5.0,
            "broadcast.shutdown_deadline_secs",
            &mut errs,
        ),
        max_content_bytes: positive_int(
            raw.broadcast.max_content_bytes,
            256 * 1024,
            "broadcast.max_content_bytes",
            &mut errs,
        ),
        destination_queue_capacity: positive_int(
            raw.broadcast.destination_queue_capacity,
            2048,
            "broadcast.destination_queue_capacity",
            &mut errs,
        ),
        max_batch_records: positive_int(
            raw.broadcast.max_batch_records,
            256,
            "broadcast.max_batch_records",
            &mut errs,
        ),
        flush_interval: secs(
            raw.broadcast.flush_interval_secs,
            1.0,
            "broadcast.flush_interval_secs",
            &mut errs,
        ),
        export_timeout: secs(
            raw.broadcast.export_timeout_secs,
            10.0,
            "broadcast.export_timeout_secs",
            &mut errs,
        ),
        queue_max_bytes: positive_int(
            raw.broadcast.queue_max_bytes,
            256 * 1024 * 1024,
            "broadcast.queue_max_bytes",
            &mut errs,
        ),
        destination_queue_max_bytes: positive_int(
            raw.broadcast.destination_queue_max_bytes,
            64 * 1024 * 1024,
            "broadcast.destination_queue_max_bytes",
            &mut errs,
        ),
        error_events_per_minute: u32::try_from(positive_int(
            raw.broadcast.error_events_per_minute,
            1,
            "broadcast.error_events_per_minute",
            &mut errs,
        ))
        .unwrap_or(u32::MAX),
        metadata: MetadataLimits {
            value_bytes: positive_int(
                raw.broadcast.max_metadata_value_bytes,
                MetadataLimits::default().value_bytes,
                "broadcast.max_metadata_value_bytes",
                &mut errs,
            ),
            total_bytes: positive_int(
                raw.broadcast.max_metadata_bytes,
                MetadataLimits::default().total_bytes,
                "broadcast.max_metadata_bytes",
                &mut errs,
            ),
            keys: positive_int(
                raw.broadcast.max_metadata_keys,
                MetadataLimits::default().keys,
                "broadcast.max_metadata_keys",
                &mut errs,
            ),
        },
    };

    let mut providers = Vec::new();
    let mut names = HashSet::new();
    for (i, p) in raw.providers.into_iter().enumerate() {
        let field = |k: &str| format!("providers[{i}].{k}");
        if !valid_name(&p.name) {
            errs.push(FieldError::new(
                field("name"),
                "must be lowercase letters, digits, `-`, `_` or `.` (it is the model prefix)",
            ));
        } else if !names.insert(p.name.clone()) {
            errs.push(FieldError::new(
                field("name"),
                format!("duplicate provider `{}`", p.name),
            ));
        }
        let base_url = p.base_url.trim_end_matches('/').to_string();
        match http::Uri::from_str(&base_url) {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => errs.push(FieldError::new(
                field("base_url"),
                format!("`{}` is not an http(s) URL", p.base_url),
            )),
        }
        let mut headers = Vec::new();
        for (k, v) in p.headers {
            if http::HeaderName::from_str(&k).is_err() || http::HeaderValue::from_str(&v).is_err() {
                errs.push(FieldError::new(
                    field(&format!("headers.{k}")),
                    "not a valid HTTP header",
                ));
            } else {
                headers.push((k, v));
            }
        }
        let kind = match p.kind.as_deref() {
            None | Some("openai") => ProviderKind::OpenAi,
            Some("anthropic") => ProviderKind::Anthropic,
            Some(other) => {
                errs.push(FieldError::new(
                    field("kind"),
                    format!("unknown kind `{other}`; expected `openai` or `anthropic`"),
                ));
                ProviderKind::OpenAi
            }
        };
        let apis = match &p.apis {
            None => kind.default_apis(),
            Some(list) => {
                let mut apis = Vec::new();
                for (j, name) in list.iter().enumerate() {
                    match Api::parse(name) {
                        Some(api) => apis.push(api),
                        None => errs.push(FieldError::new(
                            field(&format!("apis[{j}]")),
                            format!(
                                "unknown API `{name}`; expected one of chat, responses, \
                                 embeddings, completions, messages"
                            ),
                        )),
                    }
                }
                if list.is_empty() {
                    errs.push(FieldError::new(
                        field("apis"),
                        "must name at least one API (or be left out for the kind's default)",
                    ));
                }
                ApiSet::of(&apis)
            }
        };
        providers.push(ProviderConfig {
            name: p.name,
            base_url,
            api_key: p.api_key.filter(|k| !k.is_empty()),
            default: p.default,
            headers,
            models: p.models,
            kind,
            apis,
        });
    }
    if providers.iter().filter(|p| p.default).count() > 1 {
        errs.push(FieldError::new(
            "providers",
            "at most one provider can have default = true",
        ));
    }

    let routing = routing_of(&raw.routing, &mut errs);
    let models = models_of(raw.models, &providers, &mut errs);

    let mut pricing = BTreeMap::new();
    for (model, price) in raw.pricing {
        if let Some(p) = price_of(&price, &format!("pricing.\"{model}\""), &mut errs) {
            pricing.insert(model, p);
        }
    }

    let mut tenants = Vec::new();
    let mut tenant_ids = HashSet::new();
    let mut all_keys = HashSet::new();
    for (i, t) in raw.tenants.into_iter().enumerate() {
        let field = |k: &str| format!("tenants[{i}].{k}");
        if !valid_name(&t.id) {
            errs.push(FieldError::new(
                field("id"),
                "must be lowercase letters, digits, `-`, `_` or `.`",
            ));
        } else if !tenant_ids.insert(t.id.clone()) {
            errs.push(FieldError::new(
                field("id"),
                format!("duplicate tenant `{}`", t.id),
            ));
        }
        let mut api_keys = Vec::new();
        for (k, key) in t.api_keys.iter().enumerate() {
            let entry = if let Some(hex_digest) = key.strip_prefix("sha256:") {
                match hex::decode(hex_digest)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                {
                    Some(h) => ApiKeyConfig::from_hash(h),
                    None => {
                        errs.push(FieldError::new(
                            field(&format!("api_keys[{k}]")),
                            "sha256: must be followed by 64 hex digits",
                        ));
                        continue;
                    }
                }
            } else if key.len() < 8 {
                errs.push(FieldError::new(
                    field(&format!("api_keys[{k}]")),
                    "keys must be at least 8 characters",
                ));
                continue;
            } else {
                ApiKeyConfig::from_plaintext(key)
            };
            if !all_keys.insert(entry.sha256) {
                errs.push(FieldError::new(
                    field(&format!("api_keys[{k}]")),
                    "the same key is declared twice",
                ));
                continue;
            }
            api_keys.push(entry);
        }
        let mut destinations = Vec::new();
        let mut dest_names = HashSet::new();
        for (d, dest) in t.broadcast.destinations.into_iter().enumerate() {
            let path = field(&format!("broadcast.destinations[{d}]"));
            if let Some(name) = dest.0.get("name").and_then(|n| n.as_str()) {
                if !dest_names.insert(name.to_string()) {
                    errs.push(FieldError::new(
                        format!("{path}.name"),
                        format!("duplicate destination `{name}`"),
                    ));
                }
            }
            if let Some(dc) = destination(dest, &path, &mut errs) {
                destinations.push(dc);
            }
        }
        let mut per_type: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &destinations {
            *per_type.entry(d.type_name.as_str()).or_default() += 1;
        }
        for (ty, n) in per_type {
            if n > MAX_DESTINATIONS_PER_TYPE {
                errs.push(FieldError::new(
                    field("broadcast.destinations"),
                    format!("at most {MAX_DESTINATIONS_PER_TYPE} destinations of type `{ty}`"),
                ));
            }
        }
        let limits = Limits::from_raw(&t.limits, &field("limits")).unwrap_or_else(|e| {
            errs.extend(e);
            Limits::default()
        });
        let mut key_limits = BTreeMap::new();
        for (id, raw) in &t.key_limits {
            let path = field(&format!("key_limits.\"{id}\""));
            if !is_key_id(id) {
                errs.push(FieldError::new(
                    path,
                    "must be a key id: `key_` and 12 hex digits (`beacon key list` shows them)",
                ));
                continue;
            }
            match Limits::from_raw(raw, &path) {
                Ok(l) => {
                    key_limits.insert(id.clone(), l);
                }
                Err(e) => errs.extend(e),
            }
        }
        tenants.push(TenantConfig {
            name: t.name.unwrap_or_else(|| t.id.clone()),
            id: t.id,
            api_keys,
            broadcast: TenantBroadcastConfig {
                enabled: t.broadcast.enabled,
                destinations,
            },
            limits,
            key_limits,
        });
    }

    if errs.is_empty() {
        Ok(Config {
            server,
            admin,
            store,
            broadcast,
            providers,
            pricing,
            tenants,
            routing,
            models,
        })
    } else {
        Err(errs)
    }
}

/// Validates one destination given outside the config file (the admin API sends the same
/// fields as the TOML); errors name the fields without a path prefix (`dsn`, `sampling_rate`).
pub fn destination_from_raw(d: RawDestination) -> Result<DestinationConfig, Vec<FieldError>> {
    let mut errs = Vec::new();
    match destination(d, "", &mut errs) {
        Some(c) if errs.is_empty() => Ok(c),
        _ => Err(errs
            .into_iter()
            .map(|e| FieldError::new(e.field.trim_start_matches('.'), e.message))
            .collect()),
    }
}

/// The keys of a destination table the config reads; every other key belongs to the type.
const COMMON_DESTINATION_KEYS: [&str; 8] = [
    "type",
    "name",
    "enabled",
    "privacy_mode",
    "follow_caller_sampling",
    "error_events",
    "sampling_rate",
    "api_keys",
];

fn destination(
    d: RawDestination,
    path: &str,
    errs: &mut Vec<FieldError>,
) -> Option<DestinationConfig> {
    use serde_json::Value;
    let before = errs.len();
    let mut table = d.0;
    let mut fail = |k: &str, message: &str| {
        errs.push(FieldError::new(format!("{path}.{k}"), message));
    };
    let type_name = match table.get("type") {
        Some(Value::String(t))
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            t.clone()
        }
        Some(Value::String(_)) => {
            fail(
                "type",
                "must be a destination type such as `sentry` or `otlp`",
            );
            String::new()
        }
        Some(_) => {
            fail("type", "must be a string");
            String::new()
        }
        None => {
            fail("type", "is required (`sentry`, `otlp`, `langfuse`, …)");
            String::new()
        }
    };
    let name = match table.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 100 => n.clone(),
        Some(Value::String(_)) | None => {
            fail("name", "must be 1 to 100 characters");
            String::new()
        }
        Some(_) => {
            fail("name", "must be a string");
            String::new()
        }
    };
    let mut flag = |k: &str| -> Option<bool> {
        match table.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errs.push(FieldError::new(
                    format!("{path}.{k}"),
                    "must be true or false",
                ));
                None
            }
        }
    };
    let enabled = flag("enabled").unwrap_or(true);
    let privacy_mode = flag("privacy_mode").unwrap_or(false);
    let follow_caller_sampling = flag("follow_caller_sampling");
    let error_events = flag("error_events");
    let sampling_rate = match table.get("sampling_rate") {
        None | Some(Value::Null) => 1.0,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(r) if (0.0001..=1.0).contains(&r) => r,
            _ => {
                errs.push(FieldError::new(
                    format!("{path}.sampling_rate"),
                    "must be between 0.0001 and 1",
                ));
                1.0
            }
        },
        Some(_) => {
            errs.push(FieldError::new(
                format!("{path}.sampling_rate"),
                "must be a number between 0.0001 and 1",
            ));
            1.0
        }
    };
    let api_keys = match table.get("api_keys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Some(_) => {
            errs.push(FieldError::new(
                format!("{path}.api_keys"),
                "must be a list of key ids or names",
            ));
            Vec::new()
        }
    };
    for k in COMMON_DESTINATION_KEYS {
        table.remove(k);
    }
    (errs.len() == before).then_some(DestinationConfig {
        id: None,
        name,
        enabled,
        type_name,
        fields: table,
        privacy_mode,
        follow_caller_sampling,
        error_events,
        sampling_rate,
        api_keys,
    })
}

fn price_of(p: &RawPrice, path: &str, errs: &mut Vec<FieldError>) -> Option<Price> {
    let before = errs.len();
    let mut dec = |v: f64, k: &str| -> Decimal {
        match Decimal::from_str(&v.to_string()) {
            Ok(d) if !d.is_sign_negative() => d,
            _ => {
                errs.push(FieldError::new(
                    format!("{path}.{k}"),
                    "must be a non-negative number (USD per million tokens)",
                ));
                Decimal::ZERO
            }
        }
    };
    let price = Price {
        input: dec(p.input, "input"),
        output: dec(p.output, "output"),
        cached_input: p.cached_input.map(|v| dec(v, "cached_input")),
        cache_write: p.cache_write.map(|v| dec(v, "cache_write")),
        reasoning: p.reasoning.map(|v| dec(v, "reasoning")),
    };
    (errs.len() == before).then_some(price)
}

fn routing_of(r: &crate::raw::RawRouting, errs: &mut Vec<FieldError>) -> RoutingConfig {
    let d = RoutingConfig::default();
    let count = |v: Option<i64>, default: u32, field: &str, errs: &mut Vec<FieldError>| {
        u32::try_from(positive_int(v, default as usize, field, errs).min(100)).unwrap_or(default)
    };
    RoutingConfig {
        max_attempts: count(r.max_attempts, d.max_attempts, "routing.max_attempts", errs),
        deadline: secs(
            r.deadline_secs,
            d.deadline.as_secs_f64(),
            "routing.deadline_secs",
            errs,
        ),
        attempt_timeout: secs(
            r.attempt_timeout_secs,
            d.attempt_timeout.as_secs_f64(),
            "routing.attempt_timeout_secs",
            errs,
        ),
        max_retry_after: secs_or_zero(
            r.max_retry_after_secs,
            d.max_retry_after.as_secs_f64(),
            "routing.max_retry_after_secs",
            errs,
        ),
        retry_backoff: secs_or_zero(
            r.retry_backoff_secs,
            d.retry_backoff.as_secs_f64(),
            "routing.retry_backoff_secs",
            errs,
        ),
        cooldown_failures: count(
            r.cooldown_failures,
            d.cooldown_failures,
            "routing.cooldown_failures",
            errs,
        ),
        cooldown: secs_or_zero(
            r.cooldown_secs,
            d.cooldown.as_secs_f64(),
            "routing.cooldown_secs",
            errs,
        ),
    }
}

/// `[[models]]`: names unique and not shadowed by a provider prefix, targets on configured
/// providers with positive weights, fallbacks that route somewhere and never loop back.
fn models_of(
    raw: Vec<crate::raw::RawModel>,
    providers: &[ProviderConfig],
    errs: &mut Vec<FieldError>,
) -> Vec<ModelAlias> {
    let provider = |name: &str| providers.iter().any(|p| p.name == name);
    let has_default = providers.iter().any(|p| p.default);
    let names: Vec<String> = raw.iter().map(|m| m.name.clone()).collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, m) in raw.into_iter().enumerate() {
        let field = |k: &str| format!("models[{i}].{k}");
        if m.name.trim().is_empty() || m.name.len() > 256 {
            errs.push(FieldError::new(
                field("name"),
                "must be 1 to 256 characters",
            ));
        } else if !seen.insert(m.name.clone()) {
            errs.push(FieldError::new(
                field("name"),
                format!("duplicate model alias `{}`", m.name),
            ));
        } else if let Some((prefix, _)) = m.name.split_once('/').filter(|(p, _)| provider(p)) {
            errs.push(FieldError::new(
                field("name"),
                format!("`{}` would shadow provider `{prefix}`'s models", m.name),
            ));
        }
        if m.targets.is_empty() {
            errs.push(FieldError::new(
                field("targets"),
                "must list at least one { provider, model } target",
            ));
        }
        let mut targets = Vec::new();
        for (j, t) in m.targets.into_iter().enumerate() {
            if !provider(&t.provider) {
                errs.push(FieldError::new(
                    field(&format!("targets[{j}].provider")),
                    format!("unknown provider `{}`", t.provider),
                ));
            }
            if t.model.trim().is_empty() {
                errs.push(FieldError::new(
                    field(&format!("targets[{j}].model")),
                    "must not be empty",
                ));
            }
            let weight = t.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                errs.push(FieldError::new(
                    field(&format!("targets[{j}].weight")),
                    "must be a number greater than 0",
                ));
            }
            targets.push(AliasTarget {
                provider: t.provider,
                model: t.model,
                weight,
            });
        }
        for (j, f) in m.fallbacks.iter().enumerate() {
            let routes = names.contains(f)
                || f.split_once('/')
                    .is_some_and(|(p, rest)| provider(p) && !rest.is_empty())
                || has_default;
            if !routes {
                errs.push(FieldError::new(
                    field(&format!("fallbacks[{j}]")),
                    format!(
                        "`{f}` is neither an alias nor `provider/model` of a configured provider"
                    ),
                ));
            }
        }
        out.push(ModelAlias {
            name: m.name,
            targets,
            fallbacks: m.fallbacks,
        });
    }
    // A fallback chain that comes back to an alias would loop.
    for (i, m) in out.iter().enumerate() {
        let mut stack: Vec<&str> = m.fallbacks.iter().map(String::as_str).collect();
        let mut visited = HashSet::new();
        while let Some(next) = stack.pop() {
            if next == m.name {
                errs.push(FieldError::new(
                    format!("models[{i}].fallbacks"),
                    format!("`{}` falls back to itself through its fallbacks", m.name),
                ));
                break;
            }
            if !visited.insert(next) {
                continue;
            }
            if let Some(alias) = out.iter().find(|a| a.name == next) {
                stack.extend(alias.fallbacks.iter().map(String::as_str));
            }
        }
    }
    out
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn positive_int(v: Option<i64>, default: usize, field: &str, errs: &mut Vec<FieldError>) -> usize {
    match v {
        None => default,
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(_) => {
            errs.push(FieldError::new(field, "must be a positive integer"));
            default
        }
    }
}

/// Like [`secs`], but 0 is allowed (a delay that can be switched off).
fn secs_or_zero(v: Option<f64>, default: f64, field: &str, errs: &mut Vec<FieldError>) -> Duration {
    match v {
        Some(0.0) => Duration::ZERO,
        other => secs(other, default, field, errs),
    }
}

fn secs(v: Option<f64>, default: f64, field: &str, errs: &mut Vec<FieldError>) -> Duration {
    let v = v.unwrap_or(default);
    // At least a millisecond: a positive value that rounds to a zero duration (1e-300)
    // would make every timeout fire at once.
    if v.is_finite() && (0.001..=86_400.0).contains(&v) {
        Duration::from_secs_f64(v)
    } else {
        errs.push(FieldError::new(
            field,
            "must be a number of seconds from 0.001 to 86400",
        ));
        Duration::from_secs_f64(default)
    }
}

/// `key_` followed by 12 lowercase hex digits: the id of a key.
pub fn is_key_id(id: &str) -> bool {
    id.strip_prefix("key_").is_some_and(|h| {
        h.len() == 12
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    fn env(name: &str) -> Option<String> {
        (name == "OPENAI_API_KEY").then(|| "sk-test".to_string())
    }

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "t.toml", &env) {
            Err(ConfigError::Invalid { errors, .. }) => {
                errors.iter().map(|e| e.to_string()).collect()
            }
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn the_spec_example_is_valid() {
        let text = r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 1024
upstream_timeout_secs = 60
[admin]
token = "0123456789abcdef0123"
[store]
url = "sqlite://beacon.db"
[broadcast]
allow_private_destinations = true
[[providers]]
name = "openai"
base_url = "https://api.openai.com/v1/"
api_key = "${OPENAI_API_KEY}"
default = true
[pricing."openai/gpt-4o"]
input = 2.5
cached_input = 1.25
output = 10.0
[[tenants]]
id = "acme"
api_keys = ["bk-acme-dev-1", "sha256:0000000000000000000000000000000000000000000000000000000000000001"]
[tenants.broadcast]
enabled = true
[[tenants.broadcast.destinations]]
type = "sentry"
name = "Sentry production"
otlp_endpoint = "https://o1.ingest.us.sentry.io/api/456/integration/otlp/v1/traces"
dsn = "https://abc@o1.ingest.us.sentry.io/456"
sampling_rate = 0.5
"#;
        let c = Config::parse(text, "t.toml", &env).unwrap();
        assert_eq!(c.server.max_body_bytes, 1024);
        assert_eq!(c.providers[0].base_url, "https://api.openai.com/v1");
        assert_eq!(c.providers[0].api_key.as_deref(), Some("sk-test"));
        assert_eq!(c.pricing["openai/gpt-4o"].input.to_string(), "2.5");
        assert_eq!(c.tenants[0].api_keys.len(), 2);
        assert!(c.tenants[0].api_keys[0].id.starts_with("key_"));
        assert_eq!(c.tenants[0].broadcast.destinations[0].sampling_rate, 0.5);
        assert_eq!(
            c.default_provider().map(|p| p.name.as_str()),
            Some("openai")
        );
    }

    #[test]
    fn errors_name_their_fields() {
        let e = errors(
            r#"
[server]
listen = "nowhere"
max_body_bytes = -1
[[providers]]
name = "Open AI"
base_url = "ftp://x"
[[providers]]
name = "b"
base_url = "http://b"
default = true
[[providers]]
name = "c"
base_url = "http://c"
default = true
[pricing.m]
input = -1
output = 1
[[tenants]]
id = "t"
api_keys = ["short", "sha256:zz"]
[[tenants.broadcast.destinations]]
type = "sentry"
name = "s"
sampling_rate = 2
[[tenants.broadcast.destinations]]
type = "kafka"
name = "k"
[[tenants.broadcast.destinations]]
type = "otlp"
[[tenants.broadcast.destinations]]
type = "otlp"
name = "o"
enabled = "yes"
api_keys = "all"
"#,
        );
        let joined = e.join("\n");
        for needle in [
            "server.listen",
            "server.max_body_bytes",
            "providers[0].name",
            "providers[0].base_url",
            "providers: at most one",
            "pricing.\"m\".input",
            "tenants[0].api_keys[0]",
            "tenants[0].api_keys[1]",
            "tenants[0].broadcast.destinations[0].sampling_rate",
            "tenants[0].broadcast.destinations[2].name",
            "tenants[0].broadcast.destinations[3].enabled",
            "tenants[0].broadcast.destinations[3].api_keys",
        ] {
            assert!(joined.contains(needle), "missing {needle} in:\n{joined}");
        }
    }

    #[test]
    fn provider_kind_and_apis() {
        use crate::{Api, ProviderKind};
        let c = Config::parse(
            r#"
[[providers]]
name = "openai"
base_url = "https://api.openai.com/v1"
[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "https://api.anthropic.com/v1"
[[providers]]
name = "openrouter"
base_url = "https://openrouter.ai/api/v1"
apis = ["chat", "responses", "messages"]
"#,
            "t.toml",
            &env,
        )
        .unwrap();
        let (openai, anthropic, openrouter) = (&c.providers[0], &c.providers[1], &c.providers[2]);
        assert_eq!(openai.kind, ProviderKind::OpenAi);
        assert_eq!(
            openai.apis.iter().collect::<Vec<_>>(),
            [Api::Chat, Api::Responses, Api::Embeddings, Api::Completions]
        );
        assert_eq!(anthropic.kind, ProviderKind::Anthropic);
        assert_eq!(anthropic.apis.iter().collect::<Vec<_>>(), [Api::Messages]);
        assert!(
            openrouter.apis.contains(Api::Messages) && !openrouter.apis.contains(Api::Embeddings)
        );

        let e = errors(
            r#"
[[providers]]
name = "a"
base_url = "http://a"
kind = "gemini"
[[providers]]
name = "b"
base_url = "http://b"
apis = ["chat", "images"]
[[providers]]
name = "c"
base_url = "http://c"
apis = []
"#,
        )
        .join("\n");
        for needle in [
            "providers[0].kind: unknown kind `gemini`",
            "providers[1].apis[1]: unknown API `images`",
            "providers[2].apis: must name at least one API",
        ] {
            assert!(e.contains(needle), "missing {needle} in:\n{e}");
        }
    }

    #[test]
    fn routing_and_model_aliases() {
        let c = Config::parse(
            r#"
[routing]
max_attempts = 4
deadline_secs = 30
cooldown_secs = 0
[[providers]]
name = "a"
base_url = "http://a"
[[providers]]
name = "b"
base_url = "http://b"
[[models]]
name = "smart"
targets = [{ provider = "a", model = "m", weight = 3 }, { provider = "b", model = "m" }]
fallbacks = ["cheap", "b/other"]
[[models]]
name = "cheap"
targets = [{ provider = "b", model = "small" }]
"#,
            "t.toml",
            &env,
        )
        .unwrap();
        assert_eq!(c.routing.max_attempts, 4);
        assert_eq!(c.routing.deadline, std::time::Duration::from_secs(30));
        assert!(c.routing.cooldown.is_zero());
        assert_eq!(
            c.routing.attempt_timeout,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(c.models[0].targets[0].weight, 3.0);
        assert_eq!(c.models[0].targets[1].weight, 1.0);
        assert_eq!(c.models[0].fallbacks, ["cheap", "b/other"]);

        let e = errors(
            r#"
[routing]
attempt_timeout_secs = -1
[[providers]]
name = "a"
base_url = "http://a"
[[models]]
name = "x"
targets = [{ provider = "zz", model = "m", weight = -2 }]
fallbacks = ["y", "nowhere/m"]
[[models]]
name = "y"
targets = []
fallbacks = ["x"]
[[models]]
name = "y"
targets = [{ provider = "a", model = "" }]
[[models]]
name = "a/shadow"
targets = [{ provider = "a", model = "m" }]
"#,
        )
        .join("\n");
        for needle in [
            "routing.attempt_timeout_secs",
            "models[0].targets[0].provider: unknown provider `zz`",
            "models[0].targets[0].weight",
            "models[0].fallbacks[1]",
            "models[0].fallbacks: `x` falls back to itself",
            "models[1].targets: must list at least one",
            "models[2].name: duplicate model alias `y`",
            "models[2].targets[0].model",
            "models[3].name",
        ] {
            assert!(e.contains(needle), "missing {needle} in:\n{e}");
        }
    }

    #[test]
    fn anthropic_api_key_is_a_preset_of_kind_anthropic() {
        let lookup = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| "sk-ant".to_string());
        let c = Config::from_env(&lookup).unwrap();
        let p = &c.providers[0];
        assert_eq!(
            (p.name.as_str(), p.kind, p.base_url.as_str()),
            (
                "anthropic",
                crate::ProviderKind::Anthropic,
                "https://api.anthropic.com/v1"
            )
        );
        assert!(p.apis.contains(crate::Api::Messages));
        // Alone, it takes the unprefixed model names; beside OpenAI, OpenAI does.
        assert!(p.default);
        let both = |name: &str| {
            matches!(name, "ANTHROPIC_API_KEY" | "OPENAI_API_KEY").then(|| "k".to_string())
        };
        let c = Config::from_env(&both).unwrap();
        assert_eq!(
            c.default_provider().map(|p| p.name.as_str()),
            Some("openai")
        );
    }

    #[test]
    fn workers_default_to_one_per_cpu_and_are_bounded() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let c = Config::parse("[server]\nworkers = 0", "t.toml", &env).unwrap();
        assert_eq!(c.server.workers, cpus);
        let c = Config::parse("[server]\nworkers = 3", "t.toml", &env).unwrap();
        assert_eq!(c.server.workers, 3);
        let e = errors("[server]\nworkers = -1");
        assert!(e[0].contains("server.workers"), "{e:?}");
        let e = errors("[server]\nworkers = 5000");
        assert!(e[0].contains("server.workers"), "{e:?}");
    }

    #[test]
    fn unknown_keys_and_missing_env_are_errors() {
        let e = errors("[server]\nlisten_addr = \"x\"");
        assert!(e[0].contains("listen_addr"), "{e:?}");
        let e = errors("[admin]\ntoken = \"${BEACON_ADMIN_TOKEN}\"");
        assert!(
            e[0].contains("admin.token") && e[0].contains("BEACON_ADMIN_TOKEN"),
            "{e:?}"
        );
    }

    #[test]
    fn embedded_default_reads_the_environment() {
        let env = |k: &str| match k {
            "OPENAI_API_KEY" => Some("sk-1".to_string()),
            "OPENROUTER_API_KEY" => Some("sk-or".to_string()),
            "BEACON_API_KEYS" => Some("bk-one-key-1, bk-two-key-2".to_string()),
            _ => None,
        };
        let c = Config::from_env(&env).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.store.url, "sqlite://beacon.db");
        assert_eq!(c.providers.len(), 2);
        assert_eq!(
            c.default_provider().map(|p| p.name.as_str()),
            Some("openrouter")
        );
        assert_eq!(c.tenants[0].api_keys.len(), 2);
    }
}
