//! The `mcp-gateway` command line: serve over HTTP or stdio, check a config, manage servers.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::{
    Gateway,
    config::{self, Config, interpolate::Vars},
    front,
    store::Store,
    upstream::launch::ChildProcessLauncher,
};

#[derive(Parser)]
#[command(
    name = "mcp-gateway",
    version,
    about = "An MCP gateway that verifies and aggregates MCP servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over Streamable HTTP.
    Serve {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// Override `listen.bind` (e.g. `127.0.0.1:0` to pick a free port; the address is printed).
        #[arg(long)]
        bind: Option<std::net::SocketAddr>,
    },
    /// Serve MCP over stdin and stdout, for clients that launch a command.
    Stdio {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Check a configuration file; exits non-zero with the file, line and key of the first error.
    CheckConfig {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Register the servers of a Claude Desktop / Cursor / VS Code `mcpServers` file in the database.
    ImportServers {
        /// The JSON file, unchanged.
        file: PathBuf,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List or remove registered servers.
    Servers {
        #[command(subcommand)]
        command: ServersCommand,
    },
    /// Print the JSON Schema of gateway.toml.
    ConfigSchema,
    /// Run the bundled demo MCP server over stdio.
    DemoServer,
}

#[derive(Subcommand)]
enum ServersCommand {
    /// Every server in the database, from the config or imported.
    List {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove an imported server.
    Remove {
        name: String,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mcp-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcp-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr in every mode: in `stdio` mode stdout carries only MCP messages.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve { config, bind } => {
            let (gateway, _store) = start(&config).await?;
            let address = bind.unwrap_or(gateway.config.listen.bind);
            let listener = front::http::bind(address)
                .await
                .with_context(|| format!("cannot bind {address}"))?;
            let local = listener.local_addr()?;
            tracing::info!(
                "serving MCP at http://{local}{} (health: /healthz, readiness: /readyz)",
                gateway.config.listen.path
            );
            let ready = gateway.clone();
            let connect_timeout = gateway.config.routing.connect_timeout;
            tokio::spawn(async move {
                // Scripts read the address from this line (they may have asked for port 0) and
                // take it as the signal that the upstreams are connected, so it waits for them,
                // up to the connect timeout; the socket already accepts requests meanwhile.
                let _ = tokio::time::timeout(connect_timeout, ready.wait_ready()).await;
                println!("listening on http://{local}{}", ready.config.listen.path);
            });
            let shutdown = gateway.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                shutdown.shutdown();
            });
            front::http::serve(gateway.clone(), listener).await?;
            gateway.stop(STOP_LIMIT).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Stdio { config } => {
            let (gateway, _store) = start(&config).await?;
            let serving = front::stdio::serve(gateway.clone());
            tokio::select! {
                result = serving => result?,
                _ = shutdown_signal() => tracing::info!("shutting down"),
            }
            gateway.stop(STOP_LIMIT).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config, json } => match Config::load(&config) {
            Ok(loaded) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"ok": true, "file": config, "servers": loaded.servers.iter().map(|s| &s.name).collect::<Vec<_>>()})
                    );
                } else {
                    println!(
                        "{}: ok ({} servers)",
                        config.display(),
                        loaded.servers.len()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"ok": false, "file": e.file, "line": e.line, "error": e.message})
                    );
                } else {
                    eprintln!("{e}");
                }
                Ok(ExitCode::FAILURE)
            }
        },
        Command::ImportServers { file, config, json } => {
            let loaded = Config::load(&config)?;
            let servers = config::import::read_mcp_servers(&file)?;
            let base = file
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_owned();
            // Validate everything before writing anything, so a bad entry imports nothing.
            for (name, raw) in &servers {
                config::validate_server(
                    name,
                    raw,
                    &base,
                    &Vars::from_env(),
                    loaded.routing.call_timeout,
                )
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                if loaded.servers.iter().any(|s| &s.name == name) {
                    anyhow::bail!(
                        "{}: server `{name}` is already defined in {}",
                        file.display(),
                        config.display()
                    );
                }
            }
            let store = Store::open(&loaded.storage.database_url).await?;
            for (name, raw) in &servers {
                store.put_imported(name, raw).await?;
            }
            let names: Vec<_> = servers.iter().map(|(n, _)| n.as_str()).collect();
            if json {
                println!("{}", serde_json::json!({"imported": names}));
            } else {
                println!("imported {} servers: {}", names.len(), names.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Servers { command } => match command {
            ServersCommand::List { config, json } => {
                let loaded = Config::load(&config)?;
                let store = Store::open(&loaded.storage.database_url).await?;
                store.record_config_servers(&loaded.servers).await?;
                let servers = store.servers().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&servers)?);
                } else {
                    for server in servers {
                        println!("{:<24} {:<7} {}", server.name, server.source, server.spec);
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            ServersCommand::Remove { name, config, json } => {
                let loaded = Config::load(&config)?;
                if loaded.servers.iter().any(|s| s.name == name) {
                    anyhow::bail!(
                        "server `{name}` is defined in {}; remove it there",
                        config.display()
                    );
                }
                let store = Store::open(&loaded.storage.database_url).await?;
                let removed = store.remove(&name).await?;
                if json {
                    println!("{}", serde_json::json!({"removed": removed, "name": name}));
                } else if removed {
                    println!("removed {name}");
                } else {
                    println!("no server named {name}");
                }
                Ok(if removed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
        },
        Command::ConfigSchema => {
            println!("{}", serde_json::to_string_pretty(&config::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::DemoServer => {
            gateway::demo::serve_stdio().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How long shutdown waits for upstreams to stop before the process exits anyway.
const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// SIGINT (Ctrl-C) or SIGTERM (systemd, Kubernetes).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Loads the config, opens the database, adds the imported servers and starts the gateway.
async fn start(path: &std::path::Path) -> anyhow::Result<(Arc<Gateway>, Store)> {
    let mut config = Config::load(path)?;
    let store = Store::open(&config.storage.database_url).await?;
    store.record_config_servers(&config.servers).await?;
    let base = path
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    for (name, raw) in store.imported().await? {
        if config.servers.iter().any(|s| s.name == name) {
            tracing::warn!(server = %name, "an imported server has the name of a configured one; the configured one wins");
            continue;
        }
        let spec = config::validate_server(
            &name,
            &raw,
            &base,
            &Vars::from_env(),
            config.routing.call_timeout,
        )
        .map_err(|e| anyhow::anyhow!("imported server in the database: {e}"))?;
        config.servers.push(spec);
    }
    if config.routing.pass_through && config.servers.iter().filter(|s| s.enabled).count() != 1 {
        anyhow::bail!(
            "{}: routing.pass_through requires exactly one enabled server, counting imported ones",
            path.display()
        );
    }
    let gateway = Gateway::start(config, Arc::new(ChildProcessLauncher));
    Ok((gateway, store))
}
