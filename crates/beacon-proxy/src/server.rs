//! The listener: accept, set TCP_NODELAY, serve HTTP/1.1 and h2c on each connection, keep
//! every connection on a budget, and shut down gracefully.
//!
//! Connection hygiene (SPEC §6), each limit an operator setting:
//! - past `max_connections` open connections (all workers together) a new connection gets an
//!   immediate `503` and is closed, without reading from it, so the ones being served are not
//!   starved of file descriptors;
//! - a connection must deliver a complete request head within `header_read_timeout` of being
//!   accepted, whether or not it sent a byte (a silent socket is closed too), and an idle
//!   keep-alive connection is closed after `idle_timeout` — one watchdog timer per connection
//!   enforces both ([`ConnState`]), with two atomic operations per request;
//! - request bodies have their own timeout, in the handlers (`body_read_timeout`).
//!
//! Shutdown: `/readyz` answers 503 at once while the listener keeps accepting for
//! `drain_delay` (a load balancer sees the node leave before connections are refused), and
//! every HTTP/1 response from then on carries `connection: close`, so no pooled connection
//! is left idle for the close to race with a request a load balancer is sending. Then the
//! listener stops taking handshakes, the connections the kernel already completed are
//! accepted and served, and it closes (nothing queued is reset: a load balancer retries a
//! refused connection on another node, but not a POST it has sent). In-flight requests get
//! `grace`; at its end the [`App`]'s cut
//! signal makes every stream still running end with an error chunk and `[DONE]`, and what is
//! left after a short flush (requests still waiting for their upstream) is closed; all of
//! them are recorded with outcome `shutdown`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::App;

/// How long streams cut at the end of the grace period have to flush their final chunk.
pub const CUT_FLUSH: Duration = Duration::from_secs(1);

/// The client's address, put in the extensions of admin requests (auth throttling uses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Connection limits and shutdown timing, from `[server]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// In-flight requests may finish for this long after the listener closes.
    pub grace: Duration,
    /// `/readyz` answers 503 for this long before the listener closes.
    pub drain_delay: Duration,
    /// A complete request head must arrive within this long of accept.
    pub header_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: Duration,
    /// Open connections allowed, shared by every worker through `open`.
    pub max_connections: usize,
    /// Open connections now, all workers together.
    pub open: Arc<AtomicUsize>,
}

