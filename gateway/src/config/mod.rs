//! The validated configuration the gateway runs with, and its loading from `gateway.toml`.
//!
//! [`raw::RawConfig`] is what the user writes; [`Config::load`] parses it (unknown keys are errors
//! with file and line), interpolates `${VAR}` in values that may hold secrets, applies secure
//! defaults and validates it into [`Config`], which the rest of the gateway uses.

pub mod access;
pub mod import;
pub mod interpolate;
pub mod raw;
pub mod sandbox;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::SecretString;

use self::{
    interpolate::{Vars, interpolate},
    raw::{RawConfig, RawServer},
};

/// A configuration error, with the file and (where known) the line and key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl ConfigError {
    fn new(file: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line,
            message: message.into(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from.
    pub source: PathBuf,
    pub listen: ListenConfig,
    pub storage: StorageConfig,
    pub routing: RoutingConfig,
    pub trust: TrustConfig,
    pub auth: access::AuthConfig,
    pub policy: access::PolicyConfig,
    pub limits: crate::limits::LimitsConfig,
    pub sandbox: sandbox::SandboxConfig,
    pub servers: Vec<ServerSpec>,
}

/// How publisher keys are found.
#[derive(Debug, Clone)]
pub struct TrustConfig {
    pub allow_http_loopback_discovery: bool,
    pub discovery_timeout: Duration,
    pub revocation_recheck: Duration,
    /// The bundles named in the config and those imported into the data directory.
    pub bundles: Vec<std::sync::Arc<keys::bundle::TrustBundle>>,
}

/// Where `mcp-gateway bundle import` puts bundles.
pub fn bundle_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("bundles")
}

fn read_bundle(path: &Path) -> Result<std::sync::Arc<keys::bundle::TrustBundle>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    keys::bundle::TrustBundle::parse(&bytes)
        .map(std::sync::Arc::new)
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub bind: SocketAddr,
    pub path: String,
    pub allowed_hosts: Vec<String>,
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub max_sessions: usize,
    pub max_sessions_per_client: usize,
    pub session_idle: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub sqlite_synchronous: raw::SqliteSynchronous,
}

#[derive(Debug, Clone)]
pub struct RoutingConfig {
    pub separator: String,
    pub pass_through: bool,
    pub page_size: usize,
    pub connect_timeout: Duration,
    /// Call timeout of servers that set none (including those registered in the database).
    pub call_timeout: Duration,
    /// Interval between health checks of connected upstreams; `None` when turned off.
    pub health_interval: Option<Duration>,
    pub health_timeout: Duration,
}

/// One upstream server, validated.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    pub transport: TransportSpec,
    pub sessions: SessionMode,
    pub call_timeout: Duration,
    pub enabled: bool,
    pub verification: VerificationMode,
    /// The key this server's tools must be signed with, if one is configured.
    pub public_key: Option<p256::ecdsa::VerifyingKey>,
    /// The publisher's domain, under which its key is pinned.
    pub domain: String,
    /// Whether the key is discovered from the domain's `.well-known/schemapin.json`.
    pub discover: bool,
    /// Signatures for tools the server does not sign itself, by tool name.
    pub signed_tools: BTreeMap<String, SignedTool>,
    /// Accept single-hash signatures (SchemaPin's Go SDK).
    pub allow_single_hash: bool,
    /// Most requests relayed at once.
    pub max_concurrent: Option<usize>,
    /// A stdio server idle this long is stopped, and started again by the next request.
    pub idle_suspend: Option<Duration>,
    /// Stopped right after its catalog is first loaded, and started by the first request.
    pub lazy: bool,
}

/// One entry of a signed-tools manifest.
#[derive(Debug, Clone)]
pub struct SignedTool {
    /// The canonical JSON of the signed definition.
    pub canonical: String,
    pub signature: String,
}

/// Reads a signed-tools manifest: a JSON array of `{"schema", "signature", ...}` documents.
fn read_manifest(path: &Path) -> Result<BTreeMap<String, SignedTool>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| format!("not a JSON array of signed schemas: {e}"))?;
    let mut tools = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        // The schema is canonicalized from its own text, so its numbers keep SchemaPin's meaning.
        let entry_text = entry.to_string();
        let canonical = verifier::canonical::canonicalize_member(&entry_text, "schema")
            .map_err(|e| format!("entry {i}: {e}"))?
            .ok_or_else(|| format!("entry {i}: no `schema`"))?;
        let name = entry["schema"]["name"]
            .as_str()
            .ok_or_else(|| format!("entry {i}: the schema has no `name`"))?;
        let signature = entry["signature"]
            .as_str()
            .ok_or_else(|| format!("entry {i}: no `signature` string"))?;
        tools.insert(
            name.to_owned(),
            SignedTool {
                canonical,
                signature: signature.to_owned(),
            },
        );
    }
    Ok(tools)
}

