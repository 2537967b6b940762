//! End-to-end test support: starts the real `beacon` binary on 127.0.0.1:0 with a
//! generated config, a mock OpenAI upstream, and drives Beacon with the official `openai`
//! Python SDK (or raw HTTP for inputs an SDK would never send).

mod mock_apis;
pub mod mock_ingest;
pub mod mock_sentry;
pub mod mock_upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `beacon` binary: `$BEACON_BIN`, else the workspace's own build, brought up to date
/// once per test process (`cargo test -p beacon-e2e` alone does not rebuild binaries, and a
/// stale binary would test old code).
pub fn beacon_bin() -> PathBuf {
    if let Ok(p) = std::env::var("BEACON_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/test-xxxx → target/<profile>/beacon
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--bin", "beacon"])
            .current_dir(workspace_root());
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build --bin beacon failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let bin = dir.join("beacon");
    assert!(
        bin.exists(),
        "{} not found after building it",
        bin.display()
    );
    bin
}

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory.
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("beacon-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir");
        Self(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `beacon serve`; killed on drop.
pub struct Beacon {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// The JSON-lines record log.
    pub record_log: PathBuf,
    dir: TempDir,
}

/// `BEACON_SECRET_KEY` of every node the tests start (and of the store unit tests): nodes
/// share a PostgreSQL database, and a node refuses to start when a stored secret cannot be
/// opened with its key.
pub const SECRET_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// The tenant key every generated config declares.
pub const TENANT_KEY: &str = "bk-test-tenant-key-1";
/// The provider key the mock upstream should see.
pub const PROVIDER_KEY: &str = "sk-provider-secret-123";

impl Beacon {
    /// A config with one provider `mock` (default) at `upstream`, one tenant, and a record log.
    /// `extra` is appended verbatim.
    pub fn config(upstream: &str, extra: &str) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
upstream_timeout_secs = 30
shutdown_grace_secs = 10
drain_delay_secs = 0

[broadcast]
record_log = "{{RECORD_LOG}}"
allow_private_destinations = true
flush_interval_secs = 0.2
export_timeout_secs = 1
shutdown_deadline_secs = 3

[[providers]]
name = "mock"
base_url = "{upstream}"
api_key = "{PROVIDER_KEY}"

[pricing."mock/echo"]
input = 2.5
cached_input = 1.25
output = 10.0

[[tenants]]
id = "acme"
api_keys = ["{TENANT_KEY}"]
{extra}
"#
        )
    }

    /// Starts `beacon serve --config` with `config` (`{RECORD_LOG}` is substituted).
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// Like [`Beacon::start`], with extra environment variables.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("beacon");
        let record_log = dir.path().join("records.jsonl");
        let config = config.replace("{RECORD_LOG}", &record_log.display().to_string());
        let config_path = dir.path().join("beacon.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut cmd = Command::new(beacon_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env(
                "BEACON_LOG",
                "info,beacon_proxy=debug,beacon_broadcast=debug",
            )
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("BEACON_SECRET_KEY", SECRET_KEY);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn beacon");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening") {
                    if let Some(addr) = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|s| s.split_whitespace().next())
                    {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr.to_string());
                        }
                    }
                }
                sink.lock().expect("logs").push(line);
            }
        });
        let started = Instant::now();
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(a) => break a.parse().expect("addr"),
                Err(_) => {
                    let exited = child.try_wait().ok().flatten();
                    if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
                        let _ = child.kill();
                        std::thread::sleep(Duration::from_millis(100));
                        panic!(
                            "beacon did not start ({exited:?}); logs:\n{}",
                            logs.lock().expect("logs").join("\n")
                        );
                    }
                }
            }
        };
        Self {
            addr,
            child,
            logs,
            record_log,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Log lines so far.
    pub fn logs(&self) -> String {
        self.logs.lock().expect("logs").join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// All records written so far.
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (up to 10 s) for the record of `request_id`.
    pub fn wait_record(&self, request_id: &str) -> Value {
        self.wait_record_where(|r| r["request_id"] == request_id)
    }

    /// Waits (up to 10 s) for a record matching `pred`.
    pub fn wait_record_where(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no matching record; have {:?}\nlogs:\n{}",
                self.records(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The temp dir holding config and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Beacon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter with the `openai` SDK: `$BEACON_TEST_PYTHON` or `.venv/bin/python`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("BEACON_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = workspace_root().join(".venv/bin/python");
    assert!(p.exists(), "{} not found: scripts/test.sh creates it (python3 -m venv .venv && .venv/bin/pip install -r tests/py/requirements.txt)", p.display());
    p
}

/// Runs `tests/py/client.py` (the openai SDK on chat) with `args` (JSON) and returns its
/// JSON output.
pub async fn sdk(args: Value) -> Value {
    run_py("client.py", args).await
}

/// Runs `tests/py/apis.py` (the openai SDK on Responses, embeddings, completions and model
/// retrieval; the anthropic SDK on Messages) with `args` and returns its JSON output.
pub async fn apis(args: Value) -> Value {
    run_py("apis.py", args).await
}

async fn run_py(name: &str, args: Value) -> Value {
    use tokio::io::AsyncWriteExt;
    let script = workspace_root().join("tests/py").join(name);
    // The arguments go on stdin: a large prompt exceeds the kernel's per-argument limit.
    let mut child = tokio::process::Command::new(python())
        .arg(script)
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(args.to_string().as_bytes())
        .await
        .expect("write the arguments");
    drop(stdin);
    let out = child.wait_with_output().await.expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{name} printed no JSON ({e}): {stdout}"))
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct RawResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl RawResponse {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request over a fresh HTTP/1.1 connection (for inputs an SDK would never send).
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> RawResponse {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(body.into())).expect("request"))
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    RawResponse {
        status,
        headers,
        body,
    }
}

/// The status of one small non-streaming completion (`mock/echo`) made with `key`.
pub async fn completion_status(addr: SocketAddr, key: &str) -> u16 {
    raw_request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {key}"))],
        serde_json::json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
    )
    .await
    .status
}

/// `GET /metrics`, parsed into `series → value` (series as printed, labels included).
pub async fn metrics(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let resp = raw_request(addr, "GET", "/metrics", &[], "").await;
    String::from_utf8_lossy(&resp.body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of every series of `metrics` whose text contains all of `needles`.
pub fn sum_where(metrics: &std::collections::HashMap<String, f64>, needles: &[&str]) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| needles.iter().all(|n| k.contains(n)))
        .map(|(_, v)| v)
        .sum()
}

/// A running `beacon demo` (no config, no provider, no network), with what its first-run
/// block on stdout says; killed on drop.
pub struct Demo {
    /// The gateway's OpenAI base URL (`http://…/v1`).
    pub base_url: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The demo tenant's key.
    pub key: String,
    /// The operator token the block prints.
    pub token: String,
    /// The first-run block, line by line.
    pub block: Vec<String>,
    /// The process.
    pub child: Child,
    /// Its stderr (logs), line by line.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(r: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lines").push(line);
        }
    });
    lines
}

