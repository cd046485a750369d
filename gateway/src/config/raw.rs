//! The configuration exactly as a user writes it in `gateway.toml`, before validation.
//!
//! Every type here denies unknown fields, so a typo is an error that names the key and its line.
//! The JSON Schema in `schemas/config.schema.json` is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The whole `gateway.toml`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mcp-gateway configuration")]
pub struct RawConfig {
    /// The Streamable HTTP front door (`mcp-gateway serve`).
    #[serde(default)]
    pub listen: RawListen,
    /// Where the gateway keeps its state.
    #[serde(default)]
    pub storage: RawStorage,
    /// How the tools, resources and prompts of several upstreams are presented as one server.
    #[serde(default)]
    pub routing: RawRouting,
    /// Time limits applied to upstreams.
    #[serde(default)]
    pub timeouts: RawTimeouts,
    /// How publisher keys are found.
    #[serde(default)]
    pub trust: RawTrust,
    /// Who may connect, and how clients prove who they are.
    #[serde(default)]
    pub auth: RawAuth,
    /// Which client may use which tool, resource and prompt.
    #[serde(default)]
    pub policy: RawPolicy,
    /// How often clients may call, per client, tool, server and in total.
    #[serde(default)]
    pub limits: RawLimits,
    /// How stdio servers are isolated: every one runs inside `sandbox-runner`.
    #[serde(default)]
    pub sandbox: RawSandbox,
    /// Files in the `mcpServers` JSON format of Claude Desktop, Cursor and VS Code whose servers are
    /// registered as if they were written under `[servers]`. Relative paths are resolved against
    /// the directory of this file.
    #[serde(default)]
    pub import_mcp_servers: Vec<String>,
    /// The upstream MCP servers, keyed by name. A name is 1 to 63 characters of lowercase ASCII
    /// letters, digits and `-`, starting with a letter; it prefixes the names of the server's
    /// tools and prompts and the URIs of its resources.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, RawServer>")]
    pub servers: BTreeMap<String, Spanned<RawServer>>,
}

/// The Streamable HTTP front door.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    /// Socket address to bind. Default `127.0.0.1:8080`: loopback only.
    pub bind: Option<String>,
    /// Path of the MCP endpoint. Default `/mcp`.
    pub path: Option<String>,
    /// Accepted values of the `Host` header (hostnames, or `host:port`). Default: the loopback
    /// names `localhost`, `127.0.0.1` and `::1`, which defeats DNS rebinding. Set this to the
    /// names clients use when the gateway is reachable from other machines. An empty list is
    /// an error: it would accept any `Host`.
    #[schemars(with = "Option<Vec<String>>")]
    pub allowed_hosts: Option<Spanned<Vec<String>>>,
    /// Accepted browser `Origin` values, with scheme and port (`:*` for any port), e.g.
    /// `https://app.example.com:443`. Default: the loopback origins `http://localhost:*`,
    /// `http://127.0.0.1:*` and `http://[::1]:*`. A request carrying any other `Origin` is
    /// refused; requests without an `Origin` (non-browser clients) are accepted. An empty list
    /// refuses every browser origin. The gateway does not answer CORS preflights, so a script
    /// in a page cannot call it directly whatever this says; proxies such as the MCP
    /// Inspector's can.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest accepted request body in bytes. Default 4 MiB; larger bodies get HTTP 413. The
    /// stdio front door takes messages (lines) up to the same size and answers a longer one
    /// with JSON-RPC error -32600.
    pub max_body_bytes: Option<usize>,
    /// Most client connections open at once. Default 4096; further connections wait in the
    /// listen backlog until one closes. A connection with no request in progress for 30 seconds
    /// (HTTP/1.1 keep-alive, an HTTP/2 connection without streams, one that sends nothing) is
    /// closed, as is one that sends no complete request headers within 30 seconds; a request
    /// body must arrive within 30 seconds (HTTP 408 otherwise).
    pub max_connections: Option<usize>,
    /// Most legacy-era client sessions (`Mcp-Session-Id`) open at once. Default 1024; a further
    /// `initialize` gets HTTP 503 with a JSON-RPC error until one ends. Stateless 2026-07-28
    /// requests hold no session.
    pub max_sessions: Option<usize>,
    /// Most of those sessions one client (one API key, JWT subject, or `anonymous`) may hold.
    /// Default 256, so that no one client can take them all; past it, that client's
    /// `initialize` gets HTTP 503.
    pub max_sessions_per_client: Option<usize>,
    /// Seconds a session may go without a message in either direction before it ends (an open
    /// stream with nothing on it does not count); a client that comes back later gets 404 and
    /// initializes again. At least `timeouts.call_secs`. Default 300, or `timeouts.call_secs`
    /// when that is longer.
    pub session_idle_secs: Option<u64>,
}

