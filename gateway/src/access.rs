//! The checks between finding what a request names and sending it upstream, in the design's
//! order: policy, then rate limits, then argument validation. Authentication happened at the
//! front door, and verification when the name was resolved (an untrusted tool does not
//! resolve).
//!
//! A request the policy denies is answered exactly as one for a name that does not exist, so
//! a client cannot learn what it may not use.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rmcp::ErrorData as McpError;
use tokio_util::sync::CancellationToken;

use crate::{
    audit::Arguments,
    config::{Config, access::OutputCheck},
    identity::{AuthMethod, Authenticator, Identity},
    limits::{CallKey, Limits, LimitsConfig, Refused, Rule, Scope},
    policy::{Conditions, RateCondition, Target, reload::PolicyHandle},
    registry::ToolRef,
    validate::{Invalid, Validators},
};

/// How often the policy and config files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// JSON-RPC code of a call refused by a rate limit (implementation-defined server error range).
pub const RATE_LIMITED: i32 = -32029;

/// Why a request is not sent upstream.
#[derive(Debug)]
pub enum Refusal {
    /// The policy denies it: answered as if the name did not exist.
    Hidden,
    Limited(Refused),
    InvalidArguments(Invalid),
    /// The policy allows it only in a sandbox this gateway cannot provide.
    SandboxUnavailable(String),
}

/// Whether a call the policy allows only in a sandbox (`@sandbox(...)`) can have one:
/// `per-call` needs a stdio server (each call then gets a fresh sandbox); a tier name needs the
/// server to be running in that tier. Otherwise the call is refused, never run less isolated.
fn sandbox_satisfied(
    conditions: &Conditions,
    upstream: &crate::upstream::Upstream,
) -> Result<(), Refusal> {
    let Some(wanted) = &conditions.sandbox else {
        return Ok(());
    };
    let stdio = matches!(
        upstream.spec.transport,
        crate::config::TransportSpec::Stdio(_)
    );
    let satisfied = match wanted.as_str() {
        PER_CALL => stdio,
        tier => stdio && upstream.tier() == tier,
    };
    if satisfied {
        Ok(())
    } else {
        Err(Refusal::SandboxUnavailable(wanted.clone()))
    }
}

/// `@sandbox("per-call")`: the call runs in a fresh sandbox of its own.
pub const PER_CALL: &str = "per-call";

impl Refusal {
    /// The one mapping of refusals to JSON-RPC errors. `unknown` is the error for a name that
    /// does not exist, which a hidden name must be indistinguishable from.
    pub fn into_error(self, unknown: impl FnOnce() -> McpError) -> McpError {
        match self {
            Self::Hidden => unknown(),
            Self::Limited(refused) => {
                let retry_ms = refused.retry_after.as_millis() as u64;
                McpError::new(
                    rmcp::model::ErrorCode(RATE_LIMITED),
                    refused.to_string(),
                    Some(serde_json::json!({
                        "retryAfterMs": retry_ms,
                        "retryAfterSecs": retry_ms.div_ceil(1000),
                        "scope": refused.scope.as_str(),
                        "backendUnavailable": refused.backend_unavailable,
                    })),
                )
            }
            Self::InvalidArguments(invalid) => McpError::invalid_params(
                format!("invalid arguments: {invalid}"),
                Some(serde_json::json!({
                    "path": invalid.path,
                    "rule": invalid.rule,
                    "schemaPath": invalid.schema_path,
                })),
            ),
            Self::SandboxUnavailable(tier) => McpError::internal_error(
                format!(
                    "the policy allows this call only in a `{tier}` sandbox, which this server \
                     does not run in (a remote server has none; a stdio server runs in the tier \
                     its config names)"
                ),
                None,
            ),
        }
    }
}

/// Identity, policy, limits and validators: everything a request is checked against.
pub struct Access {
    pub authenticator: Authenticator,
    pub policy: Arc<PolicyHandle>,
    /// The limits in force; replaced when `[limits]` changes in the config file.
    limits: ArcSwap<Limits>,
    limits_config: std::sync::Mutex<LimitsConfig>,
    pub validators: Validators,
    pub output_check: OutputCheck,
    /// The client of the stdio front door.
    pub stdio_identity: Identity,
    /// Limits that policies attach with `@rate_limit`, one set per distinct limit.
    policy_limits: Mutex<HashMap<RateCondition, Arc<Limits>>>,
    /// Where each decision on a call, read or prompt is recorded.
    audit: Option<crate::audit::AuditLog>,
}

