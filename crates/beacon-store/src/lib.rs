//! The store: where tenants, API keys (hashes only), broadcast switches and destinations
//! live between restarts — SQLite for one node, PostgreSQL for several behind a load
//! balancer. It is never queried on the hot path: the gateway loads a snapshot
//! ([`Store::snapshot`]) into memory and reloads it when [`Store::change_version`] moves.
//!
//! ```text
//! admin API / CLI ──▶ Store (sqlx Any: sqlite:// or postgres://) ──▶ change_version += 1
//!                                                   │
//! every node: poll change_version ──changed──▶ snapshot() ──▶ proxy Directory + pipeline
//! ```
//!
//! One SQL dialect serves both backends (`$n` parameters, portable types: TEXT, BIGINT,
//! DOUBLE PRECISION). Destination secrets (DSN, headers) are sealed with [`secrets`].

pub mod secrets;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use beacon_config::{ApiKeyConfig, DestinationConfig, Limits, TenantBroadcastConfig, TenantConfig};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use secrets::{local_admin_token, redact, LocalAdminToken, SecretBox, SecretError};

/// Schema migrations, applied in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        broadcast_enabled BIGINT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        sha256 TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE IF NOT EXISTS destinations (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        enabled BIGINT NOT NULL,
        endpoint TEXT NOT NULL,
        sealed_secret TEXT NOT NULL,
        privacy_mode BIGINT NOT NULL,
        sampling_rate DOUBLE PRECISION NOT NULL,
        api_keys TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (tenant_id, name)
    )",
    // SPEC §4.5: -1 = the destination type's default, 0 = off, 1 = on.
    "ALTER TABLE destinations ADD COLUMN follow_caller_sampling BIGINT NOT NULL DEFAULT -1",
    // SPEC §4.3: -1 = on (the default), 0 = off, 1 = on.
    "ALTER TABLE destinations ADD COLUMN error_events BIGINT NOT NULL DEFAULT -1",
    // SPEC §5.1: limits as JSON ('' = none), and the counters every node adds to and reads
    // back once a second (per scope — `k:<key id>` or `t:<tenant>` — and period).
    "ALTER TABLE tenants ADD COLUMN limits TEXT NOT NULL DEFAULT '';
    ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '';
    CREATE TABLE IF NOT EXISTS limit_counters (
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        requests BIGINT NOT NULL DEFAULT 0,
        tokens BIGINT NOT NULL DEFAULT 0,
        spend_micros BIGINT NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (scope, period)
    )",
    // SPEC §5.1: the usage ledger, one row per minute, tenant, key and model; cost in
    // billionths of a USD.
    "CREATE TABLE IF NOT EXISTS usage_ledger (
        minute BIGINT NOT NULL,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        requests BIGINT NOT NULL,
        input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        reasoning_tokens BIGINT NOT NULL,
        cost_nanos BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, minute, key_id, model)
    )",
];

/// One usage row as the store keeps it (SPEC §5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRow {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    /// Tenant.
    pub tenant_id: String,
    /// Key id.
    pub key_id: String,
    /// Model as the client asked for it.
    pub model: String,
    /// The counts.
    pub counts: UsageCounts,
}

/// The counts of usage rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    /// Requests.
    pub requests: i64,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cached prompt tokens.
    pub cached_tokens: i64,
    /// Reasoning tokens.
    pub reasoning_tokens: i64,
    /// Cost in billionths of a USD.
    pub cost_nanos: i64,
    /// Requests that did not end `ok`.
    pub errors: i64,
}

/// How a usage report groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    /// By key id.
    Key,
    /// By model.
    Model,
    /// By UTC day (`YYYY-MM-DD`).
    Day,
}

/// Counts added to, or read back from, one scope's period (SPEC §5.1). A delta may be
/// negative (a token estimate corrected down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests.
    pub requests: i64,
    /// Tokens.
    pub tokens: i64,
    /// Spend, in millionths of a USD.
    pub spend_micros: i64,
}

/// A tenant's destinations, in the column order `destination_from_row` reads.
const DESTINATION_SELECT: &str =
    "SELECT id, tenant_id, name, kind, enabled, endpoint, sealed_secret, privacy_mode, \
     sampling_rate, api_keys, updated_at, follow_caller_sampling, error_events FROM destinations \
     WHERE tenant_id = $1";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported backend.
    #[error("store.url: {0}")]
    Url(String),
    /// The database failed.
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    /// A row with that id or name already exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// No such row.
    #[error("{0} not found")]
    NotFound(String),
    /// Secrets cannot be sealed or opened.
    #[error(transparent)]
    Secret(#[from] SecretError),
}

