//! Limits across nodes (SPEC §5.1): once a second this node adds its counts to the store's
//! shared counters and reads every node's totals back (`beacon_proxy::limits::Limiter::sync`).

use std::sync::Arc;
use std::time::Duration;

use beacon_proxy::auth::Directory;
use beacon_store::Store;

/// The store as the limits' shared counters (SPEC §5.1).
struct StoreCounts(Store);

impl beacon_proxy::limits::SharedCounts for StoreCounts {
    fn exchange(
        &self,
        batch: Vec<(String, String, beacon_proxy::limits::Counts)>,
    ) -> beacon_proxy::limits::ExchangeFuture<'_> {
        Box::pin(async move {
            let batch: Vec<(String, String, beacon_store::Counts)> = batch
                .into_iter()
                .map(|(s, p, c)| {
                    (
                        s,
                        p,
                        beacon_store::Counts {
                            requests: c.requests,
                            tokens: c.tokens,
                            spend_micros: c.spend_micros,
                        },
                    )
                })
                .collect();
            let totals = self
                .0
                .exchange_counts(&batch)
                .await
                .map_err(|e| e.to_string())?;
            Ok(totals
                .into_iter()
                .map(|c| beacon_proxy::limits::Counts {
                    requests: c.requests,
                    tokens: c.tokens,
                    spend_micros: c.spend_micros,
                })
                .collect())
        })
    }
}

/// How often a node adds its counts to the shared counters and reads every node's back.
pub const LIMITS_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Reconciles the limits with the store once a second. `BEACON_CLOCK_OFFSET_FILE` (for
/// tests) names a file whose number of seconds is added to the limits' clock, read each time.
pub fn spawn(
    directory: Arc<Directory>,
    store: Store,
    metrics: Arc<beacon_proxy::metrics::Metrics>,
) -> tokio::task::JoinHandle<()> {
    let offset_file = std::env::var_os("BEACON_CLOCK_OFFSET_FILE").map(std::path::PathBuf::from);
    tokio::spawn(async move {
        let shared = StoreCounts(store);
        let mut tick = tokio::time::interval(LIMITS_SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            ticks += 1;
            // Every 10 minutes: old counters out.
            if ticks.is_multiple_of(600) {
                if let Err(e) = shared.0.prune_counters().await {
                    tracing::debug!(error = %e, "pruning limit counters failed");
                }
            }
            if let Some(path) = &offset_file {
                if let Some(secs) = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                {
                    directory
                        .limiter()
                        .clock
                        .set_offset_ms((secs * 1000.0) as i64);
                }
            }
            let synced = directory.limiter().sync(&shared).await;
            match &synced {
                Ok(0) => {}
                Ok(rows) => metrics.observe_store_write("limit_counters", Ok(*rows)),
                Err(_) => metrics.observe_store_write("limit_counters", Err(())),
            }
            match synced {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("limits reconcile with the store again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "limits cannot reconcile with the store; this node enforces its own counts until it can");
                }
                Err(_) => {}
            }
        }
    })
}
