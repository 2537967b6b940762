//! Many nodes behind a load balancer (issue 16, SPEC §7): Debian's nginx in front of three
//! real `beacon serve` processes on one real PostgreSQL, all on 127.0.0.1.
//!
//! Shown: requests spread across the nodes; a tenant, key and destination created through one
//! node's admin API apply on every node within 5 s; SIGTERM to one node under steady load
//! (streams and plain requests through nginx) fails its `/readyz` at once, lets its in-flight
//! streams finish, fails no client request, and every completion is exported exactly once.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed assertion

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use beacon_e2e::mock_sentry::MockSentry;
use beacon_e2e::mock_upstream::MockUpstream;
use beacon_e2e::{raw_request, Beacon, TempDir};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

const OPERATOR: &str = "cluster-operator-token-0123456789";

fn postgres_url() -> String {
    std::env::var("BEACON_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("BEACON_TEST_POSTGRES_URL is not set: run scripts/test.sh, or start one with `scripts/pg-test-server.sh start /tmp/pg`")
    })
}

fn nginx_bin() -> String {
    let bin = std::env::var("NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
    assert!(
        Path::new(&bin).exists(),
        "{bin} is missing: run scripts/test.sh (it installs Debian's nginx)"
    );
    bin
}

/// One node: no declared tenants (they come from PostgreSQL), a 2 s drain delay.
fn node_config(upstream: &str, store_url: &str) -> String {
    Beacon::config(upstream, "")
        .replace(
            &format!(
                "[[tenants]]\nid = \"acme\"\napi_keys = [\"{}\"]\n",
                beacon_e2e::TENANT_KEY
            ),
            "",
        )
        .replace("drain_delay_secs = 0", "drain_delay_secs = 2")
        + &format!("\n[store]\nurl = \"{store_url}\"\n\n[admin]\ntoken = \"{OPERATOR}\"\n")
}

/// nginx as the docs/operations.md example configures it: round robin, pooled upstream
/// connections closed after 1 s idle (less than Beacon's drain delay), and a failed
/// connection (before anything is sent) passed to the next node.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl Nginx {
    fn start(nodes: &[SocketAddr]) -> Self {
        let dir = TempDir::new("nginx");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let servers: String = nodes
            .iter()
            .map(|a| format!("    server {a} max_fails=1 fail_timeout=5s;\n"))
            .collect();
        // As root, nginx's workers would switch to `nobody`, who cannot use the temp dirs.
        use std::os::unix::fs::MetadataExt;
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let user = if root { "user root;" } else { "" };
        let conf = format!(
            r#"
{user}
worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  log_format upstreams '$request_method $uri $status upstream=$upstream_addr upstream_status=$upstream_status';
  access_log {d}/access.log upstreams;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream beacon {{
    zone beacon 64k;
{servers}    keepalive 32;
    keepalive_timeout 1s;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://beacon;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 60s;
      proxy_next_upstream error timeout;
    }}
  }}
}}
"#
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(nginx_bin())
            .args(["-p", &dir.path().display().to_string(), "-c"])
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, addr, dir }
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bearer {OPERATOR}");
    let mut headers = vec![("authorization", auth.as_str())];
    let body = if body.is_null() {
        String::new()
    } else {
        headers.push(("content-type", "application/json"));
        body.to_string()
    };
    let r = raw_request(addr, method, path, &headers, body).await;
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, v)
}

/// How one client request through the load balancer ended.
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    request_id: Option<String>,
    stream: bool,
    complete: bool,
    /// What went wrong, shown when the test fails.
    #[allow(dead_code)]
    error: Option<String>,
}