/// How a server's tool definitions are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationMode {
    /// Serve only tools with a valid signature by the configured key.
    Strict,
    /// Pin each tool's first definition; quarantine changes until a person approves them.
    Tofu,
    /// Serve everything; log what `Tofu` would have blocked.
    Audit,
}

#[derive(Debug, Clone)]
pub enum TransportSpec {
    Stdio(StdioSpec),
    Http(HttpSpec),
}

#[derive(Debug, Clone)]
pub struct StdioSpec {
    pub command: String,
    pub args: Vec<String>,
    /// Values may be secrets, so they are never logged.
    pub env: BTreeMap<String, SecretString>,
    pub cwd: Option<PathBuf>,
    pub sandbox: Box<sandbox::ServerSandbox>,
}

#[derive(Debug, Clone)]
pub struct HttpSpec {
    pub url: String,
    pub legacy_sse: bool,
    pub headers: BTreeMap<String, SecretString>,
    pub bearer_token: Option<SecretString>,
}

/// How client sessions map onto upstream sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// One upstream session serves every client session.
    Shared,
    /// Each client session gets its own upstream session.
    PerClient,
}

const DEFAULT_BIND: &str = "127.0.0.1:8080";
const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
const DEFAULT_MAX_SESSIONS: usize = 1024;
const DEFAULT_MAX_SESSIONS_PER_CLIENT: usize = 256;
const DEFAULT_SESSION_IDLE_SECS: u64 = 300;
const MAX_SERVER_NAME: usize = 63;

