//! The proxy: Beacon's hot path, from an accepted connection to the upstream and back.
//!
//! ```text
//! server::run ── accept (max_connections), TCP_NODELAY, HTTP/1.1 + h2c, head and idle
//!                timeouts per connection, drain + grace + cut at shutdown
//!   └─ App::handle ── x-request-id, route by path
//!        └─ handlers::metered::<A: apis::WireApi>   one pipeline for every metered API
//!             auth::Directory        bearer or x-api-key → tenant (in-memory snapshot)
//!             apis::{chat, responses, embeddings, completions, messages}
//!                                    one module per wire format: request parse, response
//!                                    and stream-event decoding into neutral observations
//!             request                shared readers: model, stream, extensions (strict),
//!                                    `trace` bounded by bytes, the upstream body
//!             routing::Router        provider/model → provider (kind, apis, URLs)
//!             meter::Meter           one record per request (finish, or Drop = cancelled)
//!             upstream               pooled hyper-util client, rustls
//!             meter::stream          SSE parsed as it passes, events forwarded at once
//!             meter::{usage, pricing, estimate}   tokens and cost
//!        └─ handlers::{models, retrieval, ops}     unmetered routes
//!        └─ error::ProxyError ── the one place failures become responses, in the route's
//!                                 shape (OpenAI's, or Anthropic's on /v1/messages)
//! meter::Meter::finish ── CompletionRecord ──▶ beacon_broadcast::RecordSender (try_send)
//! ```

pub mod apis;
pub mod auth;
pub mod body;
pub mod error;
pub mod handlers;
pub mod limits;
pub mod meter;
pub mod metrics;
pub mod request;
pub mod routing;
pub mod server;
pub mod sse;
pub mod trace_context;
pub mod upstream;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use body::ProxyBody;
use error::{json_response, ProxyError};

/// Response header carrying Beacon's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A boxed response future, as [`Mounted`] routes return.
pub type ResponseFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = http::Response<ProxyBody>> + Send + 'static>,
>;

/// Routes served on the gateway's listener next to the proxy — the admin API under
/// `/admin/` and the console under `/console` — mounted by the binary, so the hot path does
/// not depend on the store.
pub trait Mounted: Send + Sync + 'static {
    /// Serves one request whose path starts with `/admin/` or is `/console` or under it.
    fn call(&self, req: Request<Incoming>, request_id: String) -> ResponseFuture;
}

/// Everything a request needs, shared by all connections.
pub struct App {
    /// Tenants and keys.
    pub directory: Arc<auth::Directory>,
    /// Model routing.
    pub router: routing::Router,
    /// Upstream client.
    pub client: upstream::UpstreamClient,
    /// Shared metering state.
    pub meter: Arc<meter::MeterShared>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// `server.upstream_timeout_secs`.
    pub upstream_timeout: Duration,
    /// `server.body_read_timeout_secs`.
    pub body_read_timeout: Duration,
    /// `server.upstream_idle_timeout_secs`.
    pub upstream_idle_timeout: Duration,
    /// Limits on the `trace` metadata kept per record.
    pub metadata_limits: beacon_config::MetadataLimits,
    /// The attempt policy (`[routing]`).
    pub routing: beacon_config::RoutingConfig,
    /// Consecutive failures and cooldowns per target, shared by the node's proxy threads.
    pub health: Arc<routing::plan::Health>,
    models: handlers::models::Models,
    draining: AtomicBool,
    cut: tokio_util::sync::CancellationToken,
    mounted: Option<Arc<dyn Mounted>>,
}

