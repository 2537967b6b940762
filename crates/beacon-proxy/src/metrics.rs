//! Prometheus metrics of the hot path, served as text on `GET /metrics`.
//!
//! Label values that come from clients (model names) are bounded: after
//! [`MAX_MODEL_LABELS`] distinct models, new ones are reported as `other`.

use std::sync::Arc;

use beacon_broadcast::record::CompletionRecord;
use beacon_broadcast::stats::LabelValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// Distinct model label values kept before new models are folded into `other`.
pub const MAX_MODEL_LABELS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    tenant: Label,
    model: Label,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    tenant: Label,
    model: Label,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TokenLabels {
    tenant: Label,
    model: Label,
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabels {
    tenant: Label,
    model: Label,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StreamLabels {
    stream: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    provider: String,
    outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreWriteLabels {
    what: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WhatLabels {
    what: &'static str,
}

/// An interned, escaped label value: building a label set clones a pointer, not a string.
type Label = LabelValue;

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ]
    .into_iter()
}

fn overhead_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_025, 2.0, 16)
}

/// Every metric of the gateway, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    completions: Family<OutcomeLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    latency: Family<StreamLabels, Histogram>,
    ttft: Histogram,
    overhead: Histogram,
    in_flight: Gauge,
    estimates: Family<MethodLabels, Counter>,
    connections_refused: Counter,
    idle_closed: Counter,
    attempts: Family<AttemptLabels, Counter>,
    failovers: Family<ReasonLabels, Counter>,
    cooldowns: Family<ProviderLabels, Counter>,
    cooling: Family<ProviderLabels, Gauge>,
    store_writes: Family<StoreWriteLabels, Counter>,
    store_rows: Family<WhatLabels, Counter>,
    models: Mutex<HashMap<String, Label>>,
    tenants: Mutex<HashMap<String, Label>>,
}

