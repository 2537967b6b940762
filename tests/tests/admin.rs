//! The admin API (SPEC §5) through the real `beacon` binary: auth and tenant scope, keys,
//! the broadcast switch, destinations created only after a passing Test Connection, stats,
//! redaction of secrets in every response and log line, field-named validation errors and the
//! destination address guard — on the embedded SQLite store and on a real PostgreSQL.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use beacon_e2e::mock_sentry::MockSentry;
use beacon_e2e::mock_upstream::MockUpstream;
use beacon_e2e::{raw_request, Beacon, TempDir};
use serde_json::{json, Value};

const OPERATOR: &str = "op-token-0123456789abcdef";
/// The DSN public key the mock Sentry accepts; it must never appear in a response or a log.
const DSN_KEY: &str = "d5n0public0key0accepted0by0mock";
const WRONG_KEY: &str = "w7ong0public0key0never0accepted";

/// An admin API client that keeps every response body, for the redaction check.
struct Api {
    addr: SocketAddr,
    transcript: Mutex<Vec<String>>,
}

impl Api {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            transcript: Mutex::new(Vec::new()),
        }
    }

    async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        let resp = raw_request(
            self.addr,
            method,
            &format!("/admin/v1{path}"),
            &headers,
            body.map(|b| b.to_string()).unwrap_or_default(),
        )
        .await;
        let text = String::from_utf8_lossy(&resp.body).to_string();
        self.transcript.lock().unwrap().push(text);
        if resp.status != 204 {
            assert_eq!(
                resp.headers
                    .get("cache-control")
                    .map(|v| v.to_str().unwrap()),
                Some("no-store")
            );
        }
        let value = if resp.body.is_empty() {
            Value::Null
        } else {
            resp.json()
        };
        (resp.status, value)
    }

    async fn op(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(Some(OPERATOR), method, path, body).await
    }
}

fn config(upstream: &str, store_url: &str, allow_private: bool) -> String {
    let c = Beacon::config(upstream, "")
        + &format!("\n[admin]\ntoken = \"{OPERATOR}\"\n\n[store]\nurl = \"{store_url}\"\n");
    if allow_private {
        c
    } else {
        c.replace(
            "allow_private_destinations = true",
            "allow_private_destinations = false",
        )
    }
}

fn start(upstream: &MockUpstream, store_url: &str) -> Beacon {
    Beacon::start(&config(&upstream.base_url(), store_url, true))
}

