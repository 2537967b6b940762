//! The usage ledger (SPEC §5.1): every completion record counted per minute, tenant, key and
//! model — requests, tokens by class, cost, errors — on the export thread, off the hot path.
//! The binary takes the rows every few seconds and adds them to the store in one transaction
//! (`beacon_store::Store::add_usage`); the admin API's usage report reads them back.
//!
//! Bounded: at most [`MAX_ROWS`] rows wait between two flushes; past that, a record is
//! counted in its tenant's and key's row for the model `(other)`, so totals stay exact and
//! memory does not grow with the number of model names clients send. Model names are cut
//! to [`MAX_MODEL_BYTES`].

use std::collections::HashMap;
use std::sync::Mutex;

use rust_decimal::prelude::ToPrimitive;

use crate::record::{CompletionRecord, Outcome};

/// Rows held between two flushes.
pub const MAX_ROWS: usize = 10_000;
/// Longest model name kept.
pub const MAX_MODEL_BYTES: usize = 256;
/// The model of rows past [`MAX_ROWS`].
pub const OTHER_MODEL: &str = "(other)";

/// What one row counts: a minute of one tenant's key on one model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LedgerKey {
    /// Minutes since the Unix epoch (of the request's arrival).
    pub minute: i64,
    /// Tenant id.
    pub tenant: String,
    /// Key id.
    pub key_id: String,
    /// The model the client asked for.
    pub model: String,
}

/// The counts of one row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerRow {
    /// Records (every outcome).
    pub requests: i64,
    /// Prompt tokens (cached and cache writes included).
    pub input_tokens: i64,
    /// Completion tokens (reasoning included).
    pub output_tokens: i64,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: i64,
    /// Completion tokens spent on reasoning.
    pub reasoning_tokens: i64,
    /// Cost in billionths of a USD.
    pub cost_nanos: i64,
    /// Records whose outcome is not `ok` (upstream errors, timeouts, cancels, limits).
    pub errors: i64,
}

impl LedgerRow {
    /// Adds another row's counts.
    pub fn add(&mut self, o: &LedgerRow) {
        self.requests += o.requests;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_tokens += o.cached_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.cost_nanos += o.cost_nanos;
        self.errors += o.errors;
    }

    /// One record's counts.
    pub fn of(record: &CompletionRecord) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            requests: 1,
            input_tokens: n(record.usage.prompt_tokens),
            output_tokens: n(record.usage.completion_tokens),
            cached_tokens: n(record.usage.cached_tokens),
            reasoning_tokens: n(record.usage.reasoning_tokens),
            cost_nanos: cost_nanos(record.cost.total),
            errors: i64::from(!matches!(record.outcome, Outcome::Ok)),
        }
    }
}

/// A cost in billionths of a USD, rounded up.
pub fn cost_nanos(usd: rust_decimal::Decimal) -> i64 {
    (usd * rust_decimal::Decimal::from(1_000_000_000u32))
        .ceil()
        .to_i64()
        .unwrap_or(0)
}

/// Rows counted since the last flush, found by a hash of the key's parts so that counting a
/// record into an existing row allocates nothing.
#[derive(Debug, Default)]
pub struct Ledger {
    rows: Mutex<Rows>,
}

#[derive(Debug, Default)]
struct Rows {
    by_hash: HashMap<u64, Vec<(LedgerKey, LedgerRow)>, foldhash::fast::RandomState>,
    len: usize,
    /// One seeded hasher for the life of the map: foldhash, a fraction of SipHash's cost
    /// per record (the parts are the tenant's, its keys' and the models' names).
    state: foldhash::fast::RandomState,
}

impl Rows {
    fn hash(&self, minute: i64, tenant: &str, key_id: &str, model: &str) -> u64 {
        use std::hash::BuildHasher;
        self.state.hash_one((minute, tenant, key_id, model))
    }

    /// Adds `row` to the row of these parts, creating it (or, past [`MAX_ROWS`], adding to
    /// the `(other)` row) when there is none.
    fn add(&mut self, minute: i64, tenant: &str, key_id: &str, model: &str, row: &LedgerRow) {
        let h = self.hash(minute, tenant, key_id, model);
        if let Some(bucket) = self.by_hash.get_mut(&h) {
            if let Some((_, r)) = bucket.iter_mut().find(|(k, _)| {
                k.minute == minute && k.tenant == tenant && k.key_id == key_id && k.model == model
            }) {
                r.add(row);
                return;
            }
        }
        if self.len >= MAX_ROWS && model != OTHER_MODEL {
            return self.add(minute, tenant, key_id, OTHER_MODEL, row);
        }
        self.len += 1;
        self.by_hash.entry(h).or_default().push((
            LedgerKey {
                minute,
                tenant: tenant.to_string(),
                key_id: key_id.to_string(),
                model: model.to_string(),
            },
            *row,
        ));
    }
}

