//! The floor for a proxy built on Beacon's stack: hyper's HTTP/1.1 server and hyper-util's
//! pooled client on the same thread layout as Beacon (one current-thread runtime per worker,
//! each with its own SO_REUSEPORT listener and upstream pool), doing nothing but reading the
//! request body, forwarding it and relaying the collected response. No auth, no parsing, no
//! metering, no records: what is left between this and nginx is the cost of the stack, and
//! what is left between Beacon and this is Beacon's own work.
//!
//! Usage: `beacon-hyper-floor --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9000 [--workers N]`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

#[derive(Parser)]
#[command(about = "hyper + hyper-util pass-through proxy: the stack's own floor")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Upstream base URL (http only), e.g. http://127.0.0.1:9000.
    #[arg(long)]
    upstream: String,
    /// Worker threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

type Upstream = Client<HttpConnector, Full<Bytes>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let workers = if args.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        args.workers
    };
    let mut threads = Vec::new();
    for _ in 0..workers {
        let (addr, upstream) = (args.listen, args.upstream.trim_end_matches('/').to_string());
        threads.push(std::thread::spawn(move || -> std::io::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                socket.set_reuseport(true)?;
                socket.bind(addr)?;
                serve(socket.listen(4096)?, upstream).await
            })
        }));
    }
    for t in threads {
        t.join().map_err(|_| "worker panicked")??;
    }
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, upstream: String) -> std::io::Result<()> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(512)
        .pool_timer(TokioTimer::new())
        .build(http);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        let upstream = upstream.clone();
        let svc = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

async fn forward(
    client: Upstream,
    upstream: String,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(http::StatusCode::BAD_REQUEST)),
    };
    let uri = format!("{upstream}{}", parts.uri.path());
    let mut out = match http::Request::post(uri).body(Full::new(body)) {
        Ok(r) => r,
        Err(_) => return Ok(status(http::StatusCode::BAD_REQUEST)),
    };
    for name in [http::header::CONTENT_TYPE, http::header::AUTHORIZATION] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    let resp = match client.request(out).await {
        Ok(r) => r,
        Err(_) => return Ok(status(http::StatusCode::BAD_GATEWAY)),
    };
    let (parts, body) = resp.into_parts();
    match body.collect().await {
        Ok(b) => Ok(http::Response::from_parts(parts, Full::new(b.to_bytes()))),
        Err(_) => Ok(status(http::StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: http::StatusCode) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}
