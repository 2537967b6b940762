//! The fault suite: what a failing upstream, a hostile or broken client and a failing
//! destination can do to Beacon, against the real binary on 127.0.0.1, each case checked for
//! what the client sees, what is recorded, and which counter moves (docs/reliability.md has
//! the same table). Every wait is bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use beacon_e2e::mock_sentry::{MockSentry, Mode};
use beacon_e2e::mock_upstream::MockUpstream;
use beacon_e2e::{metrics, raw_request, sum_where, Beacon, RawResponse, TENANT_KEY};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Beacon's test config with extra `[server]` and `[broadcast]` keys.
fn config(upstream: &MockUpstream, server: &str, broadcast: &str, extra: &str) -> String {
    Beacon::config(&upstream.base_url(), extra)
        .replace(
            "drain_delay_secs = 0\n",
            &format!("drain_delay_secs = 0\n{server}\n"),
        )
        .replace("[broadcast]\n", &format!("[broadcast]\n{broadcast}\n"))
}

fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {TENANT_KEY}"))
}

async fn chat(addr: SocketAddr, body: Value) -> RawResponse {
    let (k, v) = auth();
    raw_request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[(k, &v), ("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

fn hello(model: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

/// The SSE `data:` payloads of a stream body, in order.
fn events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(String::from))
        .collect()
}

/// The error chunks of a stream body.
fn error_chunks(body: &[u8]) -> Vec<Value> {
    events(body)
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|c| c.get("error").is_some())
        .collect()
}

fn request_id(r: &RawResponse) -> String {
    r.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Reads from `stream` until the peer closes it (or `limit` passes): what it sent, and
/// whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_faults_get_a_clear_error_and_exactly_one_record() {
    let upstream = MockUpstream::start().await;
    let cfg = config(&upstream, "", "", "")
        .replace("upstream_timeout_secs = 30", "upstream_timeout_secs = 2")
        + "\n[[providers]]\nname = \"dead\"\nbase_url = \"http://127.0.0.1:1/v1\"\n";
    let beacon = Beacon::start(&cfg);
    // (model, status, error code, record error_type or outcome)
    let cases = [
        ("dead/x", 502, "connect_error", "connect_error"),
        ("mock/slow-headers", 504, "upstream_timeout", "timeout"),
        ("mock/rate-limited", 429, "rate_limit_exceeded", "http_429"),
        ("mock/error-503-empty", 503, "upstream_error", "http_503"),
        ("mock/html-502", 502, "upstream_error", "http_502"),
        (
            "mock/redirect",
            502,
            "upstream_redirect",
            "upstream_redirect",
        ),
    ];
    for (model, status, code, kind) in cases {
        let r = chat(beacon.addr, hello(model, false)).await;
        assert_eq!(r.status, status, "{model}: {:?}", r.body);
        let err = &r.json()["error"];
        assert_eq!(err["code"], code, "{model}: {err}");
        assert!(!err["message"].as_str().unwrap_or_default().is_empty());
        let rec = beacon.wait_record(&request_id(&r));
        let got = rec["outcome"]["error_type"]
            .as_str()
            .unwrap_or_else(|| rec["outcome"]["kind"].as_str().unwrap_or_default());
        assert_eq!(got, kind, "{model}: {rec}");
    }
    // The 429's own headers reach the client; the redirect's target is named, not followed.
    let r = chat(beacon.addr, hello("mock/rate-limited", false)).await;
    assert_eq!(r.headers["retry-after"], "7");
    beacon.wait_record(&request_id(&r));
    let r = chat(beacon.addr, hello("mock/redirect", false)).await;
    beacon.wait_record(&request_id(&r));
    assert!(r.headers.get("location").is_none());
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("https://elsewhere.example/v1/chat/completions"));
    // One record per request, no more.
    let ids: Vec<String> = beacon
        .records()
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(ids.len(), unique.len(), "a request recorded twice");
    assert_eq!(ids.len(), cases.len() + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_faults_end_with_one_error_chunk_and_done() {
    let upstream = MockUpstream::start().await;
    let beacon = Beacon::start(&config(&upstream, "upstream_idle_timeout_secs = 1", "", ""));
    // (model, error code in the final chunk, record error_type); None: a success.
    let cases = [
        ("mock/gated", Some("upstream_idle_timeout")),
        ("mock/silent-stream", Some("upstream_idle_timeout")),
        ("mock/drop-mid", Some("upstream_stream_interrupted")),
        ("mock/oversize-sse", Some("upstream_invalid_stream")),
        ("mock/malformed-sse", None),
    ];
    for (model, code) in cases {
        let started = Instant::now();
        let r = chat(beacon.addr, hello(model, true)).await;
        assert_eq!(r.status, 200, "{model}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{model}: took {:?}",
            started.elapsed()
        );
        let evs = events(&r.body);
        assert_eq!(evs.last().map(String::as_str), Some("[DONE]"), "{model}");
        assert_eq!(
            evs.iter().filter(|e| *e == "[DONE]").count(),
            1,
            "{model}: one [DONE]"
        );
        let errors = error_chunks(&r.body);
        let rec = beacon.wait_record(&request_id(&r));
        match code {
            Some(code) => {
                assert_eq!(errors.len(), 1, "{model}: exactly one error chunk");
                let e = &errors[0];
                assert_eq!(e["error"]["code"], code, "{model}: {e}");
                assert_eq!(e["choices"][0]["finish_reason"], "error");
                let id = e["id"].as_str().unwrap_or_default();
                assert!(!id.is_empty(), "{model}: the error chunk has an id");
                assert_eq!(rec["outcome"]["kind"], "upstream_error", "{model}: {rec}");
            }
            None => {
                assert!(errors.is_empty(), "{model}");
                assert_eq!(rec["outcome"]["kind"], "ok", "{model}: {rec}");
            }
        }
    }
    // A stream that failed before its first chunk: the error chunk carries the request id.
    let r = chat(beacon.addr, hello("mock/silent-stream", true)).await;
    assert_eq!(error_chunks(&r.body)[0]["id"], request_id(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_slow_and_idle_clients_are_timed_out() {
    let upstream = MockUpstream::start().await;
    let beacon = Beacon::start(&config(
        &upstream,
        "header_read_timeout_secs = 1\nbody_read_timeout_secs = 1\nidle_timeout_secs = 1.5",
        "",
        "",
    ));
    let addr = beacon.addr;
    let limit = Duration::from_secs(6);

    // A socket that never sends a byte is closed, counted from accept.
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (sent, closed) = read_until_closed(&mut silent, limit).await;
    assert!(closed && sent.is_empty(), "silent socket still open");
    assert!(started.elapsed() < Duration::from_secs(4));

    // Slowloris: a header byte every 200 ms never completes a head in time.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut closed = false;
    for b in head {
        if slow.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "slowloris connection was not closed");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A trickled body gets 408 in OpenAI's shape.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TENANT_KEY}\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n"
    );
    trickle.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        for _ in 0..30 {
            if trickle.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        trickle
    });
    let mut trickle = tokio::time::timeout(limit, writer).await.unwrap().unwrap();
    let (answer, _) = read_until_closed(&mut trickle, Duration::from_secs(2)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");

    // An idle keep-alive connection is closed after idle_timeout_secs.
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/healthz")
        .header("host", "x")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    let started = Instant::now();
    tokio::time::timeout(limit, conn)
        .await
        .expect("closed")
        .ok();
    assert!(started.elapsed() >= Duration::from_secs(1));

    let m = metrics(addr).await;
    assert!(sum_where(&m, &["beacon_connections_idle_closed_total"]) >= 2.0);
    // And the gateway still serves.
    assert_eq!(chat(addr, hello("mock/echo", false)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_disconnect_at_each_phase() {
    let upstream = MockUpstream::start().await;
    let beacon = Beacon::start(&config(&upstream, "", "", ""));
    let addr = beacon.addr;
    let body = hello("mock/slow-headers", false).to_string();
    let head = |len: usize| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TENANT_KEY}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        )
    };

    // Mid-head and mid-body: nothing was routed, so nothing is recorded.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/chat/comp").await.unwrap();
    drop(s);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head(1000).as_bytes()).await.unwrap();
    s.write_all(b"{\"model\":").await.unwrap();
    drop(s);

    // While the upstream has not answered: the request is recorded as cancelled.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{}{body}", head(body.len())).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(s);
    let rec = beacon.wait_record_where(|r| r["upstream_model"] == "slow-headers");
    assert_eq!(rec["outcome"]["kind"], "client_cancelled");

    // Mid-stream: recorded with the tokens so far, and the upstream stream is closed.
    let stream_body = hello("mock/endless", true).to_string();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{}{stream_body}", head(stream_body.len())).as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("word3") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let rec = beacon.wait_record_where(|r| r["upstream_model"] == "endless");
    assert_eq!(rec["outcome"]["kind"], "client_cancelled");
    assert!(rec["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let start = Instant::now();
    while !upstream.endless_state().0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "upstream kept streaming"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Exactly the two routed requests were recorded.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(beacon.records().len(), 2, "{:?}", beacon.records());
    assert_eq!(chat(addr, hello("mock/echo", false)).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_connections_new_ones_are_refused_at_once_and_service_recovers() {
    let upstream = MockUpstream::start().await;
    let beacon = Beacon::start(&config(
        &upstream,
        "max_connections = 6\nheader_read_timeout_secs = 2",
        "",
        "",
    ));
    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(TcpStream::connect(beacon.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = chat(beacon.addr, hello("mock/echo", false)).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "too_many_connections");
    assert_eq!(r.headers["retry-after"], "1");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    // The silent ones time out; the slots come back.
    let start = Instant::now();
    loop {
        let r = chat(beacon.addr, hello("mock/echo", false)).await;
        if r.status == 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = metrics(beacon.addr).await;
    assert!(sum_where(&m, &["beacon_connections_refused_total"]) >= 1.0);
    drop(silent);
}

/// A Sentry destination for `m`, named `name`.
fn sentry_dest(m: &MockSentry, name: &str) -> String {
    format!(
        "\n[[tenants.broadcast.destinations]]\ntype = \"sentry\"\nname = \"{name}\"\notlp_endpoint = \"{}\"\ndsn = \"{}\"\n",
        m.endpoint(),
        m.dsn()
    )
}

/// `(exported, dropped by reason)` of destination `name`, from `/metrics`.
async fn accounting(addr: SocketAddr, name: &str) -> (f64, Vec<(String, f64)>) {
    let m = metrics(addr).await;
    let dest = format!("destination=\"{name}\"");
    let exported = sum_where(&m, &["beacon_broadcast_exported_total", &dest]);
    let mut dropped: Vec<(String, f64)> = m
        .iter()
        .filter(|(k, v)| {
            k.starts_with("beacon_broadcast_dropped_total") && k.contains(&dest) && **v > 0.0
        })
        .map(|(k, v)| {
            let reason = k.split("reason=\"").nth(1).unwrap_or("").split('"').next();
            (reason.unwrap_or("").to_string(), *v)
        })
        .collect();
    dropped.sort_by(|a, b| a.0.cmp(&b.0));
    (exported, dropped)
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_faults_keep_exact_accounting_per_destination() {
    const N: usize = 12;
    let upstream = MockUpstream::start().await;
    // At most five destinations of one type per tenant: five Sentry ones, three OTLP ones.
    let mut sinks = Vec::new();
    for (i, mode) in [
        Mode::Unavailable,
        Mode::RateLimited,
        Mode::Hang,
        Mode::TooLarge,
        Mode::Forbidden,
    ]
    .into_iter()
    .enumerate()
    {
        let m = MockSentry::start(&format!("{}", 100 + i), &format!("key{i}secretvalue")).await;
        m.set_mode(mode);
        sinks.push(m);
    }
    for mode in [Mode::Redirect, Mode::EchoHeaders] {
        let m = MockSentry::start_collector().await;
        m.set_mode(mode);
        sinks.push(m);
    }
    // One span fits; a batch of several does not.
    sinks[3].set_max_spans(1);
    let names = ["s503", "s429", "hang", "s413", "s403"];
    let mut dests = String::new();
    for (m, name) in sinks.iter().zip(names) {
        dests.push_str(&sentry_dest(m, name));
    }
    let otlp = |name: &str, endpoint: String| {
        format!(
            "\n[[tenants.broadcast.destinations]]\ntype = \"otlp\"\nname = \"{name}\"\nendpoint = \"{endpoint}\"\nheaders = {{ authorization = \"Bearer otlp-secret-token-{name}\" }}\n"
        )
    };
    dests.push_str(&otlp("s308", format!("http://{}/v1/traces", sinks[5].addr)));
    dests.push_str(&otlp("echo", format!("http://{}/v1/traces", sinks[6].addr)));
    dests.push_str(&otlp("closed", "http://127.0.0.1:1/v1/traces".into()));
    let cfg = config(
        &upstream,
        "",
        "",
        &format!("\n[tenants.broadcast]\nenabled = true\n{dests}"),
    );
    let beacon = Beacon::start(&cfg);
    // Spaced out, so batches hold a few records each (and a retried batch shows).
    for _ in 0..N {
        assert_eq!(
            chat(beacon.addr, hello("mock/echo", false)).await.status,
            200
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // (destination, exported, dropped by reason)
    type Expected = (&'static str, f64, &'static [(&'static str, f64)]);
    let expect: [Expected; 8] = [
        ("s503", 0.0, &[("retries_exhausted", N as f64)]),
        ("s429", 0.0, &[("retries_exhausted", N as f64)]),
        ("hang", 0.0, &[("retries_exhausted", N as f64)]),
        ("s413", N as f64, &[]),
        ("s403", 0.0, &[("rejected", N as f64)]),
        ("s308", 0.0, &[("rejected", N as f64)]),
        ("echo", 0.0, &[("rejected", N as f64)]),
        ("closed", 0.0, &[("retries_exhausted", N as f64)]),
    ];
    // Settled: every destination accounts for all N records (exported + dropped).
    let start = Instant::now();
    loop {
        let mut settled = true;
        for (name, _, _) in &expect {
            let (exported, dropped) = accounting(beacon.addr, name).await;
            let total = exported + dropped.iter().map(|(_, v)| v).sum::<f64>();
            assert!(total <= N as f64, "{name}: {total} > {N}");
            settled &= total == N as f64;
        }
        if settled {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not settled: {:?}",
            {
                let mut all = Vec::new();
                for (name, _, _) in &expect {
                    all.push((name, accounting(beacon.addr, name).await));
                }
                all
            }
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (name, exported, dropped) in expect {
        let (got_exported, got_dropped) = accounting(beacon.addr, name).await;
        let want: Vec<(String, f64)> = dropped.iter().map(|(r, v)| (r.to_string(), *v)).collect();
        assert_eq!((got_exported, got_dropped), (exported, want), "{name}");
    }
    // 413: every span arrived, one per request after the splits.
    assert_eq!(sinks[3].spans().await.len(), N);
    // 308: not retried — one request per batch (a retried one would take five), and the
    // redirect was not followed.
    assert!(sinks[5].requests() <= N, "{}", sinks[5].requests());
    // The echoed credentials are scrubbed from the logs.
    let logs = beacon.logs();
    assert!(
        logs.contains("destination rejected an export") && logs.contains("you sent"),
        "{logs}"
    );
    for secret in [
        "otlp-secret-token-echo",
        "key4secretvalue",
        "key0secretvalue",
    ] {
        assert!(!logs.contains(secret), "{secret} reached the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_streams_and_flushes_with_a_hanging_destination() {
    let upstream = MockUpstream::start().await;
    let good = MockSentry::start_collector().await;
    let stuck = MockSentry::start_collector().await;
    stuck.set_mode(Mode::Hang);
    let otlp = |m: &MockSentry, name: &str| {
        format!(
            "\n[[tenants.broadcast.destinations]]\ntype = \"otlp\"\nname = \"{name}\"\nendpoint = \"http://{}/v1/traces\"\n",
            m.addr
        )
    };
    let cfg = config(
        &upstream,
        "",
        "",
        &format!(
            "\n[tenants.broadcast]\nenabled = true\n{}{}",
            otlp(&good, "good"),
            otlp(&stuck, "stuck")
        ),
    )
    .replace("drain_delay_secs = 0", "drain_delay_secs = 1")
    .replace("shutdown_grace_secs = 10", "shutdown_grace_secs = 1")
    .replace("export_timeout_secs = 1", "export_timeout_secs = 60");
    let mut beacon = Beacon::start(&cfg);
    let addr = beacon.addr;
    // Long streams in flight, and steady small requests beside them.
    let streams: Vec<_> = (0..3)
        .map(|_| tokio::spawn(chat(addr, hello("mock/endless", true))))
        .collect();
    // A non-streaming request whose upstream answers only after 5 s: still waiting at the cut.
    let (k, v) = auth();
    let waiting = tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::post("/v1/chat/completions")
            .header("host", "x")
            .header(k, v)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                hello("mock/slow-headers", false).to_string(),
            )))
            .unwrap();
        sender.send_request(req).await.map(|r| r.status().as_u16())
    });
    let load = tokio::spawn(async move {
        let mut statuses = Vec::new();
        let start = Instant::now();
        // SIGTERM comes at 0.5 s and the listener closes 1 s later: stop well before.
        while start.elapsed() < Duration::from_millis(1000) {
            statuses.push(chat(addr, hello("mock/echo", false)).await.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        statuses
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    beacon.terminate();
    // Draining: /readyz says 503 while the listener still accepts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = raw_request(addr, "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 503);
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a request failed during the drain: {statuses:?}"
    );
    // Streams still running at the end of grace end with an error chunk and [DONE].
    for s in streams {
        let r = s.await.unwrap();
        let errors = error_chunks(&r.body);
        assert_eq!(errors.len(), 1, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(errors[0]["error"]["code"], "gateway_shutdown");
        assert_eq!(events(&r.body).last().map(String::as_str), Some("[DONE]"));
    }
    let (status, beacon) =
        tokio::task::spawn_blocking(move || (beacon.wait_exit(Duration::from_secs(15)), beacon))
            .await
            .unwrap();
    let logs = beacon.logs();
    assert!(status.is_some_and(|s| s.success()), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    // The waiting request's connection was closed at the cut, before its upstream answered.
    assert!(waiting.await.unwrap().is_err(), "closed, not answered");
    let records = beacon.records();
    let shutdown: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"]["kind"] == "shutdown")
        .collect();
    assert_eq!(
        shutdown.len(),
        4,
        "the cut streams and the waiting request are recorded as shutdown, not client_cancelled"
    );
    assert!(shutdown
        .iter()
        .any(|r| r["upstream_model"] == "slow-headers"));
    // The good destination got every record; the stuck one's are the dropped total.
    let spans = good.wait_spans(records.len(), Duration::from_secs(5)).await;
    assert_eq!(spans.len(), records.len());
    assert!(
        logs.contains(&format!("dropped_total={}", records.len())),
        "{} records; {logs}",
        records.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_model_name_cannot_break_or_forge_metrics() {
    let upstream = MockUpstream::start().await;
    let beacon = Beacon::start(&config(&upstream, "", "", ""));
    let hostile = "x\"} 1\nbeacon_broadcast_dropped_total{tenant=\"acme\",destination=\"d\",reason=\"queue_full\"} 999999\n# EOF\n";
    let r = chat(
        beacon.addr,
        json!({"model": hostile, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status, 404);
    let resp = raw_request(beacon.addr, "GET", "/metrics", &[], "").await;
    let content_type = resp.headers["content-type"].to_str().unwrap().to_string();
    let script = beacon_e2e::workspace_root().join("tests/py/parse_metrics.py");
    let mut child = tokio::process::Command::new(beacon_e2e::python())
        .arg(script)
        .arg(&content_type)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&resp.body)
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "Prometheus' parser rejected /metrics: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&resp.body)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(samples.iter().all(|s| s["value"] != 999999.0), "forged");
    let requests = samples
        .iter()
        .find(|s| s["name"] == "beacon_requests_total" && s["labels"]["status"] == "404")
        .expect("the 404 is counted");
    assert!(requests["labels"]["model"]
        .as_str()
        .unwrap()
        .starts_with("x\"} 1\nbeacon_broadcast_dropped_total"));
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_admin_authentication_is_throttled_per_address_and_logged() {
    let upstream = MockUpstream::start().await;
    let cfg = config(&upstream, "", "", "")
        + "\n[admin]\ntoken = \"operator-token-0123456789\"\nmax_failed_auth = 3\n";
    let beacon = Beacon::start(&cfg);
    let admin = |auth: &'static str| {
        let addr = beacon.addr;
        async move {
            raw_request(
                addr,
                "GET",
                "/admin/v1/tenants",
                &[("authorization", auth)],
                "",
            )
            .await
        }
    };
    assert_eq!(admin("Bearer operator-token-0123456789").await.status, 200);
    for _ in 0..3 {
        assert_eq!(admin("Bearer wrong-token-guess-aaaa").await.status, 401);
    }
    let r = admin("Bearer wrong-token-guess-aaaa").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["code"], "too_many_failed_attempts");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Throttled: even the right token is not checked until the window ends.
    assert_eq!(admin("Bearer operator-token-0123456789").await.status, 429);
    let logs = beacon.logs();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("failed authentication"))
        .collect();
    assert_eq!(warned.len(), 3, "{logs}");
    assert!(
        warned.iter().all(|l| l.contains("client=127.0.0.1:")),
        "{warned:?}"
    );
    // Completions are not affected.
    assert_eq!(
        chat(beacon.addr, hello("mock/echo", false)).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_metadata_and_content_are_bounded_by_bytes() {
    let upstream = MockUpstream::start().await;
    let collector = MockSentry::start_collector().await;
    let cfg = config(
        &upstream,
        "",
        "max_content_bytes = 65536",
        &format!(
            "\n[tenants.broadcast]\nenabled = true\n[[tenants.broadcast.destinations]]\ntype = \"otlp\"\nname = \"c\"\nendpoint = \"http://{}/v1/traces\"\n",
            collector.addr
        ),
    )
    .replace("max_body_bytes = 65536", "max_body_bytes = 8388608");
    let beacon = Beacon::start(&cfg);
    let mut trace = serde_json::Map::new();
    trace.insert("blob".into(), json!("x".repeat(3_000_000)));
    trace.insert("trace_name".into(), json!("agent"));
    for i in 0..100 {
        trace.insert(format!("k{i:03}"), json!(i));
    }
    let body = json!({
        "model": "mock/echo",
        "messages": [
            {"role": "system", "content": "s".repeat(1_000_000)},
            {"role": "user", "content": "MARKER-last"},
        ],
        "trace": trace,
    });
    let r = chat(beacon.addr, body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rec = beacon.wait_record(&request_id(&r));
    let kept = rec["trace"].as_object().unwrap();
    assert_eq!(kept["blob"].as_str().unwrap().len(), 4096);
    assert_eq!(kept["blob.truncated"], true);
    assert!(kept["beacon.dropped_keys"].as_u64().unwrap() > 0);
    let total: usize = kept
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(8, str::len))
        .sum();
    assert!(total <= 32 * 1024 + 1024, "{total}");
    // The span carries the bounded metadata and at most max_content_bytes of prompt.
    let spans = collector.wait_spans(1, Duration::from_secs(10)).await;
    let generation = spans
        .iter()
        .find(|s| s["attributes"]["sentry.op"] == "gen_ai.chat")
        .expect("generation span");
    let a = &generation["attributes"];
    assert_eq!(a["trace.metadata.blob"].as_str().unwrap().len(), 4096);
    assert_eq!(a["trace.metadata.blob.truncated"], true);
    assert_eq!(a["beacon.content.truncated"], true);
    let input = a["gen_ai.input.messages"].as_str().unwrap();
    assert!(input.len() <= 65536, "{}", input.len());
    assert!(input.contains("MARKER-last"), "the newest message is kept");
    // Every span is far below the 3 MB the client sent.
    for s in &spans {
        assert!(s.to_string().len() < 200_000);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_extensions_get_400_and_nothing_is_forwarded() {
    let upstream = MockUpstream::start().await;
    let beacon = Beacon::start(&config(&upstream, "", "", ""));
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let cases = [
        ("trace", format!(r#"{{"x":{deep}}}"#)),
        ("trace", r#"{"x":"\ud800"}"#.to_string()),
        ("stream", deep.clone()),
        ("user", r#""\udfff""#.to_string()),
    ];
    for (field, value) in cases {
        let body = format!(
            r#"{{"model":"mock/echo","messages":[{{"role":"user","content":"hi"}}],"{field}":{value}}}"#
        );
        let (k, v) = auth();
        let r = raw_request(
            beacon.addr,
            "POST",
            "/v1/chat/completions",
            &[(k, &v), ("content-type", "application/json")],
            body,
        )
        .await;
        assert_eq!(r.status, 400, "{field}: {:?}", r.body);
        assert_eq!(r.json()["error"]["param"], field);
    }
    assert!(upstream.received().is_empty(), "nothing forwarded");
}
