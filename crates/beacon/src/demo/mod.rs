//! `beacon demo`: the whole product on one machine with no account and no network. It starts
//! an echo upstream ([`echo`]) and an OTLP receiver ([`otlp`]) inside the process, writes a
//! config with a `demo` tenant whose broadcast goes to that receiver, and serves it like
//! `beacon serve` — so the first request a newcomer sends shows up, with its tokens, cost,
//! timings and exported spans, in the console's Recent completions view.

pub mod echo;
pub mod otlp;

use std::net::SocketAddr;
use std::sync::Arc;

use beacon_config::Config;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The demo's tenant.
pub const TENANT: &str = "demo";
/// The model clients ask for.
pub const MODEL: &str = "demo/echo-1";

/// What the demo started, for the first-run block.
#[derive(Debug)]
pub struct Running {
    /// The echo upstream.
    pub echo: SocketAddr,
    /// The OTLP receiver.
    pub receiver: SocketAddr,
    /// What the receiver took in.
    pub received: Arc<otlp::Received>,
    /// The demo tenant's key (new at every start).
    pub key: String,
}

/// Starts the in-process echo upstream and OTLP receiver on loopback and returns the config
/// that wires them: Beacon on `listen`, its store at `store`.
pub async fn start(listen: SocketAddr, store: &str) -> Result<(Config, Running), String> {
    let echo = serve_loopback("echo upstream", echo::handle).await?;
    let received = Arc::new(otlp::Received::default());
    let r = received.clone();
    let receiver = serve_loopback("OTLP receiver", move |req| otlp::handle(r.clone(), req)).await?;
    let key = format!("bk-demo-{:016x}{:016x}", random(), random());
    let text = config_text(listen, store, echo, receiver, &key);
    let config = Config::parse(&text, "the demo config", &|_| None).map_err(|e| e.to_string())?;
    Ok((
        config,
        Running {
            echo,
            receiver,
            received,
            key,
        },
    ))
}

/// The demo config. Pricing makes the echo model cost something, so cost shows everywhere.
fn config_text(
    listen: SocketAddr,
    store: &str,
    echo: SocketAddr,
    receiver: SocketAddr,
    key: &str,
) -> String {
    let store = toml_string(store);
    format!(
        r#"
[server]
listen = "{listen}"
drain_delay_secs = 0

[store]
url = {store}

[broadcast]
allow_private_destinations = true   # the receiver is on loopback
flush_interval_secs = 0.2

[[providers]]
name = "demo"
base_url = "http://{echo}/v1"
api_key = "demo"
apis = ["chat", "responses"]
default = true

[pricing."{MODEL}"]
input = 2.5
output = 10.0

[[tenants]]
id = "{TENANT}"
name = "Demo"
api_keys = ["{key}"]

[tenants.broadcast]
enabled = true

[[tenants.broadcast.destinations]]
name = "demo-receiver"
type = "otlp"
endpoint = "http://{receiver}/v1/traces"
"#
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A random 64-bit number (ids and the demo key; not a secret beyond this machine's demo).
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Serves `handler` on a fresh loopback port, on the current runtime, until the process ends.
async fn serve_loopback<F, Fut, B>(what: &str, handler: F) -> Result<SocketAddr, String>
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<http::Response<B>, std::convert::Infallible>>
        + Send
        + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("cannot start the demo {what}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot start the demo {what}: {e}"))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(&handler);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_valid_for_any_store_path() {
        for store in [
            "sqlite://beacon-demo.db",
            "sqlite:///tmp/a \"quoted\" dir/x.db",
        ] {
            let text = config_text(
                "127.0.0.1:8080".parse().unwrap(),
                store,
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
                "bk-demo-0123456789abcdef",
            );
            let c = Config::parse(&text, "demo", &|_| None).unwrap();
            assert_eq!(c.store.url, store);
            assert_eq!(c.tenants[0].id, TENANT);
            assert_eq!(c.tenants[0].broadcast.destinations.len(), 1);
            assert!(c.pricing.contains_key(MODEL));
        }
    }
}
