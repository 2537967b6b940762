//! What `beacon serve` prints on stdout once it listens: where the gateway and the console
//! are, how to sign in, and a request that works — the next step for someone who just ran
//! the Quick start. Logs go to stderr; this block is the one thing on stdout.

use std::net::SocketAddr;

use beacon_config::{Config, ProviderKind};
use beacon_store::LocalAdminToken;

/// What the block is made from.
pub struct Facts<'a> {
    /// The bound address.
    pub addr: SocketAddr,
    /// The running config.
    pub config: &'a Config,
    /// The operator token kept beside a SQLite database, when that is the console's.
    pub local_token: Option<&'a LocalAdminToken>,
    /// A key created at this start (tenant `default` of an empty store), shown only now.
    pub generated_key: Option<&'a str>,
    /// The first of `BEACON_API_KEYS`, when set.
    pub env_key: Option<String>,
    /// What `beacon demo` started, when this is the demo.
    pub demo: Option<&'a crate::demo::Running>,
}

/// The block, as printed.
pub fn block(f: &Facts<'_>) -> String {
    // A wildcard bind is reached through loopback from this machine.
    let host = match f.addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        a => a.to_string(),
    };
    let base = format!("http://{host}");
    let sign_in = match (f.local_token, &f.config.admin.token) {
        (Some(t), _) if t.generated => format!(
            "admin token {} (generated now and kept in {}; it is not shown again)",
            t.token, t.path
        ),
        (Some(t), _) => format!("the admin token in {}", t.path),
        (None, Some(_)) => "the admin token (BEACON_ADMIN_TOKEN / admin.token)".to_string(),
        (None, None) => {
            "a tenant's management key (set BEACON_ADMIN_TOKEN for operator access)".to_string()
        }
    };
    let (key, key_line) = match (f.generated_key, &f.env_key) {
        _ if f.demo.is_some() => {
            let k = f.demo.map(|d| d.key.clone()).unwrap_or_default();
            (k.clone(), format!("{k} (tenant `demo`, new at every start)"))
        }
        (Some(k), _) => (
            k.to_string(),
            format!("{k} (tenant `default`, created now; stored hashed, not shown again; it also signs into the console)"),
        ),
        (None, Some(k)) => (k.clone(), format!("{k} (from BEACON_API_KEYS)")),
        (None, None) => ("$BEACON_KEY".to_string(), "your tenant key (beacon key create --tenant <id>)".to_string()),
    };
    let providers = &f.config.providers;
    let model = f
        .demo
        .map(|_| crate::demo::MODEL.to_string())
        .or_else(|| {
            providers
                .iter()
                .find(|p| p.name == "openai")
                .map(|_| "openai/gpt-4o-mini".to_string())
        })
        .or_else(|| {
            providers
                .iter()
                .find(|p| p.kind == ProviderKind::OpenAi)
                .map(|p| format!("{}/<model>", p.name))
        });
    let try_it = match model {
        Some(model) => format!(
            "curl -s {base}/v1/chat/completions -H 'authorization: Bearer {key}' -H 'content-type: application/json' -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'"
        ),
        None if providers.is_empty() => {
            "no provider yet: set OPENAI_API_KEY, ANTHROPIC_API_KEY or OPENROUTER_API_KEY (or OLLAMA_BASE_URL) and restart".to_string()
        }
        None => format!(
            "curl -s {base}/v1/messages -H 'x-api-key: {key}' -H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d '{{\"model\":\"{}/claude-sonnet-4-5\",\"max_tokens\":64,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'",
            providers[0].name
        ),
    };
    let demo = f.demo.map_or(String::new(), |d| format!(
        "  Demo     no account, no network: an echo upstream at http://{echo}/v1 answers every request,\n           and tenant `demo` broadcasts its spans to the OTLP receiver at http://{receiver}/v1/traces.\n           Send the request above, then open the console's Recent completions\n           (or GET {base}/admin/v1/tenants/demo/recent) to see its tokens, cost, timings and spans.\n",
        echo = d.echo,
        receiver = d.receiver,
    ));
    format!(
        "\nBeacon {version} is listening{what}.\n\n  Gateway  {base}/v1   (the OpenAI base URL; Anthropic SDKs: {base})\n  Console  {base}/console\n  Sign in  with {sign_in}\n  Key      {key_line}\n  Try it   {try_it}\n{demo}",
        version = env!("CARGO_PKG_VERSION"),
        what = if f.demo.is_some() { " (demo)" } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(env: &[(&str, &str)]) -> Config {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .expect("config")
    }

    #[test]
    fn the_quick_start_gets_a_console_credential_and_a_working_request() {
        let c = config(&[("OPENAI_API_KEY", "sk"), ("BEACON_API_KEYS", "bk-first")]);
        let token = LocalAdminToken {
            token: "bt_abc".into(),
            path: "./beacon.db.admin-token".into(),
            generated: true,
        };
        let text = block(&Facts {
            addr: "0.0.0.0:8080".parse().unwrap(),
            config: &c,
            local_token: Some(&token),
            generated_key: None,
            env_key: Some("bk-first".into()),
            demo: None,
        });
        assert!(text.contains("Gateway  http://127.0.0.1:8080/v1"), "{text}");
        assert!(
            text.contains("Console  http://127.0.0.1:8080/console"),
            "{text}"
        );
        assert!(text.contains("admin token bt_abc (generated now"), "{text}");
        assert!(
            text.contains("Bearer bk-first") && text.contains("openai/gpt-4o-mini"),
            "{text}"
        );
        // Later starts point at the file instead of printing the token.
        let again = LocalAdminToken {
            generated: false,
            ..token
        };
        let text = block(&Facts {
            addr: "127.0.0.1:8080".parse().unwrap(),
            config: &c,
            local_token: Some(&again),
            generated_key: None,
            env_key: None,
            demo: None,
        });
        assert!(
            !text.contains("bt_abc") && text.contains("./beacon.db.admin-token"),
            "{text}"
        );
        assert!(text.contains("$BEACON_KEY"), "{text}");
    }

    #[test]
    fn anthropic_only_and_no_provider() {
        let c = config(&[("ANTHROPIC_API_KEY", "sk-ant")]);
        let text = block(&Facts {
            addr: "127.0.0.1:9000".parse().unwrap(),
            config: &c,
            local_token: None,
            generated_key: Some("bk-gen"),
            env_key: None,
            demo: None,
        });
        assert!(
            text.contains("/v1/messages") && text.contains("x-api-key: bk-gen"),
            "{text}"
        );
        assert!(text.contains("created now"), "{text}");
        let none = config(&[]);
        let text = block(&Facts {
            addr: "127.0.0.1:9000".parse().unwrap(),
            config: &none,
            local_token: None,
            generated_key: None,
            env_key: None,
            demo: None,
        });
        assert!(text.contains("no provider yet"), "{text}");
    }
}