/// `value`, or `default` when unset; 0 is an error naming `listen.<key>`.
fn at_least_one(value: Option<usize>, default: usize, key: &str) -> Result<usize, String> {
    match value {
        Some(0) => Err(format!("listen.{key}: must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, None, format!("cannot read: {e}")))?;
        Self::parse(path, &text, &Vars::from_env())
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str, vars: &Vars) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            ConfigError::new(path, line, e.message().to_owned())
        })?;
        // Relative paths in the file are relative to the file, whatever the working directory.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let base = absolute.parent().unwrap_or(Path::new("/")).to_owned();
        let mut servers = Vec::new();
        let call_default = Duration::from_secs(raw.timeouts.call_secs.unwrap_or(60));

        for import in &raw.import_mcp_servers {
            let file = base.join(import);
            let imported = import::read_mcp_servers(&file)
                .map_err(|e| ConfigError::new(path, None, format!("import_mcp_servers: {e}")))?;
            for (name, server) in imported {
                let spec = validate_server(&name, &server, &base, vars, call_default)
                    .map_err(|message| ConfigError::new(&file, None, message))?;
                servers.push(spec);
            }
        }
        for (name, server) in &raw.servers {
            let line = line_of(text, server.span().start);
            let spec = validate_server(name, server.get_ref(), &base, vars, call_default)
                .map_err(|message| ConfigError::new(path, Some(line), message))?;
            servers.push(spec);
        }
        let mut seen = std::collections::BTreeSet::new();
        for server in &servers {
            if !seen.insert(server.name.as_str()) {
                return Err(ConfigError::new(
                    path,
                    None,
                    format!("servers.{}: registered twice", server.name),
                ));
            }
        }

        let listen = &raw.listen;
        let bind: SocketAddr = listen
            .bind
            .as_deref()
            .unwrap_or(DEFAULT_BIND)
            .parse()
            .map_err(|e| ConfigError::new(path, None, format!("listen.bind: {e}")))?;
        let mcp_path = listen.path.clone().unwrap_or_else(|| "/mcp".to_owned());
        if !mcp_path.starts_with('/') {
            return Err(ConfigError::new(
                path,
                None,
                "listen.path: must start with `/`",
            ));
        }
        let allowed_hosts = match &listen.allowed_hosts {
            // rmcp reads an empty list as "any Host", which would turn DNS-rebinding protection
            // off without a word; an operator who means that must say which names.
            Some(hosts) if hosts.get_ref().is_empty() => {
                return Err(ConfigError::new(
                    path,
                    Some(line_of(text, hosts.span().start)),
                    "listen.allowed_hosts: an empty list would accept requests for any Host \
                     (no DNS-rebinding protection); list the names clients use to reach the \
                     gateway, or leave the key out for the loopback names",
                ));
            }
            Some(hosts) => hosts.get_ref().clone(),
            None => vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        };
        let listen = ListenConfig {
            bind,
            path: mcp_path,
            allowed_hosts,
            allowed_origins: listen.allowed_origins.clone().unwrap_or_else(|| {
                // Pages served from this machine may call the gateway (the MCP Inspector runs on
                // localhost); a page from any other origin, as in DNS rebinding, may not.
                vec![
                    "http://localhost:*".into(),
                    "http://127.0.0.1:*".into(),
                    "http://[::1]:*".into(),
                ]
            }),
            max_body_bytes: listen.max_body_bytes.unwrap_or(DEFAULT_BODY_LIMIT),
            max_connections: at_least_one(
                listen.max_connections,
                DEFAULT_MAX_CONNECTIONS,
                "max_connections",
            )
            .map_err(|m| ConfigError::new(path, None, m))?,
            max_sessions: at_least_one(listen.max_sessions, DEFAULT_MAX_SESSIONS, "max_sessions")
                .map_err(|m| ConfigError::new(path, None, m))?,
            max_sessions_per_client: at_least_one(
                listen.max_sessions_per_client,
                DEFAULT_MAX_SESSIONS_PER_CLIENT,
                "max_sessions_per_client",
            )
            .map_err(|m| ConfigError::new(path, None, m))?,
            // rmcp ends a session after this long without a message either way, so a call that
            // runs longer without progress would lose its session mid-call. Unset, it is never
            // shorter than the call timeout either.
            session_idle: match listen.session_idle_secs.map(Duration::from_secs) {
                Some(idle) if idle.is_zero() || idle < call_default => {
                    return Err(ConfigError::new(
                        path,
                        None,
                        format!(
                            "listen.session_idle_secs: {} is shorter than the call timeout \
                             ({} s, timeouts.call_secs): a call that sends nothing for longer \
                             would lose its session",
                            idle.as_secs(),
                            call_default.as_secs()
                        ),
                    ));
                }
                Some(idle) => idle,
                None => Duration::from_secs(DEFAULT_SESSION_IDLE_SECS).max(call_default),
            },
        };

        let data_dir = base.join(raw.storage.data_dir.as_deref().unwrap_or("data"));
        let database_url = match &raw.storage.database_url {
            Some(url) => interpolate(url, vars)
                .map_err(|e| ConfigError::new(path, None, format!("storage.database_url: {e}")))?,
            None => format!("sqlite://{}", data_dir.join("gateway.db").display()),
        };

        let separator = raw.routing.separator.clone().unwrap_or_else(|| "__".into());
        if separator.is_empty() || !separator.chars().all(|c| c == '_' || c == '.') {
            return Err(ConfigError::new(
                path,
                None,
                "routing.separator: must be one or more of `_` and `.`",
            ));
        }
        let pass_through = raw.routing.pass_through.unwrap_or(false);
        if pass_through && servers.iter().filter(|s| s.enabled).count() != 1 {
            return Err(ConfigError::new(
                path,
                None,
                "routing.pass_through: requires exactly one enabled server",
            ));
        }
        let page_size = raw.routing.page_size.unwrap_or(100);
        if page_size == 0 {
            return Err(ConfigError::new(
                path,
                None,
                "routing.page_size: must be at least 1",
            ));
        }
        let mut bundles = Vec::new();
        for name in raw.trust.bundles.iter().flatten() {
            bundles.push(
                read_bundle(&base.join(name))
                    .map_err(|e| ConfigError::new(path, None, format!("trust.bundles: {e}")))?,
            );
        }
        // Bundles imported with `mcp-gateway bundle import`, in name order.
        if let Ok(entries) = std::fs::read_dir(bundle_dir(&data_dir)) {
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for file in files
                .into_iter()
                .filter(|f| f.extension().is_some_and(|e| e == "json"))
            {
                bundles.push(
                    read_bundle(&file).map_err(|e| {
                        ConfigError::new(path, None, format!("imported bundle: {e}"))
                    })?,
                );
            }
        }
        let section_error = |section: &str, message: String| {
            ConfigError::new(path, section_line(text, section), message)
        };
        let auth = access::auth(&raw.auth, &base).map_err(|m| section_error("auth", m))?;
        auth.check_bind(listen.bind)
            .map_err(|m| section_error("auth", m))?;
        let policy = access::policy(&raw.policy, &base).map_err(|m| section_error("policy", m))?;
        let limits = access::limits(&raw.limits, vars).map_err(|m| section_error("limits", m))?;
        let sandbox =
            sandbox::sandbox(&raw.sandbox, &base).map_err(|m| section_error("sandbox", m))?;
        Ok(Self {
            sandbox,
            source: path.to_owned(),
            auth,
            policy,
            limits,
            listen,
            storage: StorageConfig {
                data_dir,
                database_url,
                sqlite_synchronous: raw.storage.sqlite_synchronous.unwrap_or_default(),
            },
            routing: RoutingConfig {
                separator,
                pass_through,
                page_size,
                connect_timeout: Duration::from_secs(raw.timeouts.connect_secs.unwrap_or(30)),
                call_timeout: call_default,
                health_interval: match raw.timeouts.health_secs.unwrap_or(15) {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                health_timeout: Duration::from_secs(
                    raw.timeouts.health_timeout_secs.unwrap_or(5).max(1),
                ),
            },
            trust: TrustConfig {
                bundles,
                allow_http_loopback_discovery: raw
                    .trust
                    .allow_http_loopback_discovery
                    .unwrap_or(false),
                discovery_timeout: Duration::from_secs(
                    raw.trust.discovery_timeout_secs.unwrap_or(10).max(1),
                ),
                revocation_recheck: Duration::from_secs(
                    raw.trust.revocation_recheck_secs.unwrap_or(300).max(1),
                ),
            },
            servers,
        })
    }
}

