//! Configuration: where Beacon's behaviour is decided before the first request.
//!
//! ```text
//! beacon.toml ──parse──▶ toml::Value ──${VAR} expansion──▶ RawConfig ──validate()──▶ Config
//!                                                                     (field-named errors)
//! no file     ──────────────────────── from_env() ───────────────────▶ Config (embedded default)
//! ```
//!
//! The validated [`Config`] is immutable; the proxy and the broadcast pipeline read it
//! (through their own runtime snapshots) and never see the raw strings.

pub mod calendar;
mod env;
pub mod limits;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rust_decimal::Decimal;

pub use env::expand_str;
pub use limits::{Limits, RawLimits};
pub use raw::RawDestination;
pub use validate::{destination_from_raw, is_key_id};

/// Maximum destinations of one type per tenant (SPEC §4).
pub const MAX_DESTINATIONS_PER_TYPE: usize = 5;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The client-facing HTTP server.
    pub server: ServerConfig,
    /// Operator access to `/admin/v1` and the console.
    pub admin: AdminConfig,
    /// Where tenants, keys and destinations are persisted.
    pub store: StoreConfig,
    /// Gateway-wide export settings.
    pub broadcast: BroadcastConfig,
    /// Upstream providers, in file order.
    pub providers: Vec<ProviderConfig>,
    /// Price overrides, keyed `provider/model` (or a bare model id), USD per million tokens.
    pub pricing: BTreeMap<String, Price>,
    /// Tenants declared in the file.
    pub tenants: Vec<TenantConfig>,
    /// How attempts fail over (SPEC §2.2).
    pub routing: RoutingConfig,
    /// Model aliases with weighted targets and fallbacks (SPEC §2.2).
    pub models: Vec<ModelAlias>,
}

/// `[routing]`: the attempt policy (SPEC §2.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingConfig {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// No attempt starts after this long from the request's arrival.
    pub deadline: Duration,
    /// An attempt without response headers within this long fails over.
    pub attempt_timeout: Duration,
    /// The longest `Retry-After` honoured by waiting; a longer one fails over.
    pub max_retry_after: Duration,
    /// The first wait before retrying the same target (doubled each time).
    pub retry_backoff: Duration,
    /// Consecutive failures after which a target cools down.
    pub cooldown_failures: u32,
    /// How long a target cools down.
    pub cooldown: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            deadline: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(500),
            cooldown_failures: 3,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// One `[[models]]` alias.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelAlias {
    /// The model name clients send.
    pub name: String,
    /// Load-balanced targets.
    pub targets: Vec<AliasTarget>,
    /// Tried in order when every target failed: `provider/model` or another alias.
    pub fallbacks: Vec<String>,
}

/// One target of an alias.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasTarget {
    /// A configured provider.
    pub provider: String,
    /// The model sent to it.
    pub model: String,
    /// Relative share of requests (> 0).
    pub weight: f64,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Request bodies larger than this get 413.
    pub max_body_bytes: usize,
    /// Whole-request upstream timeout, streaming included.
    pub upstream_timeout: Duration,
    /// TCP (and TLS) connect timeout towards upstreams.
    pub connect_timeout: Duration,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    pub shutdown_grace: Duration,
    /// Proxy threads, each with its own listener (SO_REUSEPORT), event loop and upstream
    /// connection pool; `0` in the file means one per CPU.
    pub workers: usize,
    /// A connection must deliver a complete request head within this long of being
    /// accepted (or of its previous response), whether or not it sent a byte.
    pub header_read_timeout: Duration,
    /// A request body must arrive in full within this long of its head.
    pub body_read_timeout: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: Duration,
    /// A streaming upstream that sends nothing for this long is cut (between chunks).
    pub upstream_idle_timeout: Duration,
    /// Open client connections per node; past it, new ones get an immediate 503 and are
    /// closed, so the connections being served are not starved.
    pub max_connections: usize,
    /// After SIGTERM, how long `/readyz` answers 503 while new connections are still
    /// accepted, so a load balancer notices before the listener closes.
    pub drain_delay: Duration,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Operator bearer token for every tenant; without it, only tenants' management keys
    /// reach the admin API.
    pub token: Option<String>,
    /// Failed authentications from one client address within the window after which its
    /// admin requests get 429 until the window ends.
    pub max_failed_auth: u32,
    /// The window over which failed authentications are counted.
    pub failed_auth_window: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_failed_auth: 10,
            failed_auth_window: Duration::from_secs(60),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path` or `postgres://...`.
    pub url: String,
    /// Days of usage ledger kept (SPEC §5.1).
    pub usage_retention_days: u32,
}