/// The value after `label` on the first-run block's line that starts with it.
pub fn field(block: &[String], label: &str) -> String {
    block
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| {
            panic!(
                "no `{label}` line in the first-run block:\n{}",
                block.join("\n")
            )
        })
}

impl Demo {
    /// Starts `beacon demo` on a free loopback port with its store in `dir`, and reads its
    /// first-run block as a newcomer would.
    pub fn start(dir: &Path) -> Self {
        let store = format!("sqlite://{}", dir.join("demo.db").display());
        let mut child = Command::new(beacon_bin())
            .args(["demo", "--listen", "127.0.0.1:0", "--store", &store])
            .current_dir(dir)
            .env_remove("BEACON_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn beacon demo");
        let stdout = collect_lines(child.stdout.take().expect("stdout"));
        let stderr = collect_lines(child.stderr.take().expect("stderr"));
        let started = Instant::now();
        let block = loop {
            let lines = stdout.lock().expect("stdout").clone();
            if lines.iter().any(|l| l.contains("Recent completions")) {
                break lines;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!(
                    "beacon demo printed no first-run block ({exited:?}); stdout:\n{}\nstderr:\n{}",
                    lines.join("\n"),
                    stderr.lock().expect("stderr").join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let gateway = field(&block, "Gateway");
        let base_url = gateway
            .split_whitespace()
            .next()
            .expect("gateway URL")
            .to_string();
        let addr = base_url
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
            .parse()
            .expect("gateway address");
        let key = field(&block, "Key")
            .split_whitespace()
            .next()
            .expect("key")
            .to_string();
        assert!(key.starts_with("bk-demo-"), "{key}");
        let sign_in = field(&block, "Sign in");
        let token = sign_in
            .split_whitespace()
            .find(|w| w.starts_with("bt_"))
            .unwrap_or_else(|| panic!("no admin token in `{sign_in}`"))
            .to_string();
        Self {
            base_url,
            addr,
            key,
            token,
            block,
            child,
            stderr,
        }
    }
}
