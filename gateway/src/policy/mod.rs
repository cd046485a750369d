//! Who may do what: Cedar policies over clients, MCP methods and tools, resources and prompts.
//!
//! The schema is `schemas/policy.cedarschema`. A request is `principal` = the client (in its
//! groups), `action` = the MCP method, `resource` = the tool, resource or prompt under the name
//! clients see (in its server), and `context` = session, time and, for calls, the arguments.
//!
//! Decisions follow Cedar: a request is allowed when some `permit` applies and no `forbid`
//! does. One rule is stricter than Cedar's: a `forbid` whose condition fails to evaluate (an
//! argument it reads is missing, say) denies, where Cedar would skip it. A forbid is a guard,
//! and a guard that cannot be checked must not open.
//!
//! Policies are indexed by the resource in their scope (`resource == Mcp::Tool::"x"`,
//! `resource in Mcp::Server::"s"`), so a decision evaluates only the policies that can apply
//! to its resource: the policy set for each resource is built once and cached.

pub mod reload;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicySet, Request, ResourceConstraint,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::identity::Identity;

/// The schema every policy is written against.
pub const SCHEMA: &str = include_str!("../../../schemas/policy.cedarschema");

/// The policy in force when the config names no policy file: every authenticated client may
/// list and use every tool, resource and prompt the gateway serves. Authentication and tool
/// verification still apply.
pub const DEFAULT_POLICY: &str = "@id(\"default-allow\")\npermit(principal, action, resource);\n";

/// Deepest nesting of call arguments translated for policy; deeper values are left out.
const MAX_ARGUMENT_DEPTH: usize = 32;

/// A policy file that cannot be used, with where the problem is.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// What a policy decision may attach to an allowed request, from annotations on the `permit`
/// policies that decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Conditions {
    /// `@sandbox("per-call")`: run the call in a fresh sandbox (the sandbox issue acts on it).
    pub sandbox: Option<String>,
    /// `@redact("a.b c")`: argument paths to redact in the audit record.
    pub redact: Vec<String>,
    /// `@rate_limit("10/60")`: at most 10 calls per 60 seconds for this client and tool.
    pub rate_limit: Option<RateCondition>,
}

/// A rate limit a policy attaches to the calls it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct RateCondition {
    pub requests: u32,
    pub per_secs: u64,
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that decided: the `forbid`s that applied, or else the `permit`s that did.
    /// Named by their `@id` annotation, or `policyN` in file order.
    pub policies: Vec<String>,
    pub conditions: Conditions,
    /// Policies that failed to evaluate.
    pub errors: Vec<String>,
}

/// What is being decided about.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    Tool {
        /// The client-visible name.
        name: &'a str,
        server: &'a str,
        /// The tool's name at its upstream.
        local: &'a str,
        verification: &'a str,
        annotations: Option<&'a rmcp::model::ToolAnnotations>,
    },
    Resource {
        uri: &'a str,
        server: &'a str,
    },
    Prompt {
        name: &'a str,
        server: &'a str,
        local: &'a str,
    },
}

impl<'a> Target<'a> {
    /// A tool as listed by `server` (as `local`), under the client-visible `name`, with the
    /// trust state the gateway concluded (`unsigned` when it has none, as in audit mode).
    pub fn tool(
        name: &'a str,
        server: &'a str,
        local: &'a str,
        definition: &'a rmcp::model::Tool,
        trust: Option<&'a crate::upstream::ToolTrust>,
    ) -> Self {
        Self::Tool {
            name,
            server,
            local,
            verification: trust.map(|t| t.state()).unwrap_or("unsigned"),
            annotations: definition.annotations.as_ref(),
        }
    }

    /// The server of the tool, resource or prompt.
    pub fn server(&self) -> &'a str {
        match self {
            Self::Tool { server, .. }
            | Self::Resource { server, .. }
            | Self::Prompt { server, .. } => server,
        }
    }
}

/// A parsed, validated and indexed policy file.
pub struct PolicyEngine {
    /// Where the policies came from (`None` for the built-in default).
    pub source: Option<PathBuf>,
    all: PolicySet,
    /// Policies whose scope names no particular tool, resource, prompt or server.
    general: Vec<Policy>,
    /// Policies whose scope names one entity (`resource == X` or `resource in X`), by entity.
    by_entity: HashMap<EntityUid, Vec<Policy>>,
    /// The policy set of each resource seen so far.
    cache: Mutex<HashMap<EntityUid, Arc<PolicySet>>>,
    schema: Schema,
    /// The action entities of the schema, with their groups (`tools/call` in `tools`).
    actions: Vec<Entity>,
    authorizer: Authorizer,
}

