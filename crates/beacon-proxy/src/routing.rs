//! Model routing (SPEC §2): `P/REST` goes to provider `P` as `REST`; anything else goes to
//! the default provider unchanged; otherwise the model is not found.

use std::collections::HashMap;
use std::sync::Arc;

use beacon_config::ProviderConfig;

/// Where a model goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The provider.
    pub provider: Arc<Provider>,
    /// The model id sent upstream.
    pub upstream_model: String,
}

/// A provider ready for requests.
#[derive(Debug, PartialEq, Eq)]
pub struct Provider {
    /// Routing prefix.
    pub name: String,
    /// `{base_url}/chat/completions`, parsed.
    pub chat_url: http::Uri,
    /// `Authorization` value sent upstream, if any.
    pub authorization: Option<http::HeaderValue>,
    /// Extra headers sent upstream.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Advertised models.
    pub models: Vec<String>,
}

/// The routing table.
#[derive(Debug, Default)]
pub struct Router {
    by_name: HashMap<String, Arc<Provider>>,
    default: Option<Arc<Provider>>,
}

/// A provider entry that passed config validation but still cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("providers.{name}: {message}")]
pub struct RouterError {
    name: String,
    message: String,
}

impl Router {
    /// Builds the table from validated provider configs.
    pub fn new(providers: &[ProviderConfig]) -> Result<Self, RouterError> {
        let mut router = Router::default();
        for p in providers {
            let err = |message: String| RouterError {
                name: p.name.clone(),
                message,
            };
            let chat_url: http::Uri = format!("{}/chat/completions", p.base_url)
                .parse()
                .map_err(|e| err(format!("base_url: {e}")))?;
            let authorization = match &p.api_key {
                Some(k) => {
                    let mut v =
                        http::HeaderValue::try_from(format!("Bearer {k}")).map_err(|_| {
                            err("api_key contains characters not allowed in a header".into())
                        })?;
                    v.set_sensitive(true);
                    Some(v)
                }
                None => None,
            };
            let mut headers = Vec::new();
            for (k, v) in &p.headers {
                let name = http::HeaderName::try_from(k.as_str())
                    .map_err(|_| err(format!("headers.{k}: invalid name")))?;
                let value = http::HeaderValue::try_from(v.as_str())
                    .map_err(|_| err(format!("headers.{k}: invalid value")))?;
                headers.push((name, value));
            }
            let provider = Arc::new(Provider {
                name: p.name.clone(),
                chat_url,
                authorization,
                headers,
                models: p.models.clone(),
            });
            if p.default {
                router.default = Some(provider.clone());
            }
            router.by_name.insert(p.name.clone(), provider);
        }
        Ok(router)
    }

    /// Routes a model as the client sent it.
    pub fn route(&self, model: &str) -> Option<Route> {
        if let Some((prefix, rest)) = model.split_once('/') {
            if let Some(p) = self.by_name.get(prefix).filter(|_| !rest.is_empty()) {
                return Some(Route {
                    provider: p.clone(),
                    upstream_model: rest.to_string(),
                });
            }
        }
        self.default.as_ref().map(|p| Route {
            provider: p.clone(),
            upstream_model: model.to_string(),
        })
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
        }
    }

    #[test]
    fn prefix_default_and_not_found() {
        let r = Router::new(&[provider("openai", false), provider("openrouter", true)]).unwrap();
        let a = r.route("openai/gpt-4o").unwrap();
        assert_eq!(
            (a.provider.name.as_str(), a.upstream_model.as_str()),
            ("openai", "gpt-4o")
        );
        assert_eq!(
            a.provider.chat_url.to_string(),
            "https://openai.example/v1/chat/completions"
        );
        // Unknown prefixes go to the default provider unchanged.
        let b = r.route("anthropic/claude-sonnet-4").unwrap();
        assert_eq!(
            (b.provider.name.as_str(), b.upstream_model.as_str()),
            ("openrouter", "anthropic/claude-sonnet-4")
        );
        let c = r.route("gpt-4o").unwrap();
        assert_eq!(c.upstream_model, "gpt-4o");
        // Models may contain more slashes.
        assert_eq!(
            r.route("openai/ft:gpt-4o/x").unwrap().upstream_model,
            "ft:gpt-4o/x"
        );
        // Empty rest is not a provider route.
        assert_eq!(r.route("openai/").unwrap().provider.name, "openrouter");

        let no_default = Router::new(&[provider("openai", false)]).unwrap();
        assert!(no_default.route("gpt-4o").is_none());
        assert!(no_default.route("other/gpt-4o").is_none());
    }
}