/// `[broadcast]`.
#[derive(Debug, Clone)]
pub struct BroadcastConfig {
    /// Allow `http://` and loopback/private destination addresses (tests, development).
    pub allow_private_destinations: bool,
    /// Capacity of the bounded queue between the proxy and the export pipeline, in records.
    pub queue_capacity: usize,
    /// Optional JSON-lines file receiving every completion record (content excluded).
    pub record_log: Option<PathBuf>,
    /// How long the queue may keep draining after shutdown begins.
    pub shutdown_deadline: Duration,
    /// Prompt and completion text kept per record, in bytes; longer text is truncated.
    pub max_content_bytes: usize,
    /// Records buffered per destination while it is slow or down.
    pub destination_queue_capacity: usize,
    /// Records per export request.
    pub max_batch_records: usize,
    /// A partial batch is sent at most this long after its first record.
    pub flush_interval: Duration,
    /// Timeout of one export request.
    pub export_timeout: Duration,
    /// Bytes of completion records the export path may hold at once (hand-off queue,
    /// destination queues and batches being sent); a record past it is dropped
    /// (`queue_full`).
    pub queue_max_bytes: usize,
    /// Bytes of records one destination may hold (queued and being sent); past it, its
    /// copies are dropped (`queue_full`), so one stuck destination cannot take the budget.
    pub destination_queue_max_bytes: usize,
    /// Limits on the client's `trace` metadata kept in a record.
    pub metadata: MetadataLimits,
    /// Error events sent per fingerprint per destination per minute (SPEC §4.3).
    pub error_events_per_minute: u32,
}

/// Limits on the `trace` object a client sends, applied before it is kept in a record:
/// a longer value is cut (and `<key>.truncated` set), keys past the count are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataLimits {
    /// Bytes of one value (strings as text, objects and arrays as their JSON).
    pub value_bytes: usize,
    /// Bytes of all keys and values together.
    pub total_bytes: usize,
    /// Keys kept.
    pub keys: usize,
}

impl Default for MetadataLimits {
    fn default() -> Self {
        Self {
            value_bytes: 4096,
            total_bytes: 32 * 1024,
            keys: 64,
        }
    }
}

/// One `[[providers]]` entry: an OpenAI-compatible upstream.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Routing prefix: model `name/x` goes to this provider as `x`.
    pub name: String,
    /// Base URL to which an API's path (`/chat/completions`, `/messages`, ...) is appended,
    /// without a trailing slash.
    pub base_url: String,
    /// Provider key sent upstream (a bearer token, or `x-api-key` for kind `anthropic`;
    /// never returned to clients).
    pub api_key: Option<String>,
    /// Unmatched models go here unchanged.
    pub default: bool,
    /// Extra headers sent upstream on every request (e.g. OpenRouter's `HTTP-Referer`).
    pub headers: Vec<(String, String)>,
    /// Models advertised by `GET /v1/models` besides those with a price.
    pub models: Vec<String>,
    /// How Beacon talks to it (auth headers, default APIs).
    pub kind: ProviderKind,
    /// The APIs it serves; a request for another gets 400 `unsupported_api`.
    pub apis: ApiSet,
}

/// Prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Uncached prompt tokens.
    pub input: Decimal,
    /// Prompt tokens read from the provider's cache; defaults to `input`.
    pub cached_input: Option<Decimal>,
    /// Prompt tokens written to the provider's cache; defaults to `input`.
    pub cache_write: Option<Decimal>,
    /// Completion tokens (reasoning included unless `reasoning` is set).
    pub output: Decimal,
    /// Reasoning tokens, when priced apart from output; defaults to `output`.
    pub reasoning: Option<Decimal>,
}

/// One declared tenant.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// Stable identifier, used in records and metrics.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Client keys of this tenant.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Broadcast switch and destinations.
    pub broadcast: TenantBroadcastConfig,
    /// Limits on the whole tenant (SPEC §5.1).
    pub limits: Limits,
    /// Limits per key, by key id (`key_…`).
    pub key_limits: BTreeMap<String, Limits>,
}

/// A tenant key as declared: only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// SHA-256 of the plaintext key.
    pub sha256: [u8; 32],
    /// Key id: the first 12 hex digits of the hash, used in records and allowlists.
    pub id: String,
}

