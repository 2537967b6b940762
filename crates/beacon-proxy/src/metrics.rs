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
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

/// Label caches, looked up per request: a fast seeded hash (foldhash) instead of SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

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
    /// The series of each (tenant, model) seen, so a completion is counted with one lookup
    /// and atomic adds instead of a label set hashed (SipHash, in each family) per series.
    series: Mutex<HashMap<String, HashMap<String, Arc<Series>>>>,
}

/// The series a completion of one (tenant, model) touches, each made on first use.
#[derive(Debug)]
struct Series {
    tenant: Label,
    model: Label,
    responses_200: OnceLock<Counter>,
    completions_ok: OnceLock<Counter>,
    tokens: [OnceLock<Counter>; TOKEN_KINDS.len()],
    cost: OnceLock<Counter<f64, AtomicU64>>,
}

/// A handle on `family`'s series for `labels` (made if new), kept by the caller.
fn handle<S, M, C>(family: &Family<S, M, C>, labels: &S) -> M
where
    S: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    family.get_or_create(labels).clone()
}

/// `kind` label values of `beacon_tokens_total`.
const TOKEN_KINDS: [&str; 5] = ["prompt", "completion", "cached", "cache_write", "reasoning"];

/// Most (tenant, model) pairs whose series are kept at hand (others take the slow path).
const MAX_SERIES: usize = 4 * MAX_MODEL_LABELS;

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
            models: Mutex::new(HashMap::default()),
            tenants: Mutex::new(HashMap::default()),
            series: Mutex::new(HashMap::default()),
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

    /// The series of (`tenant`, `model`): kept at hand once seen (up to [`MAX_SERIES`]
    /// pairs, and while the model has a label of its own), else made for this call.
    fn series(&self, tenant: &str, model: &str) -> Arc<Series> {
        let mut cache = match self.series.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(s) = cache.get(tenant).and_then(|m| m.get(model)) {
            return s.clone();
        }
        let label = if model.is_empty() {
            Label::default()
        } else {
            self.model_label(model)
        };
        let series = Arc::new(Series {
            tenant: self.tenant_label(tenant),
            model: label.clone(),
            responses_200: OnceLock::new(),
            completions_ok: OnceLock::new(),
            tokens: Default::default(),
            cost: OnceLock::new(),
        });
        // A model past the label cap is counted as `other`: not kept under its own name, so
        // clients sending random model names cannot grow the cache.
        let own_label = model.is_empty() || label.as_escaped() == model;
        let pairs: usize = cache.values().map(|m| m.len()).sum();
        if own_label && pairs < MAX_SERIES {
            cache
                .entry(tenant.to_string())
                .or_default()
                .insert(model.to_string(), series.clone());
        }
        series
    }

    /// Counts one response.
    pub fn observe_response(&self, tenant: &str, model: &str, status: u16) {
        let s = self.series(tenant, model);
        let make = || {
            handle(
                &self.requests,
                &RequestLabels {
                    tenant: s.tenant.clone(),
                    model: s.model.clone(),
                    status,
                },
            )
        };
        if status == 200 {
            s.responses_200.get_or_init(make).inc();
        } else {
            make().inc();
        }
    }

    /// Accounts a finished completion.
    pub fn observe_record(&self, r: &CompletionRecord) {
        let s = self.series(&r.tenant_id, &r.requested_model);
        let outcome = r.outcome.label();
        let completions = || {
            handle(
                &self.completions,
                &OutcomeLabels {
                    tenant: s.tenant.clone(),
                    model: s.model.clone(),
                    outcome,
                },
            )
        };
        if outcome == "ok" {
            s.completions_ok.get_or_init(completions).inc();
        } else {
            completions().inc();
        }
        let u = &r.usage;
        let counts = [
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
        ];
        for ((kind, n), slot) in TOKEN_KINDS.iter().zip(counts).zip(&s.tokens) {
            if n > 0 {
                slot.get_or_init(|| {
                    handle(
                        &self.tokens,
                        &TokenLabels {
                            tenant: s.tenant.clone(),
                            model: s.model.clone(),
                            kind,
                        },
                    )
                })
                .inc_by(n);
            }
        }
        let cost: f64 = r.cost.total.try_into().unwrap_or(0.0);
        if cost > 0.0 {
            s.cost
                .get_or_init(|| {
                    handle(
                        &self.cost,
                        &ModelLabels {
                            tenant: s.tenant.clone(),
                            model: s.model.clone(),
                        },
                    )
                })
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

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    #[test]
    fn completions_are_counted_through_the_kept_series() {
        let m = Metrics::new(&beacon_broadcast::Stats::default());
        use beacon_broadcast::record::*;
        let mut r = CompletionRecord {
            api: beacon_config::Api::Chat,
            request_id: "req_1".into(),
            tenant_id: "acme".into(),
            key_id: "key_1".into(),
            provider: "openai".into(),
            requested_model: "openai/gpt-4o".into(),
            upstream_model: "gpt-4o".into(),
            served_model: None,
            response_id: None,
            stream: false,
            params: RequestParams::default(),
            usage: TokenUsage::default(),
            cost: Cost::default(),
            timings: Timings::default(),
            finish_reasons: vec![],
            outcome: Outcome::Ok,
            upstream_status: Some(200),
            attempts: Vec::new(),
            tool_names: Vec::new(),
            user: None,
            session_id: None,
            trace: None,
            trace_context: None,
            content: None,
            tools: Default::default(),
        };
        r.usage.prompt_tokens = 10;
        r.usage.completion_tokens = 5;
        r.usage.cached_tokens = 0;
        r.cost.total = rust_decimal::Decimal::new(25, 4);
        for _ in 0..3 {
            m.observe_record(&r);
            m.observe_response("acme", "openai/gpt-4o", 200);
        }
        r.outcome = Outcome::Timeout;
        m.observe_record(&r);
        m.observe_response("acme", "openai/gpt-4o", 504);
        let text = m.render();
        let l = r#"{tenant="acme",model="openai/gpt-4o""#;
        assert_eq!(
            value(
                &text,
                &format!("beacon_completions_total{l},outcome=\"ok\"}}")
            ),
            3.0
        );
        assert_eq!(
            value(
                &text,
                &format!("beacon_completions_total{l},outcome=\"timeout\"}}")
            ),
            1.0
        );
        assert_eq!(
            value(&text, &format!("beacon_tokens_total{l},kind=\"prompt\"}}")),
            40.0
        );
        assert_eq!(
            value(
                &text,
                &format!("beacon_tokens_total{l},kind=\"completion\"}}")
            ),
            20.0
        );
        assert!(
            !text.contains(r#"kind="cached""#),
            "no series for a count never seen"
        );
        assert!((value(&text, &format!("beacon_cost_usd_total{l}}}")) - 0.01).abs() < 1e-9);
        assert_eq!(
            value(&text, &format!("beacon_requests_total{l},status=\"200\"}}")),
            3.0
        );
        assert_eq!(
            value(&text, &format!("beacon_requests_total{l},status=\"504\"}}")),
            1.0
        );
        // Bounded: pairs past MAX_SERIES are counted but not kept.
        for i in 0..MAX_SERIES + 10 {
            m.observe_response(&format!("t{i}"), "openai/gpt-4o", 200);
        }
        let kept: usize = m.series.lock().unwrap().values().map(|v| v.len()).sum();
        assert_eq!(kept, MAX_SERIES);
        assert_eq!(
            value(
                &m.render(),
                r#"beacon_requests_total{tenant="t1033",model="openai/gpt-4o",status="200"}"#
            ),
            1.0
        );
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
