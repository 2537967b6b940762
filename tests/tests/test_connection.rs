//! Test Connection (SPEC §4.2) against mock Sentry and OTLP receivers on real sockets.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::time::Duration;

use beacon_broadcast::destination::DestinationSpec;
use beacon_broadcast::sink::http::client;
use beacon_broadcast::test_connection::{self, TEST_SPAN_NAME, TEST_SPAN_OP};
use beacon_config::DestinationConfig;
use beacon_e2e::mock_sentry::{MockSentry, Mode};

/// The probe schedule, shortened (the product's is 1, 2 and 4 s).
const PROBES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// Tests `spec` with a fresh client (2 s per attempt).
async fn check(spec: &DestinationSpec, allow_private: bool) -> test_connection::TestReport {
    let c = client(Duration::from_secs(2), allow_private).unwrap();
    test_connection::run(spec, &c, Duration::from_secs(2), &PROBES).await
}

fn sentry_spec(endpoint: String, dsn: String) -> DestinationSpec {
    let config = DestinationConfig {
        id: None,
        name: "Sentry".into(),
        enabled: true,
        type_name: "sentry".into(),
        fields: serde_json::json!({"otlp_endpoint": endpoint, "dsn": dsn})
            .as_object()
            .cloned()
            .unwrap(),
        privacy_mode: false,
        follow_caller_sampling: None,
        error_events: None,
        sampling_rate: 1.0,
        api_keys: vec![],
    };
    DestinationSpec::new("acme", &config, true).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_working_sentry_destination_passes_and_leaves_the_test_transaction() {
    let sentry = MockSentry::start("101", "goodkey").await;
    let spec = sentry_spec(sentry.endpoint(), sentry.dsn());
    let report = check(&spec, true).await;
    assert!(report.ok && report.reached, "{report:?}");
    assert_eq!(report.status, Some(200));
    assert!(report.message.contains(TEST_SPAN_NAME) && report.message.contains(TEST_SPAN_OP));
    // Sentry destinations are confirmed by three empty probes: one transaction is left.
    assert_eq!(sentry.requests(), 4);
    let spans = sentry.spans().await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0]["name"], TEST_SPAN_NAME);
    assert_eq!(spans[0]["attributes"]["sentry.op"], TEST_SPAN_OP);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_fails_on_the_confirming_request() {
    let sentry = MockSentry::start("102", "rightkey").await;
    let dsn = sentry.dsn().replace("rightkey", "wrongkey");
    let spec = sentry_spec(sentry.endpoint(), dsn);
    let report = check(&spec, true).await;
    // The first answer was 200 (Sentry had not cached the key); the first probe tells the
    // truth.
    assert_eq!(sentry.requests(), 2);
    assert!(!report.ok && report.reached, "{report:?}");
    assert_eq!(report.status, Some(403));
    assert_eq!(
        report.message, "invalid or missing sentry_key",
        "decoded from google.rpc.Status"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_whose_lookup_takes_a_while_still_fails() {
    let sentry = MockSentry::start("104", "rightkey").await;
    // Sentry answers 200 for 300 ms after the first request, then 403: the probes outlast it.
    sentry.set_key_lookup_delay(Duration::from_millis(300));
    let dsn = sentry.dsn().replace("rightkey", "wrongkey");
    let report = check(&sentry_spec(sentry.endpoint(), dsn), true).await;
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.status, Some(403));
    assert_eq!(sentry.requests(), 4, "failed on the last probe");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_outages_and_unreachable_destinations_are_reported() {
    let sentry = MockSentry::start("103", "k").await;
    let c = client(Duration::from_secs(1), true).unwrap();
    let spec = sentry_spec(sentry.endpoint(), sentry.dsn());
    sentry.set_mode(Mode::Forbidden);
    let r = test_connection::run(&spec, &c, Duration::from_secs(2), &PROBES).await;
    assert_eq!((r.ok, r.status), (false, Some(403)));
    assert_eq!(
        r.message,
        "event submission rejected with_reason: ProjectId"
    );
    sentry.set_mode(Mode::Unavailable);
    let r = test_connection::run(&spec, &c, Duration::from_secs(2), &PROBES).await;
    assert_eq!((r.ok, r.status), (false, Some(503)));
    sentry.set_mode(Mode::Hang);
    let r = test_connection::run(&spec, &c, Duration::from_millis(500), &PROBES).await;
    assert!(
        !r.ok && !r.reached && r.message.contains("no response"),
        "{r:?}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let spec = sentry_spec(
        format!("http://{closed}/api/5/integration/otlp/v1/traces"),
        format!("http://k@{closed}/5"),
    );
    let r = test_connection::run(&spec, &c, Duration::from_secs(2), &PROBES).await;
    assert!(!r.ok && !r.reached && r.status.is_none(), "{r:?}");
    assert!(r.message.contains("connection failed"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn hostnames_resolving_to_private_addresses_are_refused_at_connect_time() {
    let collector = MockSentry::start_collector().await;
    // Build the destination by hand, as if its URL had passed the configuration-time check
    // (a name that resolves to a public address when saved and to 127.0.0.1 later — DNS
    // rebinding): the connect-time resolver must still refuse it.
    let spec = DestinationSpec {
        id: "config:otlp".into(),
        tenant_id: "acme".into(),
        name: "otlp".into(),
        type_name: "otlp",
        enabled: true,
        wire: beacon_broadcast::destination::Wire::OtlpProtobuf,
        dialect: Default::default(),
        endpoint: beacon_broadcast::destination::Endpoint {
            url: format!("http://localhost:{}/v1/traces", collector.addr.port())
                .parse()
                .unwrap(),
            headers: vec![],
            is_sentry: false,
        },
        privacy_mode: false,
        follow_caller_sampling: false,
        error_events: None,
        sampling_rate: 1.0,
        api_keys: vec![],
    };
    let r = check(&spec, false).await;
    assert!(!r.ok && !r.reached, "{r:?}");
    assert!(r.message.contains("private address"), "{r:?}");
    assert_eq!(collector.requests(), 0);
    // With private destinations allowed, the same destination works.
    let r = check(&spec, true).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        collector.requests(),
        1,
        "a generic collector is not re-tested"
    );
}