impl ApiKeyConfig {
    /// Builds the entry for a plaintext key.
    pub fn from_plaintext(key: &str) -> Self {
        use sha2::Digest;
        Self::from_hash(sha2::Sha256::digest(key.as_bytes()).into())
    }

    /// Builds the entry for a known hash.
    pub fn from_hash(sha256: [u8; 32]) -> Self {
        let id = format!("key_{}", &hex::encode(sha256)[..12]);
        Self { sha256, id }
    }
}

/// A tenant's `[tenants.broadcast]`.
#[derive(Debug, Clone, Default)]
pub struct TenantBroadcastConfig {
    /// The tenant's on/off switch.
    pub enabled: bool,
    /// Where this tenant's traces go.
    pub destinations: Vec<DestinationConfig>,
}

/// One destination, as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationConfig {
    /// The store's id (`dst_…`); `None` for destinations declared in the config file.
    pub id: Option<String>,
    /// Display name, unique within the tenant.
    pub name: String,
    /// Disabled destinations receive nothing.
    pub enabled: bool,
    /// The destination type (`sentry`, `otlp`, `langfuse`, …): the module of
    /// `beacon_broadcast::destination` that reads [`Self::fields`].
    pub type_name: String,
    /// The type's own settings (`dsn`, `endpoint`, `headers`, `api_key`, …) as written,
    /// validated by that type.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// No prompt or completion text is exported when set.
    pub privacy_mode: bool,
    /// Completions whose caller's `sentry-trace` / `traceparent` says not sampled are not
    /// exported (SPEC §4.5); `None`: the type's default (Sentry: on, OTLP: off).
    pub follow_caller_sampling: Option<bool>,
    /// Sentry: each failed completion also becomes an error event in the project's Issues
    /// (SPEC §4.3); `None`: on.
    pub error_events: Option<bool>,
    /// Fraction of sessions (or requests) exported, `0.0001..=1`.
    pub sampling_rate: f64,
    /// Key names/ids whose completions are exported; empty means all.
    pub api_keys: Vec<String>,
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `providers[0].base_url`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// Creates an error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has keys of the wrong type.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file (or `<default>`).
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more fields are invalid.
    #[error("{origin}: invalid configuration:\n{}", list(.errors))]
    Invalid {
        /// The file (or `<default>`).
        origin: String,
        /// Every invalid field.
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, expands and validates a config file, with `${VAR}` taken from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string(), &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut tree: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut errors = Vec::new();
        env::expand_tree(&mut tree, lookup, "", &mut errors);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                errors,
            });
        }
        let raw: raw::RawConfig =
            tree.try_into()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    origin: origin.to_string(),
                    message: e.to_string(),
                })?;
        validate::validate(raw).map_err(|errors| ConfigError::Invalid {
            origin: origin.to_string(),
            errors,
        })
    }

    /// The embedded default used by `beacon serve` without `--config`: listen on
    /// `127.0.0.1:8080`, store in `./beacon.db`, providers from well-known environment
    /// variables, and tenant keys from `BEACON_API_KEYS` (comma-separated).
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut raw = raw::RawConfig::default();
        raw.admin.token = lookup("BEACON_ADMIN_TOKEN").filter(|t| !t.is_empty());
        if let Some(listen) = lookup("BEACON_LISTEN").filter(|t| !t.is_empty()) {
            raw.server.listen = Some(listen);
        }
        let have = |var: &str| lookup(var).is_some_and(|k| !k.is_empty());
        let (have_openrouter, have_openai) = (have("OPENROUTER_API_KEY"), have("OPENAI_API_KEY"));
        for (name, var, base_url, kind) in WELL_KNOWN_PROVIDERS {
            if let Some(key) = lookup(var).filter(|k| !k.is_empty()) {
                raw.providers.push(raw::RawProvider {
                    name: name.to_string(),
                    base_url: base_url.to_string(),
                    api_key: Some(key),
                    // OpenRouter understands every `vendor/model` name, so it is the best
                    // catch-all; otherwise plain model names go to OpenAI, else Anthropic.
                    default: (*name == "openrouter")
                        || (*name == "openai" && !have_openrouter)
                        || (*name == "anthropic" && !have_openrouter && !have_openai),
                    headers: BTreeMap::new(),
                    models: Vec::new(),
                    kind: Some(kind.as_str().to_string()),
                    apis: None,
                });
            }
        }
        if let Some(base) = lookup("OLLAMA_BASE_URL").filter(|k| !k.is_empty()) {
            raw.providers.push(raw::RawProvider {
                name: "ollama".into(),
                base_url: base,
                api_key: None,
                default: raw.providers.is_empty(),
                headers: BTreeMap::new(),
                models: Vec::new(),
                kind: None,
                apis: None,
            });
        }
        if let Some(keys) = lookup("BEACON_API_KEYS").filter(|k| !k.is_empty()) {
            raw.tenants.push(raw::RawTenant {
                id: "default".into(),
                name: Some("Default tenant".into()),
                api_keys: keys
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect(),
                broadcast: raw::RawTenantBroadcast::default(),
                limits: Default::default(),
                key_limits: Default::default(),
            });
        }
        validate::validate(raw).map_err(|errors| ConfigError::Invalid {
            origin: "<environment>".to_string(),
            errors,
        })
    }

    /// The provider that receives unmatched models, if any.
    pub fn default_provider(&self) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.default)
    }
}

