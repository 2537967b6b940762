//! The `beacon` binary: command line, configuration loading, and the wiring of the proxy
//! (hot path) to the broadcast pipeline (export path).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use beacon_config::Config;
use beacon_proxy::auth::Directory;
use clap::{Parser, Subcommand, ValueEnum};

use std::io::Write as _;

mod admin_cli;
mod demo;
mod first_run;
mod ledger_flush;
mod limits_sync;
mod tenants;
mod workers;

/// mimalloc instead of the system allocator: the proxy and the export pipeline allocate and
/// free many small objects across threads, where glibc malloc spends a large share of CPU.
/// Built with `no_thp`: mimalloc otherwise advises transparent huge pages on its arenas, and
/// each touched 2 MiB region then counts whole in RSS (measured: idle 25 → 14 MiB, peak under
/// the 64-connection benchmark 62 → 31 MiB without the tokenizer, same CPU per request).
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
    /// Manage tenants in the store named by the config (`store.url`).
    Tenant {
        #[command(subcommand)]
        command: admin_cli::TenantCommand,
    },
    /// Manage API keys in the store (plaintext is shown once, at creation).
    Key {
        #[command(subcommand)]
        command: admin_cli::KeyCommand,
    },
    /// Inspect broadcast destinations in the store (secrets redacted).
    Destination {
        #[command(subcommand)]
        command: admin_cli::DestinationCommand,
    },
    /// Try Beacon with no account and no network: an echo upstream and an OTLP receiver in
    /// the process, a `demo` tenant and key, and the console's Recent completions view.
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", env = "BEACON_LISTEN")]
        listen: std::net::SocketAddr,
        /// The store (destinations and keys you add in the console are kept here).
        #[arg(long, default_value = "sqlite://beacon-demo.db")]
        store: String,
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
        Command::Tenant { command } => admin_cli::run(admin_cli::Command::Tenant(command)),
        Command::Key { command } => admin_cli::run(admin_cli::Command::Key(command)),
        Command::Destination { command } => {
            admin_cli::run(admin_cli::Command::Destination(command))
        }
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
            run_gateway(Gateway::Config(Box::new(config)))
        }
        Command::Demo { listen, store } => run_gateway(Gateway::Demo { listen, store }),
    }
}

/// What `run_gateway` serves.
enum Gateway {
    /// A loaded config (`beacon serve`).
    Config(Box<Config>),
    /// The demo's own config, made once its in-process servers listen (`beacon demo`).
    Demo {
        listen: std::net::SocketAddr,
        store: String,
    },
}

/// Starts the main runtime and serves until a shutdown signal.
fn run_gateway(gateway: Gateway) -> ExitCode {
    // The main runtime runs the store, the admin API, reloads and signals; the proxy
    // has its own threads (workers.rs) and the export pipeline its own.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("beacon-main")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = async move {
        match gateway {
            Gateway::Config(config) => serve(*config, None).await,
            Gateway::Demo { listen, store } => {
                let (config, running) = demo::start(listen, &store).await?;
                serve(config, Some(running)).await
            }
        }
    };
    match runtime.block_on(serving) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("beacon: {e}");
            ExitCode::FAILURE
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

