//! Validation of the access sections of `gateway.toml`: `[auth]`, `[policy]` and `[limits]`.

use std::{num::NonZeroU32, path::Path, path::PathBuf, sync::Arc, time::Duration};

use super::{
    interpolate::{Vars, interpolate},
    raw::{RawAuth, RawLimits, RawPolicy},
};
use crate::{
    identity::jwt::{self, JwtIssuer, KeySource},
    limits::{Backend, LimitsConfig, OnBackendError, Rule, Scope},
};

/// Who may connect.
#[derive(Clone)]
pub struct AuthConfig {
    pub anonymous: bool,
    /// Anonymous access may be served on an address other than loopback.
    pub anonymous_beyond_loopback: bool,
    pub issuers: Vec<Arc<JwtIssuer>>,
    pub stdio_client: String,
    pub stdio_groups: Vec<String>,
}

impl AuthConfig {
    /// Refuses anonymous access on `bind` when it is not a loopback address, unless the config
    /// says so (`auth.anonymous_beyond_loopback`).
    pub fn check_bind(&self, bind: std::net::SocketAddr) -> Result<(), String> {
        if !self.anonymous || bind.ip().is_loopback() || self.anonymous_beyond_loopback {
            return Ok(());
        }
        Err(format!(
            "auth.anonymous: anonymous access on {bind}, which is not a loopback address, would \
             let anyone who can reach it call every tool; use API keys (`mcp-gateway clients \
             create`) or JWTs, or, behind a proxy that authenticates every request, set \
             auth.anonymous_beyond_loopback = true"
        ))
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("anonymous", &self.anonymous)
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>(),
            )
            .field("stdio_client", &self.stdio_client)
            .finish()
    }
}

/// What to do with a result that does not match the tool's `outputSchema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputCheck {
    Warn,
    Refuse,
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub file: Option<PathBuf>,
    pub output_schema: OutputCheck,
}

const DEFAULT_ALGORITHMS: [&str; 2] = ["RS256", "ES256"];

pub(super) fn auth(raw: &RawAuth, base: &Path) -> Result<AuthConfig, String> {
    let mut issuers = Vec::new();
    for (i, jwt) in raw.jwt.iter().enumerate() {
        let key = |field: &str| format!("auth.jwt[{i}].{field}");
        if jwt.issuer.is_empty() {
            return Err(format!("{}: must not be empty", key("issuer")));
        }
        if jwt.audience.is_empty() {
            return Err(format!("{}: name at least one audience", key("audience")));
        }
        let algorithms = match &jwt.algorithms {
            Some(names) => names
                .iter()
                .map(|n| jwt::parse_algorithm(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", key("algorithms")))?,
            None => DEFAULT_ALGORITHMS
                .iter()
                .map(|n| jwt::parse_algorithm(n))
                .collect::<Result<Vec<_>, _>>()?,
        };
        if algorithms.is_empty() {
            return Err(format!("{}: name at least one", key("algorithms")));
        }
        let keys = match (&jwt.jwks_url, &jwt.keys) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!(
                    "auth.jwt[{i}]: set exactly one of `jwks_url` and `keys`"
                ));
            }
            (None, Some(files)) => {
                let mut keys = Vec::new();
                for file in files {
                    let path = base.join(file);
                    let pem = std::fs::read(&path)
                        .map_err(|e| format!("{}: {}: {e}", key("keys"), path.display()))?;
                    keys.push(
                        jwt::read_pem_key(&pem)
                            .map_err(|e| format!("{}: {}: {e}", key("keys"), path.display()))?,
                    );
                }
                KeySource::Static(keys)
            }
            (Some(url), None) => {
                let parsed =
                    url::Url::parse(url).map_err(|e| format!("{}: {e}", key("jwks_url")))?;
                let loopback = parsed.host().is_some_and(|h| match h {
                    url::Host::Ipv4(ip) => ip.is_loopback(),
                    url::Host::Ipv6(ip) => ip.is_loopback(),
                    url::Host::Domain(d) => d == "localhost",
                });
                let plain_ok = jwt.allow_http_loopback.unwrap_or(false) && loopback;
                if parsed.scheme() != "https" && !(parsed.scheme() == "http" && plain_ok) {
                    return Err(format!(
                        "{}: must be https (plain http only to loopback with allow_http_loopback)",
                        key("jwks_url")
                    ));
                }
                KeySource::Jwks {
                    url: parsed,
                    client: jwt::jwks_client(Duration::from_secs(5))
                        .map_err(|e| format!("{}: {e}", key("jwks_url")))?,
                    cache: tokio::sync::Mutex::new(None),
                    last_fetch: std::sync::Mutex::new(None),
                }
            }
        };
        issuers.push(Arc::new(JwtIssuer {
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
            algorithms,
            keys,
            subject_claim: jwt.subject_claim.clone().unwrap_or_else(|| "sub".into()),
            groups_claim: jwt.groups_claim.clone().unwrap_or_else(|| "groups".into()),
            leeway: Duration::from_secs(jwt.leeway_secs.unwrap_or(30)),
        }));
    }
    let stdio_client = raw.stdio_client.clone().unwrap_or_else(|| "stdio".into());
    crate::identity::api_keys::validate_client_name(&stdio_client)
        .map_err(|e| format!("auth.stdio_client: {e}"))?;
    Ok(AuthConfig {
        anonymous: raw.anonymous.unwrap_or(false),
        anonymous_beyond_loopback: raw.anonymous_beyond_loopback.unwrap_or(false),
        issuers,
        stdio_client,
        stdio_groups: raw.stdio_groups.clone().unwrap_or_default(),
    })
}

