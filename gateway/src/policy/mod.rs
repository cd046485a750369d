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
//! `resource in Mcp::Server::"s"`), and filtered by their principal and action scope, so a
//! decision evaluates only the policies that can apply to it. The policy set and the entities
//! of each (client, groups, action, resource) are built once and cached; a property test checks
//! that this never changes a decision.

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
    /// `@sandbox("per-call")`: run the call in a fresh sandbox; `@sandbox("gvisor")`: only on a
    /// server running in that tier.
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
    general: Vec<Indexed>,
    /// Policies whose scope names one entity (`resource == X` or `resource in X`), by entity.
    by_entity: HashMap<EntityUid, Vec<Indexed>>,
    /// For each action, its entity and those of its groups (`tools/call` in `tools`): all a
    /// request needs of the schema's actions. Fewer entities make the per-request transitive
    /// closure cheaper, and it is most of a decision's cost.
    actions: HashMap<String, Vec<Entity>>,
    /// Each policy's name, effect and conditions.
    meta: HashMap<cedar_policy::PolicyId, PolicyMeta>,
    /// The entities and applicable policies of recent requests, by everything they are built
    /// from: building them (Cedar computes a transitive closure) costs more than evaluating.
    prepared: Mutex<HashMap<EntityKey, Arc<Prepared>>>,
    authorizer: Authorizer,
}

/// The entity types of the schema, parsed once: Cedar parses a type name with its full
/// grammar, which would otherwise be most of the cost of a decision.
struct Types {
    client: EntityTypeName,
    group: EntityTypeName,
    server: EntityTypeName,
    tool: EntityTypeName,
    resource: EntityTypeName,
    prompt: EntityTypeName,
    action: EntityTypeName,
}

static TYPES: std::sync::LazyLock<Types> = std::sync::LazyLock::new(|| {
    // The names are fixed and valid; a failure here is a bug caught by every test.
    let parse = |name: &str| {
        EntityTypeName::from_str(name)
            .unwrap_or_else(|_| unreachable!("invalid entity type {name}"))
    };
    Types {
        client: parse("Mcp::Client"),
        group: parse("Mcp::Group"),
        server: parse("Mcp::Server"),
        tool: parse("Mcp::Tool"),
        resource: parse("Mcp::Resource"),
        prompt: parse("Mcp::Prompt"),
        action: parse("Mcp::Action"),
    }
});

fn uid(kind: fn(&Types) -> &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind(&TYPES).clone(), EntityId::new(id))
}

fn schema() -> Result<Schema, String> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| format!("the built-in policy schema is invalid: {e}"))
}

