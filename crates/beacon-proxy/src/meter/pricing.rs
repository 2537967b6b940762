//! Prices and cost: a default price table shipped with Beacon, overridden by `[pricing]`.
//!
//! Accounting follows OpenAI's usage semantics: prompt tokens include cached and
//! cache-write tokens, completion tokens include reasoning tokens, so each token is
//! priced exactly once.

/// The table's maps: looked up twice per completion with short keys, so a fast seeded hash
/// (foldhash) instead of SipHash; the keys are the operator's and the shipped prices.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use beacon_broadcast::record::{Cost, CostSource, TokenUsage};
use beacon_config::Price;
use rust_decimal::Decimal;

/// The price file compiled into the binary (USD per million tokens).
const DEFAULT_PRICES: &str = include_str!("default_prices.toml");

/// A price and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priced {
    /// USD per million tokens.
    pub price: Price,
    /// Set by the operator in `[pricing]`: it wins over a cost the upstream reports (the
    /// operator's price is the price). A shipped default loses to the upstream's figure.
    pub explicit: bool,
}

/// Model prices, keyed `provider/model` or by a bare upstream model id.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<String, Priced>,
    /// `provider/model` entries by bare `model`, for providers that serve a known model
    /// under another provider name (proxies, Azure-style deployments).
    by_model: HashMap<String, Priced>,
}

impl PriceTable {
    /// The shipped defaults with `overrides` applied on top.
    pub fn with_defaults(overrides: &std::collections::BTreeMap<String, Price>) -> Self {
        let mut table = Self::default();
        // The shipped file is validated by a unit test; a broken entry is skipped, not fatal.
        if let Ok(beacon_config::Config { pricing, .. }) =
            beacon_config::Config::parse(DEFAULT_PRICES, "default_prices.toml", &|_| None)
        {
            table.prices.extend(pricing.into_iter().map(|(k, price)| {
                (
                    k,
                    Priced {
                        price,
                        explicit: false,
                    },
                )
            }));
        }
        table.prices.extend(overrides.iter().map(|(k, v)| {
            (
                k.clone(),
                Priced {
                    price: *v,
                    explicit: true,
                },
            )
        }));
        let mut keys: Vec<&String> = table.prices.keys().collect();
        keys.sort();
        let mut by_model = HashMap::default();
        for k in keys {
            if let Some((_, model)) = k.split_once('/') {
                by_model.entry(model.to_string()).or_insert(table.prices[k]);
            }
        }
        table.by_model = by_model;
        table
    }

    /// Finds the price for a completion: `provider/upstream_model`, then the upstream model
    /// id itself (OpenRouter ids look like `openai/gpt-4o`), then the served model, with
    /// and without a trailing date (`gpt-4o-2024-08-06` → `gpt-4o`).
    pub fn lookup(
        &self,
        provider: &str,
        upstream_model: &str,
        served_model: Option<&str>,
    ) -> Option<&Priced> {
        let mut key = String::with_capacity(provider.len() + 64);
        find(
            &self.prices,
            &mut key,
            provider,
            upstream_model,
            served_model,
        )
        .or_else(|| {
            find(
                &self.by_model,
                &mut key,
                provider,
                upstream_model,
                served_model,
            )
        })
    }

    /// Every priced model id.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Priced)> {
        self.prices.iter()
    }
}

/// The first of the candidate keys in `table`, in order of preference: for each model
/// (upstream, then served), `provider/model`, `model`, then both without a date suffix. Keys
/// are written one at a time into `key`, so a lookup allocates once.
fn find<'t>(
    table: &'t HashMap<String, Priced>,
    key: &mut String,
    provider: &str,
    upstream_model: &str,
    served_model: Option<&str>,
) -> Option<&'t Priced> {
    for model in std::iter::once(upstream_model).chain(served_model) {
        for m in std::iter::once(model).chain(strip_date_suffix(model)) {
            key.clear();
            key.push_str(provider);
            key.push('/');
            key.push_str(m);
            if let Some(p) = table.get(key.as_str()).or_else(|| table.get(m)) {
                return Some(p);
            }
        }
    }
    None
}

