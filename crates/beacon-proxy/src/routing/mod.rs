//! Model routing (SPEC §2): `P/REST` goes to provider `P` as `REST`; anything else goes to
//! the default provider unchanged — or, for an API the default provider does not serve, to
//! the one provider that serves it (so Claude Code's bare `claude-…` model names reach the
//! Anthropic provider when OpenAI is the default); otherwise the model is not found.

/// Looked up per request by provider or alias name: a fast seeded hash (foldhash).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

pub mod plan;
pub mod policy;

use beacon_config::{Api, ApiSet, ModelAlias, ProviderConfig, ProviderKind};

use crate::error::ProxyError;
use plan::{Candidate, Plan};

/// `anthropic-version` sent to kind `anthropic` providers when the client sends none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Where a model goes.
#[derive(Debug, Clone)]
pub struct Route {
    /// The provider.
    pub provider: Arc<Provider>,
    /// The model id sent upstream.
    pub upstream_model: String,
}

/// A provider ready for requests.
#[derive(Debug)]
pub struct Provider {
    /// Routing prefix.
    pub name: String,
    /// The name as the `x-beacon-provider` response header's value, made once.
    pub name_header: http::HeaderValue,
    /// How Beacon talks to it.
    pub kind: ProviderKind,
    /// The APIs it serves.
    pub apis: ApiSet,
    /// `base_url`, without a trailing slash.
    pub base_url: String,
    /// `{base_url}{path}` of each API it serves, parsed once, in [`Api::ALL`] order.
    urls: [Option<http::Uri>; 5],
    /// Credentials sent upstream: `Authorization: Bearer <key>`, or for kind `anthropic`
    /// `x-api-key` (and `anthropic-version` unless the client sends its own).
    pub auth: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Extra headers sent upstream.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `beacon_upstream_attempts_total{provider=<name>,outcome="served"}`, set once the
    /// metrics exist (the hot path increments it without building a label set).
    pub served: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
    /// Advertised models.
    pub models: Vec<String>,
}

/// A plan being expanded.
#[derive(Debug, Default)]
struct Expansion<'a> {
    plan: Plan,
    next_group: u32,
    visited: Vec<&'a str>,
    unsupported: Option<String>,
}

/// The path of `api` under a provider's `base_url`.
pub fn api_path(api: Api) -> &'static str {
    match api {
        Api::Chat => "/chat/completions",
        Api::Responses => "/responses",
        Api::Embeddings => "/embeddings",
        Api::Completions => "/completions",
        Api::Messages => "/messages",
    }
}

impl Provider {
    /// Whether it serves `api`.
    pub fn serves(&self, api: Api) -> bool {
        self.apis.contains(api)
    }

    /// `{base_url}{path}` of `api`, when it serves it.
    pub fn url(&self, api: Api) -> Option<&http::Uri> {
        self.urls[Api::ALL.iter().position(|a| *a == api)?].as_ref()
    }
}

/// The routing table.
#[derive(Debug, Default)]
pub struct Router {
    by_name: HashMap<String, Arc<Provider>>,
    default: Option<Arc<Provider>>,
    /// Per API (in [`Api::ALL`] order), where unprefixed models go when the default
    /// provider does not serve that API: the only provider that does, if exactly one does.
    sole: [Option<Arc<Provider>>; 5],
    /// `[[models]]` aliases by name.
    aliases: HashMap<String, Alias>,
}

/// A model alias, resolved.
#[derive(Debug)]
struct Alias {
    targets: Vec<(Route, f64)>,
    fallbacks: Vec<String>,
}

/// A provider entry that passed config validation but still cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("providers.{name}: {message}")]
pub struct RouterError {
    name: String,
    message: String,
}

