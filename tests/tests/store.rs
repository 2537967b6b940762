//! Tenants and keys from the store: two real `beacon` nodes sharing one PostgreSQL (started
//! by scripts/test.sh), and the embedded SQLite default across a restart.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::time::{Duration, Instant};

use beacon_e2e::mock_upstream::MockUpstream;
use beacon_e2e::{beacon_bin, raw_request, Beacon, TempDir};
use serde_json::json;

fn postgres_url() -> String {
    std::env::var("BEACON_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("BEACON_TEST_POSTGRES_URL is not set: run scripts/test.sh, or start one with `scripts/pg-test-server.sh start /tmp/pg`")
    })
}

/// Runs a `beacon` CLI command; returns stdout.
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(beacon_bin())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "beacon {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn node_config(upstream: &str, store_url: &str) -> String {
    // No [[tenants]]: every tenant and key comes from the store.
    Beacon::config(upstream, "").replace(
        &format!(
            "[[tenants]]\nid = \"acme\"\napi_keys = [\"{}\"]\n",
            beacon_e2e::TENANT_KEY
        ),
        "",
    ) + &format!("\n[store]\nurl = \"{store_url}\"\n")
}

async fn status_with(beacon: &Beacon, key: &str) -> u16 {
    beacon_e2e::completion_status(beacon.addr, key).await
}

/// Polls until `key` gets `want` from `beacon`; returns how long it took.
async fn until_status(beacon: &Beacon, key: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        if status_with(beacon, key).await == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no {want} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_created_or_revoked_on_one_node_takes_effect_on_every_node() {
    let upstream = MockUpstream::start().await;
    let url = postgres_url();
    let tenant = format!("t{}", std::process::id());
    let dir = TempDir::new("nodes");
    let config_path = dir.path().join("cli.toml");
    std::fs::write(
        &config_path,
        node_config(&upstream.base_url(), &url).replace("{RECORD_LOG}", "r.jsonl"),
    )
    .unwrap();
    let cfg = config_path.to_str().unwrap();
    cli(&["tenant", "create", "--config", cfg, "--id", &tenant]);

    let a = Beacon::start(&node_config(&upstream.base_url(), &url));
    let b = Beacon::start(&node_config(&upstream.base_url(), &url));

    // A key created while both nodes run (as node A's admin would) is accepted by node B.
    let out = cli(&[
        "key",
        "create",
        "--config",
        cfg,
        "--tenant",
        &tenant,
        "--name",
        "two-nodes",
    ]);
    let key = out.lines().nth(1).unwrap().trim().to_string();
    let key_id = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(key.starts_with("bk-"), "{out}");
    let took = until_status(&b, &key, 200).await;
    assert!(took < Duration::from_secs(5), "node B took {took:?}");
    let took = until_status(&a, &key, 200).await;
    assert!(took < Duration::from_secs(5), "node A took {took:?}");

    // Revoked: refused by both nodes within 5 s.
    cli(&[
        "key", "revoke", "--config", cfg, "--tenant", &tenant, "--id", &key_id,
    ]);
    let took = until_status(&a, &key, 401).await;
    assert!(took < Duration::from_secs(5), "node A took {took:?}");
    let took = until_status(&b, &key, 401).await;
    assert!(took < Duration::from_secs(5), "node B took {took:?}");
    let listed = cli(&["key", "list", "--config", cfg, "--tenant", &tenant]);
    assert!(
        listed.contains(&key_id) && listed.contains("revoked"),
        "{listed}"
    );
    // The plaintext is never stored: the CLI cannot show it again.
    assert!(!listed.contains(&key));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_default_keeps_its_first_key_across_restarts() {
    let upstream = MockUpstream::start().await;
    let dir = TempDir::new("sqlite");
    let url = format!("sqlite://{}", dir.path().join("beacon.db").display());
    let first = Beacon::start(&node_config(&upstream.base_url(), &url));
    let logs = first.logs();
    let key = logs
        .split("key=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key in logs:\n{logs}"))
        .to_string();
    assert_eq!(status_with(&first, &key).await, 200);
    drop(first);
    let second = Beacon::start(&node_config(&upstream.base_url(), &url));
    assert!(!second.logs().contains(&key), "the key is shown once only");
    assert_eq!(
        status_with(&second, &key).await,
        200,
        "the key survived the restart"
    );
}

const OPERATOR: &str = "two-node-operator-token-1";

/// Calls node `beacon`'s admin API with the operator token.
async fn admin(
    beacon: &Beacon,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = raw_request(
        beacon.addr,
        method,
        &format!("/admin/v1{path}"),
        &[("authorization", &format!("Bearer {OPERATOR}"))],
        if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    )
    .await;
    let v = if resp.body.is_empty() {
        serde_json::Value::Null
    } else {
        resp.json()
    };
    (resp.status, v)
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_through_node_a_take_effect_on_node_b() {
    use beacon_e2e::mock_sentry::MockSentry;

    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("77", "kstore").await;
    let url = postgres_url();
    let tenant = format!("d{}", std::process::id());
    let config =
        node_config(&upstream.base_url(), &url) + &format!("\n[admin]\ntoken = \"{OPERATOR}\"\n");
    let a = Beacon::start(&config);
    let b = Beacon::start(&config);

    let (s, v) = admin(&a, "POST", "/tenants", json!({"id": tenant})).await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = admin(
        &a,
        "PUT",
        &format!("/tenants/{tenant}/broadcast"),
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = admin(
        &a,
        "POST",
        &format!("/tenants/{tenant}/keys"),
        json!({"name": "app"}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let key_id = v["id"].as_str().unwrap().to_string();
    let took = until_status(&b, &key, 200).await;
    assert!(
        took < Duration::from_secs(5),
        "node B took {took:?} to accept the key"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sentry.requests(), 0, "no destination yet");

    // A destination created (after its test) through node A is used by node B.
    let (s, v) = admin(
        &a,
        "POST",
        &format!("/tenants/{tenant}/destinations"),
        json!({"type": "sentry", "name": "Sentry", "otlp_endpoint": sentry.endpoint(), "dsn": sentry.dsn()}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let tested = sentry.requests();
    let start = Instant::now();
    while sentry.requests() == tested {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "node B did not pick up the destination within 5 s"
        );
        assert_eq!(status_with(&b, &key).await, 200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let spans = sentry.wait_spans(2, Duration::from_secs(5)).await;
    assert!(
        spans
            .iter()
            .any(|s| s["attributes"]["beacon.tenant"] == tenant.as_str()),
        "{spans:?}"
    );
    // Node B's stats route counts what node B exported.
    let start = Instant::now();
    loop {
        let (_, v) = admin(
            &b,
            "GET",
            &format!("/tenants/{tenant}/destinations/{id}/stats"),
            serde_json::Value::Null,
        )
        .await;
        if v["exported"].as_u64() >= Some(1) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Deleted through node A: node B stops exporting to it.
    let (s, _) = admin(
        &a,
        "DELETE",
        &format!("/tenants/{tenant}/destinations/{id}"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(s, 204);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = sentry.requests();
    for _ in 0..3 {
        assert_eq!(status_with(&b, &key).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        sentry.requests(),
        before,
        "exported after the destination was deleted"
    );

    // A key revoked on node A is refused by node B within 5 s.
    let (s, _) = admin(
        &a,
        "DELETE",
        &format!("/tenants/{tenant}/keys/{key_id}"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(s, 204);
    let took = until_status(&b, &key, 401).await;
    assert!(
        took < Duration::from_secs(5),
        "node B took {took:?} to refuse the key"
    );
}
