//! The web console in a real browser (issue 5): starts a real `beacon` (admin token set, the
//! embedded SQLite store), a mock upstream and a mock Sentry, then runs
//! tests/console/console.test.mjs — playwright-core driving Debian's headless Chromium —
//! against them. Screenshots land in target/console-screenshots/.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::path::Path;
use std::process::Command;

use beacon_e2e::mock_ingest::{MockIngest, Service};
use beacon_e2e::mock_sentry::MockSentry;
use beacon_e2e::mock_upstream::MockUpstream;
use beacon_e2e::{workspace_root, Beacon, Demo, TempDir};

const OPERATOR: &str = "console-operator-token-123";

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium() {
    let root = workspace_root();
    let dir = root.join("tests/console");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/console/node_modules is missing: run scripts/test.sh (it runs `npm ci` there)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/test.sh (it installs Debian's chromium)"
    );
    let upstream = MockUpstream::start().await;
    let sentry = MockSentry::start("4507", "c0nsolepublickey0123").await;
    let collector = MockSentry::start_collector().await;
    // Every other preset's form, filled in the browser against a mock of its ingestion:
    // (type, the form's title label, [(field label, value)], the secret's label and value).
    let mocks = [
        MockIngest::start(Service::langfuse("pk-lf-console", "sk-lf-console-secret")).await,
        MockIngest::start(Service::langsmith("lsv2_console_secret", "console")).await,
        MockIngest::start(Service::honeycomb("hcaik_console_secret", "llm")).await,
        MockIngest::start(Service::grafana_cloud("424242", "glc_console_secret")).await,
        MockIngest::start(Service::datadog("dd0console0secret")).await,
        MockIngest::start(Service::phoenix("", "px-console-secret", "console")).await,
        MockIngest::start(Service::webhook("whsec-console-0123456789")).await,
    ];
    let presets = serde_json::json!([
        {"type": "langfuse", "label": "Langfuse", "secret": ["Secret key", "sk-lf-console-secret"],
         "fields": [["Host", mocks[0].base()], ["Public key", "pk-lf-console"]]},
        {"type": "langsmith", "label": "LangSmith", "secret": ["API key", "lsv2_console_secret"],
         "fields": [["OTel endpoint", format!("{}/otel", mocks[1].base())], ["Project", "console"]]},
        {"type": "honeycomb", "label": "Honeycomb", "secret": ["API key", "hcaik_console_secret"],
         "fields": [["API host", mocks[2].base()], ["Dataset", "llm"]]},
        {"type": "grafana_cloud", "label": "Grafana Cloud", "secret": ["Access policy token", "glc_console_secret"],
         "fields": [["OTLP endpoint", format!("{}/otlp", mocks[3].base())], ["Instance ID", "424242"]]},
        {"type": "datadog", "label": "Datadog LLM Observability", "secret": ["API key", "dd0console0secret"],
         "choice": ["Site", "datadoghq.eu"], "fields": [["Intake URL", mocks[4].url()]]},
        {"type": "phoenix", "label": "Arize Phoenix", "secret": ["API key", "px-console-secret"], "optional": true,
         "fields": [["Phoenix URL", mocks[5].base()], ["Project", "console"]]},
        {"type": "webhook", "label": "Webhook (signed JSON)", "secret": ["Signing secret", "whsec-console-0123456789"],
         "fields": [["URL", mocks[6].url()]]},
    ]);
    let config =
        Beacon::config(&upstream.base_url(), "") + &format!("\n[admin]\ntoken = \"{OPERATOR}\"\n");
    let beacon = Beacon::start(&config);
    let shots = root.join("target/console-screenshots");
    // `beacon demo` beside it: its first-run block and its Recent completions view.
    let demo_dir = TempDir::new("console-demo");
    let demo = Demo::start(demo_dir.path());

    let out = tokio::task::spawn_blocking({
        let beacon_url = format!("http://{}", beacon.addr);
        let endpoint = sentry.endpoint();
        let dsn = sentry.dsn();
        let wrong = sentry.dsn().replace(&sentry.key, "wr0ngpublickey9876");
        let collector_endpoint = format!("http://{}/v1/traces", collector.addr);
        let (demo_url, demo_token, demo_key) = (
            format!("http://{}", demo.addr),
            demo.token.clone(),
            demo.key.clone(),
        );
        let first_run = demo.block.join("\n");
        let presets = presets.to_string();
        move || {
            Command::new("node")
                .args(["--test", "--test-reporter=spec", "console.test.mjs"])
                .current_dir(&dir)
                .env("BEACON_URL", beacon_url)
                .env("BEACON_OPERATOR_TOKEN", OPERATOR)
                .env("SENTRY_ENDPOINT", endpoint)
                .env("SENTRY_DSN", dsn)
                .env("SENTRY_WRONG_DSN", wrong)
                .env("COLLECTOR_ENDPOINT", collector_endpoint)
                .env("SCREENSHOT_DIR", &shots)
                .env("DEMO_URL", demo_url)
                .env("DEMO_TOKEN", demo_token)
                .env("DEMO_KEY", demo_key)
                .env("FIRST_RUN", first_run)
                .env("PRESETS", presets)
                .env("CHROMIUM", chromium)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser test failed:\n{text}\nbeacon logs:\n{}",
        beacon.logs()
    );
    // What the browser did reached the real receiver: test spans and the completion's span.
    let spans = sentry.spans().await;
    assert!(
        spans.iter().any(|s| s["name"] == "beacon test connection"),
        "{spans:?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s["attributes"]["gen_ai.operation.name"] == "chat"),
        "{spans:?}"
    );
    assert!(
        !beacon.logs().contains("c0nsolepublickey0123"),
        "the DSN key reached the logs"
    );
    // Each preset's form reached its service: Test Connection, then the test the save runs.
    for m in &mocks {
        assert_eq!(m.accepted().len(), 2, "refused: {:?}", m.refused());
    }
}
