//! Operator helpers on the command line, talking to the store directly: create and list
//! tenants, create, list and revoke keys, create (after a passing Test Connection), list
//! and delete destinations (secrets redacted).

use std::path::PathBuf;
use std::process::ExitCode;

use beacon_config::Config;
use beacon_store::{Role, SecretBox, Store};
use clap::{Args, Subcommand, ValueEnum};

/// Where the store is: the config file's `store.url`, or the embedded default.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// TOML config file whose `store.url` to use (default: the embedded default, ./beacon.db).
    #[arg(long, short, env = "BEACON_CONFIG")]
    config: Option<PathBuf>,
}

/// `beacon tenant …`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Tenant id (lowercase letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        id: String,
        /// Display name (default: the id).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tenants.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// A key's role.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Completions.
    Client,
    /// The tenant's admin routes and console.
    Management,
}

/// `beacon key …`
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key and print its plaintext (shown only now).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// Display name.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Role.
        #[arg(long, value_enum, default_value_t = RoleArg::Client)]
        role: RoleArg,
    },
    /// List a tenant's keys.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// Key id (`key_…`).
        #[arg(long)]
        id: String,
    },
}

/// `beacon destination …`
#[derive(Debug, Subcommand)]
pub enum DestinationCommand {
    /// List a tenant's destinations.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Test a destination and store it only if the test passes (one real test span is sent).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// Destination type: sentry, otlp, langfuse, langsmith, honeycomb, grafana_cloud,
        /// datadog, phoenix or webhook (`GET /admin/v1/destination-types` lists their fields).
        #[arg(long = "type")]
        kind: String,
        /// Display name, unique within the tenant.
        #[arg(long)]
        name: String,
        /// Sentry: the project's OTLP traces endpoint
        /// (https://…/api/<project>/integration/otlp/v1/traces).
        #[arg(long)]
        otlp_endpoint: Option<String>,
        /// Sentry: the project's DSN (https://<key>@…/<project>).
        #[arg(long)]
        dsn: Option<String>,
        /// OTLP: the traces endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// OTLP: a request header, `name=value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Any field of the type, `name=value` (repeatable): `--field public_key=pk-lf-…`.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Export no prompt or completion text.
        #[arg(long)]
        privacy_mode: bool,
        /// Fraction of sessions (or requests) exported, 0.0001 to 1.
        #[arg(long, default_value_t = 1.0)]
        sampling_rate: f64,
        /// Export only completions made with this key id or name (repeatable).
        #[arg(long = "api-key")]
        api_keys: Vec<String>,
    },
    /// Delete a destination.
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        /// Owning tenant.
        #[arg(long)]
        tenant: String,
        /// Destination id (`dst_…`).
        #[arg(long)]
        id: String,
    },
}

/// Any of the above.
#[derive(Debug)]
pub enum Command {
    /// `beacon tenant`.
    Tenant(TenantCommand),
    /// `beacon key`.
    Key(KeyCommand),
    /// `beacon destination`.
    Destination(DestinationCommand),
}