async fn completion(beacon: &Beacon, key: &str) -> u16 {
    beacon_e2e::completion_status(beacon.addr, key).await
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: not within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sentry_body(sentry: &MockSentry, name: &str, key: &str) -> Value {
    json!({
        "type": "sentry",
        "name": name,
        "otlp_endpoint": sentry.endpoint(),
        "dsn": sentry.dsn().replace(&sentry.key, key),
    })
}

/// The whole admin story, run on one backend.
async fn scenario(store_url: &str, tenant: &str) {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("4242", DSN_KEY).await;
    let beacon = start(&upstream, store_url);
    let api = Api::new(beacon.addr);
    let t = format!("/tenants/{tenant}");

    // Auth: no token, a wrong token, a client key.
    let (s, v) = api.call(None, "GET", "/tenants", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let (s, _) = api
        .call(Some("not-the-token-at-all"), "GET", "/tenants", None)
        .await;
    assert_eq!(s, 401);
    let (s, _) = api
        .call(Some(beacon_e2e::TENANT_KEY), "GET", "/tenants", None)
        .await;
    assert_eq!(
        s, 401,
        "a completion key from the config file is no admin token"
    );

    // Tenants: create, duplicate, bad id; the declared tenant is listed.
    let (s, v) = api
        .op(
            "POST",
            "/tenants",
            Some(json!({"id": tenant, "name": "Globex"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["broadcast"]["enabled"], false);
    let (s, _) = api
        .op("POST", "/tenants", Some(json!({"id": tenant})))
        .await;
    assert_eq!(s, 409);
    let (s, v) = api
        .op("POST", "/tenants", Some(json!({"id": "Not Valid"})))
        .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("id")));
    let (s, v) = api.op("GET", "/tenants", None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"acme") && ids.contains(&tenant), "{ids:?}");

    // Keys: a management key for the tenant, validated fields.
    let (s, v) = api
        .op(
            "POST",
            &format!("{t}/keys"),
            Some(json!({"name": "ops", "role": "owner"})),
        )
        .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("role")));
    let (s, v) = api
        .op(
            "POST",
            &format!("{t}/keys"),
            Some(json!({"role": "management"})),
        )
        .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("name")));
    let (s, v) = api
        .op(
            "POST",
            &format!("{t}/keys"),
            Some(json!({"name": "ops", "role": "management"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let mgmt = v["key"].as_str().unwrap().to_string();
    let mgmt_id = v["id"].as_str().unwrap().to_string();
    let m = Some(mgmt.as_str());

    // The management key is scoped to its tenant.
    let (s, v) = api.call(m, "GET", "/session", None).await;
    assert_eq!(
        (s, v["role"].as_str(), v["tenant"].as_str()),
        (200, Some("management"), Some(tenant))
    );
    let (s, v) = api.call(m, "GET", "/tenants/acme/destinations", None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, _) = api.call(m, "GET", "/tenants/acme/keys", None).await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call(m, "POST", "/tenants", Some(json!({"id": "mine"})))
        .await;
    assert_eq!(s, 403);
    let (s, v) = api.call(m, "GET", "/tenants", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let (s, _) = api
        .call(m, "DELETE", &format!("{t}/keys/{mgmt_id}"), None)
        .await;
    assert_eq!(s, 409, "a key cannot revoke itself");

    // A client key made by the tenant itself works for completions at once.
    let (s, v) = api
        .call(
            m,
            "POST",
            &format!("{t}/keys"),
            Some(json!({"name": "app"})),
        )
        .await;
    assert_eq!((s, v["role"].as_str()), (201, Some("client")));
    let client = v["key"].as_str().unwrap().to_string();
    let client_id = v["id"].as_str().unwrap().to_string();
    eventually("new key accepted", || async {
        completion(&beacon, &client).await == 200
    })
    .await;
    let (s, _) = api
        .call(Some(&client), "GET", &format!("{t}/keys"), None)
        .await;
    assert_eq!(s, 403, "a client key cannot manage");
    let (_, v) = api.call(m, "GET", &format!("{t}/keys"), None).await;
    let listed = v.to_string();
    assert!(
        listed.contains(&client_id) && !listed.contains(&client),
        "plaintext shown once: {listed}"
    );

    // Broadcast switch.
    let (s, v) = api
        .call(
            m,
            "PUT",
            &format!("{t}/broadcast"),
            Some(json!({"enabled": "yes"})),
        )
        .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("enabled")));
    let (s, v) = api
        .call(
            m,
            "PUT",
            &format!("{t}/broadcast"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!((s, v["enabled"].as_bool()), (200, Some(true)));
    let (_, v) = api.call(m, "GET", &format!("{t}/broadcast"), None).await;
    assert_eq!(v["enabled"], true);

    // Validation errors name the field; nothing is sent for them.
    for (body, field) in [
        (
            json!({"type": "sentry", "name": "S", "dsn": sentry.dsn()}),
            "otlp_endpoint",
        ),
        (
            json!({"type": "sentry", "name": "S", "otlp_endpoint": sentry.endpoint(), "dsn": "not a dsn"}),
            "dsn",
        ),
        (
            json!({"type": "sentry", "name": "S", "otlp_endpoint": sentry.endpoint(),
                "dsn": sentry.dsn().replace("/4242", "/999")}),
            "dsn",
        ),
        (
            json!({"type": "sentry", "name": "S", "otlp_endpoint": sentry.endpoint(), "dsn": sentry.dsn(),
                "sampling_rate": 7}),
            "sampling_rate",
        ),
        (json!({"type": "kafka", "name": "S"}), "type"),
        (
            json!({"type": "otlp", "name": "S", "endpoint": "ftp://x/v1/traces"}),
            "endpoint",
        ),
    ] {
        let (s, v) = api
            .call(m, "POST", &format!("{t}/destinations"), Some(body.clone()))
            .await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (400, Some(field)),
            "{body} → {v}"
        );
    }
    assert_eq!(sentry.requests(), 0);
    let (s, v) = api
        .call(m, "POST", &format!("{t}/destinations"), None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );

    // Test only: a wrong key fails (on Sentry's confirming request) with Sentry's text.
    let (s, v) = api
        .call(
            m,
            "POST",
            &format!("{t}/destinations/test"),
            Some(sentry_body(&sentry, "S", WRONG_KEY)),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["ok"].as_bool(), v["status"].as_u64()),
        (Some(false), Some(403)),
        "{v}"
    );
    assert!(
        v["latency_ms"].is_u64() && !v["message"].as_str().unwrap().is_empty(),
        "{v}"
    );

    // Create with a failing test: 422 with the report, nothing saved.
    let (s, v) = api
        .call(
            m,
            "POST",
            &format!("{t}/destinations"),
            Some(sentry_body(&sentry, "S", WRONG_KEY)),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("test_failed")),
        "{v}"
    );
    assert_eq!(
        (v["test"]["ok"].as_bool(), v["test"]["status"].as_u64()),
        (Some(false), Some(403))
    );
    let (_, v) = api.call(m, "GET", &format!("{t}/destinations"), None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0, "nothing saved: {v}");

    // Create with a passing test: 201, secrets redacted.
    let (s, v) = api
        .call(
            m,
            "POST",
            &format!("{t}/destinations"),
            Some(sentry_body(&sentry, "Sentry prod", DSN_KEY)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["test"]["ok"], true);
    let id = v["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("dst_"), "{v}");
    assert_eq!(v["dsn"], sentry.dsn().replace(DSN_KEY, "d5n0…"));
    let (s, _) = api
        .call(
            m,
            "POST",
            &format!("{t}/destinations"),
            Some(sentry_body(&sentry, "Sentry prod", DSN_KEY)),
        )
        .await;
    assert_eq!(s, 409, "names are unique within a tenant");

    // A completion is exported; the stats route counts it.
    let before = sentry.requests();
    assert_eq!(completion(&beacon, &client).await, 200);
    let dest = format!("{t}/destinations/{id}");
    eventually("exported count", || async {
        let (_, v) = api.call(m, "GET", &format!("{dest}/stats"), None).await;
        v["exported"].as_u64() >= Some(1)
    })
    .await;
    assert!(sentry.requests() > before);
    let (_, v) = api.call(m, "GET", &format!("{dest}/stats"), None).await;
    assert_eq!(v["dropped_by_reason"]["queue_full"], 0, "{v}");
    assert!(v["last_success_at"].is_u64(), "{v}");

    // Update without touching the target: no test. With a wrong DSN: 422, old one kept.
    let requests = sentry.requests();
    let (s, v) = api
        .call(
            m,
            "PATCH",
            &dest,
            Some(json!({"sampling_rate": 0.5, "dsn": sentry.dsn().replace(DSN_KEY, "d5n0…")})),
        )
        .await;
    assert_eq!(
        (s, v["sampling_rate"].as_f64(), &v["test"]),
        (200, Some(0.5), &Value::Null),
        "{v}"
    );
    assert_eq!(
        sentry.requests(),
        requests,
        "no test for an unchanged target"
    );
    let (s, v) = api
        .call(
            m,
            "PATCH",
            &dest,
            Some(json!({"dsn": sentry.dsn().replace(DSN_KEY, WRONG_KEY)})),
        )
        .await;
    assert_eq!((s, v["test"]["status"].as_u64()), (422, Some(403)), "{v}");
    let (s, v) = api
        .call(m, "PATCH", &dest, Some(json!({"type": "otlp"})))
        .await;
    assert_eq!((s, v["error"]["param"].as_str()), (400, Some("type")));
    let (s, v) = api
        .call(m, "PATCH", &dest, Some(json!({"sampling_rate": 0})))
        .await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("sampling_rate"))
    );
    let (_, v) = api.call(m, "GET", &dest, None).await;
    assert_eq!(
        (v["dsn"].as_str(), v["sampling_rate"].as_f64()),
        (
            Some(sentry.dsn().replace(DSN_KEY, "d5n0…").as_str()),
            Some(0.5)
        )
    );
    // The stored DSN still works: a changed name keeps exporting, stats carry over.
    let (s, v) = api
        .call(
            m,
            "PATCH",
            &dest,
            Some(json!({"name": "Sentry renamed", "sampling_rate": 1.0})),
        )
        .await;
    assert_eq!(
        (s, v["name"].as_str()),
        (200, Some("Sentry renamed")),
        "{v}"
    );
    assert!(v["stats"]["exported"].as_u64() >= Some(1), "{v}");

    // Testing a stored destination with changes: a redacted secret means the stored one.
    let redacted = sentry.dsn().replace(DSN_KEY, "d5n0…");
    let (s, v) = api
        .call(
            m,
            "POST",
            &format!("{dest}/test"),
            Some(json!({"dsn": redacted})),
        )
        .await;
    assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");
    let (s, v) = api
        .call(
            m,
            "POST",
            &format!("{dest}/test"),
            Some(json!({"dsn": sentry.dsn().replace(DSN_KEY, WRONG_KEY)})),
        )
        .await;
    assert_eq!(
        (s, v["ok"].as_bool(), v["status"].as_u64()),
        (200, Some(false), Some(403)),
        "{v}"
    );

    // Unknown routes and methods.
    let (s, _) = api.call(m, "GET", &format!("{t}/nothing"), None).await;
    assert_eq!(s, 404);
    let (s, _) = api.call(m, "PUT", &format!("{t}/keys"), None).await;
    assert_eq!(s, 405);
    let (s, _) = api
        .call(m, "GET", &format!("{t}/destinations/dst_missing"), None)
        .await;
    assert_eq!(s, 404);

    // Delete; revoke the client key: refused within 5 s.
    let (s, _) = api.call(m, "DELETE", &dest, None).await;
    assert_eq!(s, 204);
    let (s, _) = api.call(m, "GET", &dest, None).await;
    assert_eq!(s, 404);
    let (s, _) = api
        .call(m, "DELETE", &format!("{t}/keys/{client_id}"), None)
        .await;
    assert_eq!(s, 204);
    eventually("revoked key refused", || async {
        completion(&beacon, &client).await == 401
    })
    .await;

    // Redaction: the DSN key appears in no response and no log line.
    let transcript = api.transcript.lock().unwrap().join("\n");
    assert!(
        !transcript.contains(DSN_KEY),
        "a response leaked the DSN key"
    );
    assert!(
        !transcript.contains(WRONG_KEY),
        "a response leaked the wrong DSN key"
    );
    let logs = beacon.logs();
    assert!(logs.contains("destination created"), "{logs}");
    assert!(
        !logs.contains(DSN_KEY) && !logs.contains(WRONG_KEY),
        "the logs leaked a DSN key:\n{logs}"
    );
    assert!(!logs.contains(&mgmt), "the logs leaked a management key");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_on_sqlite() {
    let dir = TempDir::new("admin-sqlite");
    let url = format!("sqlite://{}", dir.path().join("admin.db").display());
    scenario(&url, "globex").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_on_postgres() {
    let url = std::env::var("BEACON_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("BEACON_TEST_POSTGRES_URL is not set: run scripts/test.sh, or start one with `scripts/pg-test-server.sh start /tmp/pg`")
    });
    scenario(&url, &format!("globex{}", std::process::id())).await;
}

/// A host name of this machine that resolves to a loopback or private address (from
/// /etc/hosts), but does not look private by its name.
async fn name_resolving_to_a_private_address() -> String {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let mut names: Vec<String> = hosts
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    names.extend(
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string()),
    );
    for name in names {
        if name.is_empty() || beacon_broadcast::destination::is_private_host(&name) {
            continue;
        }
        let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host(format!("{name}:443"))
            .await
            .map(Iterator::collect)
            .unwrap_or_default();
        {
            let addrs = resolved;
            if !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|a| beacon_broadcast::destination::is_private_ip(a.ip()))
            {
                return name;
            }
        }
    }
    panic!("no host name in /etc/hosts resolves to a private address:\n{hosts}");
}