/// Where the gateway keeps its state.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Directory for the embedded SQLite database and other state, created when missing.
    /// Relative paths are resolved against the directory of this file. Default `data`.
    pub data_dir: Option<String>,
    /// Database URL (`sqlite://PATH` or `postgres://...`). Default: `gateway.db` in `data_dir`.
    pub database_url: Option<String>,
    /// When a SQLite commit counts as done (the database runs in WAL mode either way).
    /// `normal` (default): once it is in the write-ahead log, so it survives the gateway
    /// crashing or being killed, but the last commits can be lost if the machine loses power.
    /// `full`: once the log is also flushed to disk, at the cost of one fsync per group commit.
    /// Ignored for Postgres, whose own `synchronous_commit` applies.
    pub sqlite_synchronous: Option<SqliteSynchronous>,
}

/// See [`RawStorage::sqlite_synchronous`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    #[default]
    Normal,
    Full,
}

/// How several upstreams are presented as one server.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Separator between a server's name and a tool or prompt name (`server__tool`). Default `__`.
    /// It may use only `_` and `.`, so it can never occur inside a server name.
    pub separator: Option<String>,
    /// Serve exactly one upstream under its own names, without prefixes. Default `false`.
    /// Requires exactly one server.
    pub pass_through: Option<bool>,
    /// Items per page of the gateway's own list results. Default 100.
    pub page_size: Option<usize>,
}

/// How publisher keys are found.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    /// Allow `.well-known/schemapin.json` discovery over plain `http://` when the `domain` is a
    /// loopback URL (`http://127.0.0.1:PORT`). For tests and local key servers only. Default
    /// `false`: discovery is HTTPS only.
    pub allow_http_loopback_discovery: Option<bool>,
    /// Longest time a discovery or revocation request may take, in seconds. Default 10.
    pub discovery_timeout_secs: Option<u64>,
    /// How often, in seconds, the key of a server that comes from `.well-known` discovery is
    /// fetched again with its revocation list while the server stays connected. Default 300.
    /// A key its publisher revokes is rejected within this time; a revocation list that cannot
    /// be read refuses the server's signed tools until it can be read again.
    pub revocation_recheck_secs: Option<u64>,
    /// SchemaPin trust bundles (offline discovery and revocation documents), relative to this
    /// file. Bundles imported with `mcp-gateway bundle import` (in `data_dir/bundles`) are read
    /// too. For a server with a `domain`, a bundle that has the domain is used before its
    /// `public_key` and before `.well-known` discovery.
    pub bundles: Option<Vec<String>>,
}