impl Router {
    /// Builds the table from validated provider configs and model aliases.
    pub fn new(providers: &[ProviderConfig], models: &[ModelAlias]) -> Result<Self, RouterError> {
        let mut router = Router::default();
        for p in providers {
            let err = |message: String| RouterError {
                name: p.name.clone(),
                message,
            };
            let mut urls: [Option<http::Uri>; 5] = Default::default();
            for (slot, api) in urls.iter_mut().zip(Api::ALL) {
                if p.apis.contains(api) {
                    let url = format!("{}{}", p.base_url, api_path(api));
                    *slot = Some(url.parse().map_err(|e| err(format!("base_url: {e}")))?);
                }
            }
            let mut auth = Vec::new();
            if let Some(k) = &p.api_key {
                let bad = |_| err("api_key contains characters not allowed in a header".into());
                let (name, value) = match p.kind {
                    ProviderKind::OpenAi => (
                        http::header::AUTHORIZATION,
                        http::HeaderValue::try_from(format!("Bearer {k}")).map_err(bad)?,
                    ),
                    ProviderKind::Anthropic => (
                        http::HeaderName::from_static("x-api-key"),
                        http::HeaderValue::try_from(k.as_str()).map_err(bad)?,
                    ),
                };
                let mut value = value;
                value.set_sensitive(true);
                auth.push((name, value));
            }
            let mut headers = Vec::new();
            for (k, v) in &p.headers {
                let name = http::HeaderName::try_from(k.as_str())
                    .map_err(|_| err(format!("headers.{k}: invalid name")))?;
                let value = http::HeaderValue::try_from(v.as_str())
                    .map_err(|_| err(format!("headers.{k}: invalid value")))?;
                headers.push((name, value));
            }
            let provider = Arc::new(Provider {
                name_header: http::HeaderValue::try_from(p.name.as_str())
                    .map_err(|_| err("name cannot be a header value".into()))?,
                name: p.name.clone(),
                kind: p.kind,
                apis: p.apis,
                base_url: p.base_url.clone(),
                urls,
                auth,
                headers,
                served: std::sync::OnceLock::new(),
                models: p.models.clone(),
            });
            if p.default {
                router.default = Some(provider.clone());
            }
            router.by_name.insert(p.name.clone(), provider);
        }
        for m in models {
            let mut targets = Vec::with_capacity(m.targets.len());
            for t in &m.targets {
                let provider = router.by_name.get(&t.provider).ok_or_else(|| RouterError {
                    name: t.provider.clone(),
                    message: format!("unknown provider in model alias `{}`", m.name),
                })?;
                let route = Route {
                    provider: provider.clone(),
                    upstream_model: t.model.clone(),
                };
                targets.push((route, t.weight));
            }
            router.aliases.insert(
                m.name.clone(),
                Alias {
                    targets,
                    fallbacks: m.fallbacks.clone(),
                },
            );
        }
        if router.default.is_some() {
            for (slot, api) in router.sole.iter_mut().zip(Api::ALL) {
                let mut serving = router.by_name.values().filter(|p| p.serves(api));
                if let (Some(only), None) = (serving.next(), serving.next()) {
                    *slot = Some(only.clone());
                }
            }
        }
        Ok(router)
    }

    /// Routes a model as the client sent it on `api`'s route.
    pub fn route(&self, model: &str, api: Api) -> Option<Route> {
        if let Some((prefix, rest)) = model.split_once('/') {
            if let Some(p) = self.by_name.get(prefix).filter(|_| !rest.is_empty()) {
                return Some(Route {
                    provider: p.clone(),
                    upstream_model: rest.to_string(),
                });
            }
        }
        let default = self.default.as_ref()?;
        let provider = match &self.sole[Api::ALL.iter().position(|a| *a == api)?] {
            Some(sole) if !default.serves(api) => sole,
            _ => default,
        };
        Some(Route {
            provider: provider.clone(),
            upstream_model: model.to_string(),
        })
    }

    /// The targets `model` (and the body's `models` list, `more`) may use on `api`'s route,
    /// in order (see [`plan`]): an alias expands to its weighted targets, then its fallbacks;
    /// `provider/model` and default-provider names are single targets. Targets whose
    /// provider does not serve `api` are left out; when that leaves nothing, the error names
    /// the provider (`unsupported_api`), and when nothing routes at all, the model.
    pub fn plan(&self, model: &str, more: &[String], api: Api) -> Result<Plan, ProxyError> {
        if more.is_empty() && (self.aliases.is_empty() || !self.aliases.contains_key(model)) {
            // The common case: one target, no alias lookup beyond an empty-map check.
            let route = self
                .route(model, api)
                .ok_or_else(|| ProxyError::ModelNotFound(model.to_string()))?;
            if !route.provider.serves(api) {
                return Err(ProxyError::UnsupportedApi {
                    provider: route.provider.name.clone(),
                    api,
                });
            }
            return Ok(Plan::single(route));
        }
        let mut out = Expansion::default();
        for name in std::iter::once(model).chain(more.iter().map(String::as_str)) {
            self.expand(name, api, &mut out);
        }
        if out.plan.candidates.is_empty() {
            return Err(match out.unsupported {
                Some(provider) => ProxyError::UnsupportedApi { provider, api },
                None => ProxyError::ModelNotFound(model.to_string()),
            });
        }
        Ok(out.plan)
    }

