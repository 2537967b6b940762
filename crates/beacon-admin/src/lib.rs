//! Admin: how tenants change Beacon while it runs — the `/admin/v1` REST API and the
//! `/console` web page on top of it (SPEC §5), off the hot path, mounted on the gateway's
//! listener by the binary.
//!
//! ```text
//! request /admin/v1/… ─▶ auth::Authenticator   operator token, or a tenant's management key
//!                     ─▶ routes                 tenants, keys, broadcast switch, destinations
//!                     ─▶ destinations::Manager  validate ─▶ Test Connection ─▶ Store
//!                     ─▶ Store change ─▶ this node reloads before answering; others within 1 s
//! stats ◀── PipelineControl::routes() ◀── each destination worker's SinkHealth (this node)
//! ```
//!
//! Secrets (DSN keys, header values) are redacted in every response ([`destinations::view`])
//! and scrubbed from Test Connection messages before they are logged or returned.

pub mod auth;
pub mod console;
pub mod destinations;
pub mod error;
pub mod routes;

use std::sync::Arc;

use beacon_broadcast::sink::SinkHealth;
use beacon_broadcast::PipelineControl;
use beacon_proxy::body::ProxyBody;
use beacon_proxy::{Mounted, ResponseFuture};
use http::{Request, Response};
use hyper::body::Incoming;

/// The future [`Reload::reload`] returns.
pub type ReloadFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Applies store changes to this node (its key directory and broadcast pipeline). The admin
/// API awaits it after every change, so a `201` means the change is already in force here;
/// other nodes pick it up on their next poll.
pub trait Reload: Send + Sync + 'static {
    /// Reloads from the store if it changed.
    fn reload(&self) -> ReloadFuture<'_>;
}

pub use auth::{Authenticator, Principal};
pub use destinations::Manager;
pub use error::AdminError;

/// The admin API, cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    auth: Authenticator,
    manager: Manager,
    pipeline: PipelineControl,
    reload: Arc<dyn Reload>,
}

impl Inner {
    /// Applies a change to this node before the API answers.
    async fn changed(&self) {
        self.reload.reload().await;
    }

    /// The export health of destination `id` of `tenant` on this node, if it has a worker.
    fn health(&self, tenant: &str, id: &str) -> Option<Arc<SinkHealth>> {
        self.pipeline
            .routes()
            .get(tenant)?
            .sinks
            .iter()
            .find(|s| s.spec.id == id)
            .map(|s| s.health.clone())
    }
}

impl Admin {
    /// The admin API: `auth` checks callers, `manager` owns destinations and the store,
    /// `pipeline` gives export stats, and `reload` applies every change to this node.
    pub fn new(
        auth: Authenticator,
        manager: Manager,
        pipeline: PipelineControl,
        reload: Arc<dyn Reload>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                auth,
                manager,
                pipeline,
                reload,
            }),
        }
    }

    /// Serves one request under `/admin/` or `/console`.
    pub async fn handle(&self, req: Request<Incoming>, request_id: &str) -> Response<ProxyBody> {
        if req.uri().path().starts_with("/console") {
            return console::serve(req.method(), req.uri().path(), request_id);
        }
        routes::handle(&self.inner, req, request_id).await
    }
}

impl Mounted for Admin {
    fn call(&self, req: Request<Incoming>, request_id: String) -> ResponseFuture {
        let admin = self.clone();
        Box::pin(async move { admin.handle(req, &request_id).await })
    }
}
