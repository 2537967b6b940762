//! The web console (SPEC §5): a static page embedded in the binary, served at `/console`,
//! that talks to `/admin/v1` with the token the user signs in with. No build step: the
//! files under `console/` are the page.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};

use beacon_proxy::body::ProxyBody;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/app.css");

/// What the page may load and where it may connect: only Beacon itself.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Serves `GET /console`, `/console/`, `/console/app.js` and `/console/app.css`.
pub fn serve(method: &Method, path: &str, request_id: &str) -> Response<ProxyBody> {
    let asset = match path {
        "/console" | "/console/" | "/console/index.html" => {
            Some((INDEX, "text/html; charset=utf-8"))
        }
        "/console/app.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/console/app.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    };
    let Some((body, content_type)) = asset else {
        return plain(StatusCode::NOT_FOUND, "not found", request_id);
    };
    if method != Method::GET && method != Method::HEAD {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            request_id,
        );
    }
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(body.as_bytes())
    };
    let mut resp = Response::new(ProxyBody::full(body));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(beacon_proxy::REQUEST_ID_HEADER, v);
    }
    resp
}

fn plain(status: StatusCode, text: &'static str, request_id: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut()
            .insert(beacon_proxy::REQUEST_ID_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_served_with_their_types_and_a_strict_policy() {
        let r = serve(&Method::GET, "/console", "req_1");
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert!(
            serve(&Method::GET, "/console/app.js", "r").headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert_eq!(
            serve(&Method::GET, "/console/../etc/passwd", "r").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve(&Method::POST, "/console", "r").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        // The page references exactly the assets served here.
        assert!(INDEX.contains("/console/app.js") && INDEX.contains("/console/app.css"));
    }
}