impl Access {
    pub async fn new(
        config: &Config,
        api_keys: crate::identity::api_keys::ApiKeys,
        audit: Option<crate::audit::AuditLog>,
    ) -> Result<Self, String> {
        let policy = PolicyHandle::load(config.policy.file.clone()).map_err(|e| e.to_string())?;
        let limits = Limits::new(config.limits.clone())
            .await
            .map_err(|e| format!("limits: {e}"))?;
        Ok(Self {
            authenticator: Authenticator::new(
                config.auth.anonymous,
                api_keys,
                config.auth.issuers.clone(),
            ),
            policy: Arc::new(policy),
            limits: ArcSwap::from_pointee(limits),
            limits_config: std::sync::Mutex::new(config.limits.clone()),
            validators: Validators::default(),
            output_check: config.policy.output_schema,
            stdio_identity: Identity {
                client: config.auth.stdio_client.clone(),
                groups: config.auth.stdio_groups.clone(),
                via: AuthMethod::Stdio,
            },
            policy_limits: Mutex::new(HashMap::new()),
            audit,
        })
    }

    /// Whether the shared limits backend (Redis) is unreachable.
    pub fn limits_degraded(&self) -> bool {
        self.limits.load().degraded()
    }

    /// Reloads what can change without a restart: the policy file when it changes, `[limits]`
    /// when the config file changes, and both on SIGHUP. A file with an error is reported and
    /// what is in force stays. Runs until `shutdown`.
    pub async fn watch(&self, config_file: &Path, shutdown: CancellationToken) {
        let stamp = |path: Option<&Path>| -> Option<(SystemTime, u64)> {
            let meta = std::fs::metadata(path?).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        let mut policy_seen = stamp(self.policy.file());
        let mut config_seen = stamp(Some(config_file));
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
            };
            let policy_now = stamp(self.policy.file());
            if forced || policy_now != policy_seen {
                policy_seen = policy_now;
                match self.policy.reload() {
                    Ok(()) => self.record_event(serde_json::json!({
                        "kind": "policy-reload",
                        "file": self.policy.file().map(|f| f.display().to_string()),
                        "policies": self.policy.current().len(),
                        "applied": true,
                    })),
                    Err(e) => {
                        tracing::error!(error = %e, "the new policy is not valid; the previous policy stays in force");
                        self.record_event(serde_json::json!({
                            "kind": "policy-reload",
                            "file": e.file.display().to_string(),
                            "line": e.line,
                            "error": e.message,
                            "applied": false,
                        }));
                    }
                }
            }
            let config_now = stamp(Some(config_file));
            if forced || config_now != config_seen {
                config_seen = config_now;
                self.reload_limits(config_file).await;
            }
        }
    }

    /// Reads `[limits]` from the config file again and puts the new limits in force if they
    /// changed. Counters start afresh under new limits.
    pub async fn reload_limits(&self, config_file: &Path) {
        let config = match Config::load(config_file) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "the changed config is not valid; the limits in force stay");
                return;
            }
        };
        let unchanged =
            *self.limits_config.lock().unwrap_or_else(|e| e.into_inner()) == config.limits;
        if unchanged {
            return;
        }
        match Limits::new(config.limits.clone()).await {
            Ok(limits) => {
                self.limits.store(Arc::new(limits));
                let rules = config.limits.rules.len();
                *self.limits_config.lock().unwrap_or_else(|e| e.into_inner()) = config.limits;
                tracing::info!(file = %config_file.display(), rules, "limits reloaded");
                self.record_event(serde_json::json!({
                    "kind": "limits-reload",
                    "file": config_file.display().to_string(),
                    "rules": rules,
                    "applied": true,
                }));
            }
            Err(e) => {
                tracing::error!(error = %e, "the new limits cannot be used; the limits in force stay")
            }
        }
    }

    /// Records a configuration event (a reload) in the audit trail.
    fn record_event(&self, mut body: serde_json::Value) {
        let Some(audit) = &self.audit else {
            return;
        };
        body["time"] = crate::audit::now_ms().into();
        if let Err(e) = audit.record_nowait(&body) {
            tracing::error!(error = %e, "cannot record a configuration event");
        }
    }

    /// Whether `who` may see `target` in the list answered for `action`.
    pub fn visible(
        &self,
        who: &Identity,
        session: &str,
        action: &str,
        target: &Target<'_>,
    ) -> bool {
        self.policy
            .current()
            .decide(who, action, target, session, None)
            .allowed
    }

    /// Checks a `tools/call` of `tool` (client-visible `name`) with `arguments`.
    pub async fn admit_call(
        &self,
        who: &Identity,
        session: &str,
        name: &str,
        tool: &ToolRef<'_>,
        arguments: &Arguments,
    ) -> Result<Conditions, Refusal> {
        let trust = tool.trust();
        let definition = tool.tool();
        let target = Target::tool(name, &tool.upstream.name, tool.local, definition, trust);
        let conditions = self.decide(who, session, "tools/call", &target, arguments)?;
        sandbox_satisfied(&conditions, tool.upstream)?;
        self.limit(
            who,
            "tools/call",
            &tool.upstream.name,
            Some(name),
            &conditions,
        )
        .await?;
        let hash = trust.map(|t| t.hash.as_str()).unwrap_or_default();
        self.validators
            .check_input(hash, &definition.input_schema, arguments.value())
            .map_err(Refusal::InvalidArguments)?;
        Ok(conditions)
    }

    /// Checks a `prompts/get` or `resources/read` of `target`.
    pub async fn admit(
        &self,
        who: &Identity,
        session: &str,
        action: &str,
        target: &Target<'_>,
        arguments: &Arguments,
    ) -> Result<Conditions, Refusal> {
        let conditions = self.decide(who, session, action, target, arguments)?;
        // Only tool calls can be given a sandbox of their own.
        if let Some(tier) = &conditions.sandbox {
            return Err(Refusal::SandboxUnavailable(tier.clone()));
        }
        let name = match target {
            Target::Prompt { name, .. } => Some(*name),
            Target::Resource { .. } | Target::Tool { .. } => None,
        };
        self.limit(who, action, target.server(), name, &conditions)
            .await?;
        Ok(conditions)
    }

    /// Counts a list request against the limits that count list methods.
    pub async fn admit_list(&self, who: &Identity, method: &str) -> Result<(), Refusal> {
        self.limits
            .load()
            .check(&CallKey {
                method,
                client: &who.client,
                server: "",
                tool: None,
            })
            .await
            .map_err(Refusal::Limited)
    }

    fn decide(
        &self,
        who: &Identity,
        session: &str,
        action: &str,
        target: &Target<'_>,
        arguments: &Arguments,
    ) -> Result<Conditions, Refusal> {
        let decision = self
            .policy
            .current()
            .decide(who, action, target, session, arguments.map());
        if let Some(audit) = &self.audit {
            let record =
                crate::audit::decision_record(who, session, action, target, arguments, &decision);
            // Not waited for: the outcome record that follows is, and the chain is in order.
            if let Err(e) = audit.record_nowait(&record) {
                tracing::error!(error = %e, "cannot record a policy decision");
            }
        }
        if !decision.allowed {
            tracing::info!(
                target: "audit",
                client = %who.client,
                action,
                resource = ?target,
                policies = ?decision.policies,
                errors = ?decision.errors,
                "denied by policy"
            );
            return Err(Refusal::Hidden);
        }
        Ok(decision.conditions)
    }

    async fn limit(
        &self,
        who: &Identity,
        method: &str,
        server: &str,
        tool: Option<&str>,
        conditions: &Conditions,
    ) -> Result<(), Refusal> {
        let key = CallKey {
            method,
            client: &who.client,
            server,
            tool,
        };
        self.limits
            .load()
            .check(&key)
            .await
            .map_err(Refusal::Limited)?;
        if let Some(rate) = conditions.rate_limit {
            self.policy_limit(rate)
                .check_local(&key)
                .map_err(Refusal::Limited)?;
        }
        Ok(())
    }

    /// The per-client-and-tool limiter of a policy's `@rate_limit`. Kept locally: a policy's
    /// limit is a per-replica guard on top of the configured (possibly shared) limits.
    fn policy_limit(&self, rate: RateCondition) -> Arc<Limits> {
        let mut limits = self.policy_limits.lock().unwrap_or_else(|e| e.into_inner());
        limits
            .entry(rate)
            .or_insert_with(|| {
                let requests = NonZeroU32::new(rate.requests).unwrap_or(NonZeroU32::MIN);
                Arc::new(Limits::with_clock(
                    LimitsConfig {
                        rules: vec![Rule::new(
                            Scope::ClientTool,
                            requests,
                            Duration::from_secs(rate.per_secs),
                        )],
                        ..LimitsConfig::default()
                    },
                    governor::clock::DefaultClock::default(),
                ))
            })
            .clone()
    }

    /// Checks a tool's structured result against its `outputSchema`, if it declares one.
    /// Returns the error to answer with instead when the config says `refuse`.
    pub fn check_output(
        &self,
        tool: &ToolRef<'_>,
        result: &rmcp::model::CallToolResult,
    ) -> Result<(), McpError> {
        let (Some(schema), Some(structured)) = (
            tool.tool().output_schema.as_ref(),
            result.structured_content.as_ref(),
        ) else {
            return Ok(());
        };
        let hash = tool.trust().map(|t| t.hash.as_str()).unwrap_or_default();
        let Err(invalid) = self.validators.check_output(hash, schema, structured) else {
            return Ok(());
        };
        tracing::warn!(
            server = %tool.upstream.name,
            tool = %tool.local,
            error = %invalid,
            refused = self.output_check == OutputCheck::Refuse,
            "structured result does not match the tool's outputSchema"
        );
        match self.output_check {
            OutputCheck::Warn => Ok(()),
            OutputCheck::Refuse => Err(McpError::internal_error(
                format!("the tool's result does not match its outputSchema: {invalid}"),
                None,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(output_check: OutputCheck) -> Access {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .connect_lazy("sqlite::memory:")
            .unwrap();
        Access {
            authenticator: Authenticator::new(
                false,
                crate::identity::api_keys::ApiKeys::new(pool),
                Vec::new(),
            ),
            policy: Arc::new(PolicyHandle::fixed(
                crate::policy::PolicyEngine::default_policy(),
            )),
            limits: ArcSwap::from_pointee(Limits::with_clock(
                LimitsConfig::default(),
                governor::clock::DefaultClock::default(),
            )),
            limits_config: std::sync::Mutex::new(LimitsConfig::default()),
            validators: Validators::default(),
            output_check,
            stdio_identity: Identity::anonymous(),
            policy_limits: Mutex::new(HashMap::new()),
            audit: None,
        }
    }

    fn structured(value: serde_json::Value) -> rmcp::model::CallToolResult {
        rmcp::model::CallToolResult::structured(value)
    }

    #[tokio::test]
    async fn structured_results_are_checked_against_the_output_schema() {
        let mut tool = rmcp::model::Tool::new("weather", "d", Arc::new(serde_json::Map::new()));
        tool.output_schema = Some(Arc::new(
            serde_json::json!({
                "type": "object",
                "properties": {"celsius": {"type": "number"}},
                "required": ["celsius"]
            })
            .as_object()
            .unwrap()
            .clone(),
        ));
        let registry = crate::registry::test_registry(vec![vec![tool]], 10);
        let tool = registry.lookup_tool("s0__weather").unwrap();
        let good = structured(serde_json::json!({"celsius": 21.5}));
        let bad = structured(serde_json::json!({"fahrenheit": 70}));

        let warn = access(OutputCheck::Warn);
        assert!(warn.check_output(&tool, &good).is_ok());
        assert!(warn.check_output(&tool, &bad).is_ok(), "warn passes it on");
        let refuse = access(OutputCheck::Refuse);
        assert!(refuse.check_output(&tool, &good).is_ok());
        let error = refuse.check_output(&tool, &bad).unwrap_err();
        assert!(error.message.contains("outputSchema"), "{}", error.message);
    }
}