/// Who may connect to the HTTP front door, and as whom.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Accept requests without credentials, as the client `anonymous` in the group `anonymous`.
    /// Default `false`: a request without credentials gets HTTP 401. API keys created with
    /// `mcp-gateway clients create` are accepted as `Authorization: Bearer mgw_...` either way.
    pub anonymous: Option<bool>,
    /// Accept anonymous requests although `listen.bind` is not a loopback address: behind a
    /// proxy that authenticates every request itself, say. Default `false`: such a config is
    /// refused, since anyone who can reach the address could call every tool.
    pub anonymous_beyond_loopback: Option<bool>,
    /// Trusted issuers of JWT bearer tokens.
    #[serde(default)]
    pub jwt: Vec<RawJwt>,
    /// The client name of the stdio front door (`mcp-gateway stdio`), whose client is the
    /// process that started it. Default `stdio`.
    pub stdio_client: Option<String>,
    /// The groups of the stdio client. Default none.
    pub stdio_groups: Option<Vec<String>>,
}

/// One trusted JWT issuer.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// The required `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one.
    pub audience: Vec<String>,
    /// URL of the issuer's JWKS (HTTPS, or `http://` to a loopback address when
    /// `allow_http_loopback` is set). Exactly one of `jwks_url` and `keys` is required.
    pub jwks_url: Option<String>,
    /// PEM public key files (RSA, EC or Ed25519), relative to this file.
    pub keys: Option<Vec<String>>,
    /// Accepted signature algorithms. Default `["RS256", "ES256"]`. HMAC algorithms (`HS*`)
    /// are refused: a public key must never serve as a shared secret.
    pub algorithms: Option<Vec<String>>,
    /// The claim that names the client. Default `sub`.
    pub subject_claim: Option<String>,
    /// The claim that lists the client's groups (an array of strings or a space-separated
    /// string). Default `groups`.
    pub groups_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds. Default 30.
    pub leeway_secs: Option<u64>,
    /// Allow `jwks_url` over plain HTTP to a loopback address (tests, local identity
    /// providers). Default `false`.
    pub allow_http_loopback: Option<bool>,
}

/// Which client may use which tool, resource and prompt.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// A Cedar policy file (schema: `schemas/policy.cedarschema`), relative to this file. It is
    /// reloaded when it changes and on SIGHUP; a new file with errors is reported and the old
    /// policy stays in force. Default: every authenticated client may list and use everything
    /// the gateway serves.
    pub file: Option<String>,
    /// What to do when a tool's structured result does not match its `outputSchema`: `warn`
    /// (default: log it and pass the result on) or `refuse` (answer with an error instead).
    pub output_schema: Option<String>,
}

/// How often clients may call.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// `local` (default: counted in this process) or `redis` (shared by every gateway that uses
    /// the same Redis).
    pub backend: Option<String>,
    /// The Redis URL, for `backend = "redis"`; may use `${VAR}`.
    pub redis_url: Option<String>,
    /// When Redis cannot be reached: `deny` (default: refuse calls) or `local` (count in this
    /// process until Redis is back). Either way the gateway logs it and `/readyz` says so.
    pub on_redis_error: Option<String>,
    /// Key prefix in Redis. Default `mcp-gateway`.
    pub redis_prefix: Option<String>,
    /// The limits. A call must fit in every limit that applies to it.
    #[serde(default)]
    pub rules: Vec<RawLimitRule>,
}

/// One rate limit.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimitRule {
    /// Which calls share one budget: `global`, `server` (one per server), `client` (one per
    /// client) or `client-tool` (one per client and tool).
    pub scope: String,
    /// MCP methods counted, e.g. `["tools/call"]`, `["resources/read"]`, `["tools/list"]`.
    /// Default: every method the gateway relays or lists.
    pub methods: Option<Vec<String>>,
    /// Count only calls to this server.
    pub server: Option<String>,
    /// Calls allowed per `per_secs`.
    pub requests: u32,
    /// The window, in seconds.
    pub per_secs: u64,
    /// Calls allowed at once after a quiet period. Default `requests`.
    pub burst: Option<u32>,
}