fn entity_type(name: &str) -> EntityTypeName {
    // The names are fixed and valid; a failure here is a bug caught by every test.
    EntityTypeName::from_str(name).unwrap_or_else(|_| unreachable!("invalid entity type {name}"))
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(entity_type(kind), EntityId::new(id))
}

fn schema() -> Result<Schema, String> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| format!("the built-in policy schema is invalid: {e}"))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|prefix| prefix.matches('\n').count() + 1)
        .unwrap_or(1)
}

/// The first source offset a diagnostic points at.
fn first_offset(diagnostic: &dyn miette::Diagnostic) -> Option<usize> {
    diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
        .or_else(|| {
            diagnostic
                .related()
                .and_then(|mut related| related.next())
                .and_then(first_offset)
        })
}

/// Whether a validation error is only that the validator does not know the attributes of
/// `context.arguments`. The schema cannot declare them (they are each tool's own), so reads of
/// arguments are checked at decision time instead, where a missing one is an evaluation error.
fn is_argument_access(error: &cedar_policy::ValidationError, text: &str) -> bool {
    if !matches!(
        error,
        cedar_policy::ValidationError::UnsafeAttributeAccess(_)
            | cedar_policy::ValidationError::UnsafeOptionalAttributeAccess(_)
    ) {
        return false;
    }
    error.to_string().contains("context.arguments")
        || first_offset(error)
            .and_then(|offset| text.get(offset..))
            .is_some_and(|rest| rest.starts_with("context.arguments"))
}

impl PolicyEngine {
    /// The built-in policy used when the config names no file.
    pub fn default_policy() -> Self {
        // The default text is fixed and parses; the test suite checks it.
        Self::parse(Path::new("<default policy>"), DEFAULT_POLICY)
            .unwrap_or_else(|e| unreachable!("the default policy is invalid: {e}"))
            .with_source(None)
    }

