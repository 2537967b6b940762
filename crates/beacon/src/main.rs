//! The `beacon` binary: command line, configuration loading, and the wiring of the proxy
//! (hot path) to the broadcast pipeline (export path).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use beacon_config::{ApiKeyConfig, Config, TenantConfig};
use beacon_proxy::auth::{Directory, Snapshot};
use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of the system allocator: the proxy and the export pipeline allocate and
/// free many small objects across threads, where glibc malloc spends a large share of CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Beacon: an OpenAI-compatible LLM gateway that broadcasts a trace of every completion
/// to each tenant's own observability destinations (Sentry over OTLP first).
#[derive(Debug, Parser)]
#[command(name = "beacon", version)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BEACON_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. Without --config: listen on 127.0.0.1:8080, store in ./beacon.db,
    /// providers from OPENAI_API_KEY, OPENROUTER_API_KEY, GROQ_API_KEY, TOGETHER_API_KEY,
    /// MISTRAL_API_KEY, DEEPSEEK_API_KEY, OLLAMA_BASE_URL; tenant keys from BEACON_API_KEYS.
    /// Log verbosity: BEACON_LOG (e.g. "info", "beacon_proxy=debug").
    Serve {
        /// TOML config file (see docs/configuration.md). `${VAR}` is read from the environment.
        #[arg(long, short, env = "BEACON_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit: 0 when valid, 2 with field-named errors otherwise.
    Check {
        /// TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Check { config } => match Config::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                beacon_broadcast::pipeline::validate_destinations(
                    &c.tenants,
                    c.broadcast.allow_private_destinations,
                )
                .map(|_| c)
                .map_err(|e| format!("{}: invalid configuration:\n  - {e}", config.display()))
            }) {
            Ok(c) => {
                let keys: usize = c.tenants.iter().map(|t| t.api_keys.len()).sum();
                eprintln!(
                    "{}: ok ({} providers, {} tenants, {} keys, {} price overrides)",
                    config.display(),
                    c.providers.len(),
                    c.tenants.len(),
                    keys,
                    c.pricing.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Serve { config } => {
            let loaded = match &config {
                Some(path) => Config::load(path),
                None => Config::from_env(&|k| std::env::var(k).ok()),
            };
            let config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("beacon: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BEACON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(mut config: Config) -> Result<(), String> {
    if config.tenants.is_empty() {
        // A gateway with no keys would refuse everything: make one development key so the
        // embedded default works out of the box, and show it once.
        let key = format!("bk-dev-{}", uuid::Uuid::new_v4().simple());
        tracing::warn!(
            key = %key,
            "no tenants configured: created tenant `default` with this development key (set BEACON_API_KEYS or declare [[tenants]] to choose your own)"
        );
        config.tenants.push(TenantConfig {
            id: "default".into(),
            name: "Default tenant".into(),
            api_keys: vec![ApiKeyConfig::from_plaintext(&key)],
            broadcast: Default::default(),
        });
    }
    if config.providers.is_empty() {
        tracing::warn!("no providers configured: set OPENAI_API_KEY (or another provider key) or declare [[providers]]");
    }

    let stats = Arc::new(beacon_broadcast::Stats::default());
    let (sender, pipeline) =
        beacon_broadcast::start((&config.broadcast).into(), &config.tenants, stats.clone())
            .map_err(|e| e.to_string())?;
    let metrics = beacon_proxy::metrics::Metrics::new(&stats);
    let directory = Arc::new(Directory::new(Snapshot::from_config(&config.tenants)));
    let app =
        beacon_proxy::App::new(&config, sender, metrics, directory).map_err(|e| e.to_string())?;
    let app = Arc::new(app);
    // Load the tokenizer tables off the request path, before the first estimate needs them.
    std::thread::spawn(beacon_proxy::meter::estimate::warm_up);

    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        addr = %addr,
        version = env!("CARGO_PKG_VERSION"),
        providers = config.providers.len(),
        keys = app.directory.key_count(),
        "listening"
    );
    beacon_proxy::server::run(
        listener,
        app.clone(),
        shutdown_signal(),
        config.server.shutdown_grace,
    )
    .await;
    // Connections cut at the end of the grace period still hold meters; their records are
    // counted as shutdown drops once the queue closes.
    drop(app);
    pipeline.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