/// Time limits applied to upstreams.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// Longest time a request relayed to an upstream may take, in seconds. Default 60.
    pub call_secs: Option<u64>,
    /// Longest time to start and initialize an upstream, in seconds. Default 30.
    pub connect_secs: Option<u64>,
    /// Seconds between health checks of each connected upstream. An upstream that does not
    /// answer one within `health_timeout_secs` is treated as hung: its connection (and process)
    /// is ended and it is restarted. Default 15; 0 turns health checks off.
    pub health_secs: Option<u64>,
    /// Longest time a health check may take, in seconds. Default 5.
    pub health_timeout_secs: Option<u64>,
}

/// One upstream MCP server: either a local command (`command`) or a remote server (`url`).
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Program to run for a stdio server, looked up on `PATH` when it has no `/`; a relative
    /// path is relative to the directory of the config file.
    pub command: Option<String>,
    /// Arguments of `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment of `command`. The child gets only these variables plus `PATH`, `LANG` and
    /// `TERM` from the gateway's environment, and `HOME` and `TMPDIR` set to the sandbox's
    /// private `/tmp` (in the `process` tier, `HOME` is the gateway's); values may use `${VAR}`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of `command`. Relative paths are resolved against this file's directory.
    pub cwd: Option<String>,
    /// URL of a remote server.
    pub url: Option<String>,
    /// `streamable-http` (default for `url`) or `sse` (the 2024-11-05 HTTP+SSE transport).
    #[serde(rename = "type", alias = "transport")]
    pub transport: Option<String>,
    /// HTTP headers sent to a remote server; values may use `${VAR}` and are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Bearer token sent to a remote server as `Authorization: Bearer ...`; use `${VAR}`.
    pub bearer_token: Option<String>,
    /// `shared` (default): one upstream session serves every client session. `per-client`: each
    /// client session gets its own upstream session (and, for stdio, its own process).
    pub sessions: Option<String>,
    /// Longest time one relayed request may take, in seconds. Default: `timeouts.call_secs`.
    pub call_timeout_secs: Option<u64>,
    /// Most requests relayed to this server at once; more wait for a free slot (up to the call
    /// timeout). Default: no limit.
    pub max_concurrent: Option<usize>,
    /// Stop a stdio server after this many seconds without a request, and start it again on
    /// the next one (its tools stay listed meanwhile, and are verified again at the restart).
    /// Default: it runs until the gateway stops.
    pub idle_suspend_secs: Option<u64>,
    /// Start a stdio server only when a request needs it. The gateway must know a server's
    /// tools to list them, so at start-up it runs the server once to read and verify its
    /// catalog, then stops it at once (`suspended`); the first request starts it again. With
    /// `idle_suspend_secs` it is stopped again after that long without a request. Default
    /// `false`: the server keeps running from start-up.
    pub lazy: Option<bool>,
    /// Set to `false` to keep the server registered but not started. Default `true`.
    pub enabled: Option<bool>,
    /// How the server's tools are trusted.
    /// - `strict` (the default when `public_key` is set): a tool is served only with a valid
    ///   SchemaPin signature (in its `_meta`, key `io.schemapin/signature`) by that key, which is
    ///   then pinned for the tool and `domain`.
    /// - `tofu` (the default otherwise): a signature, if present, must be valid; unsigned tools
    ///   are trusted on first use.
    /// - `audit`: every tool is served, and what the others would have blocked is logged.
    ///
    /// In every mode but `audit`, a tool whose definition changed after it was first seen is
    /// quarantined (hidden, calls refused) until a person runs `mcp-gateway tools approve`.
    pub verification: Option<String>,
    /// Also accept signatures made over the schema hash directly, as SchemaPin's Go SDK makes
    /// them ("single hash"), instead of SchemaPin's reference scheme. Default `false`.
    pub allow_single_hash: Option<bool>,
    /// PEM file of the SchemaPin public key this server's tools are signed with. Relative paths
    /// are resolved against this file's directory.
    pub public_key: Option<String>,
    /// A signed-tools manifest, for a server that does not sign its own tools: a JSON array of
    /// signed schemas as `mcp-gateway sign` writes them (`{"schema", "signature", ...}`), one per
    /// tool, signed with `public_key` (or the `domain`'s key). A tool is matched by name, and its
    /// definition (without `_meta`) must be exactly the signed schema.
    pub signed_tools: Option<String>,
    /// How this stdio server is isolated; unset fields take `[sandbox]`'s.
    pub sandbox: Option<RawServerSandbox>,
    /// The publisher's domain (`example.com`, or an `https://` URL). Its key is pinned under this
    /// name. Without `public_key`, the key is fetched from its `.well-known/schemapin.json`,
    /// and the keys it revokes (there or at its `revocation_endpoint`) are refused; if revocation
    /// cannot be read, signed tools are refused. Default: the server's name, with no discovery.
    pub domain: Option<String>,
}