/// Each action's entity and the entities of its ancestors, by action id.
fn action_entities(schema: &Schema) -> Result<HashMap<String, Vec<Entity>>, String> {
    let all = schema.action_entities().map_err(|e| e.to_string())?;
    Ok(all
        .iter()
        .map(|entity| {
            let uid = entity.uid();
            let mut entities = vec![entity.clone()];
            entities.extend(
                all.ancestors(&uid)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| all.get(a).cloned()),
            );
            (uid.id().unescaped().to_owned(), entities)
        })
        .collect())
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

    /// The policy in `file`, or the built-in default without one.
    pub fn load_or_default(file: Option<&PathBuf>) -> Result<Self, PolicyError> {
        match file {
            Some(path) => Self::load(path),
            None => Ok(Self::default_policy()),
        }
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
        let mut by_entity: HashMap<EntityUid, Vec<Indexed>> = HashMap::new();
        for policy in all.policies() {
            match policy.resource_constraint() {
                ResourceConstraint::Eq(uid)
                | ResourceConstraint::In(uid)
                | ResourceConstraint::IsIn(_, uid) => {
                    by_entity.entry(uid).or_default().push(Indexed::of(policy))
                }
                ResourceConstraint::Any | ResourceConstraint::Is(_) => {
                    general.push(Indexed::of(policy))
                }
            }
        }
        let meta = all
            .policies()
            .map(|p| (p.id().clone(), PolicyMeta::of(p)))
            .collect();
        Ok(Self {
            source: Some(path.to_owned()),
            all,
            general,
            by_entity,
            meta,
            prepared: Mutex::new(HashMap::new()),
            actions: action_entities(&schema)
                .map_err(|e| error(None, format!("the policy schema's actions: {e}")))?,
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

    /// The policies whose scope can match a request of `identity` doing `action` on `resource`
    /// in `server`: the resource index narrows them to the resource, and each policy's principal
    /// and action scope are checked against the client, its groups and the action's groups.
    fn applicable(
        &self,
        identity: &Identity,
        principal: &EntityUid,
        action: &str,
        resource: &EntityUid,
        server: &EntityUid,
    ) -> PolicySet {
        let groups: Vec<EntityUid> = identity
            .groups
            .iter()
            .map(|g| uid(|t| &t.group, g))
            .collect();
        let actions: Vec<EntityUid> = self
            .actions
            .get(action)
            .into_iter()
            .flatten()
            .map(Entity::uid)
            .collect();
        let applicable = self
            .general
            .iter()
            .chain(self.by_entity.get(resource).into_iter().flatten())
            .chain(self.by_entity.get(server).into_iter().flatten())
            .filter(|p| p.may_apply(principal, &groups, &actions))
            .map(|p| p.policy.clone());
        // The policies were one valid set, so any subset is too.
        PolicySet::from_policies(applicable).unwrap_or_default()
    }

    /// The entities and policies of a request with `key`, built by `build` when not cached.
    fn prepared(
        &self,
        key: EntityKey,
        build: impl FnOnce() -> Result<Prepared, String>,
    ) -> Result<Arc<Prepared>, String> {
        if let Some(found) = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(found.clone());
        }
        let built = Arc::new(build()?);
        let mut cache = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        // A bound, so many clients and tools cannot grow this without end.
        if cache.len() >= 100_000 {
            cache.clear();
        }
        cache.insert(key, built.clone());
        Ok(built)
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
        self.decide_with(identity, action, target, session, arguments, false)
    }

    /// `decide` without the index and the cache: every policy, every action entity. Tests
    /// check that the index never changes a decision.
    #[cfg(test)]
    fn decide_unindexed(
        &self,
        identity: &Identity,
        action: &str,
        target: &Target<'_>,
        session: &str,
    ) -> Decision {
        self.decide_with(identity, action, target, session, None, true)
    }

    fn decide_with(
        &self,
        identity: &Identity,
        action: &str,
        target: &Target<'_>,
        session: &str,
        arguments: Option<&serde_json::Map<String, serde_json::Value>>,
        unindexed: bool,
    ) -> Decision {
        let deny = |reason: String| Decision {
            allowed: false,
            policies: Vec::new(),
            conditions: Conditions::default(),
            errors: vec![reason],
        };
        let server_uid = uid(|t| &t.server, target.server());
        let (resource, attrs) = resource_entity(target);
        let principal = uid(|t| &t.client, &identity.client);
        let key = EntityKey::new(identity, action, target);
        let build = || {
            let groups: Vec<Entity> = identity
                .groups
                .iter()
                .map(|g| Entity::with_uid(uid(|t| &t.group, g)))
                .collect();
            let client = Entity::new(
                principal.clone(),
                HashMap::from([(
                    "via".to_owned(),
                    RestrictedExpression::new_string(identity.via.as_str().to_owned()),
                )]),
                groups.iter().map(|g| g.uid()).collect(),
            )
            .map_err(|e| e.to_string())?;
            let resource_entity = Entity::new(
                resource.clone(),
                attrs,
                [server_uid.clone()].into_iter().collect(),
            )
            .map_err(|e| e.to_string())?;
            let entities = Entities::from_entities(
                groups
                    .into_iter()
                    .chain([
                        client,
                        resource_entity,
                        Entity::with_uid(server_uid.clone()),
                    ])
                    .chain(self.actions.get(action).into_iter().flatten().cloned()),
                None,
            )
            .map_err(|e| e.to_string())?;
            Ok(Prepared {
                entities,
                policies: self.applicable(identity, &principal, action, &resource, &server_uid),
            })
        };
        let prepared = if unindexed {
            build().map(|p| {
                let all_actions = self.actions.values().flatten().cloned();
                Arc::new(Prepared {
                    entities: p
                        .entities
                        .add_entities(all_actions, None)
                        .unwrap_or_else(|_| Entities::empty()),
                    policies: self.all.clone(),
                })
            })
        } else {
            self.prepared(key, build)
        };
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => return deny(e),
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
            uid(|t| &t.action, action),
            resource.clone(),
            context,
            None,
        ) {
            Ok(request) => request,
            Err(e) => return deny(e.to_string()),
        };
        let response =
            self.authorizer
                .is_authorized(&request, &prepared.policies, &prepared.entities);
        // Names, effects and conditions were read from the annotations once, at parse time:
        // Cedar parses the key on every `annotation` lookup.
        let meta = |id: &cedar_policy::PolicyId| self.meta.get(id);
        let name = |id: &cedar_policy::PolicyId| {
            meta(id)
                .map(|m| m.name.clone())
                .unwrap_or_else(|| id.to_string())
        };
        let is_forbid = |id: &cedar_policy::PolicyId| meta(id).is_some_and(|m| m.forbid);
        let errors: Vec<_> = response.diagnostics().errors().collect();
        let failed_forbids: Vec<String> = errors
            .iter()
            .filter_map(|e| {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = e;
                let id = e.policy_id();
                is_forbid(id).then(|| name(id))
            })
            .collect();
        let error_texts = errors.iter().map(|e| e.to_string()).collect();
        let reasons: Vec<&cedar_policy::PolicyId> = response.diagnostics().reason().collect();
        if response.decision() == CedarDecision::Deny || !failed_forbids.is_empty() {
            let mut policies: Vec<String> = reasons
                .iter()
                .filter(|id| is_forbid(id))
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
            if let Some(meta) = meta(id) {
                merge_conditions(&meta.conditions, &mut conditions);
            }
        }
        Decision {
            allowed: true,
            policies: reasons.iter().map(|id| name(id)).collect(),
            conditions,
            errors: error_texts,
        }
    }
}

