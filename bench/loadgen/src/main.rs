//! Benchmark client for what wrk cannot measure (bench/gateway_bench.py drives it):
//!
//! - `rate`: an open-loop load at a fixed rate; each latency is counted from the moment the
//!   request was *scheduled*, so a stalled server cannot hide its stalls (no coordinated
//!   omission);
//! - `stream`: streaming requests, time to the first SSE data chunk and to the end;
//! - `hold`: many slow streams held open at once, with the gateway's resident memory read
//!   from `/proc/<pid>/status` before and while they are open.
//!
//! Each mode prints one JSON object on stdout. Plain HTTP/1.1 over keep-alive connections
//! with TCP_NODELAY, one connection per concurrent request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(
    name = "beacon-loadgen",
    about = "Benchmark client for Beacon's benchmark suite"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Args, Clone)]
struct Target {
    /// `http://127.0.0.1:PORT/path`.
    #[arg(long)]
    url: String,
    /// Request body (JSON), sent as POST.
    #[arg(long)]
    body: String,
    /// Extra header, `name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Fixed-rate open-loop load; latency percentiles from the scheduled send time.
    Rate {
        #[command(flatten)]
        target: Target,
        /// Requests per second.
        #[arg(long)]
        rate: f64,
        /// Seconds measured (after the warm-up).
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds of load before measuring.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// Streaming requests: time to the first data chunk and to the last byte.
    Stream {
        #[command(flatten)]
        target: Target,
        /// Concurrent streams.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Streams in all.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
    },
    /// Opens `streams` slow streams at once and holds them; reports the memory of `pid`.
    Hold {
        #[command(flatten)]
        target: Target,
        /// Streams held open at once.
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        /// Seconds to hold them after all are open.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Process whose resident memory to read (the gateway).
        #[arg(long)]
        pid: Option<u32>,
    },
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

struct Request {
    uri: http::Uri,
    authority: String,
    body: Bytes,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Request {
    fn new(t: &Target) -> Result<Self, Failure> {
        let uri: http::Uri = t.url.parse()?;
        let authority = uri.authority().ok_or("the URL has no host")?.to_string();
        let mut headers = Vec::new();
        for h in &t.headers {
            let (k, v) = h.split_once(':').ok_or("a header is `name: value`")?;
            headers.push((k.trim().parse()?, v.trim().parse()?));
        }
        Ok(Self {
            uri,
            authority,
            body: Bytes::from(t.body.clone()),
            headers,
        })
    }

    fn build(&self) -> Result<http::Request<Full<Bytes>>, Failure> {
        let mut b = http::Request::post(self.uri.path())
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        Ok(b.body(Full::new(self.body.clone()))?)
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = tokio::net::TcpStream::connect(&self.authority).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

/// Percentiles in microseconds.
fn summary(mut micros: Vec<u64>) -> serde_json::Value {
    micros.sort_unstable();
    let pick = |q: f64| -> u64 {
        if micros.is_empty() {
            return 0;
        }
        let i = ((micros.len() as f64 - 1.0) * q).round() as usize;
        micros[i.min(micros.len() - 1)]
    };
    json!({
        "count": micros.len(),
        "p50_us": pick(0.50), "p90_us": pick(0.90), "p99_us": pick(0.99),
        "p999_us": pick(0.999), "max_us": micros.last().copied().unwrap_or(0),
        "mean_us": if micros.is_empty() { 0 } else { micros.iter().sum::<u64>() / micros.len() as u64 },
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn rate(
    req: Arc<Request>,
    rate: f64,
    duration: f64,
    warmup: f64,
    connections: usize,
) -> Result<serde_json::Value, Failure> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = ((warmup + duration) * rate) as u64;
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + Duration::from_secs_f64(warmup);
    let (tx, rx) = tokio::sync::mpsc::channel::<Instant>(1 << 20);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let req = req.clone();
        let rx = rx.clone();
        let mut sender = req.connect().await?;
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            loop {
                let Some(scheduled) = rx.lock().await.recv().await else {
                    break;
                };
                let ok = async {
                    sender.ready().await?;
                    let resp = sender.send_request(req.build()?).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    Ok::<_, Failure>(status.is_success())
                }
                .await;
                match ok {
                    Ok(true) => {
                        if scheduled >= measure_from {
                            lat.push(micros(scheduled.elapsed()));
                        }
                    }
                    Ok(false) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        match req.connect().await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
            }
            (lat, errors)
        }));
    }
    for i in 0..total {
        let at = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(at.into()).await;
        // Latency counts from when the request was handed to a connection: a request that
        // waits for a free connection (a stalled server) waits on the clock, but the timer's
        // own lateness (about a millisecond) is not charged to the server.
        if tx.send(Instant::now().max(at)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, e) = w.await?;
        all.extend(lat);
        errors += e;
    }
    let elapsed = measure_from.elapsed().as_secs_f64();
    Ok(json!({
        "mode": "rate", "rate": rate, "connections": connections, "errors": errors,
        "achieved_rps": all.len() as f64 / elapsed.max(duration),
        "latency": summary(all),
    }))
}

async fn stream(
    req: Arc<Request>,
    concurrency: usize,
    requests: usize,
) -> Result<serde_json::Value, Failure> {
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(requests));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let req = req.clone();
        let left = left.clone();
        let mut sender = req.connect().await?;
        workers.push(tokio::spawn(async move {
            let (mut first, mut total, mut chunks, mut errors) =
                (Vec::new(), Vec::new(), 0u64, 0u64);
            while left
                .fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                let r = async {
                    sender.ready().await?;
                    let t0 = Instant::now();
                    let resp = sender.send_request(req.build()?).await?;
                    if !resp.status().is_success() {
                        return Err::<_, Failure>("status".into());
                    }
                    let mut body = resp.into_body();
                    let mut ttfc = None;
                    let mut n = 0u64;
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame?.into_data() {
                            if ttfc.is_none() && data.windows(5).any(|w| w == b"data:") {
                                ttfc = Some(t0.elapsed());
                            }
                            n += 1;
                        }
                    }
                    Ok((ttfc.unwrap_or_else(|| t0.elapsed()), t0.elapsed(), n))
                }
                .await;
                match r {
                    Ok((a, b, n)) => {
                        first.push(micros(a));
                        total.push(micros(b));
                        chunks += n;
                    }
                    Err(_) => {
                        errors += 1;
                        match req.connect().await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
            }
            (first, total, chunks, errors)
        }));
    }
    let (mut first, mut total, mut chunks, mut errors) = (Vec::new(), Vec::new(), 0, 0);
    for w in workers {
        let (a, b, n, e) = w.await?;
        first.extend(a);
        total.extend(b);
        chunks += n;
        errors += e;
    }
    let streams = first.len().max(1) as u64;
    Ok(json!({
        "mode": "stream", "concurrency": concurrency, "errors": errors,
        "frames_per_stream": chunks / streams,
        "time_to_first_chunk": summary(first),
        "total": summary(total),
    }))
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn hold(
    req: Arc<Request>,
    streams: usize,
    seconds: f64,
    pid: Option<u32>,
) -> Result<serde_json::Value, Failure> {
    let before = rss_kib(pid);
    let opened = Arc::new(tokio::sync::Barrier::new(streams + 1));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let req = req.clone();
        let opened = opened.clone();
        let release = release.clone();
        tasks.push(tokio::spawn(async move {
            let r = async {
                let mut sender = req.connect().await?;
                sender.ready().await?;
                let resp = sender.send_request(req.build()?).await?;
                let ok = resp.status().is_success();
                let mut body = resp.into_body();
                // Open once the first chunk has arrived.
                let first = body.frame().await.is_some();
                Ok::<_, Failure>((ok && first, body, sender))
            }
            .await;
            opened.wait().await;
            let held = match r {
                Ok((ok, body, sender)) => {
                    release.notified().await;
                    drop((body, sender));
                    ok
                }
                Err(_) => false,
            };
            held
        }));
    }
    let t0 = Instant::now();
    opened.wait().await;
    let open_after = t0.elapsed();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let during = rss_kib(pid);
    release.notify_waiters();
    let mut held = 0usize;
    for t in tasks {
        if t.await.unwrap_or(false) {
            held += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    let per_stream = match (before, during) {
        (Some(b), Some(d)) if held > 0 => Some(d.saturating_sub(b) as f64 / held as f64),
        _ => None,
    };
    Ok(json!({
        "mode": "hold", "streams": streams, "held": held,
        "seconds_to_open_all": open_after.as_secs_f64(),
        "rss_kib_before": before, "rss_kib_held": during, "rss_kib_after_close": after,
        "kib_per_stream": per_stream,
    }))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("beacon-loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.mode {
            Mode::Rate {
                target,
                rate: r,
                duration,
                warmup,
                connections,
            } => {
                rate(
                    Arc::new(Request::new(&target)?),
                    r,
                    duration,
                    warmup,
                    connections,
                )
                .await
            }
            Mode::Stream {
                target,
                concurrency,
                requests,
            } => stream(Arc::new(Request::new(&target)?), concurrency, requests).await,
            Mode::Hold {
                target,
                streams,
                seconds,
                pid,
            } => hold(Arc::new(Request::new(&target)?), streams, seconds, pid).await,
        }
    });
    match result {
        Ok(v) => {
            #[allow(clippy::print_stdout)] // the result is the product
            {
                println!("{v}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("beacon-loadgen: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