/// One chat completion over a fresh connection; any transport error is an outcome, not a panic.
async fn complete(addr: SocketAddr, key: &str, stream: bool) -> Outcome {
    let model = if stream {
        "mock/slow-stream"
    } else {
        "mock/echo"
    };
    let body = json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "through the load balancer"}]});
    let fail = |e: String| Outcome {
        status: 0,
        request_id: None,
        stream,
        complete: false,
        error: Some(e),
    };
    let conn = match tokio::net::TcpStream::connect(addr).await {
        Ok(c) => c,
        Err(e) => return fail(format!("connect: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(conn)).await {
        Ok(x) => x,
        Err(e) => return fail(format!("handshake: {e}")),
    };
    tokio::spawn(conn);
    let req = http::Request::post("/v1/chat/completions")
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return fail(format!("send: {e}")),
    };
    let status = resp.status().as_u16();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Outcome {
                status,
                request_id,
                stream,
                complete: false,
                error: Some(format!("body: {e}")),
            }
        }
    };
    let text = String::from_utf8_lossy(&body);
    let complete = if stream {
        text.contains(" slow9") && text.trim_end().ends_with("data: [DONE]")
    } else {
        serde_json::from_slice::<Value>(&body)
            .map(|v| v["choices"][0]["message"]["content"].is_string())
            .unwrap_or(false)
    };
    Outcome {
        status,
        request_id,
        stream,
        complete,
        error: (!complete).then(|| text.chars().take(300).collect()),
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_nginx_share_changes_and_one_drains_without_a_lost_request() {
    let upstream = MockUpstream::start().await;
    let collector = MockSentry::start_collector().await;
    let url = postgres_url();
    let config = node_config(&upstream.base_url(), &url);
    let mut nodes: Vec<Beacon> = (0..3).map(|_| Beacon::start(&config)).collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let nginx = Nginx::start(&addrs);

    // A tenant and a client key, created through node 0, accepted by every node within 5 s.
    let tenant = format!("cluster-{}", std::process::id());
    let (status, v) = admin(
        addrs[0],
        "POST",
        "/admin/v1/tenants",
        json!({"id": tenant, "name": "Cluster"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let (status, v) = admin(
        addrs[0],
        "POST",
        &format!("/admin/v1/tenants/{tenant}/keys"),
        json!({"name": "load", "role": "client"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let key = v["key"].as_str().unwrap().to_string();
    let created = Instant::now();
    for addr in &addrs {
        loop {
            if beacon_e2e::completion_status(*addr, &key).await == 200 {
                break;
            }
            assert!(
                created.elapsed() < Duration::from_secs(5),
                "node {addr} did not take the key within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Requests spread across the nodes.
    let mut spread: Vec<String> = Vec::new();
    for i in 0..30 {
        let o = complete(nginx.addr, &key, false).await;
        assert!(o.status == 200 && o.complete, "request {i}: {o:?}");
        spread.push(o.request_id.unwrap());
    }
    let started = Instant::now();
    let per_node = loop {
        // Records reach each node's record log a few milliseconds after the response.
        let per_node: Vec<usize> = nodes
            .iter()
            .map(|n| {
                let ids: HashSet<String> = n
                    .records()
                    .iter()
                    .filter_map(|r| r["request_id"].as_str().map(String::from))
                    .collect();
                spread.iter().filter(|id| ids.contains(*id)).count()
            })
            .collect();
        if per_node.iter().sum::<usize>() == 30 || started.elapsed() > Duration::from_secs(5) {
            break per_node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(per_node.iter().sum::<usize>(), 30, "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n >= 5),
        "round robin spreads: {per_node:?}"
    );

    // A destination created through node 0 (after its Test Connection) applies to
    // completions through every node within 5 s.
    let (status, v) = admin(
        addrs[0],
        "PUT",
        &format!("/admin/v1/tenants/{tenant}/broadcast"),
        json!({"enabled": true}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = admin(
        addrs[0],
        "POST",
        &format!("/admin/v1/tenants/{tenant}/destinations"),
        json!({"type": "otlp", "name": "collector", "endpoint": format!("http://{}/v1/traces", collector.addr)}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let created = Instant::now();
    let mut took = Vec::new();
    for addr in &addrs {
        let took_here = loop {
            let o = complete(*addr, &key, false).await;
            assert_eq!(o.status, 200, "{o:?}");
            let id = o.request_id.unwrap();
            // The node's Recent completions says where the record went.
            let mut destinations = Value::Null;
            for _ in 0..40 {
                let (status, v) = admin(
                    *addr,
                    "GET",
                    &format!("/admin/v1/tenants/{tenant}/recent/{id}"),
                    Value::Null,
                )
                .await;
                if status == 200 {
                    destinations = v["destinations"].clone();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            if destinations
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["name"] == "collector"))
            {
                break created.elapsed();
            }
            assert!(
                created.elapsed() < Duration::from_secs(5),
                "node {addr} did not apply the destination within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        took.push(took_here);
    }
    eprintln!("destination in force on each node after {took:?}");

    // Steady load through nginx: 10 clients, streams of about a second and plain requests.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let mut clients = Vec::new();
    // Clients 0–3 alternate streams and plain requests; 4–9 send plain requests back to
    // back, so nginx's pooled connections to every node are busy when node 1 stops.
    for c in 0..10 {
        let (stop, outcomes, key, lb) = (stop.clone(), outcomes.clone(), key.clone(), nginx.addr);
        clients.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let o = complete(lb, &key, c < 4 && (c + i).is_multiple_of(2)).await;
                outcomes.lock().unwrap().push(o);
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Streams certain to be running on node 1 when it is told to stop (besides whatever
    // nginx sent it).
    for _ in 0..3 {
        let (outcomes, key, node) = (outcomes.clone(), key.clone(), addrs[1]);
        clients.push(tokio::spawn(async move {
            let o = complete(node, &key, true).await;
            outcomes.lock().unwrap().push(o);
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // SIGTERM to node 1: /readyz fails at once, while it still answers.
    let sigterm_at = unix_nanos();
    nodes[1].terminate();
    let signalled = Instant::now();
    let ready = loop {
        let r = raw_request(addrs[1], "GET", "/readyz", &[], "").await;
        if r.status == 503 || signalled.elapsed() > Duration::from_secs(1) {
            break (r.status, signalled.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(ready.0, 503, "readyz during the drain");
    assert!(
        ready.1 < Duration::from_millis(500),
        "readyz took {:?}",
        ready.1
    );

    tokio::time::sleep(Duration::from_millis(4000)).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let exit = tokio::task::block_in_place(|| nodes[1].wait_exit(Duration::from_secs(20)));
    assert!(
        exit.is_some_and(|s| s.success()),
        "node 1 did not stop cleanly: {exit:?}\n{}",
        nodes[1].logs()
    );

    // No client request failed.
    let outcomes = outcomes.lock().unwrap().clone();
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status != 200 || !o.complete)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:#?}\nnginx errors:\n{}",
        failed.len(),
        outcomes.len(),
        nginx.error_log()
    );
    let load_ids: HashSet<String> = outcomes
        .iter()
        .map(|o| o.request_id.clone().unwrap())
        .collect();
    assert_eq!(load_ids.len(), outcomes.len());
    assert!(
        outcomes.len() >= 20,
        "steady load: {} requests",
        outcomes.len()
    );

    // Every completion is one record on exactly one node; node 1 had streams in flight at
    // SIGTERM and finished them.
    let started = Instant::now();
    let served_by = loop {
        let mut served_by: HashMap<String, usize> = HashMap::new();
        for (n, node) in nodes.iter().enumerate() {
            for r in node.records() {
                let id = r["request_id"].as_str().unwrap().to_string();
                if load_ids.contains(&id) {
                    assert_eq!(r["outcome"]["kind"], "ok", "{r}");
                    assert!(
                        served_by.insert(id, n).is_none(),
                        "a completion recorded twice"
                    );
                }
            }
        }
        // The running nodes write their last records a few milliseconds after answering.
        if served_by.len() == load_ids.len() || started.elapsed() > Duration::from_secs(5) {
            break served_by;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        served_by.len(),
        load_ids.len(),
        "every completion has a record"
    );
    let in_flight_at_sigterm = nodes[1]
        .records()
        .into_iter()
        .filter(|r| {
            let start = r["timings"]["received_unix_nanos"].as_u64().unwrap();
            let end = start + r["timings"]["last_byte_us"].as_u64().unwrap() * 1000;
            r["stream"] == true && start < sigterm_at && end > sigterm_at
        })
        .count();
    assert!(
        in_flight_at_sigterm >= 3,
        "node 1's streams in flight at SIGTERM: {in_flight_at_sigterm}"
    );
    let after: usize = served_by.values().filter(|&&n| n != 1).count();
    assert!(after > 0);

    // Exported + dropped = completions, across the nodes: every load completion's generation
    // span reached the collector once, and no node counted a drop.
    let started = Instant::now();
    let exported: HashMap<String, usize> = loop {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for s in collector.spans().await {
            if s["attributes"]["sentry.op"] == "gen_ai.chat" {
                if let Some(id) = s["attributes"]["beacon.request_id"].as_str() {
                    if load_ids.contains(id) {
                        *seen.entry(id.to_string()).or_default() += 1;
                    }
                }
            }
        }
        if seen.len() == load_ids.len() || started.elapsed() > Duration::from_secs(15) {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut dropped = 0.0;
    for n in [0, 2] {
        let m = beacon_e2e::metrics(addrs[n]).await;
        dropped += beacon_e2e::sum_where(&m, &["beacon_broadcast_dropped_total"]);
    }
    let stopped_line = nodes[1]
        .logs()
        .lines()
        .find(|l| l.contains("broadcast pipeline stopped"))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        stopped_line.contains("dropped_total=0"),
        "node 1's drops at shutdown: {stopped_line}"
    );
    assert_eq!(dropped, 0.0, "drops on the running nodes");
    assert_eq!(
        exported.len(),
        load_ids.len(),
        "exported {} of {} completions",
        exported.len(),
        load_ids.len()
    );
    assert!(exported.values().all(|&n| n == 1), "each exported once");
    eprintln!(
        "load: {} requests ({} streams), node 1 served {} with {} in flight at SIGTERM; nginx log lines: {}",
        outcomes.len(),
        outcomes.iter().filter(|o| o.stream).count(),
        served_by.values().filter(|&&n| n == 1).count(),
        in_flight_at_sigterm,
        nginx.access_log().lines().count()
    );
}