/// Who a key lets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Completions.
    Client,
    /// This tenant's admin routes and console.
    Management,
}

impl Role {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Management => "management",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "management" {
            Self::Management
        } else {
            Self::Client
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Broadcast switch.
    pub broadcast_enabled: bool,
}

/// A key, without its plaintext (which is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `key_<12 hex of the hash>`, the same id a key declared in the config file gets.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
}

/// A stored destination, secrets opened.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDestination {
    /// Stable id (`dst_…`).
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The settings, as in the config file.
    pub config: DestinationConfig,
    /// Last change, Unix seconds.
    pub updated_at: i64,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[usize::from(rand::random::<u8>()) % ALPHABET.len()] as char)
        .collect()
}

/// What a failed INSERT means: a taken id or name (`what`), or a tenant that does not exist.
fn insert_error(e: sqlx::Error, what: impl FnOnce() -> String, tenant: &str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(what())
    } else if e
        .as_database_error()
        .is_some_and(|d| d.is_foreign_key_violation())
    {
        StoreError::NotFound(format!("tenant `{tenant}`"))
    } else {
        StoreError::Database(e)
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    secrets: SecretBox,
}

impl Store {
    /// Opens `url` (`sqlite://path` — created if missing — or `postgres://…`) and migrates it.
    pub async fn open(url: &str, secrets: SecretBox) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(StoreError::Url(
                    "sqlite:// needs a path, e.g. sqlite://beacon.db".into(),
                ));
            }
            if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            }
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.to_string()
        } else {
            return Err(StoreError::Url(
                "must start with sqlite:// or postgres://".into(),
            ));
        };
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 1 } else { 8 })
            .connect(&url)
            .await?;
        let store = Self { pool, secrets };
        store.migrate(sqlite).await?;
        Ok(store)
    }

    async fn migrate(&self, sqlite: bool) -> Result<(), StoreError> {
        // One connection for the whole migration, holding a PostgreSQL advisory lock: nodes
        // that start together on a fresh database migrate one after the other (concurrent
        // CREATE TABLE IF NOT EXISTS races in PostgreSQL's catalog).
        let mut conn = self.pool.acquire().await?;
        if sqlite {
            sqlx::query("PRAGMA foreign_keys = ON")
                .execute(&mut *conn)
                .await?;
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&mut *conn)
                .await?;
        } else {
            sqlx::query("SELECT pg_advisory_lock(7424651)")
                .execute(&mut *conn)
                .await?;
        }
        let result = Self::migrate_locked(&mut conn).await;
        if !sqlite {
            sqlx::query("SELECT pg_advisory_unlock(7424651)")
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    async fn migrate_locked(
        conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS beacon_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        )
        .execute(&mut **conn)
        .await?;
        for key in ["schema_version", "change_version"] {
            sqlx::query(
                "INSERT INTO beacon_meta (key, value) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .execute(&mut **conn)
            .await?;
        }
        let version: i64 =
            sqlx::query("SELECT value FROM beacon_meta WHERE key = 'schema_version'")
                .fetch_one(&mut **conn)
                .await?
                .try_get(0)?;
        for (i, migration) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(version).unwrap_or(0))
        {
            let mut tx = sqlx::Connection::begin(&mut **conn).await?;
            for statement in migration
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            sqlx::query("UPDATE beacon_meta SET value = $1 WHERE key = 'schema_version'")
                .bind(i64::try_from(i + 1).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn bump(&self, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
        sqlx::query("UPDATE beacon_meta SET value = value + 1 WHERE key = 'change_version'")
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Runs one change that must touch a row (else `missing` names what was not found),
    /// bumping the change counter in the same transaction.
    async fn change_one<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        missing: impl FnOnce() -> String,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if query.execute(&mut *tx).await?.rows_affected() == 0 {
            return Err(StoreError::NotFound(missing()));
        }
        self.bump(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fails when destination secrets cannot be stored (no `BEACON_SECRET_KEY`).
    pub fn require_secret_key(&self) -> Result<(), StoreError> {
        Ok(self.secrets.require_key()?)
    }

    /// A counter that moves on every change; nodes poll it to know when to reload.
    pub async fn change_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT value FROM beacon_meta WHERE key = 'change_version'")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    /// Creates a tenant.
    pub async fn create_tenant(&self, id: &str, name: &str) -> Result<Tenant, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name, broadcast_enabled, created_at) VALUES ($1, $2, 0, $3)",
        )
        .bind(id)
        .bind(name)
        .bind(now())
        .execute(&mut *tx)
        .await;
        inserted.map_err(|e| insert_error(e, || format!("tenant `{id}`"), id))?;
        self.bump(&mut tx).await?;
        tx.commit().await?;
        Ok(Tenant {
            id: id.into(),
            name: name.into(),
            broadcast_enabled: false,
        })
    }

    /// Every tenant, by id.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT id, name, broadcast_enabled FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Tenant {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    broadcast_enabled: r.try_get::<i64, _>(2)? != 0,
                })
            })
            .collect()
    }

    /// One tenant.
    pub async fn get_tenant(&self, id: &str) -> Result<Tenant, StoreError> {
        let row = sqlx::query("SELECT id, name, broadcast_enabled FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Tenant {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                broadcast_enabled: r.try_get::<i64, _>(2)? != 0,
            }),
            None => Err(StoreError::NotFound(format!("tenant `{id}`"))),
        }
    }

    /// The active (not revoked) key whose plaintext hashes to `sha256`, if any: how the admin
    /// API recognises a tenant's management key.
    pub async fn active_key_by_hash(
        &self,
        sha256: &[u8; 32],
    ) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(
            "SELECT id, tenant_id, name, role, created_at, revoked_at FROM api_keys WHERE sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(hex::encode(sha256))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Sets a tenant's broadcast switch.
    pub async fn set_broadcast(&self, tenant: &str, enabled: bool) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE tenants SET broadcast_enabled = $1 WHERE id = $2")
            .bind(i64::from(enabled))
            .bind(tenant);
        self.change_one(q, || format!("tenant `{tenant}`")).await
    }

    /// A tenant's limits and its keys' limits (by key id; keys without limits left out).
    pub async fn limits(
        &self,
        tenant: &str,
    ) -> Result<(Limits, BTreeMap<String, Limits>), StoreError> {
        let row = sqlx::query("SELECT limits FROM tenants WHERE id = $1")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant `{tenant}`")))?;
        let own = stored_limits(&row.try_get::<String, _>(0)?);
        let mut keys = BTreeMap::new();
        for r in
            sqlx::query("SELECT id, limits FROM api_keys WHERE tenant_id = $1 AND limits <> ''")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await?
        {
            keys.insert(r.try_get(0)?, stored_limits(&r.try_get::<String, _>(1)?));
        }
        Ok((own, keys))
    }

    /// Sets a tenant's limits (all of them: a field left out is no limit).
    pub async fn set_tenant_limits(&self, tenant: &str, limits: &Limits) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE tenants SET limits = $1 WHERE id = $2")
            .bind(limits_column(limits))
            .bind(tenant);
        self.change_one(q, || format!("tenant `{tenant}`")).await
    }

    /// Sets a key's limits (all of them: a field left out is no limit).
    pub async fn set_key_limits(
        &self,
        tenant: &str,
        key_id: &str,
        limits: &Limits,
    ) -> Result<(), StoreError> {
        let q = sqlx::query("UPDATE api_keys SET limits = $1 WHERE id = $2 AND tenant_id = $3")
            .bind(limits_column(limits))
            .bind(key_id)
            .bind(tenant);
        self.change_one(q, || format!("key `{key_id}`")).await
    }

    /// Adds this node's counts to the shared counters and reads the totals back, in one
    /// transaction: `batch` is (scope, period, delta) — a zero delta only reads. The totals
    /// come back in the same order.
    pub async fn exchange_counts(
        &self,
        batch: &[(String, String, Counts)],
    ) -> Result<Vec<Counts>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut totals = Vec::with_capacity(batch.len());
        let now = now();
        for (scope, period, d) in batch {
            let row = sqlx::query(
                "INSERT INTO limit_counters (scope, period, requests, tokens, spend_micros, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (scope, period) DO UPDATE SET \
                 requests = limit_counters.requests + excluded.requests, \
                 tokens = limit_counters.tokens + excluded.tokens, \
                 spend_micros = limit_counters.spend_micros + excluded.spend_micros, \
                 updated_at = excluded.updated_at \
                 RETURNING requests, tokens, spend_micros",
            )
            .bind(scope)
            .bind(period)
            .bind(d.requests)
            .bind(d.tokens)
            .bind(d.spend_micros)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let get = |i: usize| -> Result<i64, StoreError> { Ok(row.try_get::<i64, _>(i)?) };
            totals.push(Counts {
                requests: get(0)?,
                tokens: get(1)?,
                spend_micros: get(2)?,
            });
        }
        tx.commit().await?;
        Ok(totals)
    }

    /// Adds usage rows to the ledger, in one transaction.
    pub async fn add_usage(&self, rows: &[UsageRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for r in rows {
            let c = &r.counts;
            sqlx::query(
                "INSERT INTO usage_ledger (minute, tenant_id, key_id, model, requests, input_tokens, \
                 output_tokens, cached_tokens, reasoning_tokens, cost_nanos, errors) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (tenant_id, minute, key_id, model) DO UPDATE SET \
                 requests = usage_ledger.requests + excluded.requests, \
                 input_tokens = usage_ledger.input_tokens + excluded.input_tokens, \
                 output_tokens = usage_ledger.output_tokens + excluded.output_tokens, \
                 cached_tokens = usage_ledger.cached_tokens + excluded.cached_tokens, \
                 reasoning_tokens = usage_ledger.reasoning_tokens + excluded.reasoning_tokens, \
                 cost_nanos = usage_ledger.cost_nanos + excluded.cost_nanos, \
                 errors = usage_ledger.errors + excluded.errors",
            )
            .bind(r.minute)
            .bind(&r.tenant_id)
            .bind(&r.key_id)
            .bind(&r.model)
            .bind(c.requests)
            .bind(c.input_tokens)
            .bind(c.output_tokens)
            .bind(c.cached_tokens)
            .bind(c.reasoning_tokens)
            .bind(c.cost_nanos)
            .bind(c.errors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A tenant's usage from minute `from` (inclusive) to minute `to` (exclusive), grouped;
    /// groups in ascending order.
    pub async fn usage(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        group: UsageGroup,
    ) -> Result<Vec<(String, UsageCounts)>, StoreError> {
        let rows = sqlx::query(
            "SELECT minute, key_id, model, requests, input_tokens, output_tokens, cached_tokens, \
             reasoning_tokens, cost_nanos, errors FROM usage_ledger \
             WHERE tenant_id = $1 AND minute >= $2 AND minute < $3",
        )
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        // Grouped here, not in SQL: the day of a minute is computed the same way for SQLite
        // and PostgreSQL.
        let mut groups: BTreeMap<String, UsageCounts> = BTreeMap::new();
        for r in &rows {
            let minute: i64 = r.try_get(0)?;
            let name = match group {
                UsageGroup::Key => r.try_get::<String, _>(1)?,
                UsageGroup::Model => r.try_get::<String, _>(2)?,
                UsageGroup::Day => beacon_config::calendar::date(minute.div_euclid(1440)),
            };
            let g = groups.entry(name).or_default();
            g.requests += r.try_get::<i64, _>(3)?;
            g.input_tokens += r.try_get::<i64, _>(4)?;
            g.output_tokens += r.try_get::<i64, _>(5)?;
            g.cached_tokens += r.try_get::<i64, _>(6)?;
            g.reasoning_tokens += r.try_get::<i64, _>(7)?;
            g.cost_nanos += r.try_get::<i64, _>(8)?;
            g.errors += r.try_get::<i64, _>(9)?;
        }
        Ok(groups.into_iter().collect())
    }

    /// Removes usage rows older than `retention_days`; returns how many went.
    pub async fn prune_usage(&self, retention_days: u32) -> Result<u64, StoreError> {
        let cutoff = now() / 60 - i64::from(retention_days) * 1440;
        let done = sqlx::query("DELETE FROM usage_ledger WHERE minute < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Removes counters no limit reads any more: minutes older than a day, days and months
    /// untouched for 62 days. Returns how many rows went.
    pub async fn prune_counters(&self) -> Result<u64, StoreError> {
        let now = now();
        let done = sqlx::query(
            "DELETE FROM limit_counters WHERE (period LIKE 'm:%' AND updated_at < $1) OR updated_at < $2",
        )
        .bind(now - 86_400)
        .bind(now - 62 * 86_400)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Creates a key and returns it with its plaintext — the only time the plaintext exists.
    pub async fn create_key(
        &self,
        tenant: &str,
        name: &str,
        role: Role,
    ) -> Result<(ApiKey, String), StoreError> {
        let plaintext = format!("bk-{}", random_token(40));
        let digest: [u8; 32] = Sha256::digest(plaintext.as_bytes()).into();
        let id = ApiKeyConfig::from_hash(digest).id;
        let created_at = now();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(name)
        .bind(role.as_str())
        .bind(hex::encode(digest))
        .bind(created_at)
        .execute(&mut *tx)
        .await;
        inserted.map_err(|e| insert_error(e, || format!("key `{id}`"), tenant))?;
        self.bump(&mut tx).await?;
        tx.commit().await?;
        let key = ApiKey {
            id,
            tenant_id: tenant.into(),
            name: name.into(),
            role,
            created_at,
            revoked_at: None,
        };
        Ok((key, plaintext))
    }

    /// A tenant's keys, revoked ones included.
    pub async fn list_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, role, created_at, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, name, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key of `tenant`.
    pub async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<(), StoreError> {
        let q = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(key_id)
        .bind(tenant);
        self.change_one(q, || format!("key `{key_id}`")).await
    }

    /// Stores a destination (its secrets sealed); the caller has tested it.
    pub async fn create_destination(
        &self,
        tenant: &str,
        config: &DestinationConfig,
    ) -> Result<StoredDestination, StoreError> {
        let id = format!("dst_{}", random_token(16).to_ascii_lowercase());
        let (kind, endpoint, secret) = split_kind(config);
        let sealed = self.secrets.seal(&secret_context(&id), &secret)?;
        let updated_at = now();
        let mut tx = self.pool.begin().await?;
        let query = sqlx::query(
            "INSERT INTO destinations (name, kind, enabled, endpoint, sealed_secret, privacy_mode,
                                       sampling_rate, api_keys, updated_at, id, tenant_id, created_at,
                                       follow_caller_sampling, error_events)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $9, $12, $13)",
        );
        let inserted = bind_settings(query, config, kind, endpoint, sealed, updated_at)
            .bind(&id)
            .bind(tenant)
            .bind(follow_column(config.follow_caller_sampling))
            .bind(follow_column(config.error_events))
            .execute(&mut *tx)
            .await;
        inserted
            .map_err(|e| insert_error(e, || format!("destination `{}`", config.name), tenant))?;
        self.bump(&mut tx).await?;
        tx.commit().await?;
        let mut config = config.clone();
        config.id = Some(id.clone());
        Ok(StoredDestination {
            id,
            tenant_id: tenant.into(),
            config,
            updated_at,
        })
    }

    /// One destination of `tenant`, secrets opened.
    pub async fn get_destination(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<StoredDestination, StoreError> {
        let query = format!("{DESTINATION_SELECT} AND id = $2");
        let row = sqlx::query(&query)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => self.destination_from_row(&r),
            None => Err(StoreError::NotFound(format!("destination `{id}`"))),
        }
    }

    /// Replaces every setting of a destination of `tenant` (its secrets sealed afresh); the
    /// caller has tested it when its endpoint or secrets changed.
    pub async fn update_destination(
        &self,
        tenant: &str,
        id: &str,
        config: &DestinationConfig,
    ) -> Result<StoredDestination, StoreError> {
        let (kind, endpoint, secret) = split_kind(config);
        let sealed = self.secrets.seal(&secret_context(id), &secret)?;
        let updated_at = now();
        let q = sqlx::query(
            "UPDATE destinations SET name = $1, kind = $2, enabled = $3, endpoint = $4, sealed_secret = $5,
                                     privacy_mode = $6, sampling_rate = $7, api_keys = $8, updated_at = $9,
                                     follow_caller_sampling = $12, error_events = $13
             WHERE id = $10 AND tenant_id = $11",
        );
        let q = bind_settings(q, config, kind, endpoint, sealed, updated_at)
            .bind(id)
            .bind(tenant)
            .bind(follow_column(config.follow_caller_sampling))
            .bind(follow_column(config.error_events));
        match self.change_one(q, || format!("destination `{id}`")).await {
            Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                return Err(StoreError::Conflict(format!(
                    "destination `{}`",
                    config.name
                )))
            }
            other => other?,
        }
        let mut config = config.clone();
        config.id = Some(id.to_string());
        Ok(StoredDestination {
            id: id.to_string(),
            tenant_id: tenant.into(),
            config,
            updated_at,
        })
    }

    /// A tenant's destinations, secrets opened (redact before showing them).
    pub async fn list_destinations(
        &self,
        tenant: &str,
    ) -> Result<Vec<StoredDestination>, StoreError> {
        let query = format!("{DESTINATION_SELECT} ORDER BY created_at, name, id");
        let rows = sqlx::query(&query)
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.destination_from_row(r)).collect()
    }

    /// Deletes a destination of `tenant`.
    pub async fn delete_destination(&self, tenant: &str, id: &str) -> Result<(), StoreError> {
        let q = sqlx::query("DELETE FROM destinations WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant);
        self.change_one(q, || format!("destination `{id}`")).await
    }

    /// Everything the gateway needs, as config types: tenants with their active keys (hashes
    /// only), broadcast switches and destinations.
    pub async fn snapshot(&self) -> Result<Vec<TenantConfig>, StoreError> {
        let mut tenants: BTreeMap<String, TenantConfig> = BTreeMap::new();
        for t in self.list_tenants().await? {
            tenants.insert(
                t.id.clone(),
                TenantConfig {
                    id: t.id,
                    name: t.name,
                    api_keys: Vec::new(),
                    broadcast: TenantBroadcastConfig {
                        enabled: t.broadcast_enabled,
                        destinations: Vec::new(),
                    },
                    limits: Limits::default(),
                    key_limits: BTreeMap::new(),
                },
            );
        }
        for r in sqlx::query("SELECT id, limits FROM tenants WHERE limits <> ''")
            .fetch_all(&self.pool)
            .await?
        {
            let id: String = r.try_get(0)?;
            if let Some(t) = tenants.get_mut(&id) {
                t.limits = stored_limits(&r.try_get::<String, _>(1)?);
            }
        }
        for r in sqlx::query(
            "SELECT tenant_id, id, limits FROM api_keys WHERE revoked_at IS NULL AND limits <> ''",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let tenant: String = r.try_get(0)?;
            if let Some(t) = tenants.get_mut(&tenant) {
                t.key_limits
                    .insert(r.try_get(1)?, stored_limits(&r.try_get::<String, _>(2)?));
            }
        }
        let keys = sqlx::query("SELECT tenant_id, sha256, name, id FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        // (tenant, key name) → key id, to resolve allowlists written with key names.
        let mut names: BTreeMap<(String, String), String> = BTreeMap::new();
        for r in &keys {
            let tenant: String = r.try_get(0)?;
            let digest = hex::decode(r.try_get::<String, _>(1)?)
                .ok()
                .and_then(|d| <[u8; 32]>::try_from(d).ok());
            names.insert((tenant.clone(), r.try_get(2)?), r.try_get(3)?);
            if let (Some(t), Some(d)) = (tenants.get_mut(&tenant), digest) {
                t.api_keys.push(ApiKeyConfig::from_hash(d));
            }
        }
        let tenant_ids: Vec<String> = tenants.keys().cloned().collect();
        for id in tenant_ids {
            let destinations = self.list_destinations(&id).await?;
            if let Some(t) = tenants.get_mut(&id) {
                t.broadcast.destinations = destinations
                    .into_iter()
                    .map(|mut d| {
                        for k in &mut d.config.api_keys {
                            if let Some(key_id) = names.get(&(id.clone(), k.clone())) {
                                k.clone_from(key_id);
                            }
                        }
                        d.config
                    })
                    .collect();
            }
        }
        Ok(tenants.into_values().collect())
    }

    fn destination_from_row(&self, r: &AnyRow) -> Result<StoredDestination, StoreError> {
        let id: String = r.try_get(0)?;
        let kind: String = r.try_get(3)?;
        let endpoint: String = r.try_get(5)?;
        let secret = self
            .secrets
            .open(&secret_context(&id), &r.try_get::<String, _>(6)?)?;
        let fields = stored_fields(&kind, endpoint, &secret);
        let api_keys: String = r.try_get(9)?;
        Ok(StoredDestination {
            id: id.clone(),
            tenant_id: r.try_get(1)?,
            config: DestinationConfig {
                id: Some(id),
                name: r.try_get(2)?,
                enabled: r.try_get::<i64, _>(4)? != 0,
                type_name: kind,
                fields,
                privacy_mode: r.try_get::<i64, _>(7)? != 0,
                follow_caller_sampling: match r.try_get::<i64, _>(11)? {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                },
                error_events: match r.try_get::<i64, _>(12)? {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                },
                sampling_rate: r.try_get(8)?,
                api_keys: api_keys
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
            },
            updated_at: r.try_get(10)?,
        })
    }
}

fn key_from_row(r: &AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        name: r.try_get(2)?,
        role: Role::parse(&r.try_get::<String, _>(3)?),
        created_at: r.try_get(4)?,
        revoked_at: r.try_get(5)?,
    })
}

/// Binds a destination's settings as `$1`–`$9` (name, kind, enabled, endpoint, sealed secret,
/// privacy mode, sampling rate, key allowlist, updated at), for INSERT and UPDATE alike.
fn bind_settings<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    config: &'q DestinationConfig,
    kind: &'q str,
    endpoint: String,
    sealed: String,
    updated_at: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&config.name)
        .bind(kind)
        .bind(i64::from(config.enabled))
        .bind(endpoint)
        .bind(sealed)
        .bind(i64::from(config.privacy_mode))
        .bind(config.sampling_rate)
        .bind(config.api_keys.join("\n"))
        .bind(updated_at)
}