impl Metrics {
    /// Creates the metrics and registers the broadcast pipeline's counters beside them.
    pub fn new(broadcast: &beacon_broadcast::Stats) -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let completions = Family::<OutcomeLabels, Counter>::default();
        let tokens = Family::<TokenLabels, Counter>::default();
        let cost = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        let latency = Family::<StreamLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        let ttft = Histogram::new(latency_buckets());
        let overhead = Histogram::new(overhead_buckets());
        let in_flight = Gauge::default();
        let estimates = Family::<MethodLabels, Counter>::default();
        let connections_refused = Counter::default();
        let idle_closed = Counter::default();
        registry.register(
            "beacon_connections_refused",
            "Client connections refused with 503 because server.max_connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "beacon_connections_idle_closed",
            "Client connections closed for sending no complete request head within server.header_read_timeout_secs, or idling past server.idle_timeout_secs",
            idle_closed.clone(),
        );
        registry.register(
            "beacon_requests",
            "Client requests by tenant, model and response status",
            requests.clone(),
        );
        registry.register(
            "beacon_completions",
            "Completion records by outcome",
            completions.clone(),
        );
        registry.register(
            "beacon_tokens",
            "Tokens by kind (prompt, completion, cached, cache_write, reasoning)",
            tokens.clone(),
        );
        registry.register(
            "beacon_cost_usd",
            "Cost of completions in USD",
            cost.clone(),
        );
        registry.register(
            "beacon_request_duration_seconds",
            "Completion latency, request received to last byte",
            latency.clone(),
        );
        registry.register(
            "beacon_time_to_first_chunk_seconds",
            "Streams: request received to first chunk forwarded",
            ttft.clone(),
        );
        registry.register(
            "beacon_gateway_overhead_seconds",
            "Time spent in Beacon itself per completion",
            overhead.clone(),
        );
        registry.register(
            "beacon_requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        registry.register(
            "beacon_token_estimates",
            "Completions whose tokens were estimated (the upstream reported no usage), by method: tokenizer, or coarse (bytes / 4) while the estimator was saturated",
            estimates.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        let failovers = Family::<ReasonLabels, Counter>::default();
        let cooldowns = Family::<ProviderLabels, Counter>::default();
        let cooling = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "beacon_upstream_attempts",
            "Upstream attempts by provider and outcome (served, http_<status>, unreachable, attempt_timeout, stream_failed)",
            attempts.clone(),
        );
        registry.register(
            "beacon_failovers",
            "Attempts that failed and were followed by another (a fallback target or the same after a wait), by reason",
            failovers.clone(),
        );
        registry.register(
            "beacon_upstream_cooldowns",
            "Targets that started a cooldown after routing.cooldown_failures consecutive failures, by provider",
            cooldowns.clone(),
        );
        registry.register(
            "beacon_upstream_cooling_targets",
            "Targets (provider/model) cooling down now, by provider",
            cooling.clone(),
        );
        let store_writes = Family::<StoreWriteLabels, Counter>::default();
        let store_rows = Family::<WhatLabels, Counter>::default();
        registry.register(
            "beacon_store_writes",
            "Periodic writes to the store off the request path (what: usage_ledger every 2 s, limit_counters every 1 s), by result; each is one transaction",
            store_writes.clone(),
        );
        registry.register(
            "beacon_store_rows_written",
            "Rows those writes added to (usage ledger rows, limit counter rows), by what",
            store_rows.clone(),
        );
        broadcast.register(&mut registry);
        Arc::new(Self {
            store_writes,
            store_rows,
            attempts,
            failovers,
            cooldowns,
            cooling,
            registry,
            requests,
            completions,
            tokens,
            cost,
            latency,
            ttft,
            overhead,
            in_flight,
            estimates,
            connections_refused,
            idle_closed,
            models: Mutex::new(HashMap::new()),
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// The label for `model`: itself while fewer than [`MAX_MODEL_LABELS`] models have
    /// been seen, `other` after that.
    pub fn model_label(&self, model: &str) -> Label {
        let Ok(mut seen) = self.models.lock() else {
            return LabelValue::new("other");
        };
        if let Some(label) = seen.get(model) {
            return label.clone();
        }
        if seen.len() < MAX_MODEL_LABELS {
            let label = LabelValue::new(model);
            seen.insert(model.to_string(), label.clone());
            label
        } else {
            seen.entry("other".into())
                .or_insert_with(|| LabelValue::new("other"))
                .clone()
        }
    }

    /// The label for `tenant` (tenant ids are operator-defined, so not capped).
    fn tenant_label(&self, tenant: &str) -> Label {
        let Ok(mut seen) = self.tenants.lock() else {
            return LabelValue::new(tenant);
        };
        match seen.get(tenant) {
            Some(label) => label.clone(),
            None => seen
                .entry(tenant.to_string())
                .or_insert_with(|| LabelValue::new(tenant))
                .clone(),
        }
    }

    /// Counts one response.
    pub fn observe_response(&self, tenant: &str, model: &str, status: u16) {
        let model = if model.is_empty() {
            Label::default()
        } else {
            self.model_label(model)
        };
        self.requests
            .get_or_create(&RequestLabels {
                tenant: self.tenant_label(tenant),
                model,
                status,
            })
            .inc();
    }

    /// Accounts a finished completion.
    pub fn observe_record(&self, r: &CompletionRecord) {
        let tenant = self.tenant_label(&r.tenant_id);
        let model = self.model_label(&r.requested_model);
        self.completions
            .get_or_create(&OutcomeLabels {
                tenant: tenant.clone(),
                model: model.clone(),
                outcome: r.outcome.label(),
            })
            .inc();
        let u = &r.usage;
        for (kind, n) in [
            ("prompt", u.prompt_tokens),
            ("completion", u.completion_tokens),
            ("cached", u.cached_tokens),
            ("cache_write", u.cache_write_tokens),
            ("reasoning", u.reasoning_tokens),
        ] {
            if n > 0 {
                self.tokens
                    .get_or_create(&TokenLabels {
                        tenant: tenant.clone(),
                        model: model.clone(),
                        kind,
                    })
                    .inc_by(n);
            }
        }
        let cost: f64 = r.cost.total.try_into().unwrap_or(0.0);
        if cost > 0.0 {
            self.cost
                .get_or_create(&ModelLabels { tenant, model })
                .inc_by(cost);
        }
        let t = &r.timings;
        self.latency
            .get_or_create(&StreamLabels {
                stream: if r.stream { "true" } else { "false" },
            })
            .observe(t.total_us() as f64 / 1e6);
        if let (true, Some(first)) = (r.stream, t.first_chunk_us) {
            self.ttft.observe(first as f64 / 1e6);
        }
        self.overhead.observe(t.gateway_overhead_us as f64 / 1e6);
    }

    /// Counts one token estimate made by `method`.
    pub fn observe_estimate(&self, method: crate::meter::estimate::Method) {
        self.estimates
            .get_or_create(&MethodLabels {
                method: method.label(),
            })
            .inc();
    }

    /// Counts a connection refused over `server.max_connections`.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts a connection closed by the header-read or idle timeout.
    pub fn connection_idle_closed(&self) {
        self.idle_closed.inc();
    }

    /// Tracks requests in flight.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// One upstream attempt on `provider` ended with `outcome`.
    pub fn observe_attempt(&self, provider: &str, outcome: &str) {
        self.attempts
            .get_or_create(&AttemptLabels {
                provider: provider.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The counter of attempts on `provider` that ended with `outcome` (a handle to keep).
    pub fn attempt_counter(&self, provider: &str, outcome: &str) -> Counter {
        self.attempts
            .get_or_create(&AttemptLabels {
                provider: provider.to_string(),
                outcome: outcome.to_string(),
            })
            .clone()
    }

    /// A periodic store write of `what` (`usage_ledger`, `limit_counters`) ended: `Ok(rows)`
    /// or an error.
    pub fn observe_store_write(&self, what: &'static str, result: Result<usize, ()>) {
        let labels = StoreWriteLabels {
            what,
            result: if result.is_ok() { "ok" } else { "error" },
        };
        self.store_writes.get_or_create(&labels).inc();
        if let Ok(rows) = result {
            self.store_rows
                .get_or_create(&WhatLabels { what })
                .inc_by(rows as u64);
        }
    }

    /// A failed attempt was followed by another.
    pub fn observe_failover(&self, reason: &str) {
        self.failovers
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A target of `provider` started cooling down.
    pub fn observe_cooldown(&self, provider: &str) {
        self.cooldowns
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
            })
            .inc();
    }

    /// Targets cooling down now, per provider (every provider given, 0 when none).
    pub fn set_cooling<'a>(&self, counts: impl Iterator<Item = (&'a str, i64)>) {
        for (provider, n) in counts {
            self.cooling
                .get_or_create(&ProviderLabels {
                    provider: provider.to_string(),
                })
                .set(n);
        }
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_interned_and_models_capped() {
        let m = Metrics::new(&beacon_broadcast::Stats::default());
        let (a, b) = (m.tenant_label("acme"), m.tenant_label("acme"));
        assert!(
            std::ptr::eq(a.as_escaped(), b.as_escaped()),
            "one allocation per distinct label"
        );
        for i in 0..MAX_MODEL_LABELS + 50 {
            m.observe_response("acme", &format!("model-{i}"), 200);
        }
        let text = m.render();
        let models: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("beacon_requests_total{"))
            .filter_map(|l| l.split("model=\"").nth(1)?.split('"').next())
            .collect();
        assert!(models.contains("other"));
        assert_eq!(models.len(), MAX_MODEL_LABELS + 1, "the cap, plus `other`");
        assert!(text.contains(r#"tenant="acme""#));
        // Requests past the cap are counted under `other`, not dropped.
        let other: f64 = text
            .lines()
            .filter(|l| l.starts_with("beacon_requests_total{") && l.contains(r#"model="other""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(other, 50.0);
    }

    #[test]
    fn a_hostile_model_name_is_escaped_not_a_new_series() {
        let m = Metrics::new(&beacon_broadcast::Stats::default());
        let hostile = "x\"} 1\nbeacon_broadcast_dropped_total{tenant=\"acme\"} 999999\n#";
        m.observe_response("acme", hostile, 200);
        let text = m.render();
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("beacon_broadcast_dropped_total{tenant=\"acme\"}")),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("beacon_requests_total{"))
            .unwrap();
        assert!(
            line.contains(r#"model="x\"} 1\nbeacon_broadcast_dropped_total"#),
            "{line}"
        );
    }
}
