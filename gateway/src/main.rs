//! The `mcp-gateway` command line: serve over HTTP or stdio, check a config, manage servers.

mod access_cli;
mod audit_cli;

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::{
    Gateway,
    config::{self, Config, interpolate::Vars},
    front,
    store::Store,
    upstream::launch::RunnerLauncher,
};

/// A call allocates and frees many small buffers on several threads; glibc's allocator was
/// about a sixth of the gateway's CPU under load (see docs/benchmarks.md, 2026-12-06).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// The file to check, instead of `--config`.
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show what each sandbox tier can do on this host, the tier each stdio server asks for,
    /// and, when the gateway of this config is running, its `/readyz`.
    Status {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
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
    /// Generate SchemaPin keys, or print a key's fingerprint.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// List tool definitions and their trust state; approve or reject quarantined ones.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Revoke a SchemaPin key: tools signed with it are rejected from then on, also by a
    /// running gateway. `--list` shows the revoked keys.
    Revoke {
        /// The key: its `sha256:` fingerprint, or a PEM file.
        key: Option<String>,
        /// `key_compromise`, `superseded`, `cessation_of_operation`, `privilege_withdrawn`, or
        /// your own words.
        #[arg(long, default_value = "key_compromise")]
        reason: String,
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        /// List the revoked keys instead.
        #[arg(long)]
        list: bool,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// SchemaPin trust bundles, for offline and air-gapped verification.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Verify, export, query or replay the audit trail.
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
    /// Create, list and revoke the API keys of clients.
    Clients {
        #[command(subcommand)]
        command: access_cli::ClientsCommand,
    },
    /// Check a Cedar policy file, or explain the decision on one request.
    Policy {
        #[command(subcommand)]
        command: access_cli::PolicyCommand,
    },
    /// List, add, rotate or remove pinned SchemaPin keys.
    Pins {
        #[command(subcommand)]
        command: PinsCommand,
    },
    /// Sign a tool schema with a SchemaPin private key (output as `schemapin-sign` writes it).
    Sign {
        /// Private key, PEM PKCS#8.
        #[arg(long)]
        key: PathBuf,
        /// The schema to sign, JSON.
        #[arg(long)]
        schema: PathBuf,
        /// Where to write the signed schema; stdout by default.
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        /// Accepted for compatibility with `schemapin-sign`; nothing is left out either way.
        #[arg(long, short, hide = true)]
        quiet: bool,
        /// Accepted for compatibility with `schemapin-sign`, which checks for JSON-Schema fields.
        #[arg(long, hide = true)]
        no_validate: bool,
    },
    /// Verify a signed schema against a public key; exits 0 only when the signature is valid.
    Verify {
        /// The signed schema, `{"schema", "signature", ...}`.
        #[arg(long)]
        schema: PathBuf,
        /// Public key, PEM SubjectPublicKeyInfo.
        #[arg(long)]
        public_key: PathBuf,
        /// Also accept signatures made over the schema hash directly (SchemaPin's Go SDK).
        #[arg(long)]
        allow_single_hash: bool,
        #[arg(long)]
        json: bool,
        /// Accepted for compatibility with `schemapin-verify`; the exit code always tells.
        #[arg(long, hide = true)]
        exit_code: bool,
        #[arg(long, short, hide = true)]
        quiet: bool,
    },
    /// Run the bundled demo MCP server over stdio.
    DemoServer,
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Fetch the `.well-known/schemapin.json` (and standalone revocation document) of each
    /// domain into one bundle, in SchemaPin's format.
    Export {
        #[arg(long = "domain", required = true)]
        domains: Vec<String>,
        #[arg(long)]
        output: PathBuf,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a bundle and copy it into the data directory, where the gateway reads it at start.
    Import {
        file: PathBuf,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ToolsCommand {
    /// Every recorded tool definition, or those in one state.
    List {
        /// `pinned`, `quarantined`, `rejected` or `superseded`.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Approve the quarantined definition of a tool: it is served from then on. Shows the diff
    /// against the definition pinned before.
    Approve {
        server: String,
        tool: String,
        /// Who approves it, recorded with it.
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the latest definition a server listed for a tool, without `_meta`: the schema to
    /// sign (`mcp-gateway sign`) for a signed-tools manifest.
    Export {
        server: String,
        tool: String,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Reject the quarantined definition of a tool: it stays hidden.
    Reject {
        server: String,
        tool: String,
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PinsCommand {
    /// Every pinned key.
    List {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Pin a key for a tool and domain. The key must verify a signed schema first: a key is
    /// pinned only after a signature made with it verified.
    Add {
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Replace the pinned key of a tool and domain (also proven by a signed schema).
    Rotate {
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Remove the pin of a tool and domain.
    Remove {
        #[arg(long)]
        tool: String,
        #[arg(long)]
        domain: String,
        /// Who removes it, recorded in the audit log.
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct PinArgs {
    #[arg(long)]
    tool: String,
    #[arg(long)]
    domain: String,
    /// The key to pin, PEM SubjectPublicKeyInfo.
    #[arg(long)]
    public_key: PathBuf,
    /// A schema signed with that key (`{"schema", "signature"}`), proving it.
    #[arg(long)]
    signed_schema: PathBuf,
    /// Who approves the pin, recorded with it.
    #[arg(long, env = "USER", default_value = "unknown")]
    by: String,
    #[arg(long, short, default_value = "gateway.toml")]
    config: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new P-256 key pair: `<prefix>_private.pem` (mode 0600) and `<prefix>_public.pem`.
    Generate {
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        #[arg(long, default_value = "schemapin")]
        prefix: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the `sha256:` fingerprint of a PEM key (public, or the public half of a private key).
    Fingerprint {
        #[arg(long, alias = "private-key")]
        public_key: PathBuf,
        #[arg(long)]
        json: bool,
    },
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
    // `mcp-gateway sandbox-runner ...` is the sandbox runner itself, for a gateway built without
    // the separate binary. It must run before any thread exists, so before the runtime.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "sandbox-runner")
    {
        return sandbox_runner::cli::main_with(std::env::args_os().skip(1));
    }
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            say(format_args!("mcp-gateway: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            say(format_args!("mcp-gateway: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// What is logged without `MCP_GATEWAY_LOG`. rmcp's service loop warns about every error
/// answer it sends or receives: a client's unknown tool, an upstream that no longer knows
/// `ping` (each health check of a 2026-07-28 server). Those are answers, not faults of the
/// gateway, and the gateway records refusals itself; rmcp's other warnings (a Host refused as
/// DNS rebinding, say) stay on.
const DEFAULT_LOG_FILTER: &str = "info,rmcp=warn,rmcp::service=error";

/// Logs go to stderr in every mode: in `stdio` mode stdout carries only MCP messages. Colours
/// only on a terminal (Claude Desktop and Cursor keep stderr in a log file), and not with
/// `NO_COLOR`.
fn init_logging() {
    let (filter, invalid) = match tracing_subscriber::EnvFilter::try_from_env("MCP_GATEWAY_LOG") {
        Ok(filter) => (filter, None),
        Err(e) => (
            tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER),
            std::env::var_os("MCP_GATEWAY_LOG").map(|_| e),
        ),
    };
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(colour)
        .log_internal_errors(false)
        .init();
    if let Some(e) = invalid {
        tracing::warn!(error = %e, "MCP_GATEWAY_LOG is not a valid filter; logging with the default, {DEFAULT_LOG_FILTER}");
    }
}

/// Stderr that drops what it cannot write. A client that launches `mcp-gateway stdio` may close
/// the stderr pipe it gave the gateway; a log line is then lost, and nothing else is.
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// `check-config`: exits 0 with a summary, or non-zero with the file, line and key at fault.
fn check_config(config: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    // What `serve` and `stdio` read besides the config itself: the policy file it names.
    let checked =
        Config::load(config).and_then(
            |loaded| match gateway::policy::PolicyEngine::load_or_default(
                loaded.policy.file.as_ref(),
            ) {
                Ok(_) => Ok(loaded),
                Err(e) => Err(config::ConfigError {
                    file: config.to_owned(),
                    line: None,
                    message: format!("policy.file: {e}"),
                }),
            },
        );
    match checked {
        Ok(loaded) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": config, "servers": loaded.servers.iter().map(|s| &s.name).collect::<Vec<_>>()})
                );
            } else {
                let n = loaded.servers.len();
                println!(
                    "{}: ok ({n} server{})",
                    config.display(),
                    if n == 1 { "" } else { "s" }
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
                say(format_args!("{e}"));
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Hides what an imported server's spec holds literally in `env`, `headers` and `bearer_token`:
/// secrets, as often as not. A value that names a variable (`${TOKEN}`) is shown; the secret is
/// in the environment, not here.
fn redact_secrets(spec: &mut serde_json::Value) {
    fn hide(value: &mut serde_json::Value) {
        if let Some(text) = value.as_str()
            && !text.contains("${")
        {
            *value = serde_json::Value::String("***".to_owned());
        }
    }
    for table in ["env", "headers"] {
        if let Some(values) = spec.get_mut(table).and_then(|t| t.as_object_mut()) {
            values.values_mut().for_each(hide);
        }
    }
    if let Some(token) = spec.get_mut("bearer_token") {
        hide(token);
    }
}

/// Writes a line to stderr, as [`Stderr`] does: never a panic on a closed pipe.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(Stderr, "{line}");
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve { config, bind } => {
            let (gateway, _store) = start(&config, bind).await?;
            let address = gateway.config.listen.bind;
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
            let (gateway, _store) = start(&config, None).await?;
            let serving = front::stdio::serve(gateway.clone());
            tokio::select! {
                result = serving => result?,
                _ = shutdown_signal() => tracing::info!("shutting down"),
            }
            gateway.stop(STOP_LIMIT).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => status(&config).await,
        Command::CheckConfig { config, file, json } => {
            let config = file.unwrap_or(config);
            check_config(&config, json)
        }
        Command::ImportServers { file, config, json } => {
            let loaded = Config::load(&config)?;
            let mut servers = config::import::read_mcp_servers(&file)?;
            // A bare file name has an empty parent: the current directory.
            let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
            let base = std::path::absolute(parent.unwrap_or(std::path::Path::new(".")))?;
            // A relative `cwd` means the directory of the file it was written in, but the stored
            // entry is read at start-up beside the config: it is stored absolute. One that names
            // a variable is resolved when the gateway starts, as in the config itself.
            for (_, raw) in &mut servers {
                if let Some(cwd) = &raw.cwd
                    && std::path::Path::new(cwd).is_relative()
                    && !cwd.contains("${")
                {
                    raw.cwd = Some(base.join(cwd).to_string_lossy().into_owned());
                }
            }
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
                let mut servers = store.servers().await?;
                for server in &mut servers {
                    redact_secrets(&mut server.spec);
                }
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
        Command::Pins { command } => pins(command).await,
        Command::Clients { command } => access_cli::clients(command).await,
        Command::Audit { command } => audit_cli::audit(command).await,
        Command::Policy { command } => access_cli::policy(command).await,
        Command::Tools { command } => tools(command).await,
        Command::Bundle { command } => bundle(command).await,
        Command::Revoke {
            key,
            reason,
            by,
            list,
            config,
            json,
        } => {
            let store = open_store(&config).await?;
            let revocations = store.revocations();
            if list {
                let all = revocations.list().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&all)?);
                } else {
                    for r in all {
                        println!(
                            "{} {} by {} ({})",
                            r.fingerprint, r.reason, r.revoked_by, r.revoked_at
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let key = key.ok_or_else(|| {
                anyhow::anyhow!(
                    "name the key to revoke (a fingerprint or a PEM file), or pass --list"
                )
            })?;
            let fingerprint = if let Some(hex) = key.strip_prefix("sha256:") {
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    anyhow::bail!("`{key}` is not a sha256: fingerprint");
                }
                key.to_ascii_lowercase()
            } else {
                gateway::security::fingerprint(std::path::Path::new(&key))?
            };
            let new = revocations.revoke(&fingerprint, &reason, &by).await?;
            record_cli_event(
                &config,
                &store,
                serde_json::json!({"kind": "key-revoked", "fingerprint": fingerprint, "reason": reason, "by": by}),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "fingerprint": fingerprint, "newly_revoked": new })
                );
            } else if new {
                println!("revoked {fingerprint}");
            } else {
                println!("{fingerprint} was already revoked");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ConfigSchema => {
            println!("{}", serde_json::to_string_pretty(&config::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { command } => match command {
            KeysCommand::Generate {
                output_dir,
                prefix,
                json,
            } => {
                let key = keys::material::generate_schemapin_key()?;
                let written = keys::material::write_key_pair(&key, &output_dir, &prefix)?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "private_key": written.private,
                            "public_key": written.public,
                            "fingerprint": written.fingerprint,
                        })
                    );
                } else {
                    println!("private key: {}", written.private.display());
                    println!("public key:  {}", written.public.display());
                    println!("fingerprint: {}", written.fingerprint);
                }
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::Fingerprint { public_key, json } => {
                let fingerprint = gateway::security::fingerprint(&public_key)?;
                if json {
                    println!("{}", serde_json::json!({ "fingerprint": fingerprint }));
                } else {
                    println!("{fingerprint}");
                }
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Sign {
            key,
            schema,
            output,
            json,
            ..
        } => {
            let signed =
                gateway::security::sign_schema(&key, &schema, &gateway::clock::now_rfc3339())?;
            match &output {
                Some(path) => std::fs::write(path, &signed)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None if !json => print!("{signed}"),
                None => {}
            }
            if json {
                let document: serde_json::Value = serde_json::from_str(&signed)?;
                println!(
                    "{}",
                    serde_json::json!({ "output": output, "signature": document["signature"], "signed": document })
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            schema,
            public_key,
            allow_single_hash,
            json,
            ..
        } => {
            let verification =
                gateway::security::verify_signed(&schema, &public_key, allow_single_hash)?;
            if json {
                println!("{}", serde_json::to_string(&verification)?);
            } else if verification.valid {
                println!("valid: signed by {}", verification.key_fingerprint);
            } else {
                println!(
                    "invalid: {}",
                    verification.error.as_deref().unwrap_or("unknown reason")
                );
            }
            Ok(if verification.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::DemoServer => {
            gateway::demo::serve_stdio().await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn bundle(command: BundleCommand) -> anyhow::Result<ExitCode> {
    match command {
        BundleCommand::Export {
            domains,
            output,
            config,
            json,
        } => {
            let loaded = Config::load(&config)?;
            let client = keys::discovery::DiscoveryClient::new(
                loaded.trust.discovery_timeout,
                loaded.trust.allow_http_loopback_discovery,
            )?;
            let mut documents = Vec::new();
            for domain in &domains {
                let document = client.discover(domain).await?;
                let revocation = client.revocation(&document).await?;
                documents.push((domain.clone(), document, revocation));
            }
            let bundle = keys::bundle::TrustBundle::from_documents(
                &gateway::clock::now_rfc3339(),
                documents,
            );
            std::fs::write(&output, serde_json::to_string_pretty(&bundle)?)
                .with_context(|| format!("cannot write {}", output.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "output": output, "domains": domains })
                );
            } else {
                println!("wrote {} ({} domains)", output.display(), domains.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        BundleCommand::Import { file, config, json } => {
            let loaded = Config::load(&config)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let bundle = keys::bundle::TrustBundle::parse(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let dir = gateway::config::bundle_dir(&loaded.storage.data_dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let name = file
                .file_name()
                .ok_or_else(|| anyhow::anyhow!("{} names no file", file.display()))?;
            let target = dir.join(name);
            std::fs::write(&target, &bytes)
                .with_context(|| format!("cannot write {}", target.display()))?;
            let domains: Vec<_> = bundle.documents.iter().map(|d| d.domain.as_str()).collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "imported": target, "domains": domains })
                );
            } else {
                println!(
                    "imported {} (domains: {}); restart the gateway to use it",
                    target.display(),
                    domains.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn tools(command: ToolsCommand) -> anyhow::Result<ExitCode> {
    use keys::definitions::DefinitionState;
    match command {
        ToolsCommand::List {
            state,
            config,
            json,
        } => {
            let state = match state.as_deref() {
                None => None,
                Some("pinned") => Some(DefinitionState::Pinned),
                Some("quarantined") => Some(DefinitionState::Quarantined),
                Some("rejected") => Some(DefinitionState::Rejected),
                Some("superseded") => Some(DefinitionState::Superseded),
                Some(other) => anyhow::bail!(
                    "unknown state `{other}` (pinned, quarantined, rejected or superseded)"
                ),
            };
            let store = open_store(&config).await?;
            let definitions = store.definitions().list(state).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&definitions)?);
            } else {
                for d in definitions {
                    println!(
                        "{:<20} {:<28} {:<12} {}",
                        d.server,
                        d.tool,
                        d.state.as_str(),
                        d.definition_hash
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::Approve {
            server,
            tool,
            by,
            config,
            json,
        } => {
            let store = open_store(&config).await?;
            let definitions = store.definitions();
            let (pinned, candidate) = definitions.pending(&server, &tool).await?;
            let diff = definition_diff(
                pinned.as_ref().map(|p| p.definition.as_str()),
                &candidate.definition,
            );
            let approved = definitions.approve(&server, &tool, &by).await?;
            record_cli_event(
                &config,
                &store,
                serde_json::json!({"kind": "tool-approved", "server": server, "tool": tool,
                                   "definitionHash": approved.definition_hash, "by": by}),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "approved": approved, "replaced": pinned.map(|p| p.definition_hash), "diff": diff })
                );
            } else {
                print!("{diff}");
                println!("approved {tool} on {server}: {}", approved.definition_hash);
            }
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::Export {
            server,
            tool,
            config,
        } => {
            let store = open_store(&config).await?;
            let latest = store
                .definitions()
                .list(None)
                .await?
                .into_iter()
                .filter(|d| d.server == server && d.tool == tool)
                .max_by_key(|d| d.first_seen)
                .ok_or_else(|| {
                    anyhow::anyhow!("no definition of {tool} on {server} has been seen")
                })?;
            let mut definition: serde_json::Value = serde_json::from_str(&latest.definition)?;
            if let Some(object) = definition.as_object_mut() {
                object.remove("_meta");
            }
            println!("{}", serde_json::to_string_pretty(&definition)?);
            Ok(ExitCode::SUCCESS)
        }
        ToolsCommand::Reject {
            server,
            tool,
            by,
            config,
            json,
        } => {
            let store = open_store(&config).await?;
            let rejected = store.definitions().reject(&server, &tool, &by).await?;
            record_cli_event(
                &config,
                &store,
                serde_json::json!({"kind": "tool-rejected", "server": server, "tool": tool, "by": by}),
            )
            .await?;
            if json {
                println!("{}", serde_json::json!({ "rejected": rejected }));
            } else {
                println!("rejected {tool} on {server}: {}", rejected.definition_hash);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A unified diff of two tool definitions, pretty-printed so each field is its own line.
fn definition_diff(old: Option<&str>, new: &str) -> String {
    let pretty = |json: &str| {
        serde_json::from_str::<serde_json::Value>(json)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| json.to_owned())
            + "\n"
    };
    let old = old.map(pretty).unwrap_or_default();
    let new = pretty(new);
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .header("pinned", "quarantined")
        .to_string()
}

async fn pins(command: PinsCommand) -> anyhow::Result<ExitCode> {
    match command {
        PinsCommand::List { config, json } => {
            let store = open_store(&config).await?;
            let pins = store.pins().list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&pins)?);
            } else {
                for pin in pins {
                    println!(
                        "{:<24} {:<24} {} approved by {}",
                        pin.tool_id,
                        pin.domain,
                        pin.fingerprint,
                        pin.approved_by.as_deref().unwrap_or("trust on first use")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PinsCommand::Add { pin } | PinsCommand::Rotate { pin } => {
            let proof = gateway::security::prove_key(&pin.signed_schema, &pin.public_key, false)?;
            let store = open_store(&pin.config).await?;
            let previous = store
                .pins()
                .set(&pin.tool, &pin.domain, &proof, &pin.by)
                .await?;
            record_cli_event(
                &pin.config,
                &store,
                serde_json::json!({
                    "kind": if previous.is_some() { "pin-rotated" } else { "pin-added" },
                    "tool": pin.tool, "domain": pin.domain, "fingerprint": proof.fingerprint(),
                    "by": pin.by,
                }),
            )
            .await?;
            if pin.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "tool": pin.tool, "domain": pin.domain,
                        "fingerprint": proof.fingerprint(),
                        "replaced": previous.map(|p| p.fingerprint),
                    })
                );
            } else {
                match previous {
                    Some(old) => println!(
                        "rotated {} ({}): {} -> {}",
                        pin.tool,
                        pin.domain,
                        old.fingerprint,
                        proof.fingerprint()
                    ),
                    None => println!(
                        "pinned {} ({}): {}",
                        pin.tool,
                        pin.domain,
                        proof.fingerprint()
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PinsCommand::Remove {
            tool,
            domain,
            by,
            config,
            json,
        } => {
            let store = open_store(&config).await?;
            let removed = store.pins().remove(&tool, &domain, &by).await?;
            if removed {
                record_cli_event(
                    &config,
                    &store,
                    serde_json::json!({"kind": "pin-removed", "tool": tool, "domain": domain, "by": by}),
                )
                .await?;
            }
            if json {
                println!("{}", serde_json::json!({ "removed": removed }));
            } else if removed {
                println!("removed the pin of {tool} ({domain})");
            } else {
                println!("no pin for {tool} ({domain})");
            }
            Ok(if removed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The database named by a config file, for the commands that only read or write state.
async fn open_store(config: &std::path::Path) -> anyhow::Result<Store> {
    Ok(Store::open(&Config::load(config)?.storage.database_url).await?)
}

/// Records what a command changed in the audit trail, as a writer of its own, and waits for
/// the commit: a change the trail does not hold is not reported as done.
pub(crate) async fn record_cli_event(
    config: &std::path::Path,
    store: &Store,
    mut body: serde_json::Value,
) -> anyhow::Result<()> {
    let loaded = Config::load(config)?;
    let audit = gateway::audit::Audit::open(store.pool().clone(), &loaded.storage.data_dir)
        .await
        .map_err(anyhow::Error::msg)?;
    body["time"] = gateway::audit::now_ms().into();
    audit.log.record(&body).await?;
    Ok(())
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
/// Loads the config (with `bind`, `serve --bind`, in place of `listen.bind`) and starts the
/// gateway with the registered servers.
async fn start(
    path: &std::path::Path,
    bind: Option<std::net::SocketAddr>,
) -> anyhow::Result<(Arc<Gateway>, Store)> {
    let mut config = Config::load(path)?;
    if let Some(bind) = bind {
        // Checked as the config's own address is, before any server starts.
        config
            .auth
            .check_bind(bind)
            .map_err(|e| anyhow::anyhow!("{}: --bind: {e}", path.display()))?;
        config.listen.bind = bind;
    }
    let store = Store::open_with(
        &config.storage.database_url,
        config.storage.sqlite_synchronous,
    )
    .await?;
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
        // One imported server that cannot be read now (a variable it names is not set) is left
        // out, not every server: the others, and the config's own, are served.
        match config::validate_server(
            &name,
            &raw,
            &base,
            &Vars::from_env(),
            config.routing.call_timeout,
        ) {
            Ok(spec) => config.servers.push(spec),
            Err(e) => tracing::error!(
                server = %name,
                "an imported server is not served: {e}; set what it needs and restart, or `mcp-gateway servers remove {name}`"
            ),
        }
    }
    if config.routing.pass_through && config.servers.iter().filter(|s| s.enabled).count() != 1 {
        anyhow::bail!(
            "{}: routing.pass_through requires exactly one enabled server, counting imported ones",
            path.display()
        );
    }
    let launcher = Arc::new(RunnerLauncher::new(
        &config.sandbox,
        &config.storage.data_dir,
    ));
    let gateway = Gateway::start(config, launcher, &store)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((gateway, store))
}

/// `mcp-gateway status`: the sandbox tiers of this host, the tier of each stdio server, and the
/// running gateway's `/readyz` when it answers.
async fn status(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    use gateway::upstream::launch::ProcessLauncher;
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let launcher = RunnerLauncher::new(&config.sandbox, &config.storage.data_dir);
    println!("sandbox tiers on this host:");
    match launcher.probe().await {
        Ok(report) => {
            for tier in &report.tiers {
                let state = if tier.available {
                    "available"
                } else {
                    "unavailable"
                };
                println!("  {:<11} {state:<12} {}", tier.tier.as_str(), tier.detail);
            }
            println!("  cgroup controllers: {}", report.cgroups.join(", "));
        }
        Err(e) => println!("  cannot probe: {e}"),
    }
    println!("servers:");
    for server in &config.servers {
        match &server.transport {
            config::TransportSpec::Stdio(spec) => {
                let tier = spec.sandbox.tier.unwrap_or(config.sandbox.tier);
                let fallback = spec
                    .sandbox
                    .fallback
                    .or(config.sandbox.fallback)
                    .map_or_else(|| "none".to_owned(), |t| t.to_string());
                println!(
                    "  {:<20} stdio  tier {tier} (fallback {fallback})",
                    server.name
                );
            }
            config::TransportSpec::Http(spec) => {
                println!("  {:<20} remote {}", server.name, spec.url);
            }
        }
    }
    let url = format!("http://{}/readyz", config.listen.bind);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let answer = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
    {
        Ok(client) => client.get(&url).send().await.ok(),
        Err(_) => None,
    };
    match answer {
        Some(response) => {
            println!("running gateway ({url}, {}):", response.status());
            for line in response.text().await.unwrap_or_default().lines() {
                println!("  {line}");
            }
        }
        None => println!("no gateway answers at {url}"),
    }
    Ok(ExitCode::SUCCESS)
}