/// The line of the first header of `[section]` (or `[section.` / `[[section.`), if any.
fn section_line(text: &str, section: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches('[');
            line.strip_prefix(section)
                .is_some_and(|rest| rest.starts_with(']') || rest.starts_with('.'))
        })
        .map(|index| index + 1)
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|prefix| prefix.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// Checks a server name: it must be usable as a tool-name prefix and a URI scheme prefix.
pub fn validate_server_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SERVER_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "servers.{name}: a server name is 1 to {MAX_SERVER_NAME} lowercase letters, digits \
             and `-`, starting with a letter"
        ))
    }
}

/// Validates one raw server entry into a [`ServerSpec`].
pub fn validate_server(
    name: &str,
    raw: &RawServer,
    base: &Path,
    vars: &Vars,
    call_default: Duration,
) -> Result<ServerSpec, String> {
    validate_server_name(name)?;
    let key = |field: &str| format!("servers.{name}.{field}");
    let interp = |field: &str, value: &str| {
        interpolate(value, vars).map_err(|e| format!("{}: {e}", key(field)))
    };
    let transport = match (&raw.command, &raw.url) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "servers.{name}: set either `command` (stdio) or `url` (remote), not both"
            ));
        }
        (None, None) => {
            return Err(format!(
                "servers.{name}: needs `command` (stdio) or `url` (remote)"
            ));
        }
        (Some(command), None) => {
            if let Some(kind) = raw.transport.as_deref()
                && kind != "stdio"
            {
                return Err(format!(
                    "{}: `{kind}` does not fit a `command` server (use `stdio`)",
                    key("type")
                ));
            }
            if !raw.headers.is_empty() || raw.bearer_token.is_some() {
                return Err(format!(
                    "servers.{name}: `headers` and `bearer_token` apply only to `url` servers"
                ));
            }
            let mut command = interp("command", command)?;
            if command.is_empty() {
                return Err(format!("{}: must not be empty", key("command")));
            }
            // A relative path (`./server.py`, `bin/server`) means beside the config file, as
            // every other path in it does; a bare name is looked up on PATH.
            if command.contains('/') && std::path::Path::new(&command).is_relative() {
                command = base.join(&command).to_string_lossy().into_owned();
            }
            let args = raw
                .args
                .iter()
                .map(|a| interp("args", a))
                .collect::<Result<_, _>>()?;
            let env = raw
                .env
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        SecretString::from(interp(&format!("env.{k}"), v)?),
                    ))
                })
                .collect::<Result<_, String>>()?;
            let cwd = raw
                .cwd
                .as_deref()
                .map(|c| interp("cwd", c).map(|c| base.join(c)))
                .transpose()?;
            let sandbox = Box::new(sandbox::server_sandbox(raw.sandbox.as_ref(), name, base)?);
            TransportSpec::Stdio(StdioSpec {
                command,
                args,
                env,
                cwd,
                sandbox,
            })
        }
        (None, Some(url)) => {
            let legacy_sse = match raw.transport.as_deref() {
                None | Some("streamable-http") | Some("http") | Some("streamableHttp") => false,
                Some("sse") => true,
                Some(other) => {
                    return Err(format!(
                        "{}: unknown transport `{other}` (expected `streamable-http` or `sse`)",
                        key("type")
                    ));
                }
            };
            if !raw.args.is_empty()
                || !raw.env.is_empty()
                || raw.cwd.is_some()
                || raw.sandbox.is_some()
            {
                return Err(format!(
                    "servers.{name}: `args`, `env`, `cwd` and `sandbox` apply only to `command` servers"
                ));
            }
            let url = interp("url", url)?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "{}: must be an http:// or https:// URL",
                    key("url")
                ));
            }
            let headers = raw
                .headers
                .iter()
                .map(|(k, v)| {
                    http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("{}: not a valid header name", key("headers")))?;
                    Ok((
                        k.clone(),
                        SecretString::from(interp(&format!("headers.{k}"), v)?),
                    ))
                })
                .collect::<Result<_, String>>()?;
            let bearer_token = raw
                .bearer_token
                .as_deref()
                .map(|t| interp("bearer_token", t).map(SecretString::from))
                .transpose()?;
            TransportSpec::Http(HttpSpec {
                url,
                legacy_sse,
                headers,
                bearer_token,
            })
        }
    };
    let sessions = match raw.sessions.as_deref() {
        None | Some("shared") => SessionMode::Shared,
        Some("per-client") => SessionMode::PerClient,
        Some(other) => {
            return Err(format!(
                "{}: unknown mode `{other}` (expected `shared` or `per-client`)",
                key("sessions")
            ));
        }
    };
    let call_timeout = raw
        .call_timeout_secs
        .map(Duration::from_secs)
        .unwrap_or(call_default);
    if call_timeout.is_zero() {
        return Err(format!("{}: must be at least 1", key("call_timeout_secs")));
    }
    let public_key = raw
        .public_key
        .as_deref()
        .map(|path| {
            let path = base.join(interp("public_key", path)?);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                format!("{}: cannot read {}: {e}", key("public_key"), path.display())
            })?;
            verifier::signature::public_key_from_pem(&pem)
                .map_err(|e| format!("{}: {}: {e}", key("public_key"), path.display()))
        })
        .transpose()?;
    let discover = raw.domain.is_some() && public_key.is_none();
    let signed_tools = match raw.signed_tools.as_deref() {
        None => BTreeMap::new(),
        Some(path) => {
            if public_key.is_none() && !discover {
                return Err(format!(
                    "{}: a manifest needs the key it is signed with: set `public_key` or `domain`",
                    key("signed_tools")
                ));
            }
            let path = base.join(interp("signed_tools", path)?);
            read_manifest(&path)
                .map_err(|e| format!("{}: {}: {e}", key("signed_tools"), path.display()))?
        }
    };
    let verification = match raw.verification.as_deref() {
        None if public_key.is_some() || discover => VerificationMode::Strict,
        None | Some("tofu") => VerificationMode::Tofu,
        Some("audit") => VerificationMode::Audit,
        Some("strict") if public_key.is_some() || discover => VerificationMode::Strict,
        Some("strict") => {
            return Err(format!(
                "{}: `strict` needs a key: set `public_key`, or `domain` to discover it",
                key("verification")
            ));
        }
        Some(other) => {
            return Err(format!(
                "{}: unknown mode `{other}` (expected `strict`, `tofu` or `audit`)",
                key("verification")
            ));
        }
    };
    Ok(ServerSpec {
        name: name.to_owned(),
        transport,
        sessions,
        call_timeout,
        enabled: raw.enabled.unwrap_or(true),
        verification,
        public_key,
        domain: match &raw.domain {
            Some(domain) => interp("domain", domain)?,
            None => name.to_owned(),
        },
        discover,
        signed_tools,
        allow_single_hash: raw.allow_single_hash.unwrap_or(false),
        max_concurrent: match raw.max_concurrent {
            Some(0) => return Err(format!("{}: must be at least 1", key("max_concurrent"))),
            other => other,
        },
        idle_suspend: match (raw.idle_suspend_secs, &raw.command) {
            (None, _) => None,
            (Some(0), _) => {
                return Err(format!("{}: must be at least 1", key("idle_suspend_secs")));
            }
            (Some(_), None) => {
                return Err(format!(
                    "{}: applies only to `command` servers",
                    key("idle_suspend_secs")
                ));
            }
            (Some(secs), Some(_)) => Some(Duration::from_secs(secs)),
        },
        lazy: match (raw.lazy, &raw.command) {
            (Some(true), None) => {
                return Err(format!(
                    "{}: applies only to `command` servers",
                    key("lazy")
                ));
            }
            (lazy, _) => lazy.unwrap_or(false),
        },
    })
}

/// The JSON Schema of `gateway.toml`, as committed in `schemas/config.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
