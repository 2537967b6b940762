//! Mocks of the ingestion endpoints of SPEC §4.4's destination presets, on 127.0.0.1:0. Each
//! answers like the service's documentation says (the facts and their sources are in
//! docs/research/destination-presets.md): its traces path, its auth header, the content
//! types it takes, its success code and body, and its refusal for a wrong credential. What
//! arrives is kept (headers and the decompressed body) for the test to check.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Sha256;

/// What a service checks and answers.
#[derive(Debug, Clone)]
pub struct Service {
    /// The preset's type name.
    pub name: &'static str,
    /// The path exports must be POSTed to.
    pub path: String,
    /// The credential header and the value it must have (a webhook: its signing secret,
    /// checked as an HMAC of the body instead).
    pub auth: (&'static str, String),
    /// Other headers that must be present with these values.
    pub required: Vec<(&'static str, String)>,
    /// Content types accepted (others: `unsupported`).
    pub content_types: Vec<&'static str>,
    /// The answer to an unsupported content type.
    pub unsupported: StatusCode,
    /// The success status, content type and body.
    pub ok: (StatusCode, &'static str, Bytes),
    /// The answer to a wrong or missing credential.
    pub refused: (StatusCode, &'static str),
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// An empty `ExportTraceServiceResponse` (zero bytes of protobuf).
fn empty_protobuf() -> (StatusCode, &'static str, Bytes) {
    (StatusCode::OK, "application/x-protobuf", Bytes::new())
}

impl Service {
    /// Langfuse: `/api/public/otel/v1/traces`, Basic public:secret, ingestion version
    /// header, protobuf or JSON, 200 with a JSON body, 401 for wrong keys.
    pub fn langfuse(public_key: &str, secret_key: &str) -> Self {
        Self {
            name: "langfuse",
            path: "/api/public/otel/v1/traces".into(),
            auth: ("authorization", basic(public_key, secret_key)),
            required: vec![("x-langfuse-ingestion-version", "4".into())],
            content_types: vec!["application/x-protobuf", "application/json"],
            unsupported: StatusCode::BAD_REQUEST,
            ok: (
                StatusCode::OK,
                "application/json",
                Bytes::from_static(b"{}"),
            ),
            refused: (
                StatusCode::UNAUTHORIZED,
                r#"{"message":"Invalid credentials. Confirm that you've configured the correct host."}"#,
            ),
        }
    }

    /// LangSmith: `/otel/v1/traces`, `x-api-key`, project header, 200, 401.
    pub fn langsmith(api_key: &str, project: &str) -> Self {
        Self {
            name: "langsmith",
            path: "/otel/v1/traces".into(),
            auth: ("x-api-key", api_key.into()),
            required: vec![("langsmith-project", project.into())],
            content_types: vec!["application/x-protobuf", "application/json"],
            unsupported: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ok: (
                StatusCode::OK,
                "application/json",
                Bytes::from_static(b"{}"),
            ),
            refused: (StatusCode::UNAUTHORIZED, r#"{"error":"Unauthorized"}"#),
        }
    }

    /// Honeycomb: `/v1/traces`, `x-honeycomb-team` (and the dataset), 200 protobuf, 401.
    pub fn honeycomb(api_key: &str, dataset: &str) -> Self {
        Self {
            name: "honeycomb",
            path: "/v1/traces".into(),
            auth: ("x-honeycomb-team", api_key.into()),
            required: vec![("x-honeycomb-dataset", dataset.into())],
            content_types: vec!["application/x-protobuf", "application/json"],
            unsupported: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ok: empty_protobuf(),
            refused: (
                StatusCode::UNAUTHORIZED,
                r#"{"error":"unknown API key - check your credentials"}"#,
            ),
        }
    }

    /// Grafana Cloud: `/otlp/v1/traces`, Basic instance:token, 200, 401.
    pub fn grafana_cloud(instance_id: &str, token: &str) -> Self {
        Self {
            name: "grafana_cloud",
            path: "/otlp/v1/traces".into(),
            auth: ("authorization", basic(instance_id, token)),
            required: vec![],
            content_types: vec!["application/x-protobuf", "application/json"],
            unsupported: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ok: empty_protobuf(),
            refused: (
                StatusCode::UNAUTHORIZED,
                "authentication error: invalid token",
            ),
        }
    }

    /// Datadog: `/v1/traces`, `dd-api-key`, `dd-otlp-source: llmobs`, 202, 403.
    pub fn datadog(api_key: &str) -> Self {
        Self {
            name: "datadog",
            path: "/v1/traces".into(),
            auth: ("dd-api-key", api_key.into()),
            required: vec![("dd-otlp-source", "llmobs".into())],
            content_types: vec!["application/x-protobuf", "application/json"],
            unsupported: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ok: (
                StatusCode::ACCEPTED,
                "application/json",
                Bytes::from_static(b"{}"),
            ),
            refused: (StatusCode::FORBIDDEN, r#"{"errors":["Forbidden"]}"#),
        }
    }

    /// Phoenix under `prefix`: `{prefix}/v1/traces`, Bearer key, protobuf only (415
    /// otherwise), 200 protobuf, 401 "Invalid token".
    pub fn phoenix(prefix: &str, api_key: &str, project: &str) -> Self {
        Self {
            name: "phoenix",
            path: format!("{prefix}/v1/traces"),
            auth: ("authorization", format!("Bearer {api_key}")),
            required: vec![("x-project-name", project.into())],
            content_types: vec!["application/x-protobuf"],
            unsupported: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ok: empty_protobuf(),
            refused: (StatusCode::UNAUTHORIZED, r#"{"detail":"Invalid token"}"#),
        }
    }

    /// A webhook receiver at `/hooks/beacon` that verifies `X-Beacon-Signature` with
    /// `secret`: 200 when it matches, 401 when it does not.
    pub fn webhook(secret: &str) -> Self {
        Self {
            name: "webhook",
            path: "/hooks/beacon".into(),
            auth: ("x-beacon-signature", secret.into()),
            required: vec![],
            content_types: vec!["application/json"],
            unsupported: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ok: (StatusCode::OK, "text/plain", Bytes::from_static(b"ok")),
            refused: (StatusCode::UNAUTHORIZED, "signature mismatch"),
        }
    }
}

/// One accepted request.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its body, decompressed when it was gzipped.
    pub body: Vec<u8>,
}

impl Received {
    /// Header `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Log {
    accepted: Vec<Received>,
    /// (status, reason) of every refused request.
    refused: Vec<(u16, String)>,
}

/// The running mock; stops when dropped.
pub struct MockIngest {
    /// Where it listens.
    pub addr: SocketAddr,
    service: Service,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockIngest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockIngest {
    /// Starts a mock of `service`.
    pub async fn start(service: Service) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock ingest");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Log::default()));
        let (svc, lg) = (Arc::new(service.clone()), log.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (svc, lg) = (svc.clone(), lg.clone());
                tokio::spawn(async move {
                    let handler = service_fn(move |req| handle(svc.clone(), lg.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), handler)
                        .await;
                });
            }
        });
        Self {
            addr,
            service,
            log,
            task,
        }
    }

    /// `http://127.0.0.1:port` (no path).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full URL of the ingestion path.
    pub fn url(&self) -> String {
        format!("{}{}", self.base(), self.service.path)
    }

    /// Requests accepted so far.
    pub fn accepted(&self) -> Vec<Received> {
        self.log.lock().expect("lock").accepted.clone()
    }

    /// (status, reason) of the requests refused so far.
    pub fn refused(&self) -> Vec<(u16, String)> {
        self.log.lock().expect("lock").refused.clone()
    }

    /// Waits up to 10 s for `n` accepted requests.
    pub async fn wait_accepted(&self, n: usize) -> Vec<Received> {
        let start = std::time::Instant::now();
        loop {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(10),
                "{}: {} of {n} requests accepted; refused: {:?}",
                self.service.name,
                got.len(),
                self.refused()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, computed here apart from Beacon's code.
pub fn hmac_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("content type"));
    r
}

async fn handle(
    service: Arc<Service>,
    log: Arc<Mutex<Log>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let raw = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let refuse = |status: StatusCode, reason: String, body: &str| {
        log.lock()
            .expect("lock")
            .refused
            .push((status.as_u16(), reason));
        Ok(reply(
            status,
            "application/json",
            Bytes::from(body.to_string()),
        ))
    };
    if parts.method != http::Method::POST || parts.uri.path() != service.path {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("{} {}", parts.method, parts.uri.path()),
            r#"{"error":"not found"}"#,
        );
    }
    let content_type = header("content-type");
    if !service
        .content_types
        .iter()
        .any(|t| content_type.starts_with(t))
    {
        return refuse(
            service.unsupported,
            format!("content type {content_type}"),
            r#"{"error":"unsupported content type"}"#,
        );
    }
    let body = match header("content-encoding").as_str() {
        "" => raw.to_vec(),
        "gzip" => {
            let mut out = Vec::new();
            if flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .is_err()
            {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "bad gzip".into(),
                    r#"{"error":"bad gzip"}"#,
                );
            }
            out
        }
        other => {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("encoding {other}"),
                r#"{"error":"unsupported encoding"}"#,
            )
        }
    };
    let (auth_header, expected) = &service.auth;
    let authorised = if service.name == "webhook" {
        header(auth_header) == hmac_signature(expected.as_bytes(), &raw)
    } else {
        &header(auth_header) == expected
    };
    if !authorised {
        return refuse(
            service.refused.0,
            format!("{auth_header} wrong"),
            service.refused.1,
        );
    }
    for (name, value) in &service.required {
        if &header(name) != value {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("{name} missing"),
                r#"{"error":"missing header"}"#,
            );
        }
    }
    log.lock().expect("lock").accepted.push(Received {
        headers: parts.headers.clone(),
        body,
    });
    let (status, content_type, body) = &service.ok;
    Ok(reply(*status, content_type, body.clone()))
}
