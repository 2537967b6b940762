use super::*;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

struct Db {
    dir: std::path::PathBuf,
}

impl Db {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("beacon-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.dir.join("beacon.db").display())
    }
    async fn open(&self) -> Store {
        Store::open(&self.url(), SecretBox::new(Some(KEY)).unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One text column of a destination's row, as stored.
async fn column(store: &Store, name: &str, id: &str) -> String {
    sqlx::query(&format!("SELECT {name} FROM destinations WHERE id = $1"))
        .bind(id)
        .fetch_one(&store.pool)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

fn fields(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap()
}

fn sentry() -> DestinationConfig {
    DestinationConfig {
        id: None,
        name: "Sentry production".into(),
        enabled: true,
        type_name: "sentry".into(),
        fields: fields(serde_json::json!({
            "otlp_endpoint": "https://o1.ingest.sentry.io/api/456/integration/otlp/v1/traces",
            "dsn": "https://secretpublickey@o1.ingest.sentry.io/456",
        })),
        privacy_mode: true,
        follow_caller_sampling: None,
        error_events: None,
        sampling_rate: 0.25,
        api_keys: vec!["key_aaaaaaaaaaaa".into()],
    }
}

/// The PostgreSQL server scripts/test.sh starts (scripts/pg-test-server.sh).
fn postgres_url() -> String {
    std::env::var("BEACON_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("BEACON_TEST_POSTGRES_URL is not set: run scripts/test.sh, or start one with `scripts/pg-test-server.sh start /tmp/pg`")
    })
}

/// A tenant id no other test (or earlier run against the same database) uses.
fn unique(tag: &str) -> String {
    format!("{tag}-{}", random_token(8).to_ascii_lowercase())
}

/// The same behaviour on both backends.
async fn tenants_keys_switches_and_destinations(store: &Store) {
    let acme = unique("acme");
    let v0 = store.change_version().await.unwrap();
    store.create_tenant(&acme, "Acme").await.unwrap();
    assert!(matches!(
        store.create_tenant(&acme, "Again").await,
        Err(StoreError::Conflict(_))
    ));
    store.set_broadcast(&acme, true).await.unwrap();
    assert!(matches!(
        store.set_broadcast("nope", true).await,
        Err(StoreError::NotFound(_))
    ));
    let (key, plaintext) = store
        .create_key(&acme, "ci", Role::Management)
        .await
        .unwrap();
    assert_eq!(key.id, ApiKeyConfig::from_plaintext(&plaintext).id);
    assert!(matches!(
        store.create_key("nope", "x", Role::Client).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.change_version().await.unwrap() >= v0 + 3);
    let keys = store.list_keys(&acme).await.unwrap();
    assert_eq!((keys.len(), keys[0].role), (1, Role::Management));
    let d = store.create_destination(&acme, &sentry()).await.unwrap();
    assert!(matches!(
        store.create_destination(&acme, &sentry()).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(d.config.id.as_deref(), Some(d.id.as_str()));
    assert_eq!(
        store.list_destinations(&acme).await.unwrap()[0].config,
        d.config
    );
    assert_eq!(
        store.get_destination(&acme, &d.id).await.unwrap().config,
        d.config
    );
    assert!(matches!(
        store.get_destination("nope", &d.id).await,
        Err(StoreError::NotFound(_))
    ));
    // Update: every setting replaced, secrets sealed afresh; a taken name conflicts.
    let mut changed = d.config.clone();
    changed.sampling_rate = 0.5;
    changed.name = "Renamed".into();
    changed.fields = fields(serde_json::json!({
        "otlp_endpoint": "https://o9.ingest.sentry.io/api/9/integration/otlp/v1/traces",
        "dsn": "https://otherpublickey@o9.ingest.sentry.io/9",
    }));
    let updated = store
        .update_destination(&acme, &d.id, &changed)
        .await
        .unwrap();
    assert_eq!(
        store.get_destination(&acme, &d.id).await.unwrap().config,
        updated.config
    );
    assert_eq!(updated.config, changed);
    let mut second = sentry();
    second.name = "Second".into();
    let second = store.create_destination(&acme, &second).await.unwrap();
    let mut clash = second.config.clone();
    clash.name = "Renamed".into();
    assert!(matches!(
        store.update_destination(&acme, &second.id, &clash).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.update_destination(&acme, "dst_missing", &clash).await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_destination(&acme, &second.id).await.unwrap();
    let sealed = column(store, "sealed_secret", &d.id).await;
    assert!(sealed.starts_with("v1.") && !sealed.contains("otherpublickey"));
    // Management keys are found by their hash (the admin API's sign-in).
    let digest: [u8; 32] = Sha256::digest(plaintext.as_bytes()).into();
    assert_eq!(
        store.active_key_by_hash(&digest).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.get_tenant(&acme).await.unwrap().name, "Acme");
    let snap = store.snapshot().await.unwrap();
    let t = snap.iter().find(|t| t.id == acme).unwrap();
    assert!(t.broadcast.enabled);
    assert_eq!(t.api_keys, vec![ApiKeyConfig::from_plaintext(&plaintext)]);
    assert_eq!(t.broadcast.destinations, vec![changed.clone()]);
    // Allowlists may name keys: the snapshot resolves names to ids.
    let mut by_name = changed.clone();
    by_name.api_keys = vec!["ci".into(), "key_unknown000".into()];
    store
        .update_destination(&acme, &d.id, &by_name)
        .await
        .unwrap();
    let snap = store.snapshot().await.unwrap();
    let t = snap.iter().find(|t| t.id == acme).unwrap();
    assert_eq!(
        t.broadcast.destinations[0].api_keys,
        vec![key.id.clone(), "key_unknown000".into()]
    );
    store.revoke_key(&acme, &key.id).await.unwrap();
    store.delete_destination(&acme, &d.id).await.unwrap();
    let snap = store.snapshot().await.unwrap();
    let t = snap.iter().find(|t| t.id == acme).unwrap();
    assert!(t.api_keys.is_empty() && t.broadcast.destinations.is_empty());
    assert_eq!(
        store.active_key_by_hash(&digest).await.unwrap(),
        None,
        "revoked"
    );
}

/// Limits (SPEC §5.1): stored per tenant and key, in the snapshot, and the shared counters.
async fn limits_and_counters(store: &Store) {
    let t = unique("limits");
    store.create_tenant(&t, "Limits").await.unwrap();
    let (key, _) = store.create_key(&t, "k", Role::Client).await.unwrap();
    let tenant_limits = Limits {
        requests_per_minute: Some(20),
        usd_per_day_micros: Some(1_500_000),
        ..Limits::default()
    };
    let key_limits = Limits {
        concurrent_requests: Some(2),
        ..Limits::default()
    };
    store.set_tenant_limits(&t, &tenant_limits).await.unwrap();
    store
        .set_key_limits(&t, &key.id, &key_limits)
        .await
        .unwrap();
    let (own, keys) = store.limits(&t).await.unwrap();
    assert_eq!(own, tenant_limits);
    assert_eq!(keys.get(&key.id), Some(&key_limits));
    let snap = store.snapshot().await.unwrap();
    let mine = snap.iter().find(|x| x.id == t).unwrap();
    assert_eq!(mine.limits, tenant_limits);
    assert_eq!(mine.key_limits.get(&key.id), Some(&key_limits));
    assert!(matches!(
        store
            .set_key_limits(&t, "key_000000000000", &key_limits)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // Cleared: no limit.
    store
        .set_key_limits(&t, &key.id, &Limits::default())
        .await
        .unwrap();
    assert!(store.limits(&t).await.unwrap().1.is_empty());

    // Counters: deltas add up (negative ones too); a zero delta reads.
    let scope = format!("t:{t}");
    let add = |requests, tokens, spend_micros| Counts {
        requests,
        tokens,
        spend_micros,
    };
    let got = store
        .exchange_counts(&[
            (scope.clone(), "m:1".into(), add(3, 100, 0)),
            (scope.clone(), "d:1".into(), add(3, 100, 500)),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![add(3, 100, 0), add(3, 100, 500)]);
    let got = store
        .exchange_counts(&[
            (scope.clone(), "m:1".into(), add(2, -40, 0)),
            (scope.clone(), "d:1".into(), Counts::default()),
        ])
        .await
        .unwrap();
    assert_eq!(got, vec![add(5, 60, 0), add(3, 100, 500)]);
    // Fresh counters are kept.
    store.prune_counters().await.unwrap();
    let got = store
        .exchange_counts(&[(scope.clone(), "m:1".into(), Counts::default())])
        .await
        .unwrap();
    assert_eq!(got, vec![add(5, 60, 0)]);
}

/// The usage ledger (SPEC §5.1): rows add up, reports group and filter by time.
async fn usage_ledger(store: &Store) {
    let t = unique("usage");
    let day = 20_000 * 1440; // 2024-10-04, in minutes
    let row = |minute: i64, key: &str, model: &str, n: i64| UsageRow {
        minute,
        tenant_id: t.clone(),
        key_id: key.into(),
        model: model.into(),
        counts: UsageCounts {
            requests: n,
            input_tokens: 10 * n,
            cost_nanos: 5 * n,
            errors: 1,
            ..UsageCounts::default()
        },
    };
    store
        .add_usage(&[row(day, "k1", "m1", 1), row(day + 5, "k2", "m2", 2)])
        .await
        .unwrap();
    store
        .add_usage(&[row(day, "k1", "m1", 3), row(day + 1440, "k1", "m1", 7)])
        .await
        .unwrap();
    let by_key = store
        .usage(&t, day, day + 2 * 1440, UsageGroup::Key)
        .await
        .unwrap();
    assert_eq!(
        by_key
            .iter()
            .map(|(k, c)| (
                k.as_str(),
                c.requests,
                c.input_tokens,
                c.cost_nanos,
                c.errors
            ))
            .collect::<Vec<_>>(),
        vec![("k1", 11, 110, 55, 3), ("k2", 2, 20, 10, 1)]
    );
    let by_day = store
        .usage(&t, day, day + 2 * 1440, UsageGroup::Day)
        .await
        .unwrap();
    assert_eq!(
        by_day
            .iter()
            .map(|(d, c)| (d.as_str(), c.requests))
            .collect::<Vec<_>>(),
        vec![("2024-10-04", 6), ("2024-10-05", 7)]
    );
    let by_model = store
        .usage(&t, day + 1, day + 1440, UsageGroup::Model)
        .await
        .unwrap();
    assert_eq!(by_model.len(), 1);
    assert_eq!((by_model[0].0.as_str(), by_model[0].1.requests), ("m2", 2));
    assert!(store
        .usage("nobody", 0, i64::MAX, UsageGroup::Key)
        .await
        .unwrap()
        .is_empty());
    // Rows older than the retention go; recent ones stay (these are from 2024).
    assert!(store.prune_usage(36_500).await.unwrap() == 0);
    assert!(store.prune_usage(30).await.unwrap() >= 3);
    assert!(store
        .usage(&t, 0, i64::MAX, UsageGroup::Key)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn sqlite_backend() {
    let db = Db::new("sqlite-backend");
    tenants_keys_switches_and_destinations(&db.open().await).await;
    limits_and_counters(&db.open().await).await;
    usage_ledger(&db.open().await).await;
}

#[tokio::test]
async fn postgres_backend() {
    let url = postgres_url();
    let store = Store::open(&url, SecretBox::new(Some(KEY)).unwrap())
        .await
        .unwrap();
    tenants_keys_switches_and_destinations(&store).await;
    limits_and_counters(&store).await;
    usage_ledger(&store).await;
    // Opening again (a second node, or a restart) does not re-run migrations.
    let again = Store::open(&url, SecretBox::new(Some(KEY)).unwrap())
        .await
        .unwrap();
    assert!(again.change_version().await.unwrap() >= store.change_version().await.unwrap());
}

#[tokio::test]
async fn tenants_keys_and_switches_persist() {
    let db = Db::new("tenants");
    let store = db.open().await;
    let v0 = store.change_version().await.unwrap();
    store.create_tenant("acme", "Acme").await.unwrap();
    assert!(matches!(
        store.create_tenant("acme", "Again").await,
        Err(StoreError::Conflict(_))
    ));
    store.set_broadcast("acme", true).await.unwrap();
    assert!(matches!(
        store.set_broadcast("nope", true).await,
        Err(StoreError::NotFound(_))
    ));
    let (key, plaintext) = store.create_key("acme", "ci", Role::Client).await.unwrap();
    assert!(plaintext.starts_with("bk-") && plaintext.len() > 40);
    assert_eq!(
        key.id,
        ApiKeyConfig::from_plaintext(&plaintext).id,
        "same id as a key declared in the config"
    );
    assert!(matches!(
        store.create_key("nope", "x", Role::Client).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(store.change_version().await.unwrap() >= v0 + 3);
    drop(store);

    // Reopening keeps everything and does not re-run migrations.
    let store = db.open().await;
    let tenants = store.list_tenants().await.unwrap();
    assert_eq!(
        tenants,
        vec![Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            broadcast_enabled: true
        }]
    );
    let keys = store.list_keys("acme").await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].role, Role::Client);
    // Only the hash is stored.
    let raw: Vec<String> = sqlx::query("SELECT sha256 FROM api_keys")
        .fetch_all(&store.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get(0).unwrap())
        .collect();
    assert_eq!(raw, vec![hex::encode(Sha256::digest(plaintext.as_bytes()))]);

    let snap = store.snapshot().await.unwrap();
    assert_eq!(
        snap[0].api_keys,
        vec![ApiKeyConfig::from_plaintext(&plaintext)]
    );
    assert!(snap[0].broadcast.enabled);
    store.revoke_key("acme", &key.id).await.unwrap();
    assert!(matches!(
        store.revoke_key("acme", &key.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        store.snapshot().await.unwrap()[0].api_keys.is_empty(),
        "revoked keys leave the snapshot"
    );
    assert!(store.list_keys("acme").await.unwrap()[0]
        .revoked_at
        .is_some());
}

#[tokio::test]
async fn destinations_are_stored_with_sealed_secrets() {
    let db = Db::new("destinations");
    let store = db.open().await;
    store.create_tenant("acme", "Acme").await.unwrap();
    let d = store.create_destination("acme", &sentry()).await.unwrap();
    assert!(d.id.starts_with("dst_"));
    assert!(matches!(
        store.create_destination("acme", &sentry()).await,
        Err(StoreError::Conflict(_))
    ));
    let mut otlp = sentry();
    otlp.name = "Tempo".into();
    otlp.type_name = "otlp".into();
    otlp.fields = fields(serde_json::json!({
        "endpoint": "https://tempo.example.com/v1/traces",
        "headers": {"authorization": "Bearer tempo-secret", "x-scope-orgid": "acme"},
    }));
    store.create_destination("acme", &otlp).await.unwrap();

    let listed = store.list_destinations("acme").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].config.id.as_ref(), &listed[0].config.fields),
        (Some(&d.id), &sentry().fields)
    );
    assert_eq!(
        (&listed[1].config.type_name, &listed[1].config.fields),
        (&otlp.type_name, &otlp.fields)
    );
    // The database file never holds a secret in clear.
    drop(store);
    let bytes = std::fs::read(db.dir.join("beacon.db")).unwrap();
    let wal = std::fs::read(db.dir.join("beacon.db-wal")).unwrap_or_default();
    for haystack in [bytes, wal] {
        let text = String::from_utf8_lossy(&haystack);
        assert!(!text.contains("secretpublickey") && !text.contains("tempo-secret"));
    }
    // Another key cannot read them; no key at all is a clear error.
    let wrong = Store::open(&db.url(), SecretBox::new(Some(&"ab".repeat(32))).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        wrong.list_destinations("acme").await,
        Err(StoreError::Secret(SecretError::Undecryptable))
    ));
    let none = Store::open(&db.url(), SecretBox::new(None).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        none.create_destination("acme", &sentry()).await,
        Err(StoreError::Secret(SecretError::MissingKey))
    ));

    let store = db.open().await;
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap[0].broadcast.destinations.len(), 2);
    store.delete_destination("acme", &d.id).await.unwrap();
    assert!(matches!(
        store.delete_destination("acme", &d.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_destinations("acme").await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_urls_are_field_named_errors() {
    let e = Store::open("mysql://x", SecretBox::new(None).unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("store.url:"), "{e}");
    let e = Store::open("sqlite://", SecretBox::new(None).unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("sqlite:// needs a path"), "{e}");
}

#[tokio::test]
async fn nodes_starting_together_on_a_fresh_postgres_database_migrate_once() {
    let url = postgres_url();
    let admin = Store::open(&url, SecretBox::new(None).unwrap())
        .await
        .unwrap();
    let db = format!("beacon_race_{}", random_token(8).to_ascii_lowercase());
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin.pool)
        .await
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    let fresh = format!("{base}/{db}");
    let opens = (0..4).map(|_| {
        let fresh = fresh.clone();
        tokio::spawn(async move {
            Store::open(&fresh, SecretBox::new(Some(KEY)).unwrap())
                .await
                .map(|_| ())
        })
    });
    for r in futures_join(opens).await {
        r.unwrap();
    }
    let store = Store::open(&fresh, SecretBox::new(Some(KEY)).unwrap())
        .await
        .unwrap();
    tenants_keys_switches_and_destinations(&store).await;
}

async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<(), T>>>,
) -> Vec<Result<(), T>>
where
    T: std::fmt::Debug,
{
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn rows_written_before_fields_were_json_are_read_and_any_type_round_trips() {
    let db = Db::new("legacy-destinations");
    let store = db.open().await;
    store.create_tenant("acme", "Acme").await.unwrap();
    let d = store.create_destination("acme", &sentry()).await.unwrap();
    let mut otlp = sentry();
    otlp.name = "Tempo".into();
    otlp.type_name = "otlp".into();
    otlp.fields = fields(serde_json::json!({"endpoint": "https://tempo.example.com/v1/traces"}));
    let o = store.create_destination("acme", &otlp).await.unwrap();
    // Sentry and OTLP rows are still written in the format every version reads.
    let sealed = column(&store, "sealed_secret", &d.id).await;
    assert_eq!(
        store.secrets.open(&secret_context(&d.id), &sealed).unwrap(),
        "https://secretpublickey@o1.ingest.sentry.io/456"
    );
    // The old format, written by an earlier version: a Sentry row's sealed DSN, an OTLP
    // row's header lines.
    for (id, secret) in [
        (&d.id, "https://secretpublickey@o1.ingest.sentry.io/456"),
        (
            &o.id,
            "authorization\tBearer tempo-secret\nx-scope-orgid\tacme",
        ),
    ] {
        let sealed = store.secrets.seal(&secret_context(id), secret).unwrap();
        sqlx::query("UPDATE destinations SET sealed_secret = $1 WHERE id = $2")
            .bind(sealed)
            .bind(id)
            .execute(&store.pool)
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .get_destination("acme", &d.id)
            .await
            .unwrap()
            .config
            .fields,
        sentry().fields
    );
    assert_eq!(
        store
            .get_destination("acme", &o.id)
            .await
            .unwrap()
            .config
            .fields,
        fields(serde_json::json!({
            "endpoint": "https://tempo.example.com/v1/traces",
            "headers": {"authorization": "Bearer tempo-secret", "x-scope-orgid": "acme"},
        }))
    );
    // A type the store knows nothing of keeps its name and fields, all sealed; its endpoint
    // column stays empty, so an earlier node (which read unknown kinds as OTLP to that
    // column) skips the row instead of sending to it.
    let mut hook = sentry();
    hook.name = "Hook".into();
    hook.type_name = "webhook".into();
    hook.fields = fields(
        serde_json::json!({"url": "https://hooks.example.com/b", "secret": "whsec-0123456789abcdef"}),
    );
    let h = store.create_destination("acme", &hook).await.unwrap();
    let got = store.get_destination("acme", &h.id).await.unwrap().config;
    assert_eq!(
        (got.type_name.as_str(), &got.fields),
        ("webhook", &hook.fields)
    );
    let endpoint = column(&store, "endpoint", &h.id).await;
    assert_eq!(endpoint, "");
}