    fn expand<'a>(&'a self, name: &'a str, api: Api, out: &mut Expansion<'a>) {
        let push = |route: Route, weight: f64, group: u32, out: &mut Expansion<'a>| {
            if route.provider.serves(api) {
                out.plan.candidates.push(Candidate {
                    route,
                    weight,
                    group,
                });
            } else if out.unsupported.is_none() {
                out.unsupported = Some(route.provider.name.clone());
            }
        };
        if let Some(alias) = self.aliases.get(name) {
            if out.visited.contains(&name) {
                return;
            }
            out.visited.push(name);
            let group = out.next_group;
            out.next_group += 1;
            for (route, weight) in &alias.targets {
                push(route.clone(), *weight, group, out);
            }
            for f in &alias.fallbacks {
                self.expand(f, api, out);
            }
        } else if let Some(route) = self.route(name, api) {
            let group = out.next_group;
            out.next_group += 1;
            push(route, 1.0, group, out);
        }
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.by_name.get(name)
    }

    /// The provider unmatched models go to.
    pub fn default_provider(&self) -> Option<&Arc<Provider>> {
        self.default.as_ref()
    }

    /// Providers by name.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.by_name.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, default: bool) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            base_url: format!("https://{name}.example/v1"),
            api_key: Some("sk".into()),
            default,
            headers: vec![],
            models: vec![],
            kind: ProviderKind::OpenAi,
            apis: ProviderKind::OpenAi.default_apis(),
        }
    }

    #[test]
    fn prefix_default_and_not_found() {
        let r = Router::new(
            &[provider("openai", false), provider("openrouter", true)],
            &[],
        )
        .unwrap();
        let a = r.route("openai/gpt-4o", Api::Chat).unwrap();
        assert_eq!(
            (a.provider.name.as_str(), a.upstream_model.as_str()),
            ("openai", "gpt-4o")
        );
        assert_eq!(
            a.provider.url(Api::Chat).unwrap().to_string(),
            "https://openai.example/v1/chat/completions"
        );
        assert_eq!(
            a.provider.url(Api::Responses).unwrap().to_string(),
            "https://openai.example/v1/responses"
        );
        assert!(a.provider.url(Api::Messages).is_none());
        assert!(!a.provider.serves(Api::Messages));
        assert_eq!(a.provider.auth[0].0, http::header::AUTHORIZATION);
        // Unknown prefixes go to the default provider unchanged.
        let b = r.route("anthropic/claude-sonnet-4", Api::Chat).unwrap();
        assert_eq!(
            (b.provider.name.as_str(), b.upstream_model.as_str()),
            ("openrouter", "anthropic/claude-sonnet-4")
        );
        let c = r.route("gpt-4o", Api::Chat).unwrap();
        assert_eq!(c.upstream_model, "gpt-4o");
        // Models may contain more slashes.
        assert_eq!(
            r.route("openai/ft:gpt-4o/x", Api::Chat)
                .unwrap()
                .upstream_model,
            "ft:gpt-4o/x"
        );
        // Empty rest is not a provider route.
        assert_eq!(
            r.route("openai/", Api::Chat).unwrap().provider.name,
            "openrouter"
        );

        let mut anthropic = provider("anthropic", false);
        anthropic.kind = ProviderKind::Anthropic;
        anthropic.apis = ProviderKind::Anthropic.default_apis();
        let r = Router::new(&[anthropic], &[]).unwrap();
        let p = r
            .route("anthropic/claude-sonnet-4-5", Api::Messages)
            .unwrap()
            .provider;
        assert_eq!(
            p.url(Api::Messages).unwrap().to_string(),
            "https://anthropic.example/v1/messages"
        );
        assert!(!p.serves(Api::Chat));
        assert_eq!(p.auth[0].0.as_str(), "x-api-key");
        assert_eq!(p.auth[0].1, "sk");

        // Bare model names on an API the default provider does not serve go to the one
        // provider that serves it.
        let mut claude = provider("claude", false);
        claude.kind = ProviderKind::Anthropic;
        claude.apis = ProviderKind::Anthropic.default_apis();
        let r = Router::new(&[provider("openai", true), claude], &[]).unwrap();
        let m = r
            .route("claude-sonnet-4-5-20250929", Api::Messages)
            .unwrap();
        assert_eq!(
            (m.provider.name.as_str(), m.upstream_model.as_str()),
            ("claude", "claude-sonnet-4-5-20250929")
        );
        assert_eq!(
            r.route("gpt-4o", Api::Chat).unwrap().provider.name,
            "openai"
        );

        let no_default = Router::new(&[provider("openai", false)], &[]).unwrap();
        assert!(matches!(
            no_default.plan("gpt-4o", &[], Api::Chat),
            Err(ProxyError::ModelNotFound(_))
        ));
        assert!(no_default.route("gpt-4o", Api::Chat).is_none());
        assert!(no_default.route("other/gpt-4o", Api::Chat).is_none());
    }

    #[test]
    fn plans_expand_aliases_fallbacks_and_the_models_list() {
        let mut claude = provider("claude", false);
        claude.kind = ProviderKind::Anthropic;
        claude.apis = ProviderKind::Anthropic.default_apis();
        let models = vec![
            ModelAlias {
                name: "smart".into(),
                targets: vec![
                    beacon_config::AliasTarget {
                        provider: "openai".into(),
                        model: "gpt-4o".into(),
                        weight: 3.0,
                    },
                    beacon_config::AliasTarget {
                        provider: "claude".into(),
                        model: "claude-sonnet-4-5".into(),
                        weight: 1.0,
                    },
                ],
                fallbacks: vec!["backup".into(), "openai/gpt-4o-mini".into()],
            },
            ModelAlias {
                name: "backup".into(),
                targets: vec![beacon_config::AliasTarget {
                    provider: "openai".into(),
                    model: "gpt-4.1".into(),
                    weight: 1.0,
                }],
                // Points back at `smart`: expanded once, never looped.
                fallbacks: vec!["smart".into()],
            },
        ];
        let r = Router::new(&[provider("openai", false), claude], &models).unwrap();
        let names = |p: &Plan| {
            p.candidates
                .iter()
                .map(|c| {
                    (
                        c.route.provider.name.clone(),
                        c.route.upstream_model.clone(),
                        c.group,
                    )
                })
                .collect::<Vec<_>>()
        };
        let chat = r
            .plan("smart", &["openai/o3".to_string()], Api::Chat)
            .unwrap();
        let s = |a: &str, b: &str, g: u32| (a.to_string(), b.to_string(), g);
        assert_eq!(
            names(&chat),
            [
                // The Anthropic target does not serve chat: left out.
                s("openai", "gpt-4o", 0),
                s("openai", "gpt-4.1", 1),
                s("openai", "gpt-4o-mini", 2),
                s("openai", "o3", 3),
            ]
        );
        assert_eq!(chat.candidates[0].weight, 3.0);
        let messages = r.plan("smart", &[], Api::Messages).unwrap();
        assert_eq!(names(&messages), [s("claude", "claude-sonnet-4-5", 0)]);
        assert!(matches!(
            r.plan("openai/gpt-4o", &[], Api::Messages),
            Err(ProxyError::UnsupportedApi { .. })
        ));
        assert!(matches!(
            r.plan("nowhere/x", &["also/nowhere".to_string()], Api::Chat),
            Err(ProxyError::ModelNotFound(_))
        ));
        // A plain model is one candidate.
        assert_eq!(
            names(&r.plan("openai/gpt-4o", &[], Api::Chat).unwrap()),
            [s("openai", "gpt-4o", 0)]
        );
    }
}
