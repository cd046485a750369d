//! `mcp-gateway audit ...`: verify, export, query and replay the audit trail.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;
use gateway::{
    audit,
    config::Config,
    identity::{AuthMethod, Identity},
    policy::{PolicyEngine, Target},
};

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check every writer's chain and signed checkpoints; exits 1 and names the first tampered,
    /// missing, reordered or truncated record of each chain that has one.
    Verify {
        /// The audit public key (PEM); default: the key in the data directory.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// A file written by `audit anchor`, kept outside the database (repeatable). The
        /// trail must still reach every checkpoint in it, with the same hash: records removed
        /// from the end together with their checkpoints are found this way.
        #[arg(long = "anchor", value_name = "FILE")]
        anchors: Vec<PathBuf>,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print records as JSON lines, oldest first.
    Export {
        /// Only records committed at or after this time (Unix seconds).
        #[arg(long)]
        since: Option<i64>,
        /// Only records committed before this time (Unix seconds).
        #[arg(long)]
        until: Option<i64>,
        /// `jsonl` (the only format).
        #[arg(long, default_value = "jsonl")]
        format: String,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Print the records that match every filter given, as JSON lines.
    Query {
        #[arg(long)]
        client: Option<String>,
        /// The tool as clients see it (`server__tool`).
        #[arg(long)]
        tool: Option<String>,
        /// `allow` or `deny` (decision records only).
        #[arg(long)]
        decision: Option<String>,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Decide every recorded decision again from its recorded evidence, under the current
    /// policy (or `--policy`), and list those that would come out differently.
    Replay {
        #[arg(long)]
        policy: Option<PathBuf>,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the newest signed checkpoint of every writer as JSON lines, to keep outside the
    /// database (a write-once bucket, a log service, a ticket) and give back to
    /// `audit verify --anchor`.
    Anchor {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Move the records committed before a time out of the database into an archive file
    /// (JSON lines), after checking the trail and recording the retention in it. Each chain
    /// keeps its newer records, which still verify.
    Retain {
        /// Records committed before this time (Unix seconds) go.
        #[arg(long)]
        before: i64,
        /// The archive to create (it must not exist yet).
        #[arg(long)]
        archive: PathBuf,
        /// Who did it, for the record.
        #[arg(long)]
        by: String,
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the public key that verifies the trail (PEM).
    Key {
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
    },
}

pub(crate) async fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify {
            public_key,
            anchors,
            config,
            json,
        } => {
            let anchors = read_anchors(&anchors)?;
            let loaded = Config::load(&config)?;
            let key = match public_key {
                Some(path) => {
                    let pem = std::fs::read_to_string(&path)?;
                    keys::material::ed25519_public_from_pem(&pem).ok_or_else(|| {
                        anyhow::anyhow!("{}: not an Ed25519 public key", path.display())
                    })?
                }
                None => keys::material::load_or_create_ed25519(&audit::key_path(
                    &loaded.storage.data_dir,
                ))?
                .verifying_key(),
            };
            let store = crate::open_store(&config).await?;
            let report = audit::verify(store.pool(), &key, &anchors).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                for problem in &report.problems {
                    println!("{problem}");
                }
                println!(
                    "{} writers, {} records verified, {} chains with problems",
                    report.writers,
                    report.records,
                    report.problems.len()
                );
            }
            Ok(if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Retain {
            before,
            archive,
            by,
            config,
            json,
        } => {
            let loaded = Config::load(&config)?;
            let store = crate::open_store(&config).await?;
            let trail = audit::Audit::open(store.pool().clone(), &loaded.storage.data_dir)
                .await
                .map_err(anyhow::Error::msg)?;
            let done = audit::retention::retain(
                store.pool(),
                &trail.public_key,
                &trail.log,
                before.saturating_mul(1000),
                &archive,
                &by,
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!(
                    "{} records and {} checkpoints moved to {} (sha256 {}); recorded as {}#{}",
                    done.records,
                    done.checkpoints,
                    archive.display(),
                    done.archive_sha256,
                    trail.log.writer(),
                    done.seq
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Anchor { config } => {
            let store = crate::open_store(&config).await?;
            for anchor in audit::anchors(store.pool()).await? {
                println!("{}", serde_json::to_string(&anchor)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            since,
            until,
            format,
            config,
        } => {
            anyhow::ensure!(format == "jsonl", "--format: only `jsonl` is supported");
            let store = crate::open_store(&config).await?;
            let entries = audit::entries(
                store.pool(),
                since.map(|s| s.saturating_mul(1000)),
                until.map(|s| s.saturating_mul(1000)),
            )
            .await?;
            for entry in entries {
                println!("{}", serde_json::to_string(&entry)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Query {
            client,
            tool,
            decision,
            config,
        } => {
            let store = crate::open_store(&config).await?;
            for entry in audit::entries(store.pool(), None, None).await? {
                let r = &entry.record;
                let matches = client.as_deref().is_none_or(|c| r["client"] == c)
                    && tool.as_deref().is_none_or(|t| r["tool"] == t)
                    && decision.as_deref().is_none_or(|d| r["decision"] == d);
                if matches {
                    println!("{}", serde_json::to_string(&entry)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Replay {
            policy,
            config,
            json,
        } => {
            let loaded = Config::load(&config)?;
            let engine =
                PolicyEngine::load_or_default(policy.as_ref().or(loaded.policy.file.as_ref()))?;
            let store = crate::open_store(&config).await?;
            let mut decided = 0u64;
            let mut differences = Vec::new();
            for entry in audit::entries(store.pool(), None, None).await? {
                let Some(again) = replay(&engine, &entry.record) else {
                    continue;
                };
                decided += 1;
                let recorded = entry.record["decision"] == "allow";
                if again.allowed != recorded {
                    differences.push(serde_json::json!({
                        "writer": entry.writer, "seq": entry.seq,
                        "client": entry.record["client"], "method": entry.record["method"],
                        "tool": entry.record["tool"],
                        "recorded": entry.record["decision"],
                        "now": if again.allowed { "allow" } else { "deny" },
                        "policies": again.policies,
                    }));
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"decisions": decided, "differences": differences})
                    )?
                );
            } else {
                for d in &differences {
                    println!(
                        "{}#{} {} {} {}: recorded {}, now {}",
                        d["writer"].as_str().unwrap_or_default(),
                        d["seq"],
                        d["client"].as_str().unwrap_or_default(),
                        d["method"].as_str().unwrap_or_default(),
                        d["tool"].as_str().unwrap_or_default(),
                        d["recorded"].as_str().unwrap_or_default(),
                        d["now"].as_str().unwrap_or_default()
                    );
                }
                println!(
                    "{decided} decisions replayed, {} would differ",
                    differences.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Key { config } => {
            let loaded = Config::load(&config)?;
            let key =
                keys::material::load_or_create_ed25519(&audit::key_path(&loaded.storage.data_dir))?;
            print!(
                "{}",
                keys::material::ed25519_public_pem(&key.verifying_key())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The checkpoints in files written by `audit anchor`: one JSON object per line.
fn read_anchors(paths: &[PathBuf]) -> anyhow::Result<Vec<audit::chain::StoredCheckpoint>> {
    let mut anchors = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            anchors.push(serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!("{}:{}: not an audit anchor: {e}", path.display(), i + 1)
            })?);
        }
    }
    Ok(anchors)
}

/// The decision a recorded tool decision gets under `engine`, from its recorded evidence.
fn replay(engine: &PolicyEngine, record: &serde_json::Value) -> Option<gateway::policy::Decision> {
    if record["kind"] != "decision" {
        return None;
    }
    let text = |key: &str| record[key].as_str().unwrap_or_default();
    let who = Identity {
        client: text("client").to_owned(),
        groups: record["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        via: match text("via") {
            "jwt" => AuthMethod::Jwt,
            "anonymous" => AuthMethod::Anonymous,
            "stdio" => AuthMethod::Stdio,
            _ => AuthMethod::ApiKey,
        },
    };
    let annotations: Option<rmcp::model::ToolAnnotations> =
        serde_json::from_value(record["annotations"].clone()).ok();
    let target = if record.get("tool").is_some() {
        Target::Tool {
            name: text("tool"),
            server: text("server"),
            local: text("local"),
            verification: text("verification"),
            annotations: annotations.as_ref(),
        }
    } else if record.get("prompt").is_some() {
        Target::Prompt {
            name: text("prompt"),
            server: text("server"),
            local: text("local"),
        }
    } else {
        Target::Resource {
            uri: text("resource"),
            server: text("server"),
        }
    };
    Some(engine.decide(
        &who,
        text("method"),
        &target,
        text("session"),
        record["arguments"].as_object(),
    ))
}
