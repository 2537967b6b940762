//! Where the gateway's tenants come from: the store, plus what the config file declares.
//!
//! At start, declared tenants are created in the store if missing (their keys and
//! destinations stay owned by the file and are merged in memory). While running, every node
//! polls the store's change counter and swaps a fresh snapshot into the proxy's
//! [`Directory`] and the broadcast pipeline, so a key or destination created, changed or
//! removed through any node is in force on every node within [`RELOAD_INTERVAL`] — and on the
//! node whose admin API made the change before that API answers.

use std::sync::Arc;
use std::time::Duration;

use beacon_broadcast::PipelineControl;
use beacon_config::TenantConfig;
use beacon_proxy::auth::Directory;
use beacon_store::{Role, Store, StoreError};

/// How often each node checks the store for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The tenants in force: the store's, with the file's keys and destinations added.
pub fn merge(mut stored: Vec<TenantConfig>, declared: &[TenantConfig]) -> Vec<TenantConfig> {
    for d in declared {
        match stored.iter_mut().find(|t| t.id == d.id) {
            Some(t) => {
                t.api_keys.extend(d.api_keys.iter().cloned());
                // Limits written in the file win over the store's.
                if !d.limits.is_empty() {
                    t.limits = d.limits;
                }
                t.key_limits
                    .extend(d.key_limits.iter().map(|(k, l)| (k.clone(), *l)));
                t.broadcast
                    .destinations
                    .extend(d.broadcast.destinations.iter().cloned());
            }
            None => stored.push(d.clone()),
        }
    }
    stored
}

/// Creates declared tenants that the store does not have yet (with their broadcast switch);
/// with nothing declared and an empty store, creates tenant `default` with one key and
/// returns its plaintext (shown once, in the first-run block).
pub async fn sync_declared(
    store: &Store,
    declared: &[TenantConfig],
) -> Result<Option<String>, StoreError> {
    let existing = store.list_tenants().await?;
    for d in declared {
        if existing.iter().any(|t| t.id == d.id) {
            continue;
        }
        match store.create_tenant(&d.id, &d.name).await {
            Ok(_) => store.set_broadcast(&d.id, d.broadcast.enabled).await?,
            // Another node created it first.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if declared.is_empty() && existing.is_empty() {
        match store.create_tenant("default", "Default tenant").await {
            Ok(_) => {
                let (key, plaintext) = store
                    .create_key("default", "development", Role::Management)
                    .await?;
                tracing::warn!(
                    key = %plaintext,
                    key_id = %key.id,
                    "no tenants yet: created tenant `default` and this key, stored hashed — it is shown only now"
                );
                return Ok(Some(plaintext));
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Loads the tenants in force now.
pub async fn load(
    store: &Store,
    declared: &[TenantConfig],
) -> Result<Vec<TenantConfig>, StoreError> {
    Ok(merge(store.snapshot().await?, declared))
}

/// Applies store changes to this node: the proxy's [`Directory`] and the broadcast pipeline.
pub struct Reloader {
    store: Store,
    declared: Vec<TenantConfig>,
    directory: Arc<Directory>,
    pipeline: PipelineControl,
    /// The change version applied last; the lock also keeps reloads one at a time.
    seen: tokio::sync::Mutex<i64>,
    failing: std::sync::atomic::AtomicBool,
}

impl Reloader {
    /// A reloader that has applied `seen` already.
    pub fn new(
        store: Store,
        declared: Vec<TenantConfig>,
        directory: Arc<Directory>,
        pipeline: PipelineControl,
        seen: i64,
    ) -> Self {
        Self {
            store,
            declared,
            directory,
            pipeline,
            seen: tokio::sync::Mutex::new(seen),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Reloads if the store changed since the last reload. A store that cannot be reached
    /// leaves the last snapshot in force (said once per outage).
    pub async fn check(&self) {
        use std::sync::atomic::Ordering;
        let mut seen = self.seen.lock().await;
        let result = async {
            let version = self.store.change_version().await?;
            if version != *seen {
                let tenants = load(&self.store, &self.declared).await?;
                self.directory.load(&tenants);
                if let Err(e) = self.pipeline.reload(&tenants) {
                    // An invalid stored destination must not stop key changes from applying.
                    tracing::warn!(error = %e, "broadcast destinations not reloaded");
                }
                tracing::info!(
                    version,
                    keys = self.directory.key_count(),
                    "tenants reloaded from the store"
                );
                *seen = version;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("store reachable again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "cannot reload tenants from the store; serving the last snapshot");
                }
            }
        }
    }

    /// Checks every [`RELOAD_INTERVAL`] until the task is aborted.
    pub fn spawn_polling(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                self.check().await;
            }
        })
    }
}

impl beacon_admin::Reload for Reloader {
    fn reload(&self) -> beacon_admin::ReloadFuture<'_> {
        Box::pin(self.check())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beacon_config::{ApiKeyConfig, TenantBroadcastConfig};

    fn tenant(id: &str, key: &str) -> TenantConfig {
        TenantConfig {
            id: id.into(),
            name: id.into(),
            api_keys: vec![ApiKeyConfig::from_plaintext(key)],
            broadcast: TenantBroadcastConfig::default(),
            limits: Default::default(),
            key_limits: Default::default(),
        }
    }

    #[test]
    fn declared_keys_join_stored_tenants() {
        let merged = merge(
            vec![tenant("acme", "stored-key-1")],
            &[tenant("acme", "file-key-1"), tenant("beta", "file-key-2")],
        );
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].api_keys.len(), 2);
        assert_eq!(merged[1].id, "beta");
    }
}