impl Settings {
    /// Settings from the validated config, with a new shared connection count.
    pub fn from_config(c: &beacon_config::ServerConfig) -> Self {
        Self {
            grace: c.shutdown_grace,
            drain_delay: c.drain_delay,
            header_read_timeout: c.header_read_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
            open: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// What the watchdog of one connection knows: requests in progress, whether one has been
/// served, and since when the connection has been idle.
#[derive(Debug)]
pub struct ConnState {
    accepted: Instant,
    active: AtomicUsize,
    served: AtomicBool,
    /// Milliseconds after `accepted` when the last response ended.
    idle_since_ms: AtomicU64,
}

impl ConnState {
    /// A connection accepted now.
    pub fn new() -> Self {
        Self {
            accepted: Instant::now(),
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the connection was accepted, on Tokio's clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request head arrived; the guard marks the end of its response.
    fn enter(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// When the watchdog should look again, or `None` if the connection has been idle past
    /// its limit and must be closed.
    pub fn next_check(
        &self,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<Instant> {
        let now = Instant::now();
        if self.active.load(Ordering::Relaxed) > 0 {
            return Some(now + header_read_timeout.min(idle_timeout));
        }
        let limit = if self.served.load(Ordering::Relaxed) {
            idle_timeout
        } else {
            header_read_timeout
        };
        let idle_for = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.idle_since_ms.load(Ordering::Relaxed)),
        );
        (idle_for < limit).then(|| now + (limit - idle_for))
    }
}

impl Default for ConnState {
    fn default() -> Self {
        Self::new()
    }
}

/// One request in progress on a connection, until its response body is done or dropped.
#[derive(Debug)]
struct Active(Arc<ConnState>);

impl Drop for Active {
    fn drop(&mut self) {
        let st = &self.0;
        st.served.store(true, Ordering::Relaxed);
        if st.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            st.idle_since_ms.store(st.now_ms(), Ordering::Relaxed);
        }
    }
}

/// A response body that keeps its request counted as in progress until it ends.
pub struct TrackedBody {
    inner: ProxyBody,
    _active: Active,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Counts an open connection until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The body of the answer to a connection over `max_connections`.
const OVERLOADED_BODY: &str = r#"{"error":{"message":"The gateway has too many open connections; retry shortly.","type":"server_error","code":"too_many_connections","param":null}}"#;

/// The whole answer to a connection over `max_connections`.
fn overloaded() -> Vec<u8> {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{OVERLOADED_BODY}",
        OVERLOADED_BODY.len()
    )
    .into_bytes()
}

/// Refusals in progress (all workers together); past this many, a refused connection gets
/// its 503 written at once and is closed without waiting for its request.
pub const MAX_LINGERING_REFUSALS: usize = 256;
/// How long a refused connection may take to send its request head.
const REFUSAL_LINGER: Duration = Duration::from_millis(1000);
/// Bytes of a refused connection's request read before answering.
const REFUSAL_READ_BYTES: usize = 16 * 1024;
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Refuses a connection politely: its request head is read (at most
/// [`REFUSAL_READ_BYTES`], within [`REFUSAL_LINGER`]) and answered with a 503, then the
/// connection is closed. Answering before the request arrives confuses HTTP clients, and
/// closing a socket with unread input makes the kernel reset it, so the client would see a
/// reset instead of the 503. Refusals in progress are bounded by
/// [`MAX_LINGERING_REFUSALS`]; past it a connection gets the 503 and is closed at once.
fn refuse(stream: TcpStream) {
    if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING_REFUSALS {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        // A socket just accepted has an empty send buffer: nothing waits.
        let _ = stream.try_write(&overloaded());
        return;
    }
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let mut buf = vec![0u8; REFUSAL_READ_BYTES];
        let mut filled = 0;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while filled < buf.len() {
                match stream.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => filled += n,
                }
                if buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        })
        .await;
        if stream.write_all(&overloaded()).await.is_ok() {
            let _ = stream.shutdown().await;
            // Whatever body followed the head: read and dropped, briefly, so the close is
            // a clean one.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}

/// What serving a connection needs: shared by the accept loop and the drain's last accepts.
struct Connections {
    builder: auto::Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    settings: Settings,
    app: Arc<App>,
}

impl Connections {
    /// Serves one accepted connection on its own task, within the connection limits.
    fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        if self.settings.open.fetch_add(1, Ordering::Relaxed) >= self.settings.max_connections {
            self.settings.open.fetch_sub(1, Ordering::Relaxed);
            self.app.metrics.connection_refused();
            refuse(stream);
            return;
        }
        let open = Open(self.settings.open.clone());
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let state = Arc::new(ConnState::new());
        let metrics = self.app.metrics.clone();
        let app = self.app.clone();
        let st = state.clone();
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let active = st.enter();
            let http1 = req.version() < http::Version::HTTP_2;
            async move {
                let mut inner = app.handle(req, Some(peer)).await;
                // Draining: each HTTP/1 connection ends after its current response, so a
                // load balancer's pooled connections leave this node one by one instead of
                // being closed under a request it is about to send.
                if http1 && app.is_draining() {
                    inner.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(inner.map(|inner| TrackedBody {
                    inner,
                    _active: active,
                }))
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = self.graceful.watch(conn);
        let (header_timeout, idle_timeout) = (
            self.settings.header_read_timeout,
            self.settings.idle_timeout,
        );
        tokio::spawn(async move {
            let _open = open;
            tokio::pin!(conn);
            let check = tokio::time::sleep(header_timeout);
            tokio::pin!(check);
            loop {
                tokio::select! {
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = check.as_mut() => match state.next_check(header_timeout, idle_timeout) {
                        Some(next) => check.as_mut().reset(next),
                        None => {
                            tracing::debug!(%peer, "closing a connection idle past its limit");
                            metrics.connection_idle_closed();
                            break;
                        }
                    },
                }
            }
        });
    }

    /// Ends accepting: new handshakes are refused first, then every connection the kernel
    /// has already completed is accepted and served, and only then is the listener closed —
    /// closing it resets the connections still queued, on which a client may already have
    /// sent its request (a load balancer does not retry a POST that was sent).
    async fn finish_accepting(&self, listener: TcpListener) {
        if let Err(e) = refuse_new_handshakes(&listener) {
            tracing::debug!(error = %e, "cannot stop new handshakes before closing the listener");
        }
        while let Ok(accepted) = tokio::time::timeout(ACCEPT_QUEUE_SETTLE, listener.accept()).await
        {
            match accepted {
                Ok((stream, peer)) => self.serve(stream, peer),
                Err(_) => break,
            }
        }
        drop(listener);
    }
}

/// After the last connection of the drain, how long the accept queue must stay empty before
/// the listener closes.
const ACCEPT_QUEUE_SETTLE: Duration = Duration::from_millis(20);

/// Makes the kernel drop every packet for the listener (a classic BPF program that accepts
/// nothing): new SYNs go unanswered, so a client's TCP retries and, once the listener is
/// closed, is refused — a connect error, which load balancers retry on another node, for
/// POSTs too, since nothing was sent. Connections already in the accept queue are unaffected.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn refuse_new_handshakes(listener: &TcpListener) -> std::io::Result<()> {
    // BPF_RET | BPF_K with k = 0: keep 0 bytes of every packet, i.e. drop it.
    const DROP_ALL: [socket2::SockFilter; 1] = [socket2::SockFilter::new(0x06, 0, 0, 0)];
    socket2::SockRef::from(listener).attach_filter(&DROP_ALL)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn refuse_new_handshakes(_listener: &TcpListener) -> std::io::Result<()> {
    Ok(())
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains as the module docs say.
pub async fn run(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    settings: Settings,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(1024);
    let conns = Connections {
        builder,
        graceful: GracefulShutdown::new(),
        settings,
        app,
    };
    tokio::pin!(shutdown);
    let mut drain_until: Option<Instant> = None;

    loop {
        let drain_over = async {
            match drain_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => conns.serve(stream, peer),
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown, if drain_until.is_none() => {
                conns.app.start_draining();
                drain_until = Some(Instant::now() + conns.settings.drain_delay);
                tracing::info!(
                    drain_delay_secs = conns.settings.drain_delay.as_secs_f64(),
                    "shutting down: /readyz answers 503; still accepting during the drain delay"
                );
            }
            () = drain_over => break,
        }
    }

    conns.finish_accepting(listener).await;
    let Connections {
        graceful,
        settings,
        app,
        ..
    } = conns;
    tracing::info!(
        grace_secs = settings.grace.as_secs_f64(),
        "listener closed; draining in-flight requests"
    );
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    tokio::select! {
        () = all_closed.as_mut() => {
            tracing::info!("all connections closed");
            return;
        }
        () = tokio::time::sleep(settings.grace) => {}
    }
    // Grace is over: streams still running end with an error chunk and `[DONE]`, requests
    // still waiting for their upstream get a 503; both are recorded as `shutdown`.
    tracing::warn!("grace period over; cutting the requests still in flight");
    app.cut();
    if tokio::time::timeout(CUT_FLUSH, all_closed).await.is_err() {
        tracing::warn!("closing connections that did not finish after the cut");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_expires_after_the_header_timeout_from_accept() {
        let st = Arc::new(ConnState::new());
        let (header, idle) = (Duration::from_secs(2), Duration::from_secs(5));
        assert!(st.next_check(header, idle).is_some());
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(st.next_check(header, idle).is_some(), "not yet");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(
            st.next_check(header, idle).is_none(),
            "no request head in 2 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_expired_and_idleness_restarts_after_it() {
        let st = Arc::new(ConnState::new());
        let (header, idle) = (Duration::from_secs(2), Duration::from_secs(5));
        let active = st.enter();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            st.next_check(header, idle).is_some(),
            "a long stream is not idle"
        );
        drop(active);
        // Served once: the keep-alive idle timeout applies now, from the end of the response.
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(st.next_check(header, idle).is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(st.next_check(header, idle).is_none());
    }
}