/// `gpt-4o-2024-08-06` → `gpt-4o` (OpenAI's dated ids), `claude-3-5-haiku-20241022` →
/// `claude-3-5-haiku` (Anthropic's).
fn strip_date_suffix(model: &str) -> Option<&str> {
    let dashed = |date: &str| {
        date.len() == 10
            && date.char_indices().all(|(i, c)| {
                if i == 4 || i == 7 {
                    c == '-'
                } else {
                    c.is_ascii_digit()
                }
            })
    };
    let compact = |date: &str| date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    for len in [10, 8] {
        let Some(at) = model.len().checked_sub(len + 1) else {
            continue;
        };
        if !model.is_char_boundary(at) {
            continue;
        }
        let (base, date) = model.split_at(at);
        let Some(date) = date.strip_prefix('-') else {
            continue;
        };
        if (len == 10 && dashed(date)) || (len == 8 && compact(date)) {
            return Some(base);
        }
    }
    None
}

/// A computed cost and its parts.
struct Parts {
    input: Decimal,
    output: Decimal,
    cache_read: Decimal,
    cache_creation: Decimal,
    reasoning: Decimal,
}

/// Cost of `usage` (SPEC §2.3): an explicit `[pricing]` entry wins, then the upstream's own
/// figure when it reported one, then the shipped default table; with none of them the cost
/// is unknown ([`CostSource::Unknown`]: no cost shown or exported, never 0).
pub fn cost(usage: &TokenUsage, priced: Option<&Priced>, upstream_cost: Option<Decimal>) -> Cost {
    let upstream_cost = upstream_cost.filter(|_| !priced.is_some_and(|p| p.explicit));
    let price = priced.map(|p| &p.price);
    let computed = price.map(|p| {
        let per_token = |per_million: Decimal, n: u64| {
            per_million * Decimal::from(n) / Decimal::from(1_000_000u32)
        };
        let uncached = usage
            .prompt_tokens
            .saturating_sub(usage.cached_tokens)
            .saturating_sub(usage.cache_write_tokens);
        let cache_read = per_token(p.cached_input.unwrap_or(p.input), usage.cached_tokens);
        let cache_creation = per_token(p.cache_write.unwrap_or(p.input), usage.cache_write_tokens);
        let input = per_token(p.input, uncached) + cache_read + cache_creation;
        let plain_output = usage
            .completion_tokens
            .saturating_sub(usage.reasoning_tokens);
        let reasoning = per_token(p.reasoning.unwrap_or(p.output), usage.reasoning_tokens);
        let output = per_token(p.output, plain_output) + reasoning;
        Parts {
            input: input.normalize(),
            output: output.normalize(),
            cache_read: cache_read.normalize(),
            cache_creation: cache_creation.normalize(),
            reasoning: reasoning.normalize(),
        }
    });
    match (upstream_cost, computed) {
        (Some(total), computed) => {
            // The upstream's figure wins; split it in the proportion our prices give (or by
            // token counts when we have no price), because Sentry needs the breakdown.
            let scale = |part: Decimal| match &computed {
                Some(c) if !(c.input + c.output).is_zero() => (total * part / (c.input + c.output))
                    .round_dp(12)
                    .normalize(),
                _ => Decimal::ZERO,
            };
            let (cache_read, cache_creation, reasoning) = match &computed {
                Some(c) => (
                    scale(c.cache_read),
                    scale(c.cache_creation),
                    scale(c.reasoning),
                ),
                None => (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO),
            };
            let input_share = match &computed {
                Some(c) if !(c.input + c.output).is_zero() => c.input / (c.input + c.output),
                _ if usage.prompt_tokens + usage.completion_tokens > 0 => {
                    Decimal::from(usage.prompt_tokens)
                        / Decimal::from(usage.prompt_tokens + usage.completion_tokens)
                }
                _ => Decimal::ZERO,
            };
            let input = (total * input_share).round_dp(12).normalize();
            Cost {
                input,
                output: (total - input).normalize(),
                total,
                cache_read,
                cache_creation,
                reasoning,
                source: CostSource::Upstream,
            }
        }
        (None, Some(c)) => Cost {
            input: c.input,
            output: c.output,
            total: (c.input + c.output).normalize(),
            cache_read: c.cache_read,
            cache_creation: c.cache_creation,
            reasoning: c.reasoning,
            source: CostSource::PriceTable,
        },
        (None, None) => Cost::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn gpt4o() -> Priced {
        Priced {
            price: Price {
                input: d("2.5"),
                cached_input: Some(d("1.25")),
                cache_write: None,
                output: d("10"),
                reasoning: None,
            },
            explicit: false,
        }
    }

    #[test]
    fn shipped_price_file_is_valid() {
        let c =
            beacon_config::Config::parse(DEFAULT_PRICES, "default_prices.toml", &|_| None).unwrap();
        assert!(c.pricing.len() >= 60, "{} entries", c.pricing.len());
        // Every entry names its source.
        let sources = DEFAULT_PRICES
            .lines()
            .filter(|l| l.starts_with("# source: https://"))
            .count();
        assert_eq!(sources, c.pricing.len());
        // Cached and cache-write prices where providers have them, embeddings input-only.
        let cached = c
            .pricing
            .values()
            .filter(|p| p.cached_input.is_some())
            .count();
        let writes = c
            .pricing
            .values()
            .filter(|p| p.cache_write.is_some())
            .count();
        assert!(
            cached >= 25 && writes >= 10,
            "{cached} cached, {writes} cache-write"
        );
        let t = PriceTable::with_defaults(&Default::default());
        assert!(t.lookup("openai", "gpt-4o", None).is_some());
        let embedding = t.lookup("openai", "text-embedding-3-small", None).unwrap();
        assert!(embedding.price.output.is_zero() && !embedding.price.input.is_zero());
    }

    #[test]
    fn cached_and_reasoning_tokens_are_priced_once() {
        let usage = TokenUsage {
            prompt_tokens: 1_000_000,
            cached_tokens: 400_000,
            completion_tokens: 100_000,
            reasoning_tokens: 60_000,
            ..Default::default()
        };
        let c = cost(&usage, Some(&gpt4o()), None);
        // 600k × 2.5 + 400k × 1.25 = 1.5 + 0.5; 100k × 10 = 1.0 (reasoning at the output rate)
        assert_eq!(c.input, d("2"));
        assert_eq!(c.output, d("1"));
        assert_eq!(c.total, d("3"));
        assert_eq!(c.source, CostSource::PriceTable);
    }

    #[test]
    fn cache_write_and_separate_reasoning_prices() {
        let p = Price {
            input: d("3"),
            cached_input: Some(d("0.3")),
            cache_write: Some(d("3.75")),
            output: d("15"),
            reasoning: Some(d("20")),
        };
        let usage = TokenUsage {
            prompt_tokens: 100,
            cached_tokens: 20,
            cache_write_tokens: 50,
            completion_tokens: 10,
            reasoning_tokens: 4,
            ..Default::default()
        };
        let p = Priced {
            price: p,
            explicit: false,
        };
        let c = cost(&usage, Some(&p), None);
        // (30×3 + 20×0.3 + 50×3.75)/1e6 ; (6×15 + 4×20)/1e6
        assert_eq!(c.input, d("0.0002835"));
        assert_eq!(c.output, d("0.00017"));
    }

    #[test]
    fn upstream_cost_wins_and_is_split() {
        let usage = TokenUsage {
            prompt_tokens: 1000,
            completion_tokens: 1000,
            ..Default::default()
        };
        let c = cost(&usage, Some(&gpt4o()), Some(d("0.01")));
        assert_eq!(c.total, d("0.01"));
        assert_eq!(c.source, CostSource::Upstream);
        assert_eq!(c.input + c.output, d("0.01"));
        assert!(c.output > c.input);
        let c = cost(&usage, None, Some(d("0.01")));
        assert_eq!(c.input, d("0.005"));
    }

    #[test]
    fn an_explicit_price_wins_over_the_upstreams_cost() {
        let usage = TokenUsage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            ..Default::default()
        };
        let explicit = Priced {
            explicit: true,
            ..gpt4o()
        };
        let c = cost(&usage, Some(&explicit), Some(d("0.01")));
        assert_eq!(c.total, d("12.5"));
        assert_eq!(c.source, CostSource::PriceTable);
        // The shipped default loses to the upstream's figure.
        assert_eq!(
            cost(&usage, Some(&gpt4o()), Some(d("0.01"))).total,
            d("0.01")
        );
        let t = PriceTable::with_defaults(&Default::default());
        assert!(!t.lookup("openai", "gpt-4o", None).unwrap().explicit);
    }

    #[test]
    fn an_unknown_model_has_an_unknown_cost() {
        let c = cost(
            &TokenUsage {
                prompt_tokens: 5,
                ..Default::default()
            },
            None,
            None,
        );
        assert_eq!(c.total, Decimal::ZERO);
        assert_eq!(c.source, CostSource::Unknown);
    }

    #[test]
    fn lookup_order_and_date_suffixes() {
        let t = PriceTable::with_defaults(&Default::default());
        assert_eq!(strip_date_suffix("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(strip_date_suffix("gpt-4o"), None);
        assert_eq!(
            strip_date_suffix("claude-3-5-haiku-20241022"),
            Some("claude-3-5-haiku")
        );
        assert_eq!(strip_date_suffix("model-1234567"), None);
        assert_eq!(strip_date_suffix("é-20241022"), Some("é"));
        assert_eq!(
            t.lookup("anthropic", "claude-sonnet-4-5-20250929", None)
                .map(|p| p.price.input),
            Some(d("3.0"))
        );
        assert_eq!(
            t.lookup("openai", "gpt-4o-2024-08-06", None),
            t.lookup("openai", "gpt-4o", None)
        );
        assert_eq!(
            t.lookup("mycorp", "x", Some("gpt-4o-mini-2024-07-18")),
            t.lookup("openai", "gpt-4o-mini", None)
        );
        // OpenRouter ids are looked up as given.
        assert!(t
            .lookup("openrouter", "anthropic/claude-sonnet-4", None)
            .is_some());
        let mut o = std::collections::BTreeMap::new();
        o.insert(
            "openai/gpt-4o".to_string(),
            Price {
                input: d("1"),
                cached_input: None,
                cache_write: None,
                output: d("1"),
                reasoning: None,
            },
        );
        let t = PriceTable::with_defaults(&o);
        let priced = t.lookup("openai", "gpt-4o", None).unwrap();
        assert_eq!(priced.price.input, d("1"));
        assert!(priced.explicit);
    }

    #[test]
    fn the_breakdown_names_cache_reads_cache_writes_and_reasoning() {
        let priced = Priced {
            price: beacon_config::Price {
                input: d("3"),
                cached_input: Some(d("0.3")),
                cache_write: Some(d("3.75")),
                output: d("15"),
                reasoning: None,
            },
            explicit: false,
        };
        let usage = TokenUsage {
            prompt_tokens: 130,
            cached_tokens: 100,
            cache_write_tokens: 20,
            completion_tokens: 6,
            reasoning_tokens: 2,
            total_tokens: 136,
            estimated: false,
        };
        let c = cost(&usage, Some(&priced), None);
        assert_eq!(c.cache_read, d("0.00003"));
        assert_eq!(c.cache_creation, d("0.000075"));
        assert_eq!(c.reasoning, d("0.00003"));
        assert_eq!(c.input, d("0.000135"));
        assert_eq!(c.total, d("0.000225"));
        // An upstream's own total is split in the same proportions.
        let u = cost(&usage, Some(&priced), Some(d("0.00045")));
        assert_eq!(u.total, d("0.00045"));
        assert_eq!(u.cache_read, d("0.00006"));
        assert_eq!(u.cache_creation, d("0.00015"));
        // No price: nothing to split by.
        let none = cost(&usage, None, Some(d("0.1")));
        assert_eq!(none.cache_read, Decimal::ZERO);
    }
}