/// Why the proxy could not be assembled from a validated config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A provider is unusable.
    #[error(transparent)]
    Router(#[from] routing::RouterError),
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

impl App {
    /// Assembles the proxy from a validated config and the broadcast hand-off.
    pub fn new(
        config: &beacon_config::Config,
        sender: beacon_broadcast::RecordSender,
        metrics: Arc<metrics::Metrics>,
        directory: Arc<auth::Directory>,
    ) -> Result<Self, BuildError> {
        let router = routing::Router::new(&config.providers, &config.models)?;
        for p in router.providers() {
            let _ = p.served.set(metrics.attempt_counter(&p.name, "served"));
        }
        let prices = meter::pricing::PriceTable::with_defaults(&config.pricing);
        let models = handlers::models::Models::new(&router, &prices);
        Ok(Self {
            directory,
            router,
            client: upstream::build_client(config.server.connect_timeout)?,
            meter: Arc::new(meter::MeterShared {
                sender,
                metrics: metrics.clone(),
                prices,
                max_content_bytes: config.broadcast.max_content_bytes,
                cut: AtomicBool::new(false),
            }),
            metrics,
            max_body_bytes: config.server.max_body_bytes,
            upstream_timeout: config.server.upstream_timeout,
            body_read_timeout: config.server.body_read_timeout,
            upstream_idle_timeout: config.server.upstream_idle_timeout,
            metadata_limits: config.broadcast.metadata,
            // No attempt starts, and no retry waits, past the whole-request timeout.
            routing: beacon_config::RoutingConfig {
                deadline: config.routing.deadline.min(config.server.upstream_timeout),
                ..config.routing
            },
            health: Arc::new(routing::plan::Health::new(
                config.routing.cooldown_failures,
                config.routing.cooldown,
            )),
            models,
            draining: AtomicBool::new(false),
            cut: tokio_util::sync::CancellationToken::new(),
            mounted: None,
        })
    }

    /// Shares `health` (one per node) instead of this App's own.
    pub fn with_health(mut self, health: Arc<routing::plan::Health>) -> Self {
        self.health = health;
        self
    }

    /// Serves `/admin/…` and `/console…` with `routes`.
    pub fn mount(mut self, routes: Arc<dyn Mounted>) -> Self {
        self.mounted = Some(routes);
        self
    }

    /// Marks the gateway as shutting down: `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ends the grace period: every stream still running ends with an error chunk and
    /// `[DONE]` (its body watches this signal), and both those and the requests still waiting
    /// for their upstream — closed with their connection a moment later — are recorded with
    /// outcome `shutdown`, not `client_cancelled`.
    pub fn cut(&self) {
        self.meter.cut.store(true, Ordering::Relaxed);
        self.cut.cancel();
    }

    /// Resolves when [`App::cut`] is called.
    pub fn cut_signal(&self) -> tokio_util::sync::CancellationToken {
        self.cut.clone()
    }

    /// Serves one request from `client`. Never fails: errors become OpenAI-shaped responses.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        client: Option<std::net::SocketAddr>,
    ) -> Response<ProxyBody> {
        let received = Instant::now();
        let request_id = new_request_id();
        // A clone of the URI shares its bytes; the path is borrowed from it.
        let uri = req.uri().clone();
        let path = uri.path();
        let method = req.method().clone();
        if let Some(mounted) = &self.mounted {
            if path.starts_with("/admin/") || path == "/console" || path.starts_with("/console/") {
                // Only the admin routes use the client's address (auth throttling): the
                // extension map is allocated for them alone, not on the completion path.
                if let Some(addr) = client {
                    req.extensions_mut().insert(server::ClientAddr(addr));
                }
                return mounted.call(req, request_id).await;
            }
        }
        use apis::{chat::Chat, completions::Completions, embeddings::Embeddings};
        use apis::{messages::Messages, responses::Responses};
        use handlers::metered::handle as metered;
        match (method.clone(), path) {
            (Method::POST, "/v1/chat/completions") => {
                metered::<Chat>(self, req, &request_id, received).await
            }
            (Method::POST, "/v1/responses") => {
                metered::<Responses>(self, req, &request_id, received).await
            }
            (Method::POST, "/v1/embeddings") => {
                metered::<Embeddings>(self, req, &request_id, received).await
            }
            (Method::POST, "/v1/completions") => {
                metered::<Completions>(self, req, &request_id, received).await
            }
            (Method::POST, "/v1/messages") => {
                metered::<Messages>(self, req, &request_id, received).await
            }
            (Method::GET, "/v1/models") => match self.directory.authenticate_headers(req.headers())
            {
                Ok(_) => json_response(StatusCode::OK, self.models.list.clone(), &request_id),
                Err(e) => e.into_response(&request_id),
            },
            (Method::GET, p) if p.starts_with("/v1/models/") => {
                if let Err(e) = self.directory.authenticate_headers(req.headers()) {
                    return e.into_response(&request_id);
                }
                match self.models.get(&p["/v1/models/".len()..]) {
                    Ok(model) => json_response(StatusCode::OK, model.clone(), &request_id),
                    Err(id) => ProxyError::ModelNotFound(id).into_response(&request_id),
                }
            }
            (m, p)
                if p.starts_with("/v1/responses/")
                    && handlers::retrieval::matches(&m, &p["/v1/responses/".len()..]) =>
            {
                let rest = p["/v1/responses/".len()..].to_string();
                match handlers::retrieval::handle(self, req, &rest, &request_id).await {
                    Ok(resp) => resp,
                    Err(e) => {
                        log_error(&e, &request_id);
                        e.into_response(&request_id)
                    }
                }
            }
            (Method::GET, "/healthz") => handlers::ops::healthz(&request_id),
            (Method::GET, "/readyz") => handlers::ops::readyz(self, &request_id),
            (Method::GET, "/metrics") => handlers::ops::metrics(self),

            (
                _,
                "/v1/chat/completions"
                | "/v1/responses"
                | "/v1/embeddings"
                | "/v1/completions"
                | "/v1/messages"
                | "/v1/models"
                | "/healthz"
                | "/readyz"
                | "/metrics",
            ) => ProxyError::MethodNotAllowed(method.to_string()).into_response(&request_id),
            _ => ProxyError::UnknownRoute {
                method: method.to_string(),
                path: path.to_string(),
            }
            .into_response(&request_id),
        }
    }
}

/// `req_` and 32 hex digits of a random (v4) UUID.
fn new_request_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    let hex = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
    let mut id = String::with_capacity(4 + hex.len());
    id.push_str("req_");
    id.push_str(hex);
    id
}

pub(crate) fn log_error(e: &ProxyError, request_id: &str) {
    if e.status().is_server_error() {
        tracing::warn!(
            request_id,
            code = e.code(),
            status = e.status().as_u16(),
            "{e}"
        );
    } else {
        tracing::debug!(
            request_id,
            code = e.code(),
            status = e.status().as_u16(),
            "{e}"
        );
    }
}
