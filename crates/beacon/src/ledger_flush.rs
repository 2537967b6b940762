//! The usage ledger's way to the store (SPEC §5.1): the export path counts every record per
//! minute, tenant, key and model (`beacon_broadcast::ledger`); this task adds the rows to the
//! store every few seconds, in one transaction, and prunes rows past the retention daily.
//! Rows a failed write could not store are kept for the next one (bounded by the ledger).

use std::sync::Arc;
use std::time::Duration;

use beacon_broadcast::ledger::Ledger;
use beacon_store::{Store, UsageCounts, UsageRow};

/// How often the rows are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// Writes what the ledger holds; on failure it is put back for the next flush.
pub async fn flush(ledger: &Ledger, store: &Store) -> Result<usize, String> {
    let rows = ledger.take();
    if rows.is_empty() {
        return Ok(0);
    }
    let stored: Vec<UsageRow> = rows
        .iter()
        .map(|(k, r)| UsageRow {
            minute: k.minute,
            tenant_id: k.tenant.clone(),
            key_id: k.key_id.clone(),
            model: k.model.clone(),
            counts: UsageCounts {
                requests: r.requests,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cached_tokens: r.cached_tokens,
                reasoning_tokens: r.reasoning_tokens,
                cost_nanos: r.cost_nanos,
                errors: r.errors,
            },
        })
        .collect();
    match store.add_usage(&stored).await {
        Ok(()) => Ok(stored.len()),
        Err(e) => {
            ledger.put_back(rows);
            Err(e.to_string())
        }
    }
}

/// Flushes every [`FLUSH_INTERVAL`]; prunes once a day (and at start).
pub fn spawn(
    ledger: Arc<Ledger>,
    store: Store,
    retention_days: u32,
    metrics: Arc<beacon_proxy::metrics::Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let per_day = (86_400 / FLUSH_INTERVAL.as_secs()).max(1);
        let mut ticks: u64 = 0;
        let mut failing = false;
        loop {
            tick.tick().await;
            if ticks.is_multiple_of(per_day) {
                match store.prune_usage(retention_days).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(rows = n, retention_days, "usage ledger pruned")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "pruning the usage ledger failed"),
                }
            }
            ticks += 1;
            let flushed = flush(&ledger, &store).await;
            match &flushed {
                Ok(0) => {}
                Ok(rows) => metrics.observe_store_write("usage_ledger", Ok(*rows)),
                Err(_) => metrics.observe_store_write("usage_ledger", Err(())),
            }
            match flushed {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("the usage ledger is written to the store again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "the usage ledger cannot be written; its rows are kept for the next try");
                }
                Err(_) => {}
            }
        }
    })
}