/// An optional switch (`follow_caller_sampling`, `error_events`) as stored: -1 for the
/// default.
fn follow_column(v: Option<bool>) -> i64 {
    v.map_or(-1, i64::from)
}

fn secret_context(destination_id: &str) -> String {
    format!("destination:{destination_id}:secret")
}

/// `(kind, endpoint, secret)` of a destination: its type, the column a node of an earlier
/// version sends to, and what is sealed.
///
/// `sentry` and `otlp` rows keep the format every version reads — the endpoint in clear, the
/// DSN or the `name<TAB>value` header lines sealed — so nodes of different versions sharing
/// one database agree on them. Every other type's fields are sealed as one JSON object and
/// its endpoint column is left empty: an earlier node, which reads an unknown kind as OTLP
/// to that column, finds no URL and skips the row instead of sending to it.
fn split_kind(config: &DestinationConfig) -> (&str, String, String) {
    let text = |k: &str| {
        config
            .fields
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let legacy_fields =
        |allowed: &[&str]| config.fields.keys().all(|k| allowed.contains(&k.as_str()));
    match config.type_name.as_str() {
        "sentry" if legacy_fields(&["otlp_endpoint", "dsn"]) => {
            ("sentry", text("otlp_endpoint"), text("dsn"))
        }
        "otlp" if legacy_fields(&["endpoint", "headers"]) => {
            let headers = config
                .fields
                .get("headers")
                .and_then(|h| h.as_object())
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| format!("{k}\t{}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            ("otlp", text("endpoint"), headers)
        }
        _ => (
            &config.type_name,
            String::new(),
            serde_json::Value::Object(config.fields.clone()).to_string(),
        ),
    }
}

/// A stored destination's fields: a `sentry` row's DSN or an `otlp` row's header lines with
/// the endpoint column, or the sealed JSON object of any other type (see [`split_kind`]).
/// A row that is neither reads as no fields: validation names what is missing and the
/// pipeline skips it.
fn stored_fields(
    kind: &str,
    endpoint: String,
    secret: &str,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{json, Value};
    let fields = match kind {
        _ if secret.starts_with('{') => serde_json::from_str(secret).unwrap_or(Value::Null),
        "sentry" => json!({"otlp_endpoint": endpoint, "dsn": secret}),
        "otlp" => {
            let headers: serde_json::Map<String, Value> = secret
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect();
            if headers.is_empty() {
                json!({"endpoint": endpoint})
            } else {
                json!({"endpoint": endpoint, "headers": headers})
            }
        }
        _ => Value::Null,
    };
    match fields {
        Value::Object(fields) => fields,
        _ => serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests;

/// The limits column: '' when nothing is limited, else the JSON form.
fn limits_column(limits: &Limits) -> String {
    if limits.is_empty() {
        String::new()
    } else {
        limits.to_json().to_string()
    }
}

/// Reads a limits column; one that no longer parses (written by a newer version) is no limit,
/// with a warning.
fn stored_limits(text: &str) -> Limits {
    if text.is_empty() {
        return Limits::default();
    }
    serde_json::from_str(text)
        .ok()
        .and_then(|v| Limits::from_json(&v).ok())
        .unwrap_or_else(|| {
            tracing::warn!(limits = text, "stored limits cannot be read; not enforced");
            Limits::default()
        })
}