/// How stdio servers are isolated. Every stdio server runs inside `sandbox-runner`, in a tier:
/// `namespaces` (the default: Linux namespaces, a private read-only root, Landlock, seccomp,
/// cgroups), `gvisor`, or `process` (a clean environment and rlimits only, for development).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    /// The `sandbox-runner` binary. Default: the one beside `mcp-gateway`, else on `PATH`.
    pub runner: Option<String>,
    /// The tier servers run in. Default `namespaces`.
    pub tier: Option<String>,
    /// The tier to use when `tier` is unavailable on this host. Default: none, so a missing
    /// tier stops the server with a clear error rather than running it less isolated.
    pub fallback: Option<String>,
    /// `true` refuses the `process` tier, even as a fallback. Default `false`.
    pub production: Option<bool>,
    /// Absolute paths of the only programs a server may run. Default: any.
    #[serde(default)]
    pub allow_commands: Vec<String>,
    /// `relay` (default): the server's stdout passes through the runner, which enforces
    /// `output_bytes`. `direct`: the server writes straight to the gateway.
    pub stdout: Option<String>,
    /// Limits for every server, unless the server sets its own.
    #[serde(default)]
    pub limits: RawSandboxLimits,
}

/// Limits of one sandbox.
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSandboxLimits {
    /// Memory of the whole sandbox, like `512M` or `2G`; exceeding it is an OOM kill.
    pub memory: Option<String>,
    /// Processes and threads at once.
    pub pids: Option<u64>,
    /// CPU bandwidth in CPUs, like `0.5`.
    pub cpus: Option<f64>,
    /// CPU seconds a sandbox may use in all; then it is killed and restarted.
    pub cpu_seconds: Option<f64>,
    /// Bytes of output (stdout and stderr) a sandbox may write in all, like `1G`.
    pub output_bytes: Option<String>,
    /// Open files per process. Default 1024.
    pub open_files: Option<u64>,
}

/// How one stdio server is isolated.
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServerSandbox {
    /// The tier, overriding `[sandbox] tier`.
    pub tier: Option<String>,
    /// The fallback tier, overriding `[sandbox] fallback`.
    pub fallback: Option<String>,
    /// The directory the server may write. Default: `cwd`, else a directory of its own under
    /// the data directory. Relative paths are resolved against this file's directory.
    pub workdir: Option<String>,
    /// More host paths the server may read (an interpreter, a package directory), at the same
    /// path inside. The command's own installation (its `bin/..`, a script's interpreter, a
    /// `node_modules` tree an argument points into) is added without being named here.
    #[serde(default)]
    pub read_only: Vec<String>,
    /// More host paths the server may write.
    #[serde(default)]
    pub writable: Vec<String>,
    /// `host:port` endpoints the server may reach, through the runner's proxy (`HTTPS_PROXY`
    /// is set for it). Default: none; the server has no network.
    #[serde(default)]
    pub allow_net: Vec<String>,
    /// Limits of this server, each overriding `[sandbox.limits]`.
    #[serde(default)]
    pub limits: RawSandboxLimits,
}