/// Runs a command and maps errors to exit codes (2: bad input or config, 1: store failure).
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(lines) => {
            for line in lines {
                output(&line);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("beacon: {e}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)] // the command's output is its product
fn output(line: &str) {
    println!("{line}");
}

async fn open(args: &StoreArgs) -> Result<Store, String> {
    Ok(open_with_config(args).await?.1)
}

async fn open_with_config(args: &StoreArgs) -> Result<(Config, Store), String> {
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Config::from_env(&|k| std::env::var(k).ok()),
    }
    .map_err(|e| e.to_string())?;
    let secrets = SecretBox::for_store(&config.store.url).map_err(|e| e.to_string())?;
    let store = Store::open(&config.store.url, secrets)
        .await
        .map_err(|e| e.to_string())?;
    Ok((config, store))
}

async fn execute(command: Command) -> Result<Vec<String>, String> {
    let e = |e: beacon_store::StoreError| e.to_string();
    match command {
        Command::Tenant(TenantCommand::Create { store, id, name }) => {
            if !beacon_admin::routes::valid_tenant_id(&id) {
                return Err("--id: must be lowercase letters, digits, `-`, `_` or `.`".into());
            }
            let t = open(&store)
                .await?
                .create_tenant(&id, name.as_deref().unwrap_or(&id))
                .await
                .map_err(e)?;
            Ok(vec![format!("created tenant {} ({})", t.id, t.name)])
        }
        Command::Tenant(TenantCommand::List { store }) => Ok(open(&store)
            .await?
            .list_tenants()
            .await
            .map_err(e)?
            .into_iter()
            .map(|t| {
                format!(
                    "{}\t{}\tbroadcast={}",
                    t.id,
                    t.name,
                    if t.broadcast_enabled { "on" } else { "off" }
                )
            })
            .collect()),
        Command::Key(KeyCommand::Create {
            store,
            tenant,
            name,
            role,
        }) => {
            let role = match role {
                RoleArg::Client => Role::Client,
                RoleArg::Management => Role::Management,
            };
            let (key, plaintext) = open(&store)
                .await?
                .create_key(&tenant, &name, role)
                .await
                .map_err(e)?;
            Ok(vec![
                format!(
                    "key {} ({}, {}) for tenant {}:",
                    key.id,
                    key.name,
                    key.role.as_str(),
                    key.tenant_id
                ),
                plaintext,
                "Store it now: only its hash is kept.".into(),
            ])
        }
        Command::Key(KeyCommand::List { store, tenant }) => Ok(open(&store)
            .await?
            .list_keys(&tenant)
            .await
            .map_err(e)?
            .into_iter()
            .map(|k| {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                format!("{}\t{}\t{}\t{state}", k.id, k.name, k.role.as_str())
            })
            .collect()),
        Command::Key(KeyCommand::Revoke { store, tenant, id }) => {
            open(&store)
                .await?
                .revoke_key(&tenant, &id)
                .await
                .map_err(e)?;
            Ok(vec![format!("revoked {id}")])
        }
        Command::Destination(DestinationCommand::Create {
            store,
            tenant,
            kind,
            name,
            otlp_endpoint,
            dsn,
            endpoint,
            headers,
            fields,
            privacy_mode,
            sampling_rate,
            api_keys,
        }) => {
            let mut header_map = serde_json::Map::new();
            for h in headers {
                let (k, v) = h
                    .split_once('=')
                    .ok_or_else(|| format!("--header {h}: expected name=value"))?;
                header_map.insert(k.trim().to_string(), v.trim().into());
            }
            let mut body = serde_json::json!({
                "type": kind,
                "name": name,
                "privacy_mode": privacy_mode,
                "sampling_rate": sampling_rate,
                "api_keys": api_keys,
            });
            for (k, v) in [
                ("otlp_endpoint", otlp_endpoint),
                ("dsn", dsn),
                ("endpoint", endpoint),
            ] {
                if let Some(v) = v {
                    body[k] = v.into();
                }
            }
            if !header_map.is_empty() {
                body["headers"] = header_map.into();
            }
            for f in fields {
                let (k, v) = f
                    .split_once('=')
                    .ok_or_else(|| format!("--field {f}: expected name=value"))?;
                body[k.trim()] = v.trim().into();
            }
            let (config, store) = open_with_config(&store).await?;
            let manager = crate::destination_manager(&config, store)?;
            match manager.create(&tenant, body).await {
                Ok((d, report)) => Ok(vec![
                    format!(
                        "Test Connection passed (HTTP {}, {} ms): {}",
                        report.status.unwrap_or(0),
                        report.latency_ms,
                        report.message
                    ),
                    format!(
                        "created destination {} ({}) for tenant {tenant}",
                        d.id, d.config.name
                    ),
                ]),
                Err(beacon_admin::AdminError::TestFailed(report)) => Err(format!(
                    "Test Connection failed, nothing saved: {}{}",
                    report
                        .status
                        .map(|s| format!("HTTP {s}: "))
                        .unwrap_or_default(),
                    report.message
                )),
                Err(e) => Err(e.to_string()),
            }
        }
        Command::Destination(DestinationCommand::Delete { store, tenant, id }) => {
            open(&store)
                .await?
                .delete_destination(&tenant, &id)
                .await
                .map_err(e)?;
            Ok(vec![format!("deleted destination {id}")])
        }
        Command::Destination(DestinationCommand::List { store, tenant }) => Ok(open(&store)
            .await?
            .list_destinations(&tenant)
            .await
            .map_err(e)?
            .into_iter()
            .map(|d| {
                let shown = beacon_broadcast::destination::redacted_fields(
                    &d.config.type_name,
                    &d.config.fields,
                );
                let target = format!(
                    "{} {}",
                    d.config.type_name,
                    serde_json::Value::Object(shown)
                );
                format!(
                    "{}\t{}\t{target}\tenabled={}",
                    d.id, d.config.name, d.config.enabled
                )
            })
            .collect()),
    }
}