impl Ledger {
    /// Counts one record.
    pub fn add(&self, record: &CompletionRecord) {
        let row = LedgerRow::of(record);
        let minute =
            i64::try_from(record.timings.received_unix_nanos / 60_000_000_000).unwrap_or(i64::MAX);
        let mut model = record.requested_model.as_str();
        if model.len() > MAX_MODEL_BYTES {
            let mut cut = MAX_MODEL_BYTES;
            while !model.is_char_boundary(cut) {
                cut -= 1;
            }
            model = &model[..cut];
        }
        let mut rows = match self.rows.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        rows.add(minute, &record.tenant_id, &record.key_id, model, &row);
    }

    /// Takes every row counted so far.
    pub fn take(&self) -> Vec<(LedgerKey, LedgerRow)> {
        let mut rows = match self.rows.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        rows.len = 0;
        std::mem::take(&mut rows.by_hash)
            .into_values()
            .flatten()
            .collect()
    }

    /// Puts back rows a flush could not write, to be written with the next (merged with
    /// what was counted meanwhile; the bound on rows holds).
    pub fn put_back(&self, back: Vec<(LedgerKey, LedgerRow)>) {
        let mut rows = match self.rows.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for (k, row) in back {
            rows.add(k.minute, &k.tenant, &k.key_id, &k.model, &row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(model: &str, minute: u64, ok: bool) -> CompletionRecord {
        let mut r = crate::ingress::tests::record("acme");
        r.requested_model = model.into();
        r.timings.received_unix_nanos = minute * 60_000_000_000 + 5;
        r.usage.prompt_tokens = 10;
        r.usage.completion_tokens = 4;
        r.cost.total = rust_decimal::Decimal::new(12_345, 9); // 0.000012345 USD
        if !ok {
            r.outcome = Outcome::Timeout;
        }
        r
    }

    #[test]
    fn rows_add_up_per_minute_key_and_model_and_stay_bounded() {
        let l = Ledger::default();
        l.add(&record("openai/gpt-4o", 100, true));
        l.add(&record("openai/gpt-4o", 100, false));
        l.add(&record("openai/gpt-4o", 101, true));
        l.add(&record("openai/other", 100, true));
        let mut rows = l.take();
        rows.sort_by(|a, b| (a.0.minute, &a.0.model).cmp(&(b.0.minute, &b.0.model)));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].0.model, "openai/gpt-4o");
        assert_eq!(rows[0].1.requests, 2);
        assert_eq!(rows[0].1.errors, 1);
        assert_eq!(rows[0].1.input_tokens, 20);
        assert_eq!(rows[0].1.cost_nanos, 2 * 12_345);
        assert!(l.take().is_empty(), "taken");

        // Past the bound, new names go to `(other)`; totals stay exact.
        for i in 0..MAX_ROWS + 50 {
            l.add(&record(&format!("p/m{i}"), 7, true));
        }
        let rows = l.take();
        assert_eq!(rows.len(), MAX_ROWS + 1);
        let other = rows.iter().find(|r| r.0.model == OTHER_MODEL).unwrap();
        assert_eq!(other.1.requests, 50);
        assert_eq!(
            rows.iter().map(|r| r.1.requests).sum::<i64>(),
            (MAX_ROWS + 50) as i64
        );
        // Long names are cut; what a failed flush leaves is merged back.
        l.add(&record(&"x".repeat(1000), 1, true));
        let rows = l.take();
        assert_eq!(rows[0].0.model.len(), MAX_MODEL_BYTES);
        l.add(&record("a/b", 1, true));
        l.put_back(rows);
        l.put_back(vec![(
            LedgerKey {
                minute: 1,
                tenant: "acme".into(),
                key_id: "key_1".into(),
                model: "a/b".into(),
            },
            LedgerRow {
                requests: 2,
                ..Default::default()
            },
        )]);
        let rows = l.take();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.iter().map(|r| r.1.requests).sum::<i64>(), 4);
    }
}
