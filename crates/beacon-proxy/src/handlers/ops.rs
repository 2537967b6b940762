//! Operational routes: liveness, readiness, metrics.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
use crate::error::json_response;
use crate::App;

/// `GET /healthz`: the process is up.
pub fn healthz(request_id: &str) -> Response<ProxyBody> {
    json_response(
        StatusCode::OK,
        Bytes::from_static(b"{\"status\":\"ok\"}"),
        request_id,
    )
}

/// `GET /readyz`: ready for traffic (503 while draining for shutdown).
pub fn readyz(app: &App, request_id: &str) -> Response<ProxyBody> {
    if app.is_draining() {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"{\"status\":\"draining\"}"),
            request_id,
        )
    } else {
        json_response(
            StatusCode::OK,
            Bytes::from_static(b"{\"status\":\"ready\"}"),
            request_id,
        )
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub fn metrics(app: &App) -> Response<ProxyBody> {
    let cooling = app.health.cooling_by_provider();
    app.metrics.set_cooling(
        app.router
            .providers()
            .map(|p| (p.name.as_str(), cooling.get(&p.name).copied().unwrap_or(0))),
    );
    let mut resp = Response::new(ProxyBody::full(app.metrics.render()));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