/// Providers picked up from the environment by the embedded default: (name, variable,
/// base URL, kind).
pub const WELL_KNOWN_PROVIDERS: &[(&str, &str, &str, ProviderKind)] = &[
    (
        "openai",
        "OPENAI_API_KEY",
        "https://api.openai.com/v1",
        ProviderKind::OpenAi,
    ),
    (
        "anthropic",
        "ANTHROPIC_API_KEY",
        "https://api.anthropic.com/v1",
        ProviderKind::Anthropic,
    ),
    (
        "openrouter",
        "OPENROUTER_API_KEY",
        "https://openrouter.ai/api/v1",
        ProviderKind::OpenAi,
    ),
    (
        "groq",
        "GROQ_API_KEY",
        "https://api.groq.com/openai/v1",
        ProviderKind::OpenAi,
    ),
    (
        "together",
        "TOGETHER_API_KEY",
        "https://api.together.xyz/v1",
        ProviderKind::OpenAi,
    ),
    (
        "mistral",
        "MISTRAL_API_KEY",
        "https://api.mistral.ai/v1",
        ProviderKind::OpenAi,
    ),
    (
        "deepseek",
        "DEEPSEEK_API_KEY",
        "https://api.deepseek.com/v1",
        ProviderKind::OpenAi,
    ),
];

/// An API a client calls through Beacon (SPEC §2.1): the route it arrives on and the wire
/// format Beacon reads and forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses` (and its retrieval routes).
    Responses,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/completions` (legacy).
    Completions,
    /// `POST /v1/messages` (Anthropic Messages).
    Messages,
}

impl Api {
    /// Every API, in a stable order.
    pub const ALL: [Api; 5] = [
        Api::Chat,
        Api::Responses,
        Api::Embeddings,
        Api::Completions,
        Api::Messages,
    ];

    /// The name used in config (`apis = [...]`), records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
            Api::Completions => "completions",
            Api::Messages => "messages",
        }
    }

    /// The API named `name` in config.
    pub fn parse(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// A bit for [`ApiSet`].
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Api`]s (what a provider serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApiSet(u8);

impl ApiSet {
    /// The set of `apis`.
    pub fn of(apis: &[Api]) -> Self {
        Self(apis.iter().fold(0, |bits, a| bits | a.bit()))
    }

    /// Whether `api` is in the set.
    pub fn contains(self, api: Api) -> bool {
        self.0 & api.bit() != 0
    }

    /// The APIs in the set, in [`Api::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Api> {
        Api::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

/// How Beacon talks to a provider (SPEC §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProviderKind {
    /// Any OpenAI-compatible server: `Authorization: Bearer <key>`; serves chat, responses,
    /// embeddings and completions by default.
    #[default]
    OpenAi,
    /// Anthropic's native API: `x-api-key` and `anthropic-version`; serves messages.
    Anthropic,
}

impl ProviderKind {
    /// The name used in config.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// What a provider of this kind serves unless its `apis` says otherwise.
    pub fn default_apis(self) -> ApiSet {
        match self {
            ProviderKind::OpenAi => {
                ApiSet::of(&[Api::Chat, Api::Responses, Api::Embeddings, Api::Completions])
            }
            ProviderKind::Anthropic => ApiSet::of(&[Api::Messages]),
        }
    }
}