/// What a request is decided with, apart from its context.
struct Prepared {
    entities: Entities,
    policies: PolicySet,
}

/// A policy with its principal and action scope, read once.
struct Indexed {
    policy: Policy,
    principal: cedar_policy::PrincipalConstraint,
    action: cedar_policy::ActionConstraint,
}

impl Indexed {
    fn of(policy: &Policy) -> Self {
        Self {
            principal: policy.principal_constraint(),
            action: policy.action_constraint(),
            policy: policy.clone(),
        }
    }

    /// Whether the scope can match `principal` (in `groups`) doing the first of `actions`
    /// (the rest are its groups). Clients are in groups and groups in nothing, so `principal
    /// in X` holds exactly when X is the client or one of its groups.
    fn may_apply(
        &self,
        principal: &EntityUid,
        groups: &[EntityUid],
        actions: &[EntityUid],
    ) -> bool {
        use cedar_policy::{ActionConstraint as A, PrincipalConstraint as P};
        let principal_ok = match &self.principal {
            P::Any | P::Is(_) => true,
            P::Eq(uid) => uid == principal,
            P::In(uid) | P::IsIn(_, uid) => uid == principal || groups.contains(uid),
        };
        principal_ok
            && match &self.action {
                A::Any => true,
                A::Eq(uid) => actions.first() == Some(uid),
                A::In(uids) => uids.iter().any(|uid| actions.contains(uid)),
            }
    }
}

/// Everything the entities of a request are built from.
#[derive(PartialEq, Eq, Hash)]
struct EntityKey {
    client: String,
    groups: Vec<String>,
    via: &'static str,
    action: String,
    /// The target's kind, name, server, upstream name and trust state.
    target: (u8, String, String, String, String),
    /// The tool's hints, in the order of the schema.
    hints: [Option<bool>; 4],
}

impl EntityKey {
    fn new(identity: &Identity, action: &str, target: &Target<'_>) -> Self {
        let (kind, name, local, verification, hints) = match target {
            Target::Tool {
                name,
                local,
                verification,
                annotations,
                ..
            } => (
                0,
                *name,
                *local,
                *verification,
                annotations.map_or([None; 4], |a| {
                    [
                        a.read_only_hint,
                        a.destructive_hint,
                        a.idempotent_hint,
                        a.open_world_hint,
                    ]
                }),
            ),
            Target::Resource { uri, .. } => (1, *uri, "", "", [None; 4]),
            Target::Prompt { name, local, .. } => (2, *name, *local, "", [None; 4]),
        };
        Self {
            client: identity.client.clone(),
            groups: identity.groups.clone(),
            via: identity.via.as_str(),
            action: action.to_owned(),
            target: (
                kind,
                name.to_owned(),
                target.server().to_owned(),
                local.to_owned(),
                verification.to_owned(),
            ),
            hints,
        }
    }
}

/// What the gateway reads from one policy's annotations.
struct PolicyMeta {
    /// `@id`, or Cedar's `policyN`.
    name: String,
    forbid: bool,
    /// The conditions its annotations attach, for a `permit`.
    conditions: Conditions,
}

impl PolicyMeta {
    fn of(policy: &Policy) -> Self {
        let mut name = policy.id().to_string();
        let mut conditions = Conditions::default();
        for (key, value) in policy.annotations() {
            match key {
                "id" => name = value.to_owned(),
                "sandbox" => conditions.sandbox = Some(value.to_owned()),
                "redact" => {
                    conditions.redact = value.split_whitespace().map(str::to_owned).collect()
                }
                "rate_limit" => conditions.rate_limit = parse_rate(value),
                _ => {}
            }
        }
        Self {
            name,
            forbid: policy.effect() == Effect::Forbid,
            conditions,
        }
    }
}

/// Adds the conditions of one deciding `permit` to `conditions`. When several permits decide,
/// the strictest of each condition wins.
fn merge_conditions(from: &Conditions, conditions: &mut Conditions) {
    if let Some(sandbox) = &from.sandbox {
        conditions.sandbox = Some(sandbox.clone());
    }
    for path in &from.redact {
        if !conditions.redact.iter().any(|p| p == path) {
            conditions.redact.push(path.clone());
        }
    }
    if let Some(limit) = from.rate_limit {
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
            (uid(|t| &t.tool, name), attrs)
        }
        Target::Resource { uri, server } => (
            uid(|t| &t.resource, uri),
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
            uid(|t| &t.prompt, name),
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