pub(super) fn policy(raw: &RawPolicy, base: &Path) -> Result<PolicyConfig, String> {
    let output_schema = match raw.output_schema.as_deref() {
        None | Some("warn") => OutputCheck::Warn,
        Some("refuse") => OutputCheck::Refuse,
        Some(other) => {
            return Err(format!(
                "policy.output_schema: `{other}` is neither `warn` nor `refuse`"
            ));
        }
    };
    Ok(PolicyConfig {
        file: raw.file.as_ref().map(|f| base.join(f)),
        output_schema,
    })
}

/// The methods a limit may count.
const COUNTED_METHODS: [&str; 7] = [
    "tools/call",
    "tools/list",
    "resources/read",
    "resources/list",
    "resources/templates/list",
    "prompts/get",
    "prompts/list",
];

pub(super) fn limits(raw: &RawLimits, vars: &Vars) -> Result<LimitsConfig, String> {
    let backend = match raw.backend.as_deref() {
        None | Some("local") => {
            if raw.redis_url.is_some() {
                return Err("limits.redis_url: set only with backend = \"redis\"".into());
            }
            Backend::Local
        }
        Some("redis") => {
            let url = raw
                .redis_url
                .as_deref()
                .ok_or("limits.redis_url: required with backend = \"redis\"")?;
            Backend::Redis {
                url: interpolate(url, vars).map_err(|e| format!("limits.redis_url: {e}"))?,
            }
        }
        Some(other) => {
            return Err(format!(
                "limits.backend: `{other}` is neither `local` nor `redis`"
            ));
        }
    };
    let on_backend_error = match raw.on_redis_error.as_deref() {
        None | Some("deny") => OnBackendError::Deny,
        Some("local") => OnBackendError::Local,
        Some(other) => {
            return Err(format!(
                "limits.on_redis_error: `{other}` is neither `deny` nor `local`"
            ));
        }
    };
    let mut rules = Vec::new();
    for (i, rule) in raw.rules.iter().enumerate() {
        let key = |field: &str| format!("limits.rules[{i}].{field}");
        let scope = match rule.scope.as_str() {
            "global" => Scope::Global,
            "server" => Scope::Server,
            "client" => Scope::Client,
            "client-tool" => Scope::ClientTool,
            other => {
                return Err(format!(
                    "{}: `{other}` is not one of `global`, `server`, `client`, `client-tool`",
                    key("scope")
                ));
            }
        };
        let methods = rule.methods.clone().unwrap_or_default();
        if let Some(bad) = methods
            .iter()
            .find(|m| !COUNTED_METHODS.contains(&m.as_str()))
        {
            return Err(format!(
                "{}: `{bad}` is not one of {}",
                key("methods"),
                COUNTED_METHODS.join(", ")
            ));
        }
        let requests = NonZeroU32::new(rule.requests)
            .ok_or_else(|| format!("{}: must be at least 1", key("requests")))?;
        if rule.per_secs == 0 {
            return Err(format!("{}: must be at least 1", key("per_secs")));
        }
        let burst = match rule.burst {
            Some(b) => {
                NonZeroU32::new(b).ok_or_else(|| format!("{}: must be at least 1", key("burst")))?
            }
            None => requests,
        };
        rules.push(Rule {
            scope,
            methods,
            server: rule.server.clone(),
            requests,
            per: Duration::from_secs(rule.per_secs),
            burst,
        });
    }
    Ok(LimitsConfig {
        backend,
        on_backend_error,
        rules,
        redis_prefix: raw
            .redis_prefix
            .clone()
            .unwrap_or_else(|| "mcp-gateway".into()),
    })
}