    fn with_source(mut self, source: Option<PathBuf>) -> Self {
        self.source = source;
        self
    }

    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.to_owned(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` (as read from `path`), validates it against the schema and indexes it.
    pub fn parse(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let error = |offset: Option<usize>, message: String| PolicyError {
            file: path.to_owned(),
            line: offset.map(|o| line_of(text, o)),
            message,
        };
        let schema = schema().map_err(|m| error(None, m))?;
        let all = PolicySet::from_str(text).map_err(|e| {
            let detail = miette::Diagnostic::related(&e)
                .and_then(|mut r| r.next())
                .map(|r| r.to_string())
                .unwrap_or_else(|| e.to_string());
            error(first_offset(&e), detail)
        })?;
        if all.templates().next().is_some() {
            return Err(error(
                None,
                "policy templates (`?principal`, `?resource`) are not supported".into(),
            ));
        }
        let validation = Validator::new(schema.clone()).validate(&all, ValidationMode::Strict);
        if let Some(e) = validation
            .validation_errors()
            .find(|e| !is_argument_access(e, text))
        {
            return Err(error(first_offset(e), e.to_string()));
        }
        let mut general = Vec::new();
        let mut by_entity: HashMap<EntityUid, Vec<Policy>> = HashMap::new();
        for policy in all.policies() {
            match policy.resource_constraint() {
                ResourceConstraint::Eq(uid)
                | ResourceConstraint::In(uid)
                | ResourceConstraint::IsIn(_, uid) => {
                    by_entity.entry(uid).or_default().push(policy.clone())
                }
                ResourceConstraint::Any | ResourceConstraint::Is(_) => general.push(policy.clone()),
            }
        }
        Ok(Self {
            source: Some(path.to_owned()),
            all,
            general,
            by_entity,
            cache: Mutex::new(HashMap::new()),
            actions: schema
                .action_entities()
                .map(|entities| entities.iter().cloned().collect())
                .map_err(|e| error(None, format!("the policy schema's actions: {e}")))?,
            schema,
            authorizer: Authorizer::new(),
        })
    }

    /// How many policies are in force.
    pub fn len(&self) -> usize {
        self.all.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The policies that can apply to `resource` in `server`.
    fn policies_for(&self, resource: &EntityUid, server: &EntityUid) -> Arc<PolicySet> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = cache.get(resource) {
            return set.clone();
        }
        let applicable = self
            .general
            .iter()
            .chain(self.by_entity.get(resource).into_iter().flatten())
            .chain(self.by_entity.get(server).into_iter().flatten())
            .cloned();
        // The policies were one valid set, so any subset is too.
        let set = Arc::new(PolicySet::from_policies(applicable).unwrap_or_default());
        // A bound on distinct resources, so a huge catalog cannot grow this without end.
        if cache.len() >= 100_000 {
            cache.clear();
        }
        cache.insert(resource.clone(), set.clone());
        set
    }

    /// Decides whether `identity` may perform `action` (an MCP method) on `target`.
    /// `arguments` are the call's arguments for `tools/call` and `prompts/get`.
    pub fn decide(
        &self,
        identity: &Identity,
        action: &str,
        target: &Target<'_>,
        session: &str,
        arguments: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> Decision {
        let deny = |reason: String| Decision {
            allowed: false,
            policies: Vec::new(),
            conditions: Conditions::default(),
            errors: vec![reason],
        };
        let server_uid = uid("Mcp::Server", target.server());
        let (resource, attrs) = resource_entity(target);
        let principal = uid("Mcp::Client", &identity.client);
        let groups: Vec<Entity> = identity
            .groups
            .iter()
            .map(|g| Entity::with_uid(uid("Mcp::Group", g)))
            .collect();
        let client = match Entity::new(
            principal.clone(),
            HashMap::from([(
                "via".to_owned(),
                RestrictedExpression::new_string(identity.via.as_str().to_owned()),
            )]),
            groups.iter().map(|g| g.uid()).collect(),
        ) {
            Ok(client) => client,
            Err(e) => return deny(e.to_string()),
        };
        let resource_entity = match Entity::new(
            resource.clone(),
            attrs,
            [server_uid.clone()].into_iter().collect(),
        ) {
            Ok(entity) => entity,
            Err(e) => return deny(e.to_string()),
        };
        let entities = match Entities::from_entities(
            groups
                .into_iter()
                .chain([
                    client,
                    resource_entity,
                    Entity::with_uid(server_uid.clone()),
                ])
                .chain(self.actions.iter().cloned()),
            None,
        ) {
            Ok(entities) => entities,
            Err(e) => return deny(e.to_string()),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs() as i64;
        let mut context = vec![
            (
                "session".to_owned(),
                RestrictedExpression::new_string(session.to_owned()),
            ),
            ("time".to_owned(), RestrictedExpression::new_long(now)),
        ];
        if matches!(action, "tools/call" | "prompts/get") {
            let args = arguments
                .map(|a| record(a, 0))
                .unwrap_or_else(|| record(&serde_json::Map::new(), 0));
            context.push(("arguments".to_owned(), args));
        }
        let context = match Context::from_pairs(context) {
            Ok(context) => context,
            Err(e) => return deny(e.to_string()),
        };
        let request = match Request::new(
            principal,
            uid("Mcp::Action", action),
            resource.clone(),
            context,
            None,
        ) {
            Ok(request) => request,
            Err(e) => return deny(e.to_string()),
        };
        let set = self.policies_for(&resource, &server_uid);
        let response = self.authorizer.is_authorized(&request, &set, &entities);
        let name = |id: &cedar_policy::PolicyId| {
            set.annotation(id, "id")
                .map(str::to_owned)
                .unwrap_or_else(|| id.to_string())
        };
        let errors: Vec<_> = response.diagnostics().errors().collect();
        let failed_forbids: Vec<String> = errors
            .iter()
            .filter_map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                let id = e.policy_id();
                (set.policy(id).map(Policy::effect) == Some(Effect::Forbid)).then(|| name(id))
            })
            .collect();
        let error_texts = errors.iter().map(|e| e.to_string()).collect();
        let reasons: Vec<&cedar_policy::PolicyId> = response.diagnostics().reason().collect();
        if response.decision() == CedarDecision::Deny || !failed_forbids.is_empty() {
            let mut policies: Vec<String> = reasons
                .iter()
                .filter(|id| set.policy(id).map(Policy::effect) == Some(Effect::Forbid))
                .map(|id| name(id))
                .collect();
            policies.extend(failed_forbids);
            return Decision {
                allowed: false,
                policies,
                conditions: Conditions::default(),
                errors: error_texts,
            };
        }
        let mut conditions = Conditions::default();
        for id in &reasons {
            if let Some(policy) = set.policy(id) {
                apply_annotations(policy, &mut conditions);
            }
        }
        Decision {
            allowed: true,
            policies: reasons.iter().map(|id| name(id)).collect(),
            conditions,
            errors: error_texts,
        }
    }

    /// The schema policies are validated against.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
}

/// Reads the condition annotations of a `permit` policy into `conditions`. When several
/// permits decide, the strictest of each condition wins.
fn apply_annotations(policy: &Policy, conditions: &mut Conditions) {
    if let Some(sandbox) = policy.annotation("sandbox") {
        conditions.sandbox = Some(sandbox.to_owned());
    }
    if let Some(paths) = policy.annotation("redact") {
        for path in paths.split_whitespace() {
            if !conditions.redact.iter().any(|p| p == path) {
                conditions.redact.push(path.to_owned());
            }
        }
    }
    if let Some(limit) = policy.annotation("rate_limit").and_then(parse_rate) {
        let stricter = conditions.rate_limit.is_none_or(|old| {
            // Compare requests per second without division: a/b < c/d  <=>  a*d < c*b.
            u64::from(limit.requests) * old.per_secs < u64::from(old.requests) * limit.per_secs
        });
        if stricter {
            conditions.rate_limit = Some(limit);
        }
    }
}

/// Parses a `@rate_limit("N/SECONDS")` annotation.
pub fn parse_rate(text: &str) -> Option<RateCondition> {
    let (requests, per) = text.split_once('/')?;
    let requests: u32 = requests.trim().parse().ok().filter(|n| *n > 0)?;
    let per_secs: u64 = per.trim().parse().ok().filter(|n| *n > 0)?;
    Some(RateCondition { requests, per_secs })
}

/// The Cedar entity of a target, and its attributes.
fn resource_entity(target: &Target<'_>) -> (EntityUid, HashMap<String, RestrictedExpression>) {
    let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
    match target {
        Target::Tool {
            name,
            server,
            local,
            verification,
            annotations,
        } => {
            let mut attrs = HashMap::from([
                ("server".to_owned(), string(server)),
                ("name".to_owned(), string(local)),
                ("verification".to_owned(), string(verification)),
            ]);
            if let Some(a) = annotations {
                for (key, value) in [
                    ("readOnlyHint", a.read_only_hint),
                    ("destructiveHint", a.destructive_hint),
                    ("idempotentHint", a.idempotent_hint),
                    ("openWorldHint", a.open_world_hint),
                ] {
                    if let Some(value) = value {
                        attrs.insert(key.to_owned(), RestrictedExpression::new_bool(value));
                    }
                }
            }
            (uid("Mcp::Tool", name), attrs)
        }
        Target::Resource { uri, server } => (
            uid("Mcp::Resource", uri),
            HashMap::from([
                ("server".to_owned(), string(server)),
                ("uri".to_owned(), string(uri)),
            ]),
        ),
        Target::Prompt {
            name,
            server,
            local,
        } => (
            uid("Mcp::Prompt", name),
            HashMap::from([
                ("server".to_owned(), string(server)),
                ("name".to_owned(), string(local)),
            ]),
        ),
    }
}

/// Call arguments as a Cedar record, built value by value rather than through Cedar's JSON
/// format, so that an argument shaped like `{"__entity": ...}` stays plain data instead of
/// becoming an entity reference.
fn record(map: &serde_json::Map<String, serde_json::Value>, depth: usize) -> RestrictedExpression {
    let fields = map
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), value(v, depth + 1)?)))
        .collect::<Vec<_>>();
    // Keys of a JSON object are unique, so this cannot fail.
    RestrictedExpression::new_record(fields).unwrap_or_else(|_| {
        RestrictedExpression::new_record(Vec::<(String, RestrictedExpression)>::new())
            .unwrap_or_else(|_| unreachable!("an empty record is valid"))
    })
}

fn value(v: &serde_json::Value, depth: usize) -> Option<RestrictedExpression> {
    if depth > MAX_ARGUMENT_DEPTH {
        return None;
    }
    Some(match v {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => RestrictedExpression::new_bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_string(n.to_string()),
        },
        serde_json::Value::String(s) => RestrictedExpression::new_string(s.clone()),
        serde_json::Value::Array(items) => {
            RestrictedExpression::new_set(items.iter().filter_map(|i| value(i, depth + 1)))
        }
        serde_json::Value::Object(map) => record(map, depth),
    })
}

#[cfg(test)]
mod tests;