#[tokio::test(flavor = "multi_thread")]
async fn destinations_must_be_public_https_unless_allowed() {
    let upstream = MockUpstream::start().await;
    let dir = TempDir::new("admin-guard");
    let url = format!("sqlite://{}", dir.path().join("guard.db").display());
    let beacon = Beacon::start(&config(&upstream.base_url(), &url, false));
    let api = Api::new(beacon.addr);
    let (s, _) = api
        .op("POST", "/tenants", Some(json!({"id": "guarded"})))
        .await;
    assert_eq!(s, 201);
    let sentry = MockSentry::start("7", DSN_KEY).await;
    let port = sentry.addr.port();
    let d = "/tenants/guarded/destinations";

    // By address or scheme: refused before anything is sent, naming the field.
    for (endpoint, dsn, field) in [
        (sentry.endpoint(), sentry.dsn(), "otlp_endpoint"),
        (
            format!("https://127.0.0.1:{port}/api/7/integration/otlp/v1/traces"),
            format!("https://{DSN_KEY}@127.0.0.1:{port}/7"),
            "otlp_endpoint",
        ),
        (
            "https://10.1.2.3/api/7/integration/otlp/v1/traces".to_string(),
            format!("https://{DSN_KEY}@10.1.2.3/7"),
            "otlp_endpoint",
        ),
        (
            format!("https://[::1]:{port}/api/7/integration/otlp/v1/traces"),
            format!("https://{DSN_KEY}@[::1]:{port}/7"),
            "otlp_endpoint",
        ),
        (
            "https://o1.ingest.sentry.io/api/7/integration/otlp/v1/traces".to_string(),
            format!("https://{DSN_KEY}@localhost/7"),
            "dsn",
        ),
    ] {
        let body = json!({"type": "sentry", "name": "S", "otlp_endpoint": endpoint, "dsn": dsn});
        let (s, v) = api.op("POST", d, Some(body)).await;
        assert_eq!(
            (s, v["error"]["param"].as_str()),
            (400, Some(field)),
            "{endpoint} → {v}"
        );
    }
    let (s, v) = api.op("POST", d, Some(json!({"type": "otlp", "name": "T", "endpoint": "http://collector.example.com/v1/traces"}))).await;
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("endpoint")),
        "{v}"
    );

    // By name: a host name that resolves to a private address passes the URL check and is
    // refused after DNS resolution, when connecting — the test fails and nothing is saved.
    let host = name_resolving_to_a_private_address().await;
    let body = json!({"type": "sentry", "name": "S",
        "otlp_endpoint": format!("https://{host}:{port}/api/7/integration/otlp/v1/traces"),
        "dsn": format!("https://{DSN_KEY}@{host}:{port}/7")});
    let (s, v) = api.op("POST", d, Some(body)).await;
    assert_eq!(
        (s, v["test"]["reached"].as_bool()),
        (422, Some(false)),
        "{host}: {v}"
    );
    assert!(
        v["test"]["message"].as_str().unwrap().contains("private"),
        "{v}"
    );
    assert_eq!(sentry.requests(), 0, "nothing reached the private address");
    let (_, v) = api.op("GET", d, None).await;
    assert_eq!(v["data"].as_array().unwrap().len(), 0);
    let transcript = api.transcript.lock().unwrap().join("\n");
    assert!(!transcript.contains(DSN_KEY), "{transcript}");
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_destinations_are_listed_read_only_and_the_cli_creates_after_a_test() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("55", DSN_KEY).await;
    let dir = TempDir::new("admin-declared");
    let url = format!("sqlite://{}", dir.path().join("declared.db").display());
    let declared = format!(
        "[tenants.broadcast]\nenabled = true\n\n[[tenants.broadcast.destinations]]\ntype = \"sentry\"\nname = \"From file\"\notlp_endpoint = \"{}\"\ndsn = \"{}\"\n",
        sentry.endpoint(),
        sentry.dsn()
    );
    let cfg = Beacon::config(&upstream.base_url(), &declared)
        + &format!("\n[admin]\ntoken = \"{OPERATOR}\"\n\n[store]\nurl = \"{url}\"\n");
    let beacon = Beacon::start(&cfg);
    let api = Api::new(beacon.addr);
    let (s, v) = api.op("GET", "/tenants/acme/destinations", None).await;
    assert_eq!(s, 200);
    let d = &v["data"][0];
    assert_eq!(
        (d["id"].as_str(), d["source"].as_str()),
        (Some("config:From file"), Some("config")),
        "{v}"
    );
    let (s, _) = api
        .op(
            "DELETE",
            "/tenants/acme/destinations/config%3AFrom%20file",
            None,
        )
        .await;
    assert_eq!(s, 409, "the file owns it");
    let (s, v) = api
        .op(
            "GET",
            "/tenants/acme/destinations/config%3AFrom%20file/stats",
            None,
        )
        .await;
    assert_eq!((s, v["active"].as_bool()), (200, Some(true)), "{v}");

    // The CLI tests before it stores, on the same store.
    let cfg_path = dir.path().join("cli.toml");
    std::fs::write(&cfg_path, cfg.replace("{RECORD_LOG}", "r.jsonl")).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "destination",
            "create",
            "--config",
            cfg_path.to_str().unwrap(),
            "--tenant",
            "acme",
            "--type",
            "sentry",
            "--otlp-endpoint",
        ];
        let endpoint = sentry.endpoint();
        args.push(&endpoint);
        args.extend_from_slice(extra);
        let out = std::process::Command::new(beacon_e2e::beacon_bin())
            .args(&args)
            .env("BEACON_SECRET_KEY", beacon_e2e::SECRET_KEY)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let wrong = sentry.dsn().replace(DSN_KEY, WRONG_KEY);
    let (ok, out) = run(&["--name", "CLI wrong", "--dsn", &wrong]);
    assert!(!ok && out.contains("Test Connection failed"), "{out}");
    assert!(!out.contains(WRONG_KEY), "{out}");
    let good = sentry.dsn();
    let (ok, out) = run(&["--name", "CLI", "--dsn", &good]);
    assert!(ok && out.contains("created destination dst_"), "{out}");
    // Any type's fields as `--field name=value`; an unknown one is named.
    let dsn_field = format!("dsn={good}");
    let (ok, out) = run(&["--name", "CLI field", "--field", &dsn_field]);
    assert!(ok && out.contains("created destination dst_"), "{out}");
    let (ok, out) = run(&["--name", "CLI bad", "--dsn", &good, "--field", "colour=red"]);
    assert!(!ok && out.contains("colour"), "{out}");
    eventually("CLI destinations listed", || async {
        let (_, v) = api.op("GET", "/tenants/acme/destinations", None).await;
        v["data"].as_array().unwrap().len() == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_default_makes_its_own_secret_key_file() {
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("31", DSN_KEY).await;
    let no_key = [("BEACON_SECRET_KEY", "")];

    // SQLite (the embedded default): a key file next to the database, reused on restart.
    let dir = TempDir::new("admin-keyfile");
    let db = dir.path().join("k.db");
    let url = format!("sqlite://{}", db.display());
    let cfg = config(&upstream.base_url(), &url, true);
    let beacon = Beacon::start_with_env(&cfg, &no_key);
    let api = Api::new(beacon.addr);
    let (s, v) = api
        .op(
            "POST",
            "/tenants/acme/destinations",
            Some(sentry_body(&sentry, "S", DSN_KEY)),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert!(dir.path().join("k.db.key").exists());
    drop(beacon);
    let beacon = Beacon::start_with_env(&cfg, &no_key);
    let api = Api::new(beacon.addr);
    let (s, v) = api.op("GET", "/tenants/acme/destinations", None).await;
    assert_eq!((s, v["data"][0]["name"].as_str()), (200, Some("S")), "{v}");
}
