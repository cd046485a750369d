//! The `[sandbox]` section and each stdio server's `sandbox` table, validated.

use std::path::{Path, PathBuf};

use sandbox_runner::protocol::{Limits, StdoutMode, Tier};

use super::raw::{RawSandbox, RawSandboxLimits, RawServerSandbox};

/// How stdio servers are isolated, for every server.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The `sandbox-runner` binary, when the config names one.
    pub runner: Option<PathBuf>,
    pub tier: Tier,
    pub fallback: Option<Tier>,
    pub production: bool,
    pub allow_commands: Vec<PathBuf>,
    pub stdout: StdoutMode,
    pub limits: Limits,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            runner: None,
            tier: Tier::Namespaces,
            fallback: None,
            production: false,
            allow_commands: Vec::new(),
            stdout: StdoutMode::Relay,
            limits: Limits::default(),
        }
    }
}

/// How one stdio server is isolated; `None` takes the `[sandbox]` value.
#[derive(Debug, Clone, Default)]
pub struct ServerSandbox {
    pub tier: Option<Tier>,
    pub fallback: Option<Tier>,
    pub workdir: Option<PathBuf>,
    pub read_only: Vec<PathBuf>,
    pub writable: Vec<PathBuf>,
    pub allow_net: Vec<String>,
    pub limits: Limits,
}

fn tier(value: Option<&str>, key: &str) -> Result<Option<Tier>, String> {
    value
        .map(|v| v.parse::<Tier>().map_err(|e| format!("{key}: {e}")))
        .transpose()
}

fn size(value: Option<&str>, key: &str) -> Result<Option<u64>, String> {
    value
        .map(|v| sandbox_runner::parse_size(v).map_err(|e| format!("{key}: {e}")))
        .transpose()
}

fn limits(raw: &RawSandboxLimits, prefix: &str) -> Result<Limits, String> {
    let positive = |value: Option<f64>, key: &str| match value {
        Some(v) if !(v.is_finite() && v > 0.0) => {
            Err(format!("{prefix}.{key}: must be a positive number"))
        }
        other => Ok(other),
    };
    if raw.pids == Some(0) {
        return Err(format!("{prefix}.pids: must be at least 1"));
    }
    Ok(Limits {
        memory_bytes: size(raw.memory.as_deref(), &format!("{prefix}.memory"))?,
        pids: raw.pids,
        cpu_seconds: positive(raw.cpu_seconds, "cpu_seconds")?,
        cpus: positive(raw.cpus, "cpus")?,
        wall_secs: None,
        output_bytes: size(
            raw.output_bytes.as_deref(),
            &format!("{prefix}.output_bytes"),
        )?,
        open_files: raw.open_files,
        kill_grace_ms: None,
    })
}

fn absolute(path: &str, base: &Path) -> PathBuf {
    base.join(path)
}

/// Validates `[sandbox]`.
pub fn sandbox(raw: &RawSandbox, base: &Path) -> Result<SandboxConfig, String> {
    let stdout = match raw.stdout.as_deref() {
        None | Some("relay") => StdoutMode::Relay,
        Some("direct") => StdoutMode::Direct,
        Some(other) => {
            return Err(format!(
                "sandbox.stdout: unknown mode `{other}` (expected relay or direct)"
            ));
        }
    };
    let production = raw.production.unwrap_or(false);
    let tier_ = tier(raw.tier.as_deref(), "sandbox.tier")?.unwrap_or(Tier::Namespaces);
    let fallback = tier(raw.fallback.as_deref(), "sandbox.fallback")?;
    if production && (tier_ == Tier::Process || fallback == Some(Tier::Process)) {
        return Err(
            "sandbox: the `process` tier isolates nothing and is refused with `production = true`"
                .into(),
        );
    }
    let allow_commands = raw
        .allow_commands
        .iter()
        .map(|c| {
            let path = PathBuf::from(c);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(format!(
                    "sandbox.allow_commands: `{c}` is not an absolute path"
                ))
            }
        })
        .collect::<Result<_, String>>()?;
    Ok(SandboxConfig {
        runner: raw.runner.as_deref().map(|r| absolute(r, base)),
        tier: tier_,
        fallback,
        production,
        allow_commands,
        stdout,
        limits: limits(&raw.limits, "sandbox.limits")?,
    })
}

/// Validates a server's `sandbox` table.
pub fn server_sandbox(
    raw: Option<&RawServerSandbox>,
    name: &str,
    base: &Path,
) -> Result<ServerSandbox, String> {
    let Some(raw) = raw else {
        return Ok(ServerSandbox::default());
    };
    let key = |field: &str| format!("servers.{name}.sandbox.{field}");
    for endpoint in &raw.allow_net {
        let valid = endpoint.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(format!(
                "{}: `{endpoint}` is not a host:port endpoint",
                key("allow_net")
            ));
        }
    }
    Ok(ServerSandbox {
        tier: tier(raw.tier.as_deref(), &key("tier"))?,
        fallback: tier(raw.fallback.as_deref(), &key("fallback"))?,
        workdir: raw.workdir.as_deref().map(|w| absolute(w, base)),
        read_only: raw.read_only.iter().map(|p| absolute(p, base)).collect(),
        writable: raw.writable.iter().map(|p| absolute(p, base)).collect(),
        allow_net: raw.allow_net.clone(),
        limits: limits(&raw.limits, &format!("servers.{name}.sandbox.limits"))?,
    })
}

impl SandboxConfig {
    /// A server's limits: each of its own, else the section's.
    pub fn limits_for(&self, server: &ServerSandbox) -> Limits {
        let own = &server.limits;
        let all = &self.limits;
        Limits {
            memory_bytes: own.memory_bytes.or(all.memory_bytes),
            pids: own.pids.or(all.pids),
            cpu_seconds: own.cpu_seconds.or(all.cpu_seconds),
            cpus: own.cpus.or(all.cpus),
            wall_secs: None,
            output_bytes: own.output_bytes.or(all.output_bytes),
            open_files: own.open_files.or(all.open_files),
            kill_grace_ms: None,
        }
    }
}