async fn serve(mut config: Config, demo: Option<demo::Running>) -> Result<(), String> {
    let secrets =
        beacon_store::SecretBox::for_store(&config.store.url).map_err(|e| e.to_string())?;
    // One node without admin.token: an operator token kept beside the database, so the
    // console can be signed into from the first start.
    let local_token = match config.admin.token {
        Some(_) => None,
        None => beacon_store::local_admin_token(&config.store.url).map_err(|e| e.to_string())?,
    };
    if let Some(t) = &local_token {
        config.admin.token = Some(t.token.clone());
    }
    let store = beacon_store::Store::open(&config.store.url, secrets)
        .await
        .map_err(|e| e.to_string())?;
    let generated_key = tenants::sync_declared(&store, &config.tenants)
        .await
        .map_err(|e| e.to_string())?;
    let version = store.change_version().await.map_err(|e| e.to_string())?;
    let tenants_now = tenants::load(&store, &config.tenants)
        .await
        .map_err(|e| e.to_string())?;
    if config.providers.is_empty() {
        tracing::warn!("no providers configured: set OPENAI_API_KEY (or another provider key) or declare [[providers]]");
    }

    let stats = Arc::new(beacon_broadcast::Stats::default());
    let (sender, pipeline) =
        beacon_broadcast::start((&config.broadcast).into(), &tenants_now, stats.clone())
            .map_err(|e| e.to_string())?;
    let metrics = beacon_proxy::metrics::Metrics::new(&stats);
    let directory = Arc::new(Directory::with_tenants(&tenants_now));
    let limits_sync = limits_sync::spawn(directory.clone(), store.clone(), metrics.clone());
    let ledger = pipeline.control().ledger().clone();
    let ledger_store = store.clone();
    let ledger_task = ledger_flush::spawn(
        ledger.clone(),
        store.clone(),
        config.store.usage_retention_days,
        metrics.clone(),
    );
    let reloader = Arc::new(tenants::Reloader::new(
        store.clone(),
        config.tenants.clone(),
        directory.clone(),
        pipeline.control(),
        version,
    ));
    let reload = reloader.clone().spawn_polling();
    let admin = beacon_admin::Admin::new(
        beacon_admin::Authenticator::with_throttle(
            config.admin.token.as_deref(),
            beacon_admin::auth::Throttle::new(
                config.admin.max_failed_auth,
                config.admin.failed_auth_window,
            ),
        ),
        destination_manager(&config, store)?,
        pipeline.control(),
        reloader,
    );
    let admin: Arc<dyn beacon_proxy::Mounted> = Arc::new(workers::OnMainRuntime {
        handle: tokio::runtime::Handle::current(),
        inner: Arc::new(admin),
    });
    // The tokenizer tables (~60 MiB for o200k_base and cl100k_base) are loaded the first
    // time an upstream reports no usage, not at start: most never need them.

    let listeners = workers::bind(config.server.listen, config.server.workers)
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let mut apps = Vec::with_capacity(listeners.len());
    // Cooldowns are per node: every proxy thread sees the same targets' health.
    let health = Arc::new(beacon_proxy::routing::plan::Health::new(
        config.routing.cooldown_failures,
        config.routing.cooldown,
    ));
    for _ in &listeners {
        let app =
            beacon_proxy::App::new(&config, sender.clone(), metrics.clone(), directory.clone())
                .map_err(|e| e.to_string())?
                .with_health(health.clone())
                .mount(admin.clone());
        apps.push(Arc::new(app));
    }
    drop(sender);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let threads = workers::spawn(
        listeners,
        apps,
        stopped,
        beacon_proxy::server::Settings::from_config(&config.server),
    )
    .map_err(|e| format!("cannot start the proxy threads: {e}"))?;
    tracing::info!(
        addr = %addr,
        version = env!("CARGO_PKG_VERSION"),
        workers = threads.len(),
        providers = config.providers.len(),
        keys = directory.key_count(),
        "listening"
    );
    if directory.key_count() == 0 {
        let tenant = tenants_now.first().map_or("default", |t| t.id.as_str());
        tracing::warn!("no usable client keys: every request gets 401; create one with `beacon key create --tenant {tenant}` (add --config FILE for a config's store), or set BEACON_API_KEYS");
    }
    // The one thing on stdout (logs go to stderr): the next step for a first run.
    let _ = writeln!(
        std::io::stdout().lock(),
        "{}",
        first_run::block(&first_run::Facts {
            addr,
            config: &config,
            local_token: local_token.as_ref(),
            generated_key: generated_key.as_deref(),
            demo: demo.as_ref(),
            env_key: std::env::var("BEACON_API_KEYS").ok().and_then(|k| k
                .split(',')
                .map(str::trim)
                .find(|k| !k.is_empty())
                .map(String::from)),
        })
    );
    shutdown_signal().await;
    let _ = stop.send(true);
    // Each worker drains its connections for up to the grace period; connections cut then
    // still hold meters, whose records are counted as shutdown drops once the queue closes.
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    reload.abort();
    limits_sync.abort();
    ledger_task.abort();
    // Records whose large token estimate is still running are submitted before the queue
    // closes (bounded by the broadcast shutdown deadline).
    let deadline = config.broadcast.shutdown_deadline;
    let flushed =
        tokio::task::spawn_blocking(move || beacon_proxy::meter::estimate::flush(deadline))
            .await
            .unwrap_or(false);
    if !flushed {
        tracing::warn!("token estimates still running at shutdown; their records are counted as shutdown drops");
    }
    pipeline
        .shutdown()
        .await
        .map_err(|e| format!("the broadcast pipeline failed at shutdown: {e}"))?;
    // Every record the pipeline took in is counted: the last rows go to the store now.
    if let Err(e) = ledger_flush::flush(&ledger, &ledger_store).await {
        tracing::warn!(error = %e, "the usage ledger's last rows could not be written");
    }
    if let Some(d) = &demo {
        use std::sync::atomic::Ordering;
        tracing::info!(
            exports = d.received.requests.load(Ordering::Relaxed),
            spans = d.received.spans.load(Ordering::Relaxed),
            "the demo's OTLP receiver took these in"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// What Test Connection and destination changes need, for the admin API and the CLI.
pub(crate) fn destination_manager(
    config: &Config,
    store: beacon_store::Store,
) -> Result<beacon_admin::Manager, String> {
    let client = beacon_broadcast::sink::http::client(
        config.server.connect_timeout,
        config.broadcast.allow_private_destinations,
    )
    .map_err(|e| format!("TLS setup failed: {e}"))?;
    Ok(beacon_admin::Manager::new(
        store,
        config.tenants.clone(),
        client,
        config.broadcast.allow_private_destinations,
        config.broadcast.export_timeout,
    ))
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
