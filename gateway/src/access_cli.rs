//! `mcp-gateway clients ...` and `mcp-gateway policy ...`: API keys and policy, for people.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use gateway::{
    config::Config,
    identity::{AuthMethod, Identity, api_keys::validate_client_name},
    policy::{PolicyEngine, Target},
    store::Store,
};

#[derive(Subcommand)]
pub(crate) enum ClientsCommand {
    /// Create an API key for a client. The key is printed once; only its hash is stored.
    Create {
        /// The client's name, as policies and the audit trail call it.
        name: String,
        /// A group the client belongs to (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the API keys (never the keys themselves).
    List {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client's API keys, or only the one with `--prefix`. A running gateway stops
    /// accepting them within 5 seconds.
    Revoke {
        name: String,
        /// The key's prefix as `clients list` shows it.
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Parse a Cedar policy file and validate it against the gateway's schema; exits non-zero
    /// with the file and line of the first error.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Decide one request as the gateway would, and say which policies decided it.
    Explain {
        /// The client. Its groups are those of its API keys, plus any `--group`.
        #[arg(long)]
        client: String,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// The tool, as clients see it (`server__tool`).
        #[arg(long)]
        tool: String,
        /// The call's arguments, a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// The MCP method: `tools/call` or `tools/list`.
        #[arg(long, default_value = "tools/call")]
        action: String,
        /// A policy file to use instead of the config's.
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn clients(command: ClientsCommand) -> anyhow::Result<ExitCode> {
    match command {
        ClientsCommand::Create {
            name,
            groups,
            config,
            json,
        } => {
            validate_client_name(&name).map_err(anyhow::Error::msg)?;
            for group in &groups {
                validate_client_name(group).map_err(|e| anyhow::anyhow!("group: {e}"))?;
            }
            let store = crate::open_store(&config).await?;
            let key = store.api_keys().create(&name, &groups).await?;
            crate::record_cli_event(
                &config,
                &store,
                serde_json::json!({"kind": "client-created", "client": name, "groups": groups}),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"client": name, "groups": groups, "key": key})
                );
            } else {
                println!("{key}");
                eprintln!(
                    "created an API key for {name}; it is shown only now. Clients send it as \
                     `Authorization: Bearer <key>`"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientsCommand::List { config, json } => {
            let keys = crate::open_store(&config).await?.api_keys().list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for key in keys {
                    println!(
                        "{:<24} {:<12} groups={} {}",
                        key.client,
                        key.prefix,
                        key.groups.join(","),
                        match key.revoked_at {
                            Some(at) => format!("revoked at {at}"),
                            None => "active".to_owned(),
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientsCommand::Revoke {
            name,
            prefix,
            config,
            json,
        } => {
            let store = crate::open_store(&config).await?;
            let revoked = store.api_keys().revoke(&name, prefix.as_deref()).await?;
            if revoked > 0 {
                crate::record_cli_event(
                    &config,
                    &store,
                    serde_json::json!({"kind": "client-revoked", "client": name, "keys": revoked}),
                )
                .await?;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"client": name, "revoked": revoked})
                );
            } else {
                println!("revoked {revoked} key(s) of {name}");
            }
            Ok(if revoked > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

pub(crate) async fn policy(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file, json } => match PolicyEngine::load(&file) {
            Ok(engine) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"valid": true, "file": file, "policies": engine.len()})
                    );
                } else {
                    println!("{}: {} policies, valid", file.display(), engine.len());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "valid": false, "file": e.file, "line": e.line, "error": e.message,
                        })
                    );
                } else {
                    eprintln!("{e}");
                }
                Ok(ExitCode::FAILURE)
            }
        },
        PolicyCommand::Explain {
            client,
            mut groups,
            tool,
            args,
            action,
            policy,
            config,
            json,
        } => {
            let loaded = Config::load(&config)?;
            let engine =
                PolicyEngine::load_or_default(policy.as_ref().or(loaded.policy.file.as_ref()))?;
            let arguments: serde_json::Value = serde_json::from_str(&args)
                .map_err(|e| anyhow::anyhow!("--args is not JSON: {e}"))?;
            let arguments = arguments
                .as_object()
                .ok_or_else(|| anyhow::anyhow!("--args must be a JSON object"))?;
            let store = Store::open(&loaded.storage.database_url).await?;
            for key in store.api_keys().list().await? {
                if key.client == client && key.revoked_at.is_none() {
                    groups.extend(key.groups);
                }
            }
            groups.sort();
            groups.dedup();
            let separator = &loaded.routing.separator;
            let (server, local) = tool.split_once(separator.as_str()).ok_or_else(|| {
                anyhow::anyhow!("--tool: name a tool as clients see it, `server{separator}tool`")
            })?;
            // The tool's annotations and trust state, as last recorded by a running gateway.
            let recorded = store
                .definitions()
                .list(None)
                .await?
                .into_iter()
                .rev()
                .find(|d| d.server == server && d.tool == local);
            let definition: Option<rmcp::model::Tool> = recorded
                .as_ref()
                .and_then(|d| serde_json::from_str(&d.definition).ok());
            let verification = recorded
                .as_ref()
                .map(|d| d.state.as_str())
                .unwrap_or("unknown");
            let target = Target::Tool {
                name: &tool,
                server,
                local,
                verification,
                annotations: definition.as_ref().and_then(|d| d.annotations.as_ref()),
            };
            let who = Identity {
                client,
                groups,
                via: AuthMethod::ApiKey,
            };
            let decision = engine.decide(&who, &action, &target, "", Some(arguments));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "client": who.client,
                        "groups": who.groups,
                        "tool": tool,
                        "action": action,
                        "decision": if decision.allowed { "allow" } else { "deny" },
                        "policies": decision.policies,
                        "conditions": decision.conditions,
                        "errors": decision.errors,
                    }))?
                );
            } else {
                println!(
                    "{} {} {} {} (groups: {})",
                    if decision.allowed { "ALLOW" } else { "DENY" },
                    who.client,
                    action,
                    tool,
                    who.groups.join(", ")
                );
                if decision.policies.is_empty() {
                    println!("  decided by: no policy applies (deny by default)");
                } else {
                    println!("  decided by: {}", decision.policies.join(", "));
                }
                let c = &decision.conditions;
                if let Some(sandbox) = &c.sandbox {
                    println!("  condition: sandbox {sandbox}");
                }
                if !c.redact.is_empty() {
                    println!("  condition: redact {}", c.redact.join(" "));
                }
                if let Some(rate) = c.rate_limit {
                    println!(
                        "  condition: at most {} calls per {} s",
                        rate.requests, rate.per_secs
                    );
                }
                for error in &decision.errors {
                    println!("  error: {error}");
                }
            }
            Ok(if decision.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
