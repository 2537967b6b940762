//! The proxy's threads: one event loop per CPU, nginx-style. Each worker thread runs a
//! single-threaded Tokio runtime with its own listening socket (SO_REUSEPORT: the kernel
//! spreads connections across them), its own upstream connection pool and its own tasks, so
//! a request never hops between threads — no cross-thread wake-ups, which are system calls
//! (and expensive ones under gVisor-like sandboxes). The admin API and the store stay on the
//! main runtime; [`OnMainRuntime`] hands admin requests over to it.

use std::sync::Arc;

use beacon_proxy::{App, Mounted, ResponseFuture};
use http::Request;
use hyper::body::Incoming;
use tokio::sync::watch;

/// Binds `n` listening sockets on `addr`, all on the same port (port 0: the first socket's).
pub fn bind(addr: std::net::SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n.max(1) {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?.into_std()?;
        addr = listener.local_addr()?;
        out.push(listener);
        if !cfg!(unix) {
            break; // without SO_REUSEPORT, one listener
        }
    }
    Ok(out)
}

/// Runs admin and console requests on the main runtime, where the store's connections
/// live, whichever worker thread accepted them.
pub struct OnMainRuntime {
    /// The main runtime.
    pub handle: tokio::runtime::Handle,
    /// The admin routes.
    pub inner: Arc<dyn Mounted>,
}

impl Mounted for OnMainRuntime {
    fn call(&self, req: Request<Incoming>, request_id: String) -> ResponseFuture {
        let task = self.handle.spawn(self.inner.call(req, request_id.clone()));
        Box::pin(async move {
            match task.await {
                Ok(resp) => resp,
                Err(e) => {
                    tracing::error!(request_id, error = %e, "admin request failed");
                    beacon_proxy::error::json_response(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        beacon_proxy::error::error_body(
                            "The admin request failed.",
                            "server_error",
                            Some("internal_error"),
                            None,
                        ),
                        &request_id,
                    )
                }
            }
        })
    }
}

/// Starts one worker thread per listener, each serving `apps[i]` until `shutdown` turns
/// true, then draining as `settings` say (the connection limit is shared by all workers).
pub fn spawn(
    listeners: Vec<std::net::TcpListener>,
    apps: Vec<Arc<App>>,
    shutdown: watch::Receiver<bool>,
    settings: beacon_proxy::server::Settings,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut threads = Vec::with_capacity(listeners.len());
    for (i, (listener, app)) in listeners.into_iter().zip(apps).enumerate() {
        let mut shutdown = shutdown.clone();
        let settings = settings.clone();
        let thread = std::thread::Builder::new()
            .name(format!("beacon-proxy-{i}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(worker = i, error = %e, "cannot start a proxy worker");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(worker = i, error = %e, "cannot use the listener");
                            return;
                        }
                    };
                    let stop = async move {
                        let _ = shutdown.wait_for(|stop| *stop).await;
                    };
                    beacon_proxy::server::run(listener, app, stop, settings).await;
                });
            })?;
        threads.push(thread);
    }
    Ok(threads)
}
